#!/usr/bin/env bash
# test_prefix_cache.sh TESSERA TESSERAD: tesserad's prefix cache end to end on loopback
# (docs/daemon.md "Prefix caching"). Chat requests that share a long system prompt: the
# first computes it, the next ones report cached_prompt_tokens > 0 in their usage, and every
# output (greedy) equals the output of a daemon with the cache off (config file
# prefix-cache-tokens = 0). A tiny cache (--prefix-cache-tokens 64) under a stream of
# different prompts evicts and still gives the same outputs. After the requests, cluster
# info shows no KV page in use, and the Prometheus counter tessera_prompt_tokens_cached_total
# (--metrics) adds up the usages. A random tiny model always; the real Gemma 3 270M when
# TESSERA_MODEL_270M is set.
set -u
bin=$1
daemon=$2
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
py=python3 # this test also runs without Debian's python3 (no grpc needed)
command -v /usr/bin/python3 >/dev/null && py=/usr/bin/python3
jpid=""
trap 'kill_stray "$jpid"; drop_tmp' EXIT

start_daemon() { # start_daemon MODEL ARGS...: sets $jpid and $addr
  local model=$1
  shift
  : >"$tmp/d.out"
  "$daemon" -m "$model" --listen 127.0.0.1:0 "$@" >"$tmp/d.out" 2>>"$tmp/d.err" &
  jpid=$!
  wait_addr "$jpid" 600 || { bad "tesserad did not start: $(tail -5 "$tmp/d.err")"; return 1; }
  wait_health
}
stop_daemon() {
  kill -TERM "$jpid" 2>/dev/null
  exit_ok "$jpid" tesserad 20
  sanitizer_full # a report is a failed check; none is not counted here
  jpid=""
}

# chat_all TAG N: N chat requests sharing the system prompt $sys (greedy), one at a time,
# then info --json; outputs in $tmp/TAG.K.json and $tmp/TAG.info.json
chat_all() {
  local tag=$1 n=$2 k
  for k in $(seq 1 "$n"); do
    "$bin" chat --server "$addr" --system "$sys" -p "${questions[$k]}" --temp 0 -n 8 --ignore-eos --json \
      >"$tmp/$tag.$k.json" 2>"$tmp/err" || bad "$tag: chat $k: $(cat "$tmp/err"); daemon log: $(tail -5 "$tmp/d.err")"
  done
  "$bin" info --server "$addr" --json >"$tmp/$tag.info.json" 2>"$tmp/err" || bad "$tag: info: $(cat "$tmp/err")"
}

# compare LABEL ON OFF N: same text and ids; ON's later requests hit the cache
compare() {
  $py - "$tmp" "$2" "$3" "$4" <<'EOP' && ok || bad "$1: cached outputs differ or no hits"
import json, sys
tmp, on, off, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ld = lambda t, k: json.load(open(f"{tmp}/{t}.{k}.json"))
for k in range(1, n + 1):
    a, b = ld(on, k), ld(off, k)
    assert (a["text"], a["ids"]) == (b["text"], b["ids"]), (k, a, b)
    assert b["cached_prompt_tokens"] == 0, b
    assert a["cached_prompt_tokens"] < a["prompt_tokens"], a
    print(f"info: request {k}: {a['prompt_tokens']} prompt tokens, "
          f"{a['cached_prompt_tokens']} cached, text {a['text']!r}")
first = ld(on, 1)
assert first["cached_prompt_tokens"] == 0, first
assert all(ld(on, k)["cached_prompt_tokens"] > 0 for k in range(2, n + 1))
for t in (on, off):
    c = json.load(open(f"{tmp}/{t}.info.json"))["cluster"]
    assert c["kv_pages_used"] == 0 and c["active_requests"] == 0, c
c = json.load(open(f"{tmp}/{on}.info.json"))["cluster"]
assert c["prefix_cache_hit_tokens"] > 0 and c["prefix_cache_tokens"] > 0, c
EOP
}

run_model() { # run_model LABEL N MODEL ARGS...: N requests
  local l=$1 n=$2 model=$3
  shift 3
  if start_daemon "$model" --slots 2 --threads 2 --metrics 127.0.0.1:0 "$@"; then
    chat_all "$l.on" "$n"
    # the Prometheus counter of cached prompt tokens = the sum over the usages
    murl=$(sed -n 's|^tesserad: metrics at \(http://127\.0\.0\.1:[0-9]*/metrics\)$|\1|p' "$tmp/d.out")
    $py - "$tmp" "$l.on" "$n" "$murl" <<'EOP' && ok || bad "$l: tessera_prompt_tokens_cached_total"
import json, sys, urllib.request
tmp, t, n, url = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
want = sum(json.load(open(f"{tmp}/{t}.{k}.json"))["cached_prompt_tokens"] for k in range(1, n + 1))
text = urllib.request.urlopen(url, timeout=10).read().decode()
got = [float(x.split()[1]) for x in text.splitlines() if x.startswith("tessera_prompt_tokens_cached_total ")]
assert want > 0 and got == [want], (got, want)
EOP
    stop_daemon
  fi
  printf 'prefix-cache-tokens = 0;\n' >"$tmp/off.conf"
  if start_daemon "$model" --config "$tmp/off.conf" --slots 2 --threads 2 "$@"; then
    chat_all "$l.off" "$n"
    stop_daemon
  fi
  compare "$l" "$l.on" "$l.off" "$n"
  grep -q "cached" "$tmp/d.err" && ok || bad "$l: the log names cached tokens"
  # a cache of 64 tokens: every new prompt evicts; outputs unchanged
  if start_daemon "$model" --slots 2 --threads 2 --prefix-cache-tokens 64 "$@"; then
    chat_all "$l.small" "$n"
    stop_daemon
  fi
  $py - "$tmp" "$l" "$n" <<'EOP' && ok || bad "$l: small cache outputs differ"
import json, sys
tmp, l, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for k in range(1, n + 1):
    a = json.load(open(f"{tmp}/{l}.small.{k}.json"))
    b = json.load(open(f"{tmp}/{l}.off.{k}.json"))
    assert (a["text"], a["ids"]) == (b["text"], b["ids"]), (k, a, b)
    assert a["cached_prompt_tokens"] <= 64, a
c = json.load(open(f"{tmp}/{l}.small.info.json"))["cluster"]
assert c["kv_pages_used"] == 0 and c["prefix_cache_tokens"] <= 64, c
EOP
}

questions=("" "What is the first rule?" "Summarise the rules in one line." \
  "What is the first rule?" "Which rule is about colours?" "Name a rule about numbers.")

"$bin" mkmodel --size tiny --type q8_0 --vocab 1024 --seed 7 -o "$tmp/tiny.gguf" >/dev/null || bad "mkmodel"
rules() { # rules N: a system prompt of N rules
  sys=""
  for i in $(seq 1 "$1"); do sys="$sys Rule $i: answer plainly, keep numbers exact, and never invent colours or names."; done
}
rules 4 # about 270 tokens of the tiny model's 512-token context
run_model tiny 5 "$tmp/tiny.gguf"
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --prefix-cache-tokens -1 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "prefix-cache-tokens" "$tmp/err" && ok || bad "bad --prefix-cache-tokens refused: $(cat "$tmp/err")"

model=${TESSERA_MODEL_270M:-}
if [ -n "$model" ] && [ -f "$model" ]; then
  rules 30 # about 580 tokens: the cut is past the sliding window (512)
  run_model 270m 3 "$model" --ctx 1024
else
  echo "note: TESSERA_MODEL_270M not set; the real-model part is skipped"
fi

summary ""
