#!/usr/bin/env bash
# test_run.sh TESSERA FIXTURES: `tessera run` and `tessera bench` as users run them, on a
# random tiny model made by `tessera mkmodel` (always) and on the real Gemma 3 270M (when
# TESSERA_MODEL_270M is set).
set -u
bin=$1
fixtures=$2
pass=0
failn=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failn=$((failn + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=python3

# usage errors
"$bin" run >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "required" "$tmp/err" && ok || bad "run without args"
"$bin" run -m x -p y --bogus >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "unknown option '--bogus'" "$tmp/err" && ok || bad "run bad flag"
"$bin" run -m x -p y --temp abc >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "expects a number" "$tmp/err" && ok || bad "run bad number"
"$bin" run -m x -p y --top-p 1.5 >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "top_p" "$tmp/err" && ok || bad "run bad top-p: $(cat "$tmp/err")"
"$bin" run -m /nonexistent.gguf -p hi >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "/nonexistent.gguf" "$tmp/err" && ok || bad "missing model"
"$bin" run -m "$fixtures/gguf/small.gguf" -p hi >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "architecture" "$tmp/err" && ok || bad "non-Gemma model: $(cat "$tmp/err")"
"$bin" bench >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && ok || bad "bench without args"

# a random tiny model
"$bin" mkmodel --size tiny --type q8_0 --vocab 1024 --seed 7 -o "$tmp/tiny.gguf" >/dev/null || bad "mkmodel"
"$bin" run -m "$tmp/tiny.gguf" -p "hello world" --temp 0 -n 12 --json >"$tmp/a.json" 2>"$tmp/err" || bad "run tiny: $(cat "$tmp/err")"
"$bin" run -m "$tmp/tiny.gguf" -p "hello world" --temp 0 -n 12 --json >"$tmp/b.json" 2>"$tmp/err" || bad "run tiny again"
$py -c "
import json; a=json.load(open('$tmp/a.json')); b=json.load(open('$tmp/b.json'))
assert (a['ids'], a['text']) == (b['ids'], b['text'])
" && ok || bad "greedy not deterministic"
$py -c "
import json,sys; d=json.load(open('$tmp/a.json'))
assert d['prompt_ids'][0]==2 and len(d['ids'])<=12 and d['finish_reason'] in ('length','stop'), d
" && ok || bad "tiny json shape"
"$bin" run -m "$tmp/tiny.gguf" -p "hello world" --temp 0.9 --seed 5 -n 12 --json >"$tmp/s1.json" || bad "seeded run"
"$bin" run -m "$tmp/tiny.gguf" -p "hello world" --temp 0.9 --seed 5 -n 12 --json >"$tmp/s2.json" || bad "seeded run 2"
cmp -s "$tmp/s1.json" "$tmp/s2.json" && ok || bad "same seed, different output"
long=$(printf 'word %.0s' $(seq 1 300))
"$bin" run -m "$tmp/tiny.gguf" -p "$long" --ctx 64 -n 4 >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "does not fit the context" "$tmp/err" && ok || bad "prompt longer than context: $(cat "$tmp/err")"
"$bin" run -m "$tmp/tiny.gguf" -p "hi" --ctx 100000 >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "exceeds the model" "$tmp/err" && ok || bad "ctx above model: $(cat "$tmp/err")"
"$bin" bench -m "$tmp/tiny.gguf" -p 16 -n 4 --streams 2 --reps 1 >"$tmp/bench" 2>"$tmp/err" || bad "bench tiny: $(cat "$tmp/err")"
grep -q "pp16" "$tmp/bench" && grep -q "tg4" "$tmp/bench" && grep -q "2 streams" "$tmp/bench" && ok || bad "bench output"

model=${TESSERA_MODEL_270M:-}
if [ -n "$model" ] && [ -f "$model" ]; then
  "$bin" run -m "$model" -p "The capital of France is" --temp 0 -n 24 --json >"$tmp/r.json" 2>"$tmp/err" || bad "270M run: $(cat "$tmp/err")"
  $py -c "
import json; d=json.load(open('$tmp/r.json'))
assert d['prompt_ids']==[2, 818, 5279, 529, 7001, 563], d['prompt_ids']
assert len(d['ids'])==24 and 'France' in d['text'], d
" && ok || bad "270M greedy"
  # a stop string cuts the output and is not printed
  stopword=$($py -c "import json; t=json.load(open('$tmp/r.json'))['text']; print(t.split()[2])")
  "$bin" run -m "$model" -p "The capital of France is" --temp 0 -n 24 --stop "$stopword" --json >"$tmp/st.json" || bad "stop run"
  $py -c "
import json; d=json.load(open('$tmp/st.json')); w='$stopword'
assert d['finish_reason']=='stop_sequence' and w not in d['text'], d
" && ok || bad "stop string"
  "$bin" run -m "$model" -p "Say hello." --chat --temp 0 -n 16 >"$tmp/chat.txt" 2>"$tmp/err" && [ -s "$tmp/chat.txt" ] && ok || bad "chat run: $(cat "$tmp/err")"
else
  echo "note: TESSERA_MODEL_270M not set; real-model checks not run"
fi
echo "$pass passed, $failn failed"
[ $failn -eq 0 ]
