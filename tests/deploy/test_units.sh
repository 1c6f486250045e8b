#!/usr/bin/env bash
# test_units.sh REPO TESSERAD: `systemd-analyze verify` on every deploy/*.service. The
# units name /usr/local/bin/tesserad, which verify requires to exist: copies of the units
# point at the built binary instead. verify exits 0 on many problems (unknown keys, bad
# values) and only prints them, so any output is a failure too. Exit 77 (skipped) when
# systemd-analyze is missing or cannot verify even a trivial unit (some containers).
set -u
repo=$1
tesserad=$2
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze (Debian: systemd)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '[Unit]\nDescription=probe\n[Service]\nExecStart=/bin/true\n' >"$tmp/probe.service"
if ! out=$(systemd-analyze verify --man=no "$tmp/probe.service" 2>&1) || [ -n "$out" ]; then
  echo "SKIP: systemd-analyze verify cannot run here: $out"
  exit 77
fi
rm "$tmp/probe.service"
fail=0
n=0
for u in "$repo"/deploy/*.service; do
  n=$((n + 1))
  sed "s|/usr/local/bin/tesserad|$tesserad|g" "$u" >"$tmp/$(basename "$u")"
done
[ "$n" -ge 2 ] || { echo "FAIL: expected the singleton and the mpirun unit in deploy/"; exit 1; }
for u in "$tmp"/*.service; do
  if ! out=$(systemd-analyze verify --man=no "$u" 2>&1) || [ -n "$out" ]; then
    echo "FAIL: $(basename "$u"): $out"
    fail=1
  else
    echo "ok: $(basename "$u")"
  fi
done
# the check itself must catch a broken unit
printf '[Service]\nExecStart=/bin/true\nType=nonsense\n' >"$tmp/broken.service"
out=$(systemd-analyze verify --man=no "$tmp/broken.service" 2>&1)
[ -n "$out" ] || { echo "FAIL: a broken unit passed verify"; fail=1; }
exit $fail
