#!/bin/sh
# test_auto_plan.sh TESSERA MPIEXEC [TESSERAD]: the automatic parallel plan (--tp auto) on
# CPU ranks under a real mpirun, on the tiny mkmodel model (8 layers, 2 KV heads):
#   - -np 2 and -np 4 `tessera run --tp auto`: every layout holds the whole context, so
#     auto takes the fewest TP ranks (tp 1 x pp N) and says why; greedy tokens (the ids
#     path) and seeded sampled tokens (the logits path) identical to one rank;
#   - MPMD with a different --gpu-mem-limit per rank (4 MiB : 2 MiB), with --tp auto and
#     with an explicit --pp 2: the budgets are gathered, the printed plan gives the larger
#     rank more layers ([0, 6) and [6, 8)), same tokens as one rank;
#   - refusals, on every rank within seconds and non-zero, the message printed once: a
#     context that no layout holds (says the context that would: --ctx N, which then
#     runs), weights that do not fit (says how many ranks would), step buffers alone;
#   - `tessera bench --tp auto`; tesserad with `tp = "auto";` in its config file under
#     mpirun -np 2 (same greedy tokens), and a malformed value refused.
# shellcheck disable=SC2086 # $R / $MPI / $SEED hold several words on purpose
set -u
T=$1
MPIEXEC=${2:-mpirun}
D=${3:-}
command -v "$MPIEXEC" >/dev/null 2>&1 || exit 77
dir=$(mktemp -d)
jpid=""
trap '[ -n "$jpid" ] && kill -KILL "$jpid" 2>/dev/null; rm -rf "$dir"' EXIT
"$T" mkmodel --size tiny --vocab 1024 --type q8_0 -o "$dir/tiny.gguf" >/dev/null 2>&1 || {
    echo "mkmodel failed"; exit 1; }
fail=0
MPI="$MPIEXEC --oversubscribe --allow-run-as-root --bind-to none"
R="run -m $dir/tiny.gguf -p hello --temp 0 -n 8 --threads 1 --json --batch 16"
SEED="run -m $dir/tiny.gguf -p hello --temp 1 --seed 7 -n 8 --threads 1 --json --batch 16"
bad() { echo "FAIL [$1]: $2"; fail=1; }
ids() { grep -o '"ids":\[[0-9,]*\]' "$1"; }
has() { # NAME REGEX FILE [COUNT]: REGEX in FILE (exactly COUNT lines when given)
    n=$(grep -Ec -- "$2" "$3")
    if [ "$n" -eq 0 ] || { [ -n "${4:-}" ] && [ "$n" -ne "$4" ]; }; then
        bad "$1" "want /$2/${4:+ x $4} in:"; cat "$3"; return 1
    fi
    echo "ok [$1]: $(grep -Eo -- "$2" "$3" | head -1)"
}

"$T" $R > "$dir/ref.json" 2>"$dir/ref.err" || { echo "reference run failed"; cat "$dir/ref.err"; exit 1; }
"$T" $SEED > "$dir/refs.json" 2>"$dir/ref.err" || { echo "reference run failed"; cat "$dir/ref.err"; exit 1; }
ref=$(ids "$dir/ref.json")
refs=$(ids "$dir/refs.json")
echo "reference (one rank): greedy $ref, sampled $refs"
# without mpirun: one rank, the plain engine
"$T" $R --tp auto > "$dir/o" 2>"$dir/e" && [ "$(ids "$dir/o")" = "$ref" ] ||
    bad "one rank, --tp auto" "$(cat "$dir/e")"

same() { # NAME OUT ERR RC WANT
    if [ "$4" -ne 0 ] || [ "$(ids "$2")" != "$5" ]; then
        bad "$1" "exit $4, ids $(ids "$2") (want $5)"; cat "$3"; return 1
    fi
    echo "ok [$1]: same tokens as one rank"
}

