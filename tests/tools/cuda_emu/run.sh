#!/usr/bin/env bash
# run.sh: runs the attention kernels (kernels/cuda/attn.cu) and the fused ops (ops.cu) on the
# CPU, one OS thread per CUDA thread (common.cuh: __syncthreads and warp shuffles as
# barriers, blocks one after another), against a double-precision reference attention and
# the unfused kernels. For checking the kernels' indexing, masking and synchronization where
# there is no GPU (it cannot show speed, and races only as far as the OS interleaves the
# threads). The kernels are cut out of the .cu files (everything before the launchers'
# "} // namespace"); the flash kernel's dynamic shared memory becomes a static array.
# About 6 minutes on 2 cores. Exits non-zero on a mismatch.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cp "$here/common.cuh" "$here/attn_main.cpp" "$here/ops_main.cpp" "$w/"
python3 - "$root" "$w" <<'PY'
import sys
root, w = sys.argv[1], sys.argv[2]
def cut(src, dst, end_marker, extra=()):
    s = open(f"{root}/kernels/cuda/{src}").read()
    s = s[:s.index(end_marker)] + "} // namespace\n"
    s = s.replace('#include "common.cuh"', '#include "common.cuh"\n#include <memory>')
    s = s.replace("extern __shared__ float4 flash_dyn[];", "static float4 flash_dyn[72000 / 16];")
    for name in ("ts_status launched(const char *what) {",) + tuple(extra):
        if name in s:
            i = s.index(name)
            s = s[:i] + s[s.index("\n}\n", i) + 3:]
    open(f"{w}/{dst}", "w").write(s)
cut("attn.cu", "attn_k.cpp", "/* per device: 0 = ts_k_attn_prepare_cuda")
cut("ops.cu", "ops_k.cpp", "} // namespace", ("unsigned grid_for(",))
PY
inc=(-I "$root/kernels" -I "$root/shard/base" -I /usr/local/cuda/include)
g++ -std=c++20 -O1 -w "${inc[@]}" "$w/attn_main.cpp" -o "$w/attn" -lpthread
g++ -std=c++20 -O1 -w "${inc[@]}" "$w/ops_main.cpp" -o "$w/ops" -lpthread
"$w/ops"
"$w/attn"
