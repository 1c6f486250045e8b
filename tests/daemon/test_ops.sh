#!/usr/bin/env bash
# test_ops.sh TESSERA TESSERAD REPO: operations checks of tesserad on loopback with a random
# tiny model (16K context, so a long stream lasts seconds): the Prometheus endpoint
# (--metrics) scraped and parsed with prometheus_client while requests are served, SIGHUP
# key reload with a stream in flight (ops_test.py), JSON log lines with request ids
# (--log-format json), --metrics refused when malformed, and a clean exit.
# Needs Debian's python3-grpcio and python3-prometheus-client (/usr/bin/python3),
# protobuf-compiler-grpc (scripts/deps.sh); exits 77 (skipped) without them.
set -u
bin=$1
daemon=$2
repo=$3
pass=0
failn=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failn=$((failn + 1)); }
py=/usr/bin/python3
tmp=$(mktemp -d)
dpid=""
cleanup() {
  if [ -n "$dpid" ] && kill -0 "$dpid" 2>/dev/null; then kill -KILL "$dpid"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

if ! $py -c "import grpc, prometheus_client" 2>/dev/null || ! command -v grpc_python_plugin >/dev/null; then
  echo "SKIP: needs python3-grpcio, python3-prometheus-client and protobuf-compiler-grpc (scripts/deps.sh)"
  exit 77
fi

mkdir -p "$tmp/stubs"
protoc -I "$repo/proto" --python_out="$tmp/stubs" --grpc_python_out="$tmp/stubs" \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" tessera/v1/inference.proto ||
  { bad "protoc stubs"; exit 1; }

"$bin" mkmodel --size tiny --type q8_0 --vocab 1024 --seed 7 --ctx 16384 -o "$tmp/tiny.gguf" >/dev/null ||
  { bad "mkmodel"; exit 1; }
printf 'key-alpha-0123456789 alpha\nkey-beta-0123456789 beta\n' >"$tmp/keys"

# malformed --metrics addresses are refused at start (exit 2) naming the problem
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --metrics nocolon >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "metrics address 'nocolon'" "$tmp/err" && ok || bad "--metrics without a port: $(cat "$tmp/err")"
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --metrics 127.0.0.1:99999 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "bad port" "$tmp/err" && ok || bad "--metrics port out of range: $(cat "$tmp/err")"
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --log-format xml >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "unknown log format 'xml'" "$tmp/err" && ok || bad "--log-format xml: $(cat "$tmp/err")"

# the daemon, with metrics, keys and JSON logs (metrics and log-format from a config file)
printf 'metrics = "127.0.0.1:0";\nlog-format = "json";\n' >"$tmp/d.conf"
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --config "$tmp/d.conf" --threads 1 --slots 2 \
  --ctx 16384 --api-keys "$tmp/keys" >"$tmp/d.out" 2>"$tmp/d.err" &
dpid=$!
addr=""
murl=""
for _ in $(seq 1 300); do
  addr=$(sed -n 's/.* on \(127\.0\.0\.1:[0-9]*\) .*/\1/p' "$tmp/d.out")
  murl=$(sed -n 's|^tesserad: metrics at \(http://127\.0\.0\.1:[0-9]*/metrics\)$|\1|p' "$tmp/d.out")
  [ -n "$addr" ] && [ -n "$murl" ] && break
  kill -0 "$dpid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ] || [ -z "$murl" ]; then
  bad "tesserad did not start with --metrics: $(cat "$tmp/d.out") $(tail -5 "$tmp/d.err")"
  echo "$pass passed, $failn failed"
  exit 1
fi
ok

$py "$repo/tests/daemon/ops_test.py" --target "$addr" --metrics "$murl" --stubs "$tmp/stubs" \
  --pid "$dpid" --keys "$tmp/keys" >"$tmp/py.out" 2>&1
grep -v " passed, " "$tmp/py.out" | head -40
p=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$tmp/py.out")
f=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$tmp/py.out")
if [ -z "$p" ]; then bad "ops_test.py crashed"; else pass=$((pass + p)); failn=$((failn + f)); fi

kill -TERM "$dpid"
for _ in $(seq 1 300); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
wait "$dpid"
rc=$?
dpid=""
[ $rc -eq 0 ] && ok || bad "tesserad exit status $rc: $(tail -20 "$tmp/d.err")"
if grep -q "ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer" "$tmp/d.err"; then
  bad "sanitizer report in tesserad's log:"
  grep -A30 "ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer" "$tmp/d.err" | head -60
else
  ok
fi

# JSON logs: every line an object with ts/level/func/msg; a line about a request carries
# its id in request_id; the reload and the request ids made by ops_test.py are there.
$py - "$tmp/d.err" <<'EOP' && ok || bad "JSON log lines"
import json, sys
n_req = 0
ids = set()
for line in open(sys.argv[1], encoding="utf-8"):
    if not line.strip():
        continue
    d = json.loads(line)
    assert {"ts", "level", "func", "msg"} <= d.keys(), d
    assert d["level"] in ("error", "warn", "info", "debug", "trace"), d
    if d["msg"].startswith("request "):
        rid = d["msg"].split(" ", 2)[1].rstrip(":")
        assert d.get("request_id") == rid, d
        n_req += 1
        ids.add(rid)
    else:
        assert "request_id" not in d, d
assert n_req > 10 and "ops-long" in ids, (n_req, sorted(ids)[:5])
EOP
grep -q '"msg":"SIGHUP: reloaded' "$tmp/d.err" && ok || bad "reload logged"

echo "$pass passed, $failn failed"
[ $failn -eq 0 ]
