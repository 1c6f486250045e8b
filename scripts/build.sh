#!/usr/bin/env bash
# build.sh [BUILD_DIR] [extra cmake args...]: configures and builds tessera.
#   TESSERA_CUDA_ARCHS   CUDA compute capabilities (default 90 here; the project default
#                        without this script is 75;80;86;89;90)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bdir=${1:-$here/build}
shift || true
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$here" -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CUDA_ARCHITECTURES="${TESSERA_CUDA_ARCHS:-90}" -DTESSERA_WERROR=ON "$@" >/dev/null
cmake --build "$bdir" -j "$jobs"
