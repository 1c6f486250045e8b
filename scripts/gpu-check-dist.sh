#!/usr/bin/env bash
# gpu-check-dist.sh: one run on a 2-GPU machine (2x H100 / H200; ../shared/docs/gpu-machine.md)
# that checks and benchmarks distributed execution over NCCL (docs/distributed.md):
#   1. builds tessera + test_parallel with CUDA (sm_90) and NCCL (TESSERA_NCCL=ON);
#   2. correctness: mpirun -np 2 test_parallel --backend cuda for tp 2 and pp 2: rank 0's
#      single-GPU engine against the 2-GPU engine on the HF fixtures, tessera mkmodel tiny
#      q8_0 / q4_0 and the real 270M when TESSERA_MODEL_270M points at it (logits within
#      1e-4 relative, greedy tokens identical); then `tessera run --temp 0` on 1 GPU vs
#      tp 2 vs pp 2 (same ids);
#   3. benchmarks on the random-weight 27B Q4_0 (tessera mkmodel, made in the background
#      while 1-2 run): tp 1 vs tp 2 vs pp 2 (bench --greedy: token ids come back, pp 2
#      pipelines 2 micro-batches): pp512, tg32 (single stream), aggregate decode of 64
#      streams (16-token prompts, 32 steps);
#   4. the 27B on 2 ranks each capped at --gpu-mem-limit 12GiB with a 32768-token KV cache
#      (pp 2), with nvidia-smi's memory use sampled during the run;
#   5. communication per token (TESSERA_COMM_PROFILE=1 runs for tp 2 / pp 2);
#   6. the automatic plan on the 27B: --tp auto with per-rank limits 16GiB : 9GiB (MPMD:
#      uneven stages in the printed plan) and a refusal at 6GiB each.
# (--tp auto on the tiny model is part of step 2's run comparison.)
# NCCL_NVLS_ENABLE=0 throughout (NVLink multicast must stay off on these machines).
# Budget: about 8 minutes; later steps are skipped (and say so) when time runs short
# (GPU_CHECK_BUDGET seconds, default 470). GPU_CHECK_NO_27B=1 skips 3-4.
# Dependencies: like scripts/gpu-check.sh, cmocka / jansson come from a carried
# .gpudeps/root (apt-get download + dpkg -x; see there). Logs go to $OUT (else
# build-gpu/logs). Exits non-zero on any failure.
# shellcheck disable=SC2086 # $par / $RUN / $MPI hold several words on purpose
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here" || exit 1
B=${GPU_CHECK_BUILD:-$here/build-gpu}
# shellcheck source=SCRIPTDIR/gpu-lib.sh
. "$here/scripts/gpu-lib.sh"
gpu_mpi 2
gpu_require 2
gpu_build tessera test_parallel
TS=$B/daemon/tessera
TP=$B/tests/test_parallel
M=${GPU_CHECK_MODELS:-/tmp/tessera-models}
mkdir -p "$M"
M27=$M/27b-q4_0.gguf
mk27=
if [ "${GPU_CHECK_NO_27B:-0}" != 1 ]; then   # in the background, while the checks run
    ( s=$(date +%s); "$TS" mkmodel --size 27b --type q4_0 --force -o "$M27" > /dev/null &&
      echo "mkmodel 27b: $(( $(date +%s) - s )) s" ) > "$LOG/mkmodel-27b.txt" 2>&1 &
    mk27=$!
fi

step "tiny models (tessera mkmodel)"
"$TS" mkmodel --size tiny --type q8_0 --force -o "$M/tiny-q8_0.gguf" > /dev/null || bad "mkmodel tiny q8_0"
"$TS" mkmodel --size tiny --type q4_0 --force -o "$M/tiny-q4_0.gguf" > /dev/null || bad "mkmodel tiny q4_0"
m270=${TESSERA_MODEL_270M:-}
[ -n "$m270" ] && [ ! -f "$m270" ] && m270=
if [ -n "$m270" ]; then export TESSERA_MODEL_270M=$m270; echo "real 270M: $m270"
else unset TESSERA_MODEL_270M; echo "real 270M: not present (TESSERA_MODEL_270M unset): skipped"; fi

