#!/usr/bin/env bash
# test_inspect.sh TESSERA: `tessera inspect` as users run it: the real 270M file (skipped,
# exit 77, without TESSERA_MODEL_270M), JSON output, corrupt and missing files, bad flags.
set -u
bin=$1
fixtures=$2
pass=0
failn=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failn=$((failn + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# usage errors: exit 2 with a message
"$bin" inspect >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q usage "$tmp/err" && ok || bad "no FILE"
"$bin" inspect --bogus x >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "unknown option '--bogus'" "$tmp/err" && ok || bad "bad flag"
"$bin" frobnicate >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "unknown command" "$tmp/err" && ok || bad "bad command"
# missing file
"$bin" inspect /nonexistent.gguf >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "/nonexistent.gguf" "$tmp/err" && ok || bad "missing file"
# not a model file
printf 'hello world, not a model\n' >"$tmp/text.gguf"
"$bin" inspect "$tmp/text.gguf" >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -qi "magic" "$tmp/err" && ok || bad "text file: $(cat "$tmp/err")"
# corrupt GGUF: every truncation of the small fixture fails cleanly with a message
src=$fixtures/gguf/small.gguf
if [ -f "$src" ]; then
  # the end of the last tensor's data (what follows is only alignment padding)
  size=$("$bin" inspect --json "$src" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['data_offset'] + max(t['offset'] + t['bytes'] for t in d['tensors']))")
  step=$(( size / 97 + 1 ))
  for ((n = 0; n < size; n += step)); do
    head -c "$n" "$src" >"$tmp/trunc.gguf"
    "$bin" inspect "$tmp/trunc.gguf" >/dev/null 2>"$tmp/err"
    rc=$?
    if [ $rc -ne 1 ] || [ ! -s "$tmp/err" ]; then bad "truncated at $n: rc=$rc"; fi
  done
  ok
  "$bin" inspect "$src" >/dev/null 2>"$tmp/err" && ok || bad "small fixture: $(cat "$tmp/err")"
  "$bin" inspect --json "$src" | python3 -c "import json,sys; json.load(sys.stdin)" && ok || bad "small fixture json"
else
  bad "missing fixture $src"
fi
# safetensors
st=$fixtures/safetensors/small.safetensors
if [ -f "$st" ]; then
  "$bin" inspect "$st" >"$tmp/out" 2>"$tmp/err" && grep -q "safetensors" "$tmp/out" && ok || bad "safetensors: $(cat "$tmp/err")"
  "$bin" inspect --json "$fixtures/safetensors/model.safetensors.index.json" | python3 -c "import json,sys; d=json.load(sys.stdin); assert d['shards']==2, d" && ok || bad "sharded safetensors"
fi

model=${TESSERA_MODEL_270M:-}
if [ -n "$model" ] && [ -f "$model" ]; then
  "$bin" inspect "$model" >"$tmp/out" 2>"$tmp/err" || bad "inspect 270M: $(cat "$tmp/err")"
  grep -q "layers 18, hidden 640, ffn 2048, heads 4, kv heads 1, head_dim 256" "$tmp/out" && ok || bad "270M hyperparameters"
  grep -q "vocab 262144" "$tmp/out" && ok || bad "270M vocab"
  grep -q "sliding window 512" "$tmp/out" && ok || bad "270M window"
  grep -q "global layers: 5 11 17" "$tmp/out" && ok || bad "270M global layers"
  [ "$(grep -cE '^  (blk\.[0-9]+\.|token_embd|output_norm)' "$tmp/out")" -eq 236 ] && ok || bad "270M tensor rows"
  "$bin" inspect --json "$model" >"$tmp/out.json" || bad "inspect --json"
  python3 - "$tmp/out.json" <<'PY' && ok || bad "270M json"
import json, sys
d = json.load(open(sys.argv[1]))
h = d["hyperparameters"]
assert (h["n_layer"], h["n_embd"], h["n_head"], h["n_head_kv"], h["head_dim"], h["sliding_window"], h["n_vocab"]) == (18, 640, 4, 1, 256, 512, 262144), h
assert len(d["tensors"]) == 236
assert all(t["type"] in ("F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K") for t in d["tensors"])
assert d["tokenizer"]["n_tokens"] == 262144
assert sum(v["tensors"] for v in d["bytes_by_type"].values()) == 236
PY
else
  echo "note: TESSERA_MODEL_270M not set; real-model checks not run"
fi

echo "$pass passed, $failn failed"
[ $failn -eq 0 ]
