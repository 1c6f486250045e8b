#!/usr/bin/env bash
# test_daemon.sh TESSERA TESSERAD REPO: tesserad end to end on loopback, with a random tiny
# model (always) and the real Gemma 3 270M (when TESSERA_MODEL_270M is set): the C clients
# (tessera generate/chat/health/info), then a python3-grpcio client (client_test.py) with
# stubs generated here; queue-full flooding; graceful drain on SIGTERM; clean exits.
# Needs Debian's python3-grpcio (/usr/bin/python3), protobuf-compiler-grpc and grpc-proto
# (scripts/deps.sh); exits 77 (skipped) without them.
# Then auth (--api-keys, SIGHUP reload), TLS (a self-signed certificate made here with
# openssl), --config files, server reflection, rich errors and fair share across tenants.
# With TESSERA_DAEMON_RANKS=N (N > 1) every daemon runs as `mpirun -np N tesserad --pp N`
# (TESSERA_MPIRUN names mpirun): signals go to rank 0 (its pid is on the serving line),
# which drains and then releases the other ranks; the job's exit status is mpirun's.
# Structured output and function calling (client_test.py --mode structured; outputs checked
# with Debian's python3-jsonschema).
set -u
bin=$1
daemon=$2
repo=$3
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ranks=${TESSERA_DAEMON_RANKS:-1}
dpid="" # the process that gets signals (rank 0)
jpid="" # the job: tesserad itself, or mpirun
launch() { # launch ARGS... &: tesserad, or N ranks of it under mpirun (exec: $! is its pid)
  if [ "$ranks" -gt 1 ]; then
    exec "${TESSERA_MPIRUN:-mpirun}" --oversubscribe --allow-run-as-root --bind-to none -np "$ranks" \
      "$daemon" --pp "$ranks" "$@"
  else
    exec "$daemon" "$@"
  fi
}
trap 'kill_stray "$jpid"; drop_tmp' EXIT

if ! $py -c "import grpc, jsonschema" 2>/dev/null || ! command -v grpc_python_plugin >/dev/null ||
   [ ! -f /usr/share/grpc-proto/grpc/health/v1/health.proto ]; then
  echo "SKIP: needs python3-grpcio, python3-jsonschema, protobuf-compiler-grpc and grpc-proto (scripts/deps.sh)"
  exit 77
fi

# Python stubs from our .proto and grpc-proto's health.proto
# (health.proto is copied to health_v1/: a generated top-level `grpc` package would clash
# with grpcio's own)
gen_stubs
mkdir -p "$tmp/hp/health_v1" "$tmp/hp/refl_v1" "$tmp/hp/refl_v1alpha" "$tmp/hp/rpcstatus"
cp /usr/share/grpc-proto/grpc/health/v1/health.proto "$tmp/hp/health_v1/"
cp /usr/share/grpc-proto/grpc/reflection/v1/reflection.proto "$tmp/hp/refl_v1/"
cp /usr/share/grpc-proto/grpc/reflection/v1alpha/reflection.proto "$tmp/hp/refl_v1alpha/"
cp "$repo/rpc/proto/google/rpc/status_min.proto" "$tmp/hp/rpcstatus/"
plugin=--plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)"
protoc -I "$tmp/hp" --python_out="$tmp/stubs" --grpc_python_out="$tmp/stubs" "$plugin" \
  health_v1/health.proto refl_v1/reflection.proto refl_v1alpha/reflection.proto &&
protoc -I "$tmp/hp" -I /usr/include --python_out="$tmp/stubs" rpcstatus/status_min.proto ||
  { bad "protoc stubs"; exit 1; }

# start_daemon MODEL ARGS...: sets $dpid and $addr; waits for SERVING
start_daemon() {
  local model=$1
  shift
  : >"$tmp/d.out"
  launch -m "$model" --listen 127.0.0.1:0 "$@" >"$tmp/d.out" 2>>"$tmp/d.err" &
  jpid=$!
  dpid=$jpid
  wait_addr "$jpid" 600 || { bad "tesserad did not start: $(tail -5 "$tmp/d.err")"; return 1; }
  if [ "$ranks" -gt 1 ]; then
    dpid=$(sed -n 's/.*, ranks \([0-9]*\), pid \([0-9]*\))$/\2/p' "$tmp/d.out")
    grep -q ", ranks $ranks, pid" "$tmp/d.out" || { bad "tesserad is not $ranks ranks: $(cat "$tmp/d.out")"; return 1; }
  fi
  wait_health
}