# The comparisons use the exact fp32 decode matmul (TESSERA_CUDA_MMV=fp32): the default Q8
# kernel serves n_tok <= 8 only, so micro-batches and TP slices would change which kernel
# (and rounding) a row gets, and a near-tie of a random model could flip a greedy token.
export TESSERA_CUDA_MMV=fp32
for par in "--tp 2 --pp 1" "--tp 1 --pp 2"; do
    tag=$(echo "$par" | tr -d ' -')
    step "test_parallel --backend cuda $par (1 GPU vs 2 GPUs over NCCL)"
    timeout 180 "${MPI[@]}" -x TESSERA_CUDA_MMV ${m270:+-x TESSERA_MODEL_270M} "$TP" $par --backend cuda \
        --models "$M/tiny-q8_0.gguf:$M/tiny-q4_0.gguf" > "$LOG/test-parallel-$tag.log" 2>&1
    rc=$?
    grep -E "^(ok|FAIL|transport|plan:)|passed, |rank [0-9]|NCCL|error" "$LOG/test-parallel-$tag.log" | head -60
    [ $rc = 0 ] || bad "test_parallel $par (exit $rc; log $LOG/test-parallel-$tag.log)"
done

step "tessera run --temp 0: 1 GPU vs tp 2 vs pp 2 over NCCL vs pp 2 over MPI (32 tokens)"
for mdl in "$M/tiny-q8_0.gguf" ${m270:+"$m270"}; do
    name=$(basename "$mdl" .gguf)
    timeout 60 "$TS" run -m "$mdl" -p "The capital of France is" -n 32 --temp 0 --json \
        --backend cuda > "$LOG/run-$name-1gpu.json" 2> "$LOG/run-$name-1gpu.err" || bad "run 1 GPU $name"
    ref=$(run_ids "$LOG/run-$name-1gpu.json")
    echo "$name 1 GPU: $ref"
    for par in "--tp 2" "--pp 2" "--pp 2 --tp 1" "--tp auto"; do
        tag=$(echo "$par" | tr -d ' -')
        # the last one: GPU ranks over MPI with host staging (TESSERA_TRANSPORT=mpi)
        [ "$par" = "--pp 2 --tp 1" ] && export TESSERA_TRANSPORT=mpi || export TESSERA_TRANSPORT=nccl
        timeout 90 "${MPI[@]}" -x TESSERA_CUDA_MMV -x TESSERA_TRANSPORT "$TS" run -m "$mdl" -p "The capital of France is" -n 32 --temp 0 \
            --json --backend cuda $par --verbose > "$LOG/run-$name-$tag.json" 2> "$LOG/run-$name-$tag.err"
        rc=$?
        got=$(run_ids "$LOG/run-$name-$tag.json")
        if [ $rc != 0 ] || [ -z "$ref" ] || [ "$got" != "$ref" ]; then
            bad "$name $par: exit $rc, $got (1 GPU: $ref)"
            grep -v "^plan\|^  rank" "$LOG/run-$name-$tag.err" | head -20
        else
            echo "$name $par ($TESSERA_TRANSPORT): identical"
        fi
    done
done
unset TESSERA_TRANSPORT

