#!/usr/bin/env bash
# gpu-check.sh: one run on the GPU machine (../shared/docs/gpu-machine.md): builds tessera
# with CUDA (Hopper), runs the `gpu` tests and the unit tests, then the benchmarks:
#   - bench_cuda_matmul: decode-kernel weight GB/s on the 27B matrix shapes vs a measured
#     device-to-device copy;
#   - tessera bench --backend cuda on random-weight models made there with tessera mkmodel
#     (270m q8_0; 27b q4_0, ~15 GB, skipped with GPU_CHECK_NO_27B=1) with the defaults (Q8
#     integer-dot decode, int8 tensor-core prefill, argmax on the device); the 270m also
#     with the fp32 kernels (TESSERA_CUDA_MMV=fp32 TESSERA_CUDA_GEMM=fp32 TESSERA_GPU_SAMPLING=0),
#     the 27b too with GPU_CHECK_BASELINE=1; both also with recorded decode steps
#     (CUDA graphs, on by default) and without them (TESSERA_CUDA_GRAPH=0); the 27b also with
#     the old attention kernel (TESSERA_CUDA_ATTN=basic; default auto = flash prefill and
#     split-K decode) for A/B, skipped with GPU_CHECK_ATTN_AB=0.
# Each check prints one line "PASS|FAIL|SKIP  name"; a summary of them comes at the end.
# GPU_CHECK_NO_UNIT=1 skips the CPU unit tests.
# Vision (optional, GPU_CHECK_NO_VISION=1 skips it): test_cuda_vision runs with the other
# `gpu` tests; then a random-weight ShieldGemma 2 of the real shape (tessera mkmodel: 4B
# text q4_0 + --mmproj SigLIP so400m f16, made while the tests run) is benchmarked with
# `tessera safety --bench` (images/s, per-image latency split by stage).
# The GPU machine lacks cmocka / jansson (and maybe OpenSSL headers): carry Debian's
# packages unpacked into .gpudeps/root (see the CUDA backend notes in the lead's docs):
#   mkdir -p .gpudeps && cd .gpudeps && apt-get download libcmocka0 libcmocka-dev \
#     libjansson4 libjansson-dev libssl-dev libssl3 && for f in *.deb; do dpkg -x $f root; done
# TESSERA_MODEL_270M=PATH (the real 270M GGUF) adds it to the GPU tests (greedy tokens as
# the CPU engine's, prefix-cache hits). The file is 253 MB; where a transfer limit is
# smaller, split it (`split -b 45000000`), carry the parts one per call into a folder
# outside the checkout while the machine stays warm, `cat` them there and check sha256sum.
# Logs go to $OUT when set (else build-gpu/logs). Exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here" || exit 1
B=${GPU_CHECK_BUILD:-$here/build-gpu}
# shellcheck source=SCRIPTDIR/gpu-lib.sh
. "$here/scripts/gpu-lib.sh" # LOG, jobs, fail, t0; gpu_deps
step() { echo; echo "== $*"; }
summary=()
record() { # record STATUS NAME
    printf '%s  %s\n' "$1" "$2"
    summary+=("$1  $2")
    case $1 in PASS|SKIP) ;; *) fail=1 ;; esac
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$LOG/gpu.txt"

gpu_deps
extra=("${GPU_EXTRA[@]}")

step "configure + build ($B)"
if ! cmake -S . -B "$B" -G Ninja -DTESSERA_RPC=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
        "${extra[@]}" > "$LOG/configure.log" 2>&1; then
    tail -40 "$LOG/configure.log"
    exit 1
fi
if ! ninja -C "$B" -j "$jobs" -k 0 > "$LOG/build.log" 2>&1; then
    grep -E "error|FAILED" "$LOG/build.log" | head -30
    record FAIL "build"
else
    record PASS "build"
fi
tail -2 "$LOG/build.log"
echo "build: $(( $(date +%s) - t0 )) s"
TS=$B/daemon/tessera
M=${GPU_CHECK_MODELS:-/tmp/tessera-models}
mkdir -p "$M"
mk27=
if [ "${GPU_CHECK_NO_27B:-0}" != 1 ]; then   # in the background, while the tests run
    ( ts=$(date +%s); "$TS" mkmodel --size 27b --type q4_0 -o "$M/27b-q4_0.gguf" > /dev/null &&
      echo "mkmodel 27b: $(( $(date +%s) - ts )) s" ) > "$LOG/mkmodel-27b.txt" 2>&1 &
    mk27=$!