# stop_daemon: SIGTERM, expect a clean exit 0 within the grace period
# (under mpirun: SIGUSR1 to mpirun, which forwards it; SIGTERM would end mpirun's job)
stop_daemon() {
  [ -n "$dpid" ] || return
  if [ "$ranks" -gt 1 ]; then kill -USR1 "$jpid" 2>/dev/null; else kill -TERM "$dpid" 2>/dev/null; fi
  wait_daemon
}
# reload_daemon: SIGHUP (under mpirun: SIGUSR2 to mpirun, which forwards it)
reload_daemon() {
  if [ "$ranks" -gt 1 ]; then kill -USR2 "$jpid"; else kill -HUP "$dpid"; fi
}
wait_daemon() {
  wait_gone "$jpid"
  if kill -0 "$jpid" 2>/dev/null; then
    bad "tesserad did not exit after SIGTERM"
    kill -KILL "$jpid"
  fi
  exit_ok "$jpid" tesserad 20
  sanitizer_full && ok
  dpid=""
  jpid=""
}

pyrun() { # pyrun ARGS...: runs client_test.py and adds its counts to ours
  $py "$repo/tests/daemon/client_test.py" --target "$addr" --stubs "$tmp/stubs" "$@" >"$tmp/py.out" 2>&1
  grep -v "^info:" "$tmp/py.out" | grep -v " passed, " | head -40
  grep "^info:" "$tmp/py.out"
  add_py_counts "$tmp/py.out" || bad "client_test.py $* crashed"
}

c_clients() { # c_clients LABEL
  local l=$1
  "$bin" generate --server "$addr" -p "hello world" --temp 0 -n 12 --json >"$tmp/u.json" 2>"$tmp/err" || bad "$l: generate unary: $(cat "$tmp/err")"
  "$bin" generate --server "$addr" -p "hello world" --temp 0 -n 12 --stream --json >"$tmp/s.json" 2>"$tmp/err" || bad "$l: generate --stream: $(cat "$tmp/err")"
  $py -c "
import json; u=json.load(open('$tmp/u.json')); s=json.load(open('$tmp/s.json'))
assert (u['text'], u['ids']) == (s['text'], s['ids']), (u, s)
assert u['prompt_tokens'] > 0 and u['finish_reason'] in ('length', 'stop'), u
" && ok || bad "$l: C client unary == stream"
  "$bin" generate --server "$addr" -p "hello world" --temp 0 -n 12 --stream >"$tmp/s.txt" 2>"$tmp/err" || bad "$l: generate --stream text"
  $py -c "
import json; u=json.load(open('$tmp/u.json')); t=open('$tmp/s.txt', encoding='utf-8', newline='').read()
assert t == u['text'] + '\n', (t, u['text'])
" && ok || bad "$l: streamed text == unary text"
  "$bin" chat --server "$addr" -p "Say hi" --system "Be brief." --temp 0 -n 16 >"$tmp/chat.txt" 2>"$tmp/err" && ok || bad "$l: chat: $(cat "$tmp/err")"
  "$bin" chat --server "$addr" -p "Say hi" --temp 0 -n 16 --json >"$tmp/chat.json" 2>"$tmp/err" && ok || bad "$l: chat --json"
  "$bin" info --server "$addr" >"$tmp/info.txt" 2>"$tmp/err" && grep -q "$ranks rank" "$tmp/info.txt" && ok || bad "$l: info: $(cat "$tmp/err")"
  "$bin" info --server "$addr" --json | $py -c "import json,sys; d=json.load(sys.stdin); assert d['cluster']['slots'] > 0" && ok || bad "$l: info --json"
  "$bin" generate --server "$addr" -p "" >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "INVALID_ARGUMENT: prompt" "$tmp/err" && ok || bad "$l: C client empty prompt: $(cat "$tmp/err")"
  "$bin" generate --server "$addr" -p x --temp 500 >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "temperature" "$tmp/err" && ok || bad "$l: C client bad temperature"
  "$bin" generate --server "$addr" --tokens 2,100,200 --temp 0 -n 4 --json >/dev/null 2>"$tmp/err" && ok || bad "$l: C client --tokens: $(cat "$tmp/err")"
  "$bin" health --server "$addr" --service no.such.Service >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q NOT_FOUND "$tmp/err" && ok || bad "$l: health unknown service"
  "$bin" generate >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "$l: generate usage"
  # structured output from the C client: --json-schema FILE
  printf '{"type":"object","properties":{"answer":{"enum":["yes","no"]},"why":{"type":"string","maxLength":40}},"required":["answer","why"],"additionalProperties":false}' >"$tmp/schema.json"
  "$bin" chat --server "$addr" -p "Is the sky blue?" --json-schema "$tmp/schema.json" --temp 0 -n 300 >"$tmp/js.txt" 2>"$tmp/err" || bad "$l: chat --json-schema: $(cat "$tmp/err")"
  $py -c "
import json, jsonschema; jsonschema.validate(json.loads(open('$tmp/js.txt').read()), json.load(open('$tmp/schema.json')))
" && ok || bad "$l: chat --json-schema output does not validate: $(cat "$tmp/js.txt")"
  printf '{"type":"string","pattern":"x"}' >"$tmp/bad_schema.json"
  "$bin" generate --server "$addr" -p x --json-schema "$tmp/bad_schema.json" >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "INVALID_ARGUMENT: constraint.json_schema: unsupported keyword 'pattern'" "$tmp/err" && ok || bad "$l: bad --json-schema: $(cat "$tmp/err")"
}

