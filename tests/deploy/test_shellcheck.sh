#!/usr/bin/env bash
# test_shellcheck.sh REPO: shellcheck on every shell script tracked in the repository
# (*.sh, deploy/*.slurm, deploy/*.env, and files whose first line is a sh/bash shebang). Exit 77
# (skipped) without shellcheck (Debian: shellcheck).
set -u
repo=$1
command -v shellcheck >/dev/null || { echo "SKIP: no shellcheck (Debian: shellcheck)"; exit 77; }
cd "$repo" || exit 1
files=()
while IFS= read -r f; do
  [ -f "$f" ] || continue
  case "$f" in
    *.sh | *.slurm | *.bash | *.env) files+=("$f") ;;
    *.py | *.c | *.h | *.cu | *.cuh | *.md | *.txt | *.cmake | *.proto | *.gguf | *.bin | *.json) ;;
    *) head -c 64 "$f" 2>/dev/null | head -n 1 | grep -Eq '^#!.*(/|env )(ba)?sh\b' && files+=("$f") ;;
  esac
done < <(git ls-files 2>/dev/null || find . -type f -not -path './build*' -not -path './.git/*')
[ ${#files[@]} -gt 0 ] || { echo "FAIL: no shell scripts found"; exit 1; }
echo "shellcheck: ${#files[@]} scripts"
shellcheck -x -P SCRIPTDIR "${files[@]}"
