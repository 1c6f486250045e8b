#!/usr/bin/env bash
# gpu-check.sh: one run on the GPU machine (../shared/docs/gpu-machine.md): builds tessera
# with CUDA (Hopper), runs the `gpu` tests and the unit tests, then the benchmarks:
#   - bench_cuda_matmul: decode-kernel weight GB/s on the 27B matrix shapes vs a measured
#     device-to-device copy;
#   - tessera bench --backend cuda on random-weight models made there with tessera mkmodel
#     (270m q8_0; 27b q4_0, ~15 GB, skipped with GPU_CHECK_NO_27B=1), each with the Q8
#     integer-dot decode (default) and with TESSERA_CUDA_MMV=fp32 (the exact fp32 kernel).
# GPU_CHECK_NO_UNIT=1 skips the CPU unit tests.
# The GPU machine lacks cmocka / jansson (and maybe OpenSSL headers): carry Debian's
# packages unpacked into .gpudeps/root (see the CUDA backend notes in the lead's docs):
#   mkdir -p .gpudeps && cd .gpudeps && apt-get download libcmocka0 libcmocka-dev \
#     libjansson4 libjansson-dev libssl-dev libssl3 && for f in *.deb; do dpkg -x $f root; done
# Logs go to $OUT when set (else build-gpu/logs). Exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here" || exit 1
B=${GPU_CHECK_BUILD:-$here/build-gpu}
LOG=${OUT:-$B/logs}
mkdir -p "$LOG"
jobs=$(nproc 2>/dev/null || echo 4)
fail=0
step() { echo; echo "== $*"; }
t0=$(date +%s)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$LOG/gpu.txt"

extra=()
D=$here/.gpudeps/root
if [ -d "$D" ] && ! pkg-config --exists cmocka jansson 2>/dev/null; then
    export PKG_CONFIG_LIBDIR=$D/usr/lib/x86_64-linux-gnu/pkgconfig
    export PKG_CONFIG_SYSROOT_DIR=$D
    export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$D/usr/lib/x86_64-linux-gnu
    if [ ! -f /usr/include/openssl/evp.h ]; then
        extra+=(-DOPENSSL_ROOT_DIR="$D/usr" -DOPENSSL_INCLUDE_DIR="$D/usr/include"
                -DOPENSSL_CRYPTO_LIBRARY="$D/usr/lib/x86_64-linux-gnu/libcrypto.so"
                -DCMAKE_C_FLAGS="-I$D/usr/include/x86_64-linux-gnu")
    fi
fi

step "configure + build ($B)"
if ! cmake -S . -B "$B" -G Ninja -DTESSERA_RPC=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
        "${extra[@]}" > "$LOG/configure.log" 2>&1; then
    tail -40 "$LOG/configure.log"
    exit 1
fi
if ! ninja -C "$B" -j "$jobs" -k 0 > "$LOG/build.log" 2>&1; then
    grep -E "error|FAILED" "$LOG/build.log" | head -30
    fail=1
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

step "random models (tessera mkmodel)"
"$TS" mkmodel --size tiny --type q8_0 -o "$M/tiny-q8_0.gguf" > /dev/null || fail=1
"$TS" mkmodel --size tiny --type q4_0 -o "$M/tiny-q4_0.gguf" > /dev/null || fail=1
"$TS" mkmodel --size 270m --type q8_0 -o "$M/270m-q8_0.gguf" > /dev/null || fail=1
ls -la "$M"

step "ctest -L gpu"
export TESSERA_CUDA_CMP_MODELS="$M/tiny-q8_0.gguf:$M/tiny-q4_0.gguf:$M/270m-q8_0.gguf"
ctest --test-dir "$B" -L gpu --output-on-failure -V > "$LOG/ctest-gpu.log" 2>&1 || fail=1
grep -E "passed, |worst|^.*info:|FAIL|seed|Test +#|tests passed|skipped" "$LOG/ctest-gpu.log" | head -80

if [ "${GPU_CHECK_NO_UNIT:-0}" != 1 ]; then
    step "ctest -L unit"
    ctest --test-dir "$B" -L unit -j "$jobs" --output-on-failure > "$LOG/ctest-unit.log" 2>&1 || fail=1
    tail -12 "$LOG/ctest-unit.log"
fi

step "tiny model: tessera run cpu vs cuda (greedy)"
for be in cpu cuda; do
    "$TS" run -m "$M/tiny-q8_0.gguf" -p "hello world" -n 16 --temp 0 --json --backend $be \
        2> "$LOG/run-$be.err" | tail -1 > "$LOG/run-$be.json" || fail=1
    head -c 400 "$LOG/run-$be.json"; echo
done

step "bench_cuda_matmul"
"$B/tests/bench_cuda_matmul" 20 2>&1 | tee "$LOG/bench-matmul.txt" || fail=1

for mmv in fp32 q8; do
    step "tessera bench --backend cuda: 270m q8_0, TESSERA_CUDA_MMV=$mmv"
    TESSERA_CUDA_MMV=$mmv "$TS" bench -m "$M/270m-q8_0.gguf" --backend cuda -p 512 -n 128 2>&1 |
        tee "$LOG/bench-270m-$mmv.txt" || fail=1
done

if [ -n "$mk27" ]; then
    wait "$mk27" || fail=1
    cat "$LOG/mkmodel-27b.txt"
    for mmv in fp32 q8; do
        step "tessera bench --backend cuda: 27b q4_0, TESSERA_CUDA_MMV=$mmv"
        TESSERA_CUDA_MMV=$mmv "$TS" bench -m "$M/27b-q4_0.gguf" --backend cuda -p 512 -n 128 \
            --reps "${GPU_CHECK_REPS:-3}" 2>&1 | tee "$LOG/bench-27b-$mmv.txt" || fail=1
    done
    rm -f "$M/27b-q4_0.gguf"
fi

echo
echo "total: $(( $(date +%s) - t0 )) s; $([ $fail = 0 ] && echo OK || echo FAILED)"
exit $fail