# same_as_run LABEL MODEL: the daemon's greedy output equals `tessera run` on the same model
same_as_run() {
  "$bin" generate --server "$addr" -p "The capital of France is" --temp 0 -n 16 --json >"$tmp/g.json" 2>"$tmp/err" || bad "$1: generate"
  "$bin" run -m "$2" -p "The capital of France is" --temp 0 -n 16 --json >"$tmp/r.json" 2>"$tmp/err" || bad "$1: run"
  $py -c "
import json; g=json.load(open('$tmp/g.json')); r=json.load(open('$tmp/r.json'))
assert (g['ids'], g['text']) == (r['ids'], r['text']), (g, r)
" && ok || bad "$1: daemon output != tessera run output"
}

# ---- the tiny random model ----
"$bin" mkmodel --size tiny --type q8_0 --vocab 1024 --seed 7 -o "$tmp/tiny.gguf" >/dev/null || bad "mkmodel"
if start_daemon "$tmp/tiny.gguf" --slots 8 --queue 64 --threads 2; then
  c_clients tiny
  same_as_run tiny "$tmp/tiny.gguf"
  # the load generator: every request served, exactly its tokens counted
  "$bin" loadgen --server "$addr" --conc 1,6 -n 5 --requests 2 --json >"$tmp/lg.json" 2>"$tmp/err" &&
  $py -c "
import json; L=[json.loads(l) for l in open('$tmp/lg.json')]
assert [d['concurrency'] for d in L] == [1, 6], L
for d in L:
    assert d['errors'] == 0 and d['requests'] == 2 * d['concurrency'], d
    assert d['tokens'] == 5 * d['requests'] and d['tokens_per_s'] > 0, d
    assert 0 < d['ttft_ms']['p50'] <= d['ttft_ms']['p99'], d
" && ok || bad "loadgen: $(cat "$tmp/err" "$tmp/lg.json")"
  "$bin" loadgen --server "$addr" --conc 1,x >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q -- "--conc" "$tmp/err" && ok || bad "loadgen bad --conc"
  pyrun --mode main --conc 32 --max-tokens 12
  pyrun --mode structured
  stop_daemon
fi
# 200 concurrent streams, each equal to the same request alone (greedy)
if start_daemon "$tmp/tiny.gguf" --slots 32 --queue 256 --threads 2; then
  pyrun --mode concurrent --conc 200 --max-tokens 12
  stop_daemon
fi
if start_daemon "$tmp/tiny.gguf" --slots 1 --queue 1 --threads 2; then
  pyrun --mode flood
  stop_daemon
fi
if start_daemon "$tmp/tiny.gguf" --slots 2 --threads 1 --grace-seconds 30; then
  pyrun --mode drain --pid "$dpid"
  wait_daemon
fi
"$daemon" -m "$tmp/tiny.gguf" >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "tesserad usage"

# several ranks: a rank that dies mid-stream ends the stream with an error and the job with
# a failure status (never a hang)
if [ "$ranks" -gt 1 ] && start_daemon "$tmp/tiny.gguf" --slots 2 --threads 1; then
  timeout 120 "$bin" generate --server "$addr" -p "a long story" --temp 0 -n 2000 --ignore-eos \
    --stream >/dev/null 2>"$tmp/kill.err" &
  cpid=$!
  sleep 1
  victim=$(pgrep -P "$jpid" -f tesserad | grep -vx "$dpid" | head -1)
  if [ -n "$victim" ]; then
    kill -KILL "$victim"
    wait "$cpid"
    crc=$?
    [ $crc -ne 0 ] && [ $crc -ne 124 ] && ok || bad "stream after a lost rank: rc=$crc $(cat "$tmp/kill.err")"
    for _ in $(seq 1 300); do kill -0 "$jpid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$jpid" 2>/dev/null; then bad "the job did not end after a lost rank"; kill -KILL "$jpid"; fi
    if wait "$jpid"; then bad "the job exited 0 after a lost rank"; else ok; fi
  else
    bad "no rank-1 process under mpirun ($jpid)"
  fi
  dpid=""
  jpid=""
