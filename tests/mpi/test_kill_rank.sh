#!/bin/sh
# test_kill_rank.sh TESSERA MPIEXEC: a rank of `mpirun -np 2 tessera run --pp 2` that stops
# answering (SIGSTOP) or dies (SIGKILL) mid-generation must end the job within ~20 s (no
# hang) with a message naming the rank and the operation. TESSERA_COMM_TIMEOUT=3.
set -u
T=$1
MPIEXEC=${2:-mpirun}
command -v "$MPIEXEC" >/dev/null 2>&1 || exit 77
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$T" mkmodel --size tiny --vocab 1024 --type q8_0 -o "$dir/tiny.gguf" >/dev/null 2>&1 || {
    echo "mkmodel failed"; exit 1; }
fail=0

# rank_pid MPIRUN_PID RANK: the pid of the child of mpirun with that world rank
rank_pid() {
    for c in $(pgrep -P "$1"); do
        if tr '\0' '\n' < /proc/"$c"/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$c"; return 0
        fi
    done
    return 1
}

run_case() { # SIGNAL EXPECT_REGEX
    sig=$1 expect=$2
    TESSERA_COMM_TIMEOUT=3 "$MPIEXEC" -np 2 --oversubscribe --allow-run-as-root \
        "$T" run -m "$dir/tiny.gguf" -p "hello world" --temp 0 -n 480 --threads 1 \
        --reference --pp 2 --json >"$dir/out" 2>"$dir/err" &
    mp=$!
    pid=""
    for _ in $(seq 1 100); do # up to 10 s for the ranks to start
        pid=$(rank_pid "$mp" 1) && break
        sleep 0.1
    done
    if [ -z "$pid" ]; then
        echo "FAIL [$sig]: rank 1 not found"; kill "$mp" 2>/dev/null; fail=1; return
    fi
    sleep 2 # mid-run
    if ! kill -0 "$mp" 2>/dev/null; then
        echo "FAIL [$sig]: the job ended before the kill (generation too short)"; fail=1; return
    fi
    t0=$(date +%s)
    kill -s "$sig" "$pid"
    waited=0
    while kill -0 "$mp" 2>/dev/null && [ $waited -lt 40 ]; do sleep 0.5; waited=$((waited + 1)); done
    t1=$(date +%s)
    if kill -0 "$mp" 2>/dev/null; then
        echo "FAIL [$sig]: the job still runs 20 s after the kill"
        kill -s KILL "$pid" 2>/dev/null; kill "$mp" 2>/dev/null; wait "$mp" 2>/dev/null
        fail=1; return
    fi
    wait "$mp"; rc=$?
    echo "[$sig] job ended $((t1 - t0)) s after the kill, exit $rc; stderr:"
    sed 's/^/    /' "$dir/err" | head -20
    if [ "$rc" -eq 0 ]; then echo "FAIL [$sig]: exit status 0"; fail=1; fi
    if ! grep -Eq "$expect" "$dir/err"; then
        echo "FAIL [$sig]: stderr does not match /$expect/"; fail=1
    else
        echo "ok [$sig]: message names the rank and the operation"
    fi
}

# a stopped rank: our deadline fires on rank 0 (waiting for rank 1's logits)
run_case STOP "rank 0: (receive of logits .* from rank 1|.*rank 1).* did not complete within 3.0 s"
# a dead rank: Open MPI's launcher notices and ends the job, naming the rank
run_case KILL "rank 1|rank 0: .*rank 1"
[ $fail -eq 0 ] && echo "kill test passed" || echo "kill test FAILED"
exit $fail