for np in 2 4; do
    timeout 120 $MPI -np $np "$T" $R --tp auto > "$dir/o" 2>"$dir/e"
    same "np $np, --tp auto, greedy" "$dir/o" "$dir/e" $? "$ref" &&
        has "np $np: the choice and why" "^auto: tp 1 x pp $np of $np ranks .*tp 2 x pp $((np / 2)): up to 512 \(a tie: fewer TP ranks win\)" "$dir/e" 1 &&
        has "np $np: the budgets" "^  rank $((np - 1)) on .*host memory" "$dir/e" 1 &&
        has "np $np: the plan" "^  rank $((np - 1)): stage $((np - 1)) layers" "$dir/e" 1
    timeout 120 $MPI -np $np "$T" $SEED --pp auto > "$dir/o" 2>"$dir/e"
    same "np $np, --pp auto, sampled (logits)" "$dir/o" "$dir/e" $? "$refs"
done
# tp 4 does not divide the 2 KV heads: named as refused in the reason
has "np 4: tp 4 refused" "tp 4 x pp 1: tp 4 does not divide the model's 2 KV heads" "$dir/e"

# MPMD: each rank its own limit; the larger rank gets more layers
for par in "--tp auto" "--pp 2"; do
    timeout 120 $MPI -np 1 "$T" $R $par --gpu-mem-limit 4MiB : -np 1 "$T" $R $par \
        --gpu-mem-limit 2MiB > "$dir/o" 2>"$dir/e"
    same "MPMD 4 MiB : 2 MiB, $par" "$dir/o" "$dir/e" $? "$ref" &&
        has "MPMD $par: budgets" "rank 1 on .*: 2\.0 MiB \(host memory.*capped by --gpu-mem-limit\)" "$dir/e" &&
        has "MPMD $par: rank 0 larger" "rank 0: stage 0 layers \[0, 6\) .* of a 3\.[0-9] MiB budget" "$dir/e" &&
        has "MPMD $par: rank 1 smaller" "rank 1: stage 1 layers \[6, 8\) .* of a 1\.[0-9] MiB budget" "$dir/e"
done
# MPMD with the limit on one rank only: the other's budget is its measured memory
timeout 120 $MPI -np 1 "$T" $R --pp 2 --gpu-mem-limit 2MiB : -np 1 "$T" $R --pp 2 \
    > "$dir/o" 2>"$dir/e"
same "MPMD 2 MiB : none, --pp 2" "$dir/o" "$dir/e" $? "$ref" &&
    has "MPMD one limit: rank 1 larger" "rank 0: stage 0 layers \[0, [1-3]\)" "$dir/e"

# refusals: every rank exits non-zero within the timeout, rank 0 prints the message once
refuse() { # NAME REGEX ARGS...
    name=$1 re=$2
    shift 2
    start=$(date +%s)
    timeout 60 $MPI "$@" > "$dir/o" 2>"$dir/e"
    rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then bad "$name" "exit $rc (want a refusal)"; cat "$dir/e"; return 1; fi
    has "$name" "$re" "$dir/e" 1 || return 1
    [ -s "$dir/o" ] && bad "$name" "printed on stdout: $(cat "$dir/o")"
    echo "   ($(($(date +%s) - start)) s)"
}
refuse "context that no layout holds" \
    "^tessera run: auto: no layout of 2 ranks holds the model for a context of 512 x 1 sequence: .*The most context any layout holds is [0-9]+ \(tp [12] x pp [12]\): ask for that \(--ctx [0-9]+\)" \
    -np 2 "$T" $R --batch 512 --tp auto --gpu-mem-limit 3MiB
ctx=$(grep -Eo -- '--ctx [0-9]+' "$dir/e" | head -1 | cut -d' ' -f2)
if [ -n "$ctx" ]; then
    timeout 120 $MPI -np 2 "$T" $R --batch 512 --tp auto --gpu-mem-limit 3MiB --ctx "$ctx" \
        > "$dir/o" 2>"$dir/e"
    same "the suggested --ctx $ctx runs" "$dir/o" "$dir/e" $? "$ref"
    refuse "one position more is refused" "no layout of 2 ranks holds the model for a context of $((ctx + 1)) " \
        -np 2 "$T" $R --batch 512 --tp auto --gpu-mem-limit 3MiB --ctx $((ctx + 1))