fi

mkvis=
if [ "${GPU_CHECK_NO_VISION:-0}" != 1 ]; then   # in the background too (4B q4_0 + mmproj)
    ( ts=$(date +%s); "$TS" mkmodel --size 4b --type q4_0 -o "$M/sg4b-q4_0.gguf" --force > /dev/null &&
      "$TS" mkmodel --mmproj --size 4b -o "$M/sg4b-mmproj.gguf" --force &&
      echo "mkmodel 4b + mmproj: $(( $(date +%s) - ts )) s" ) > "$LOG/mkmodel-vision.txt" 2>&1 &
    mkvis=$!
fi

step "random models (tessera mkmodel)"
"$TS" mkmodel --size tiny --type q8_0 -o "$M/tiny-q8_0.gguf" > /dev/null || fail=1
"$TS" mkmodel --size tiny --type q4_0 -o "$M/tiny-q4_0.gguf" > /dev/null || fail=1
"$TS" mkmodel --size 270m --type q8_0 -o "$M/270m-q8_0.gguf" > /dev/null || fail=1
ls -la "$M"

step "ctest -L gpu"
export TESSERA_CUDA_CMP_MODELS="$M/tiny-q8_0.gguf:$M/tiny-q4_0.gguf:$M/270m-q8_0.gguf"
ctest --test-dir "$B" -L gpu --output-on-failure -V > "$LOG/ctest-gpu.log" 2>&1 || fail=1
grep -E "passed, |worst|^.*info:|FAIL|seed|tests passed|skipped|engine: device|topk vs|prefilter" \
    "$LOG/ctest-gpu.log" | grep -v "^[0-9]*: Test command" | head -80
# one line per CTest test: "N/M Test #K: name ....   Passed|***Failed|***Skipped"
while read -r line; do
    name=$(sed -E 's/.*Test +#[0-9]+: ([^ ]+).*/\1/' <<< "$line")
    case $line in
        *Passed*) record PASS "ctest $name" ;;
        *Skipped*|*"Not Run"*) record FAIL "ctest $name (skipped: no GPU seen?)" ;;
        *) record FAIL "ctest $name" ;;
    esac
done < <(grep -E "^ *[0-9]+/[0-9]+ Test +#" "$LOG/ctest-gpu.log")

if [ "${GPU_CHECK_NO_UNIT:-0}" != 1 ]; then
    step "ctest -L unit"
    if ctest --test-dir "$B" -L unit -j "$jobs" --output-on-failure > "$LOG/ctest-unit.log" 2>&1
    then record PASS "ctest -L unit"; else record FAIL "ctest -L unit"; fi
    tail -12 "$LOG/ctest-unit.log"
fi

step "tessera run: cpu vs cuda (greedy, reported), GPU sampling vs host sampling (must match)"
ids_of() { sed -E 's/.*"ids":\[([^]]*)\].*/\1/' "$1"; }
runj() { # runj NAME BACKEND [ARGS...]: tessera run --json into $LOG/run-NAME.json
    local name=$1 be=$2; shift 2
    "$TS" run -m "$M/tiny-q8_0.gguf" -p "hello world" -n 24 --json --backend "$be" "$@" \
        2> "$LOG/run-$name.err" | tail -1 > "$LOG/run-$name.json"
}
runj cpu cpu --temp 0
runj cuda cuda --temp 0 --verbose
TESSERA_GPU_SAMPLING=0 runj cuda-host cuda --temp 0
runj cuda-s cuda --temp 0.8 --top-k 40 --top-p 0.95 --seed 7
TESSERA_GPU_SAMPLING=0 runj cuda-s-host cuda --temp 0.8 --top-k 40 --top-p 0.95 --seed 7
for f in cpu cuda cuda-host cuda-s cuda-s-host; do echo "$f: $(ids_of "$LOG/run-$f.json")"; done
grep -E "device memory|sampling:" "$LOG/run-cuda.err"
if [ -s "$LOG/run-cuda.json" ] && [ "$(ids_of "$LOG/run-cuda.json")" = "$(ids_of "$LOG/run-cuda-host.json")" ]
then record PASS "greedy: device argmax ids == host argmax ids (tiny q8_0)"
else record FAIL "greedy: device argmax ids == host argmax ids (tiny q8_0)"; fi
if [ -s "$LOG/run-cuda-s.json" ] && [ "$(ids_of "$LOG/run-cuda-s.json")" = "$(ids_of "$LOG/run-cuda-s-host.json")" ]
then record PASS "sampled (top-k 40, top-p .95, seed 7): device top-64 == host full logits"
else record FAIL "sampled (top-k 40, top-p .95, seed 7): device top-64 == host full logits"; fi
if grep -q "top-k prefilter on the device" "$LOG/run-cuda.err"
then record PASS "tessera run uses GPU sampling on cuda"
else record FAIL "tessera run uses GPU sampling on cuda"; fi
if grep -q "device memory:" "$LOG/run-cuda.err"
then record PASS "tessera run -v reports device memory"
else record FAIL "tessera run -v reports device memory"; fi
[ "$(ids_of "$LOG/run-cpu.json")" = "$(ids_of "$LOG/run-cuda.json")" ] &&
    echo "info: tiny greedy cpu == cuda" || echo "info: tiny greedy cpu != cuda (random weights: near-ties; not a failure)"

