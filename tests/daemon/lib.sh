# shellcheck shell=bash
# lib.sh: helpers shared by the daemon test scripts (tests/daemon/test_*.sh). Each script
# sources it right after `set -u`:
#   # shellcheck source=SCRIPTDIR/lib.sh
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sourcing sets:
#   pass, failn   the check counters, both 0
#   py            /usr/bin/python3 (Debian's, with python3-grpcio)
#   tmp           a fresh directory (mktemp -d); the script's EXIT trap removes it (drop_tmp)
# and defines:
#   ok                       one more passed check (pass)
#   bad MSG...               prints "FAIL: MSG" and counts a failed check (failn)
#   summary NAME             prints "NAME: P passed, F failed" ("P passed, F failed" when NAME
#                            is ""); status 0 iff no check failed (the script's last command,
#                            so that it is the exit status)
#   kill_stray PID           SIGKILL to PID if PID is set and still runs (EXIT traps)
#   drop_tmp                 removes $tmp
#   drop_tmp_keepable        the same, but with KEEP_TMP set in the environment it keeps $tmp
#                            and prints "kept $tmp"
#   skip_unless_grpc MODULES NEEDS
#                            exit 77 with "SKIP: needs NEEDS (scripts/deps.sh)" unless $py can
#                            `import MODULES` and grpc_python_plugin is on PATH
#   gen_stubs                Python gRPC stubs of $repo/proto's tessera/v1/inference.proto in
#                            $tmp/stubs (reads repo); on failure: bad "protoc stubs", exit 1
#   wait_addr PID TRIES [SED]
#                            waits (TRIES x 0.2 s, less if PID ends) for the serving line in
#                            $tmp/d.out and sets addr to its 127.0.0.1:PORT (SED: the sed
#                            script that prints it; default: any line with " on ADDR ");
#                            status 0 iff found
#   wait_health              waits up to 100 x 0.1 s for `$bin health --server $addr
#                            $cli_extra` to print SERVING; else bad "tesserad not SERVING";
#                            status 0 iff SERVING (reads bin, addr and, if set, cli_extra)
#   start_fixture_daemon [--keep-log] ARGS...
#                            starts tesserad (TESSERA_LOG=info) with the tiny text model of
#                            $fx/vision, --listen 127.0.0.1:0 --threads 2 ARGS..., output in
#                            $tmp/d.out and $tmp/d.err (emptied first; with --keep-log a
#                            non-empty d.err is first copied to d.err.N, N = 1, 2, ...); sets
#                            dpid and addr; else bad "tesserad did not start: ...", status 1
#                            (reads daemon, fx)
#   wait_gone PID            waits up to 300 x 0.1 s for PID to end
#   exit_ok PID WHAT [TAIL]  waits for PID; its exit status 0 is a passed check, else
#                            bad "WHAT exit status RC[: the last TAIL lines of $tmp/d.err]"
#   sanitizer_full           bad + the reports' first lines if $tmp/d.err holds an
#                            AddressSanitizer / LeakSanitizer / UBSan ("runtime error:") report;
#                            status 0 iff there is none
#   sanitizer_brief          bad "sanitizer report: ..." (3 lines) if $tmp/d.err has
#                            "runtime error" or "Sanitizer"; the status of that check
#   client SCRIPT ARGS...    runs the python SCRIPT (stdin) with the stubs: argv is
#                            $addr $fx/image $tmp/cli.jsonl ARGS... (reads addr, fx)
#   add_py_counts FILE       adds the "P passed, F failed" line of a python client's output
#                            FILE to pass/failn; status 1 (nothing added) if it has none
# Variables the script sets and these read: repo (gen_stubs), fx and addr (client), bin
# and addr (wait_health), daemon and fx (start_fixture_daemon).
# shellcheck disable=SC2154 # repo, fx, addr, bin, daemon: set by the sourcing script

pass=0
failn=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failn=$((failn + 1)); }
summary() {
  echo "${1:+$1: }$pass passed, $failn failed"
  [ $failn -eq 0 ]
}
py=/usr/bin/python3
tmp=$(mktemp -d)

kill_stray() {
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then kill -KILL "$1"; fi
}
drop_tmp() { rm -rf "$tmp"; }
drop_tmp_keepable() {
  [ -n "${KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}

skip_unless_grpc() {
  if ! $py -c "import $1" 2>/dev/null || ! command -v grpc_python_plugin >/dev/null; then
    echo "SKIP: needs $2 (scripts/deps.sh)"
    exit 77
  fi
}
gen_stubs() {
  mkdir -p "$tmp/stubs"
  protoc -I "$repo/proto" --python_out="$tmp/stubs" --grpc_python_out="$tmp/stubs" \
    --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" tessera/v1/inference.proto ||
    { bad "protoc stubs"; exit 1; }
}

wait_addr() {
  local pid=$1 tries=$2 re=${3:-'s/.* on \(127\.0\.0\.1:[0-9]*\) .*/\1/p'}
  addr=""
  for _ in $(seq 1 "$tries"); do
    addr=$(sed -n "$re" "$tmp/d.out")
    [ -n "$addr" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  return 1
}
wait_health() {
  for _ in $(seq 1 100); do
    # shellcheck disable=SC2086 # cli_extra: several words on purpose
    [ "$("$bin" health --server "$addr" ${cli_extra:-} 2>/dev/null)" = "SERVING" ] && return 0
    sleep 0.1
  done
  bad "tesserad not SERVING"
  return 1
}
nd=0 # the logs start_fixture_daemon --keep-log kept
start_fixture_daemon() {
  if [ "${1:-}" = --keep-log ]; then
    shift
    [ -s "$tmp/d.err" ] && cp "$tmp/d.err" "$tmp/d.err.$((++nd))"
  fi
  : >"$tmp/d.out"
  : >"$tmp/d.err"
  TESSERA_LOG=info "$daemon" -m "$fx/vision/tiny_text.gguf" --listen 127.0.0.1:0 --threads 2 "$@" \
    >"$tmp/d.out" 2>"$tmp/d.err" &
  dpid=$!
  wait_addr "$dpid" 300 && return 0
  bad "tesserad did not start: $(tail -5 "$tmp/d.err")"
  return 1
}
wait_gone() {
  for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
}
exit_ok() {
  wait "$1"
  local rc=$?
  [ $rc -eq 0 ] && ok || bad "$2 exit status $rc${3:+: $(tail -"$3" "$tmp/d.err")}"
}
sanitizer_full() {
  if grep -q "ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer" "$tmp/d.err"; then
    bad "sanitizer report in tesserad's log:"
    grep -A30 "ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer" "$tmp/d.err" | head -60
    return 1
  fi
}
sanitizer_brief() {
  grep -q "runtime error\|Sanitizer" "$tmp/d.err" && bad "sanitizer report: $(grep -m3 'runtime error\|Sanitizer' "$tmp/d.err")"
}

client() {
  local s=$1
  shift
  PYTHONPATH="$tmp/stubs" $py - "$addr" "$fx/image" "$tmp/cli.jsonl" "$@" <"$s"
}
add_py_counts() {
  local p f
  p=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$1")
  f=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$1")
  [ -n "$p" ] || return 1
  pass=$((pass + p))
  failn=$((failn + f))
}