fi
refuse "weights that do not fit" \
    "^tessera run: auto: no layout of 2 ranks holds the weights .*the ranks have 1\.0 MiB \(2 x 0\.5 MiB\).* [3-9] ranks of 0\.5 MiB would \(tp [12] x pp [2-9]\)" \
    -np 2 "$T" $R --tp auto --gpu-mem-limit 512KiB
refuse "step buffers alone" "step buffers for a batch of 512 tokens alone need at least" \
    -np 2 "$T" run -m "$dir/tiny.gguf" -p hello -n 1 --threads 1 --tp auto --gpu-mem-limit 1MiB
refuse "MPMD: one rank far too small" "Rank 1 \(.*\) is too small: the other 2 ranks alone would hold it" \
    -np 1 "$T" $R --tp auto --gpu-mem-limit 8MiB : -np 1 "$T" $R --tp auto --gpu-mem-limit 100KiB : \
    -np 1 "$T" $R --tp auto --gpu-mem-limit 8MiB

"$T" $R --tp banana > /dev/null 2>"$dir/e"
[ $? -eq 2 ] && has "malformed --tp" "--tp expects auto or an integer" "$dir/e"

# bench
timeout 120 $MPI -np 2 "$T" bench -m "$dir/tiny.gguf" -p 8 -n 4 --reps 1 --threads 1 --tp auto \
    --json > "$dir/o" 2>"$dir/e" && grep -q '"tp":1' "$dir/o" &&
    has "bench --tp auto" "^auto: tp 1 x pp 2 of 2 ranks" "$dir/e" 1 || { bad "bench --tp auto" "$(cat "$dir/o" "$dir/e")"; }

# tesserad: tp = "auto" in the config file, under mpirun -np 2
if [ -n "$D" ] && [ -x "$D" ]; then
    printf 'tp = "auto";\nslots = 1;\nthreads = 1;\n' > "$dir/d.conf"
    $MPI -np 2 "$D" -m "$dir/tiny.gguf" --listen 127.0.0.1:0 --config "$dir/d.conf" \
        > "$dir/d.out" 2>"$dir/d.err" &
    jpid=$!
    addr=""
    for _ in $(seq 1 300); do
        addr=$(sed -n 's/.* on \(127\.0\.0\.1:[0-9]*\) .*/\1/p' "$dir/d.out")
        [ -n "$addr" ] && break
        kill -0 "$jpid" 2>/dev/null || break
        sleep 0.2
    done
    if [ -z "$addr" ]; then
        bad "tesserad tp = auto" "did not start: $(cat "$dir/d.err")"
    else
        has "tesserad: auto from the config file" "^auto: tp 1 x pp 2 of 2 ranks" "$dir/d.err" 1
        "$T" generate --server "$addr" -p hello --temp 0 --max-tokens 8 --ignore-eos --json \
            > "$dir/g.json" 2>"$dir/e"
        [ "$(ids "$dir/g.json")" = "$ref" ] && echo "ok [tesserad auto]: same tokens" ||
            bad "tesserad auto" "ids $(ids "$dir/g.json") want $ref: $(cat "$dir/e")"
        kill -USR1 "$jpid"
    fi
    for _ in $(seq 1 300); do kill -0 "$jpid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$jpid" 2>/dev/null && { bad "tesserad auto" "did not stop"; kill -KILL "$jpid"; }
    jpid=""
    printf 'tp = "banana";\n' > "$dir/b.conf"
    "$D" -m "$dir/tiny.gguf" --listen 127.0.0.1:0 --config "$dir/b.conf" > /dev/null 2>"$dir/e"
    [ $? -eq 2 ] && has "tesserad: malformed tp" "b.conf:1: tp expects auto or an integer" "$dir/e"
fi
exit $fail
