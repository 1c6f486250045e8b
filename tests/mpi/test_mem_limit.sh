#!/bin/sh
# test_mem_limit.sh TESSERA MPIEXEC: --gpu-mem-limit on CPU ranks (the same accounting as
# on a GPU: weights, KV and step buffers of each rank's engine). On the tiny mkmodel model
# (1.3 MiB of weights, 2.1 MiB of KV for 512 tokens, 2.5 MiB of step buffers):
#   - one rank at 3 MiB: refused, naming the KV cache and the limit;
#   - pp 2 at 1 MiB: the step buffers alone do not fit; at 3.5 MiB the plan refuses (its
#     budget is the limit less the step buffers);
#   - pp 2 and tp 2 at 5 MiB (one rank would need 5.9): run, and generate the same greedy
#     tokens as one rank without a limit;
#   - a malformed size: usage error naming the flag.
# shellcheck disable=SC2086 # $par / $RUN / $MPI hold several words on purpose
set -u
T=$1
MPIEXEC=${2:-mpirun}
command -v "$MPIEXEC" >/dev/null 2>&1 || exit 77
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$T" mkmodel --size tiny --vocab 1024 --type q8_0 -o "$dir/tiny.gguf" >/dev/null 2>&1 || {
    echo "mkmodel failed"; exit 1; }
fail=0
MPI="$MPIEXEC --oversubscribe --allow-run-as-root"
RUN="run -m $dir/tiny.gguf -p hello --temp 0 -n 8 --threads 1 --json"

expect() { # NAME WANT_RC REGEX FILE RC
    if { [ "$2" = nz ] && [ "$5" -eq 0 ]; } || { [ "$2" != nz ] && [ "$5" -ne "$2" ]; }; then
        echo "FAIL [$1]: exit $5, expected $2"; cat "$4"; fail=1; return
    fi
    if ! grep -Eq -- "$3" "$4"; then
        echo "FAIL [$1]: no /$3/ in:"; cat "$4"; fail=1; return
    fi
    echo "ok [$1]: $(grep -Eo -- "$3" "$4" | head -1)"
}

"$T" $RUN > "$dir/ref.json" 2>"$dir/ref.err" || { echo "reference run failed"; cat "$dir/ref.err"; exit 1; }
ref=$(grep -o '"ids":\[[0-9,]*\]' "$dir/ref.json")
echo "reference (one rank, no limit): $ref"

"$T" $RUN --gpu-mem-limit 3MiB > /dev/null 2>"$dir/e1"
expect "one rank, 3 MiB" 1 "the KV cache for 512 tokens of context \(2\.1 MiB\) does not fit the memory limit of 3\.0 MiB" "$dir/e1" $?

timeout 120 $MPI -np 2 "$T" $RUN --pp 2 --gpu-mem-limit 1MiB > /dev/null 2>"$dir/e2"
expect "pp 2, 1 MiB" nz "the step buffers for a batch of 512 tokens alone need about 2\.7 MiB, more than the memory limit of 1\.0 MiB" "$dir/e2" $?
timeout 120 $MPI -np 2 "$T" $RUN --pp 2 --gpu-mem-limit 3.5MiB > /dev/null 2>"$dir/e2"
expect "pp 2, 3.5 MiB" nz "plan: rank 0 .* but has .*--gpu-mem-limit 3\.5 MiB less the step buffers" "$dir/e2" $?

for par in "--pp 2" "--tp 2"; do
    timeout 120 $MPI -np 2 "$T" $RUN $par --gpu-mem-limit 5MiB > "$dir/o3" 2>"$dir/e3"
    rc=$?
    got=$(grep -o '"ids":\[[0-9,]*\]' "$dir/o3")
    if [ $rc -ne 0 ] || [ "$got" != "$ref" ]; then
        echo "FAIL [$par, 5 MiB]: exit $rc, ids $got (want $ref)"; cat "$dir/e3"; fail=1
    else
        echo "ok [$par, 5 MiB]: same greedy tokens as one rank"
    fi
done

"$T" $RUN --gpu-mem-limit 12XB > /dev/null 2>"$dir/e4"
expect "malformed size" 2 "--gpu-mem-limit expects a size in bytes such as 12GiB" "$dir/e4" $?
exit $fail
