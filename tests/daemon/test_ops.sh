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
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dpid=""
trap 'kill_stray "$dpid"; drop_tmp' EXIT

skip_unless_grpc "grpc, prometheus_client" "python3-grpcio, python3-prometheus-client and protobuf-compiler-grpc"

gen_stubs

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
  summary ""
  exit 1
fi
ok

$py "$repo/tests/daemon/ops_test.py" --target "$addr" --metrics "$murl" --stubs "$tmp/stubs" \
  --pid "$dpid" --keys "$tmp/keys" >"$tmp/py.out" 2>&1
grep -v " passed, " "$tmp/py.out" | head -40
add_py_counts "$tmp/py.out" || bad "ops_test.py crashed"

kill -TERM "$dpid"
wait_gone "$dpid"
exit_ok "$dpid" tesserad 20
dpid=""
sanitizer_full && ok

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

summary ""
