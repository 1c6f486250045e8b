#!/usr/bin/env bash
# deps.sh: installs what tessera needs on Debian 12 (as root, or with sudo), and a Python
# virtual environment with the reference packages and the real Gemma 3 270M model.
# Idempotent: packages already present are not reinstalled.
# The daemon tests (label `daemon`) use Debian's python3-grpcio through /usr/bin/python3
# (the venv's python has no grpc), grpc_python_plugin (protobuf-compiler-grpc) and the
# health .proto of grpc-proto.
#   TESSERA_VENV   where the Python environment goes (default: .venv in the repo)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

pkgs=(
  build-essential cmake ninja-build pkg-config git
  libcmocka-dev libjansson-dev libssl-dev
  libjpeg62-turbo-dev libpng-dev libwebp-dev
  libopenmpi-dev openmpi-bin
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libprotobuf-dev libconfig-dev
  grpc-proto python3-grpcio protobuf-compiler-grpc
  libmicrohttpd-dev python3-prometheus-client shellcheck systemd
  clang-14 libclang-rt-14-dev
  python3 python3-venv python3-pip
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

venv=${TESSERA_VENV:-$here/.venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "deps: creating Python environment $venv"
  python3 -m venv "$venv"
fi
# Pinned reference packages (PyPI): the GGUF reader, the real 270M model.
reqs="$here/scripts/requirements.txt"
stamp="$venv/.tessera-reqs"
if ! cmp -s "$reqs" "$stamp" 2>/dev/null; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$stamp"
fi