unset TESSERA_CUDA_MMV   # benchmarks: the default (Q8 integer-dot decode) kernels
if [ -n "$mk27" ]; then
    step "waiting for the 27B file"
    wait "$mk27" || bad "mkmodel 27b"
    cat "$LOG/mkmodel-27b.txt"
    ls -la "$M27" 2>&1
    # one load each: pp512, tg32 and 64 streams (16-token prompts, 32 steps)
    # --greedy: ids come back instead of logits (a greedy server; pp 2 then pipelines the
    # 64-stream steps in 2 micro-batches)
    BENCH=(bench -m "$M27" --backend cuda -p 512 -n 32 --streams 64 --stream-prompt 16 --reps 1 --greedy)
    for cfg in tp1 tp2 pp2; do
        if [ "$(left)" -lt 100 ]; then echo "SKIPPED 27B $cfg (only $(left) s of the budget left)"; continue; fi
        step "27B Q4_0 bench $cfg"
        case $cfg in
            tp1) timeout "$(tmo 200)" "$TS" "${BENCH[@]}" > "$LOG/bench-27b-$cfg.txt" 2>&1 ;;
            tp2) timeout "$(tmo 200)" "${MPI[@]}" "$TS" "${BENCH[@]}" --tp 2 > "$LOG/bench-27b-$cfg.txt" 2>&1 ;;
            pp2) timeout "$(tmo 200)" "${MPI[@]}" "$TS" "${BENCH[@]}" --pp 2 > "$LOG/bench-27b-$cfg.txt" 2>&1 ;;
        esac
        rc=$?
        grep -vE "^  rank|^plan" "$LOG/bench-27b-$cfg.txt" | grep -v "^$" | head -30
        [ $rc = 0 ] || bad "27B bench $cfg (exit $rc)"
    done
    if [ "$(left)" -lt 40 ]; then
        echo "SKIPPED the 12 GiB run (only $(left) s left)"
    else
        step "27B on 2 ranks at --gpu-mem-limit 12GiB, 32768-token KV cache (pp 2)"
        gpu_mem_sampler "$LOG/mem-12g-samples.txt"
        timeout "$(tmo 150)" "${MPI[@]}" "$TS" bench -m "$M27" --backend cuda --pp 2 --gpu-mem-limit 12GiB \
            --ctx 32768 -p 512 -n 32 --reps 1 --greedy > "$LOG/bench-27b-12g.txt" 2>&1
        rc=$?
        grep -v "^$" "$LOG/bench-27b-12g.txt" | head -30
        [ $rc = 0 ] || bad "12 GiB run (exit $rc)"
        gpu_mem_peak "$LOG/mem-12g-samples.txt"
    fi
    if [ "$(left)" -lt 90 ]; then
        echo "SKIPPED the --tp auto runs (only $(left) s left)"
    else
        step "27B --tp auto: MPMD --gpu-mem-limit 16GiB : 9GiB (uneven stages), 16 tokens"
        RUN27=(run -m "$M27" --backend cuda -p "The capital of France is" -n 16 --temp 0 --json --tp auto)
        timeout "$(tmo 150)" "${MPIX[@]}" -np 1 "$TS" "${RUN27[@]}" --gpu-mem-limit 16GiB : \
            -np 1 "$TS" "${RUN27[@]}" --gpu-mem-limit 9GiB > "$LOG/auto-27b.json" 2> "$LOG/auto-27b.err"
        rc=$?
        grep -E "^memory|^  rank|^auto|^plan" "$LOG/auto-27b.err" | cut -c1-220
        [ $rc = 0 ] && run_ids "$LOG/auto-27b.json" || bad "27B --tp auto 16GiB : 9GiB (exit $rc)"
        step "27B --tp auto at 6GiB per rank: refused on both ranks"
        timeout 60 "${MPI[@]}" "$TS" "${RUN27[@]}" --gpu-mem-limit 6GiB > /dev/null 2> "$LOG/auto-27b-refused.err"
        rc=$?
        grep "auto: no layout" "$LOG/auto-27b-refused.err" | cut -c1-400
        [ $rc != 0 ] && [ $rc != 124 ] && grep -q "auto: no layout of 2 ranks holds the weights" \
            "$LOG/auto-27b-refused.err" || bad "27B --tp auto at 6GiB: exit $rc, no refusal"
    fi
    for cfg in tp2 pp2; do
        if [ "$(left)" -lt 50 ]; then echo "SKIPPED comm profile $cfg (only $(left) s left)"; continue; fi
        step "27B communication profile $cfg (TESSERA_COMM_PROFILE=1, tg32)"
        par="--${cfg:0:2} 2"
        TESSERA_COMM_PROFILE=1 timeout "$(tmo 120)" "${MPI[@]}" -x TESSERA_COMM_PROFILE "$TS" bench -m "$M27" \
            --backend cuda -p 0 -n 32 --reps 1 --greedy $par > "$LOG/comm-27b-$cfg.txt" 2>&1 || bad "comm profile $cfg"
        grep -E "^\| gemma|^comm" "$LOG/comm-27b-$cfg.txt"
    done
    rm -f "$M27"
fi

echo
echo "total: $(el) s; $([ $fail = 0 ] && echo OK || echo FAILED)"
exit $fail
