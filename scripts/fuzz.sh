#!/usr/bin/env bash
# fuzz.sh [SECONDS]: builds the libFuzzer targets with clang-14 (ASan + UBSan) and runs
# each for SECONDS (default 60) on a scratch copy of its committed corpus. A crash fails.
# New inputs stay in the scratch copy; add real crashers to tests/fuzz/corpus/NAME/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-60}
bdir=${TESSERA_FUZZ_BUILD:-$here/build-fuzz}
CC=clang-14 cmake -S "$here" -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTESSERA_CUDA=OFF -DTESSERA_RPC=OFF -DTESSERA_FUZZ=ON >/dev/null
targets=$(cd "$here/tests/fuzz" && for f in fuzz_*.c; do echo "${f%.c}"; done)
# shellcheck disable=SC2086 # one word per target
cmake --build "$bdir" -j "$(nproc)" --target $targets
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $targets; do
  name=${t#fuzz_}
  mkdir -p "$scratch/$name"
  cp -r "$here/tests/fuzz/corpus/$name/." "$scratch/$name/"
  echo "fuzz: $t for ${secs}s"
  (cd "$scratch" && "$bdir/tests/fuzz/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
     -print_final_stats=1 "$scratch/$name" 2>&1 | tail -n 12)
done
echo "fuzz: all targets ran ${secs}s without a crash"