step "bench_cuda_matmul"
if "$B/tests/bench_cuda_matmul" 10 2>&1 | tee "$LOG/bench-matmul.txt"
then record PASS "bench_cuda_matmul ran"; else record FAIL "bench_cuda_matmul ran"; fi

step "tessera bench --backend cuda: 270m q8_0, fp32 kernels, host sampling (baseline)"
if TESSERA_CUDA_MMV=fp32 TESSERA_CUDA_GEMM=fp32 TESSERA_GPU_SAMPLING=0 "$TS" bench \
    -m "$M/270m-q8_0.gguf" --backend cuda -p 512 -n 128 2>&1 | tee "$LOG/bench-270m-fp32.txt"
then record PASS "bench 270m baseline"; else record FAIL "bench 270m baseline"; fi
step "tessera bench --backend cuda: 270m q8_0, defaults (q8 decode, tensor-core prefill, device argmax)"
if "$TS" bench -m "$M/270m-q8_0.gguf" --backend cuda -p 512 -n 128 2>&1 | tee "$LOG/bench-270m-q8.txt"
then record PASS "bench 270m"; else record FAIL "bench 270m"; fi
step "tessera bench --backend cuda: 270m q8_0, defaults without recorded steps (TESSERA_CUDA_GRAPH=0)"
if TESSERA_CUDA_GRAPH=0 "$TS" bench -m "$M/270m-q8_0.gguf" --backend cuda -p 512 -n 128 2>&1 |
    tee "$LOG/bench-270m-graph.txt"
then record PASS "bench 270m no graph"; else record FAIL "bench 270m no graph"; fi