fi

# ---- auth: API keys (+ reflection and rich errors, which need no key / come with them) ----
keys=$tmp/keys.txt
cat >"$keys" <<'EOK'
# tessera test keys: KEY TENANT
key-alpha-0123456789 alpha
key-beta-0123456789	beta   # a trailing comment

EOK
printf 'key-alpha-0123456789 alpha\njust-one-field\n' >"$tmp/badkeys.txt"
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --api-keys "$tmp/badkeys.txt" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "badkeys.txt:2:" "$tmp/err" && ok || bad "malformed key file refused with its line: $(cat "$tmp/err")"
if start_daemon "$tmp/tiny.gguf" --slots 1 --queue 16 --threads 2 --api-keys "$keys"; then
  "$bin" generate --server "$addr" -p "hello" --temp 0 -n 4 >/dev/null 2>"$tmp/err"
  [ $? -eq 1 ] && grep -q UNAUTHENTICATED "$tmp/err" && ok || bad "C client without key: $(cat "$tmp/err")"
  "$bin" generate --server "$addr" -p "hello" --temp 0 -n 4 --api-key wrong-key-123456 >/dev/null 2>"$tmp/err"
  [ $? -eq 1 ] && grep -q "UNAUTHENTICATED: invalid API key" "$tmp/err" && ok || bad "C client wrong key: $(cat "$tmp/err")"
  "$bin" generate --server "$addr" -p "hello" --temp 0 -n 4 --api-key key-alpha-0123456789 >/dev/null 2>"$tmp/err" && ok || bad "C client with key: $(cat "$tmp/err")"
  TESSERA_API_KEY=key-beta-0123456789 "$bin" info --server "$addr" >/dev/null 2>"$tmp/err" && ok || bad "C client key from TESSERA_API_KEY: $(cat "$tmp/err")"
  "$bin" health --server "$addr" >/dev/null 2>&1 && ok || bad "health without key"
  pyrun --mode auth
  pyrun --mode fair
  grep -q "tenant alpha" "$tmp/d.err" && grep -q "tenant beta" "$tmp/d.err" && ok || bad "tenant names in the log"
  # SIGHUP: add gamma, drop beta
  printf 'key-alpha-0123456789 alpha\nkey-gamma-0123456789 gamma\n' >"$keys"
  reload_daemon
  for _ in $(seq 1 50); do grep -q "SIGHUP: reloaded" "$tmp/d.err" && break; sleep 0.1; done
  pyrun --mode reload
  # a broken file on SIGHUP keeps the keys in use
  printf 'broken\n' >"$keys"
  reload_daemon
  for _ in $(seq 1 50); do grep -q "keeping the keys in use" "$tmp/d.err" && break; sleep 0.1; done
  "$bin" generate --server "$addr" -p "hello" --temp 0 -n 4 --api-key key-gamma-0123456789 >/dev/null 2>"$tmp/err" && ok || bad "keys kept after a bad reload: $(cat "$tmp/err")"
  stop_daemon
fi

# ---- TLS: a self-signed certificate for localhost / 127.0.0.1 ----
if openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 2 \
     -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1; then
  cli_extra="--tls-ca $tmp/cert.pem"
  if start_daemon "$tmp/tiny.gguf" --slots 2 --threads 2 --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem"; then
    ok # health over TLS (start_daemon)
    "$bin" generate --server "$addr" -p "hello" --temp 0 -n 4 --stream --tls-ca "$tmp/cert.pem" >/dev/null 2>"$tmp/err" && ok || bad "C client over TLS: $(cat "$tmp/err")"
    "$bin" health --server "$addr" >/dev/null 2>"$tmp/err"
    [ $? -eq 1 ] && grep -q UNAVAILABLE "$tmp/err" && ok || bad "plaintext C client on TLS port: $(cat "$tmp/err")"
    pyrun --mode tls --tls-ca "$tmp/cert.pem"
    stop_daemon
  fi
  cli_extra=""
  "$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --tls-cert "$tmp/cert.pem" >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--tls-cert without --tls-key"
