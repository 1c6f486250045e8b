#!/usr/bin/env bash
# gpu-lib.sh: shared by the multi-GPU check scripts (gpu-check-dist.sh, gpu-check-4.sh);
# sourced, not run. Expects $here (the repository root) and $B (the build dir); sets LOG,
# jobs, fail, t0 and the step / budget helpers, the NCCL environment and the MPI launcher
# for NP ranks, and builds with the carried Debian packages in .gpudeps/root (see
# scripts/gpu-check.sh for how that folder is made).
# shellcheck shell=bash disable=SC2034,SC2154 # variables shared with the sourcing script
LOG=${OUT:-$B/logs}
mkdir -p "$LOG"
jobs=$(nproc 2>/dev/null || echo 4)
budget=${GPU_CHECK_BUDGET:-470}
fail=0
t0=$(date +%s)
el() { echo $(( $(date +%s) - t0 )); }
step() { echo; echo "== [$(el) s] $*"; }
left() { echo $(( budget - $(el) )); }
# tmo N: a step's timeout: N seconds, or what is left of the budget (at least 20)
tmo() { local l; l=$(left); [ "$l" -gt "$1" ] && echo "$1" || echo $(( l > 20 ? l : 20 )); }
bad() { echo "FAILED: $*"; fail=1; }

export NCCL_NVLS_ENABLE=0
export TESSERA_COMM_TIMEOUT=${TESSERA_COMM_TIMEOUT:-60}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}

# gpu_mpi NP: the mpirun command line for NP ranks on this host (array MPI), and without
# -np (array MPIX, for MPMD lines: "${MPIX[@]}" -np 1 A : -np 1 B)
gpu_mpi() {
    MPIX=(mpirun --allow-run-as-root --oversubscribe --bind-to none
          -x NCCL_NVLS_ENABLE -x TESSERA_COMM_TIMEOUT -x NCCL_DEBUG -x LD_LIBRARY_PATH)
    MPI=("${MPIX[@]}" -np "$1")
}

# gpu_require NP: prints the GPUs; a failure when fewer than NP or no mpirun
gpu_require() {
    step "GPUs"
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$LOG/gpu.txt"
    nvidia-smi topo -m > "$LOG/topo.txt" 2>&1 && head -6 "$LOG/topo.txt"
    local n
    n=$(nvidia-smi -L 2>/dev/null | wc -l)
    [ "$n" -ge "$1" ] || bad "need $1 GPUs, found $n"
    command -v mpirun >/dev/null || bad "no mpirun"
    mpirun --version 2>&1 | head -1
}

# gpu_deps: where the machine lacks cmocka / jansson, uses the carried Debian packages in
# .gpudeps/root (pkg-config and library paths exported; extra CMake flags for OpenSSL in
# the array GPU_EXTRA, empty otherwise)
gpu_deps() {
    GPU_EXTRA=()
    local D=$here/.gpudeps/root
    if [ -d "$D" ] && ! pkg-config --exists cmocka jansson 2>/dev/null; then
        export PKG_CONFIG_LIBDIR=$D/usr/lib/x86_64-linux-gnu/pkgconfig
        export PKG_CONFIG_SYSROOT_DIR=$D
        export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$D/usr/lib/x86_64-linux-gnu
        if [ ! -f /usr/include/openssl/evp.h ]; then
            GPU_EXTRA+=(-DOPENSSL_ROOT_DIR="$D/usr" -DOPENSSL_INCLUDE_DIR="$D/usr/include"
                        -DOPENSSL_CRYPTO_LIBRARY="$D/usr/lib/x86_64-linux-gnu/libcrypto.so"
                        -DCMAKE_C_FLAGS="-I$D/usr/include/x86_64-linux-gnu")
        fi
    fi
}

# gpu_build TARGET...: configure (CUDA sm_90, NCCL, no gRPC) and build; exits on failure
gpu_build() {
    gpu_deps
    local extra=("${GPU_EXTRA[@]}")
    step "configure + build ($B): $*"
    if ! cmake -S "$here" -B "$B" -G Ninja -DTESSERA_RPC=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
            -DTESSERA_NCCL=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo "${extra[@]}" > "$LOG/configure.log" 2>&1; then
        tail -40 "$LOG/configure.log"
        echo "total: $(el) s; FAILED (configure)"
        exit 1
    fi
    grep -E "tessera: (CUDA|MPI|NCCL)" "$LOG/configure.log"
    if ! ninja -C "$B" -j "$jobs" "$@" > "$LOG/build.log" 2>&1; then
        grep -E "error|FAILED" "$LOG/build.log" | head -30
        echo "total: $(el) s; FAILED (build)"
        exit 1
    fi
    echo "build: $(el) s"
}

# gpu_mem_sampler FILE: samples nvidia-smi's per-GPU memory use every second into FILE in
# the background (SMI: its pid); gpu_mem_peak FILE prints each GPU's peak
gpu_mem_sampler() {
    ( while :; do nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits; sleep 1; done ) \
        > "$1" 2>/dev/null &
    SMI=$!
}
gpu_mem_peak() {
    kill "$SMI" 2>/dev/null; wait "$SMI" 2>/dev/null
    awk -F', *' '{ if ($2 > m[$1]) m[$1] = $2 } END { for (g in m) printf "GPU %s: peak %d MiB used (nvidia-smi, CUDA context included)\n", g, m[g] }' "$1" | sort
}

# run_ids FILE: the "ids" array of a `tessera run --json` output
run_ids() { grep -o '"ids":\[[0-9,]*\]' "$1" 2>/dev/null; }
