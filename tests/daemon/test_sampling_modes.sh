#!/usr/bin/env bash
# test_sampling_modes.sh TESSERA TESSERAD: the scheduler's three ways to get a step's
# samples (daemon/sched.c) give the same tokens. On a random tiny model, the same requests
# go to (1) tesserad with full logits rows (the CPU default), (2) tesserad with the top-k
# prefilter forced on (TESSERA_GPU_SAMPLING=1: the backend's top-k op, what a CUDA daemon
# does by default), (3) `mpirun -np 2 tesserad --pp 2` (greedy rows: only the argmax ids
# come back from the last stage) when TESSERA_MPIRUN names mpirun. Requests: greedy, the
# server's default sampling (temperature 1, top-k 64, top-p 0.95) seeded, sampling with a
# repetition penalty (full rows only), and the four at once. The debug log of each daemon
# must show the mode was used (so the comparison cannot pass vacuously).
set -u
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bin=$1
daemon=$2
jpid=""
trap 'kill_stray "$jpid"; drop_tmp' EXIT

"$bin" mkmodel --size tiny --type q8_0 --vocab 1024 --seed 7 -o "$tmp/tiny.gguf" >/dev/null || {
  echo "FAIL: mkmodel"; exit 1; }

# start TAG ENV-ASSIGNMENT|- CMD...: starts a daemon (log in $tmp/TAG.err), sets $addr, $jpid
start() {
  local tag=$1 envv=$2
  shift 2
  : >"$tmp/d.out"
  if [ "$envv" = - ]; then
    "$@" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --slots 4 --log-level debug \
      >"$tmp/d.out" 2>"$tmp/$tag.err" &
  else
    env "$envv" "$@" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --slots 4 --log-level debug \
      >"$tmp/d.out" 2>"$tmp/$tag.err" &
  fi
  jpid=$!
  wait_addr "$jpid" 600 || { bad "$tag: tesserad did not start: $(tail -3 "$tmp/$tag.err")"; return 1; }
}
stop() {
  kill -TERM "$jpid" 2>/dev/null
  wait_gone "$jpid"
  wait "$jpid" 2>/dev/null
  jpid=""
}
ids() { grep -o '"ids":\[[0-9,]*\]' "$1" 2>/dev/null; }

# req NAME: the request's sampling flags into the array A
req() {
  case $1 in
    greedy) A=(--temp 0) ;;
    seeded) A=(--seed 7) ;;
    penalty) A=(--seed 3 --repeat-penalty 1.3) ;;
  esac
}
# run TAG: the three requests one at a time, then all three and a second greedy one at once
run() {
  local tag=$1 r
  for r in greedy seeded penalty; do
    req "$r"
    "$bin" generate --server "$addr" -p "Once upon a time" -n 16 --ignore-eos --json "${A[@]}" \
      >"$tmp/$tag-$r.json" 2>"$tmp/$tag-$r.err" || bad "$tag $r: $(cat "$tmp/$tag-$r.err")"
  done
  local pids=()
  for r in greedy seeded penalty; do
    req "$r"
    "$bin" generate --server "$addr" -p "Once upon a time" -n 16 --ignore-eos --json "${A[@]}" \
      >"$tmp/$tag-$r-c.json" 2>&1 &
    pids+=($!)
  done
  "$bin" generate --server "$addr" -p "A different prompt" -n 16 --ignore-eos --json --temp 0 \
    >"$tmp/$tag-other-c.json" 2>&1 &
  pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || bad "$tag: a concurrent request failed"; done
}

start full - "$daemon" && { run full; stop; }
start top TESSERA_GPU_SAMPLING=1 "$daemon" && { run top; stop; }
for r in greedy seeded penalty; do
  ref=$(ids "$tmp/full-$r.json")
  [ -n "$ref" ] && ok || bad "full $r: no ids ($(cat "$tmp/full-$r.err"))"
  [ "$(ids "$tmp/full-$r-c.json")" = "$ref" ] && ok || bad "full $r concurrent differs"
  [ "$(ids "$tmp/top-$r.json")" = "$ref" ] && ok || bad "top-k prefilter $r: $(ids "$tmp/top-$r.json") vs $ref"
  [ "$(ids "$tmp/top-$r-c.json")" = "$ref" ] && ok || bad "top-k prefilter $r concurrent differs"
done
[ "$(ids "$tmp/top-other-c.json")" = "$(ids "$tmp/full-other-c.json")" ] && ok || bad "other prompt differs (top)"
grep -q "top-k rows" "$tmp/top.err" && ok || bad "the forced daemon never used the top-k prefilter"
grep -q "logits rows" "$tmp/top.err" && ok || bad "the forced daemon never fell back to full rows (penalty)"
grep -q "top-k rows\|greedy ids" "$tmp/full.err" && bad "the default CPU daemon used a prefilter" || ok

if [ -n "${TESSERA_MPIRUN:-}" ]; then
  start mpi - "$TESSERA_MPIRUN" --oversubscribe --allow-run-as-root --bind-to none -np 2 \
    "$daemon" --pp 2 && { run mpi; stop; }
  for r in greedy seeded penalty; do
    ref=$(ids "$tmp/full-$r.json")
    [ "$(ids "$tmp/mpi-$r.json")" = "$ref" ] && ok || bad "pp 2 $r: $(ids "$tmp/mpi-$r.json") vs $ref"
    [ "$(ids "$tmp/mpi-$r-c.json")" = "$ref" ] && ok || bad "pp 2 $r concurrent differs"
  done
  [ "$(ids "$tmp/mpi-other-c.json")" = "$(ids "$tmp/full-other-c.json")" ] && ok || bad "other prompt differs (pp 2)"
  grep -q "greedy ids" "$tmp/mpi.err" && ok || bad "the pp 2 daemon never used greedy ids"
  grep -q "logits rows" "$tmp/mpi.err" && ok || bad "the pp 2 daemon never used full rows"
fi

summary ""