if [ -n "$mkvis" ]; then
    step "vision: tessera run --image, cpu vs cuda (tiny multimodal fixture, greedy, exact fp32)"
    for be in cpu cuda; do   # cpu: --reference (exact fp32 like the cuda run; the fast path's
        # fp16 GELU table could flip a near-tie of the random tiny model)
        ref=(); [ $be = cpu ] && ref=(--reference)
        TESSERA_CUDA_GEMM=fp32 "$TS" run "${ref[@]}" -m tests/fixtures/vision/tiny_text.gguf --chat \
            -p "Describe this:" --image tests/fixtures/image/rgb_37x23.png \
            --vision tests/fixtures/vision/tiny_mmproj.gguf --vision-ids 500,501,502 -n 16 \
            --temp 0 --json --backend $be 2> "$LOG/run-image-$be.err" | tail -1 > "$LOG/run-image-$be.json"
    done
    echo "cpu:  $(ids_of "$LOG/run-image-cpu.json")"; echo "cuda: $(ids_of "$LOG/run-image-cuda.json")"
    if [ -s "$LOG/run-image-cuda.json" ] &&
        [ "$(ids_of "$LOG/run-image-cpu.json")" = "$(ids_of "$LOG/run-image-cuda.json")" ]
    then record PASS "tessera run --image: cuda ids == cpu ids (tiny)"
    else record FAIL "tessera run --image: cuda ids == cpu ids (tiny)"; cat "$LOG/run-image-cuda.err"; fi
    step "vision: tessera safety --bench --backend cuda (random ShieldGemma 2: 4B q4_0 + SigLIP so400m)"
    if wait "$mkvis"; then
        cat "$LOG/mkmodel-vision.txt"
        "$B/tests/bench_cuda_vision" 10 2>&1 | tee "$LOG/bench-vision-kernels.txt" ||
            record FAIL "bench_cuda_vision ran"
        # the synthetic vocabulary has the image markers but no Yes / No: --ids names them;
        # PNG / WebP inputs: the carried .gpudeps libjpeg (62) may not match the machine's
        # jpeglib.h (80), which fails every JPEG
        if "$TS" safety --bench "${GPU_CHECK_VISION_ROUNDS:-10}" -m "$M/sg4b-q4_0.gguf" \
            --vision "$M/sg4b-mmproj.gguf" --backend cuda --ids 255999,256000,0,1000,1001 \
            tests/fixtures/image/rgb_37x23.png tests/fixtures/image/lossy_45x31.webp 2>&1 |
            tee "$LOG/bench-safety.txt"
        then record PASS "safety bench (cuda, 4B + so400m)"
        else record FAIL "safety bench (cuda, 4B + so400m)"; fi
    else
        cat "$LOG/mkmodel-vision.txt"
        record FAIL "mkmodel 4b + mmproj for the safety bench"
    fi
    rm -f "$M/sg4b-q4_0.gguf" "$M/sg4b-mmproj.gguf"
fi

if [ -n "$mk27" ]; then
    wait "$mk27" || fail=1
    cat "$LOG/mkmodel-27b.txt"
    step "tessera bench --backend cuda: 27b q4_0, defaults (q8 decode, tensor-core prefill, device argmax)"
    if "$TS" bench -m "$M/27b-q4_0.gguf" --backend cuda -p 512 -n 128 \
        --reps "${GPU_CHECK_REPS:-2}" 2>&1 | tee "$LOG/bench-27b-q8.txt"
    then record PASS "bench 27b"; else record FAIL "bench 27b"; fi
    step "tessera bench --backend cuda: 27b q4_0, tg128 without recorded steps (TESSERA_CUDA_GRAPH=0)"
    if TESSERA_CUDA_GRAPH=0 "$TS" bench -m "$M/27b-q4_0.gguf" --backend cuda -p 0 -n 128 \
        --reps "${GPU_CHECK_REPS:-2}" 2>&1 | tee "$LOG/bench-27b-graph.txt"
    then record PASS "bench 27b no graph"; else record FAIL "bench 27b no graph"; fi
    if [ "${GPU_CHECK_ATTN_AB:-1}" = 1 ]; then   # attention kernels: the old one for A/B
        step "tessera bench --backend cuda: 27b q4_0, TESSERA_CUDA_ATTN=basic (per-(token, head) attention)"
        if TESSERA_CUDA_ATTN=basic "$TS" bench -m "$M/27b-q4_0.gguf" --backend cuda -p 512 -n 128 \
            --reps "${GPU_CHECK_REPS:-2}" 2>&1 | tee "$LOG/bench-27b-attn-basic.txt"
        then record PASS "bench 27b attn basic"; else record FAIL "bench 27b attn basic"; fi
    fi
    if [ "${GPU_CHECK_BASELINE:-0}" = 1 ]; then
        step "tessera bench --backend cuda: 27b q4_0, TESSERA_CUDA_GEMM=fp32 (old prefill)"
        if TESSERA_CUDA_GEMM=fp32 "$TS" bench -m "$M/27b-q4_0.gguf" --backend cuda -p 512 -n 0 \
            --reps 2 2>&1 | tee "$LOG/bench-27b-fp32.txt"
        then record PASS "bench 27b fp32 prefill"; else record FAIL "bench 27b fp32 prefill"; fi
    fi
    rm -f "$M/27b-q4_0.gguf"
fi

echo
echo "== summary"
for l in "${summary[@]}"; do echo "$l"; done
echo "total: $(( $(date +%s) - t0 )) s; $([ $fail = 0 ] && echo OK || echo FAILED)"
exit $fail