else
  bad "openssl could not make a test certificate"
fi

# ---- --config ----
cat >"$tmp/d.conf" <<EOC
# tesserad test config
slots = 3;
queue = 5;
threads = 2;
max-tokens-default = 7;
api-keys = "$keys";
log-level = "info";
EOC
printf 'key-alpha-0123456789 alpha\n' >"$keys"
cli_extra="--api-key key-alpha-0123456789"
# shellcheck disable=SC2086 # cli_extra: several words on purpose
if start_daemon "$tmp/tiny.gguf" --config "$tmp/d.conf"; then
  "$bin" info --server "$addr" --json $cli_extra >"$tmp/i.json" 2>"$tmp/err"
  $py -c "import json; d=json.load(open('$tmp/i.json')); assert d['cluster']['slots'] == 3, d" && ok || bad "config slots: $(cat "$tmp/err")"
  "$bin" generate --server "$addr" -p "hello" --temp 0 --ignore-eos --json $cli_extra >"$tmp/g.json" 2>"$tmp/err"
  $py -c "import json; d=json.load(open('$tmp/g.json')); assert d['completion_tokens'] == 7, d" && ok || bad "config max-tokens-default: $(cat "$tmp/err")"
  "$bin" info --server "$addr" >/dev/null 2>&1; [ $? -eq 1 ] && ok || bad "config api-keys applied"
  stop_daemon
fi
# shellcheck disable=SC2086 # cli_extra: several words on purpose
if start_daemon "$tmp/tiny.gguf" --config "$tmp/d.conf" --slots 2; then
  "$bin" info --server "$addr" --json $cli_extra >"$tmp/i.json" 2>"$tmp/err"
  $py -c "import json; d=json.load(open('$tmp/i.json')); assert d['cluster']['slots'] == 2, d" && ok || bad "flag overrides config"
  stop_daemon
fi
cli_extra=""
printf 'slots = 2;\nbogus = 1;\n' >"$tmp/bad1.conf"
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --config "$tmp/bad1.conf" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "bad1.conf:2: unknown setting 'bogus'" "$tmp/err" && ok || bad "unknown config key: $(cat "$tmp/err")"
printf '# c\nqueue = 4;\nslots = "four";\n' >"$tmp/bad2.conf"
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --config "$tmp/bad2.conf" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "bad2.conf:3: slots must be an integer" "$tmp/err" && ok || bad "wrong config type: $(cat "$tmp/err")"
printf 'model = 5;\n' >"$tmp/bad3.conf"
"$daemon" --listen 127.0.0.1:0 --config "$tmp/bad3.conf" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "bad3.conf:1: model must be a string" "$tmp/err" && ok || bad "wrong config type (string): $(cat "$tmp/err")"
printf 'slots = 2\nqueue = ;\n' >"$tmp/bad4.conf"
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --config "$tmp/bad4.conf" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "bad4.conf:[0-9]*: " "$tmp/err" && ok || bad "config syntax error: $(cat "$tmp/err")"
printf 'slots = 0;\n' >"$tmp/bad5.conf"
"$daemon" -m "$tmp/tiny.gguf" --listen 127.0.0.1:0 --config "$tmp/bad5.conf" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "bad5.conf:1: slots expects an integer" "$tmp/err" && ok || bad "config out of range: $(cat "$tmp/err")"
"$daemon" --config "$repo/deploy/tesserad.conf.example" --help >/dev/null 2>&1 && ok || bad "tesserad --help"
"$daemon" -m "$tmp/tiny.gguf" --config "$repo/deploy/tesserad.conf.example" --listen 127.0.0.1:0 --api-keys "$keys" --tls-cert /nonexistent --tls-key /nonexistent >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "tls-cert /nonexistent" "$tmp/err" && ok || bad "the example config parses: $(cat "$tmp/err")"
"$daemon" -m /nonexistent.gguf --listen 127.0.0.1:0 >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && ok || bad "tesserad missing model"

# ---- the real Gemma 3 270M ----
model=${TESSERA_MODEL_270M:-}
if [ -n "$model" ] && [ -f "$model" ]; then
  if start_daemon "$model" --slots 8 --queue 64 --ctx 1024; then
    c_clients 270m
    same_as_run 270m "$model"
    pyrun --mode main --conc "${TESSERA_DAEMON_CONC:-16}" --max-tokens 8
    pyrun --mode structured
    stop_daemon
  fi
else
  echo "note: TESSERA_MODEL_270M not set; the real-model part is skipped"
fi

summary ""
