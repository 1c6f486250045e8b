#!/usr/bin/env bash
# test_safety_gate.sh TESSERA TESSERAD REPO: tesserad's image safety gate end to end on
# loopback (python3-grpcio clients, stubs generated here) with the tiny random ShieldGemma 2
# of tests/fixtures/vision: chat images in Generate / GenerateStream are scored before
# admission; over a threshold -> status OK, finish reason SAFETY, the per-policy scores
# (equal to `tessera safety`'s) and no tokens; under it -> admitted (the main model here is
# text-only, so admission ends in INVALID_ARGUMENT naming the image part); per-request
# thresholds only tighten; ANNOTATE never blocks; OFF -> PERMISSION_DENIED; a corrupt image
# -> INVALID_ARGUMENT naming the part while the daemon keeps serving; SIGHUP reloads the
# thresholds from the config file; no classifier -> UNAVAILABLE (fail closed) unless
# safety-fail-open; one audit line per decision. Exits 77 without python3-grpcio.
set -u
bin=$1
daemon=$2
repo=$3
fx=$repo/tests/fixtures
pass=0
failn=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failn=$((failn + 1)); }
py=/usr/bin/python3
tmp=$(mktemp -d)
dpid=""
cleanup() {
  if [ -n "$dpid" ] && kill -0 "$dpid" 2>/dev/null; then kill -KILL "$dpid"; fi
  [ -n "${KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
if ! $py -c "import grpc" 2>/dev/null || ! command -v grpc_python_plugin >/dev/null; then
  echo "SKIP: needs python3-grpcio and protobuf-compiler-grpc (scripts/deps.sh)"
  exit 77
fi
mkdir -p "$tmp/stubs"
protoc -I "$repo/proto" --python_out="$tmp/stubs" --grpc_python_out="$tmp/stubs" \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" tessera/v1/inference.proto ||
  { bad "protoc stubs"; exit 1; }

start_daemon() {
  : >"$tmp/d.out"
  : >"$tmp/d.err"
  TESSERA_LOG=info "$daemon" -m "$fx/vision/tiny_text.gguf" --listen 127.0.0.1:0 --threads 2 "$@" \
    >"$tmp/d.out" 2>"$tmp/d.err" &
  dpid=$!
  addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/.* on \(127\.0\.0\.1:[0-9]*\) .*/\1/p' "$tmp/d.out")
    [ -n "$addr" ] && return 0
    kill -0 "$dpid" 2>/dev/null || break
    sleep 0.2
  done
  bad "tesserad did not start: $(tail -5 "$tmp/d.err")"
  return 1
}
stop_daemon() {
  kill -TERM "$dpid" 2>/dev/null
  wait "$dpid"
  local rc=$?
  [ $rc -eq 0 ] && ok || bad "tesserad exit status $rc"
  dpid=""
}
client() { # client SCRIPT ARGS...: runs a python client with the stubs and helpers
  local s=$1
  shift
  PYTHONPATH="$tmp/stubs" $py - "$addr" "$fx/image" "$tmp/cli.jsonl" "$@" <"$s"
}
cat >"$tmp/common.py" <<'PY'
import json, sys
import grpc
from tessera.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg
addr, imgdir, cli = sys.argv[1], sys.argv[2], sys.argv[3]
stub = pbg.InferenceStub(grpc.insecure_channel(addr))
img = open(f"{imgdir}/rgb_37x23.png", "rb").read()
want = json.loads(open(cli).readline())["scores"]
def chat(image=img, safety=None):
    parts = [pb.ContentPart(text="Describe this:"), pb.ContentPart(image=pb.Image(data=image))]
    return pb.GenerateRequest(chat=pb.Chat(messages=[pb.ChatMessage(role=pb.ROLE_USER, parts=parts)]),
                              sampling=pb.SamplingParams(max_tokens=4, temperature=0), safety=safety)
def expect_error(fn, code, text):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code and text in e.details(), (e.code(), e.details())
        return
    raise SystemExit(f"accepted, expected {code} {text}")
def text_ok():  # the daemon still serves text
    r = stub.Generate(pb.GenerateRequest(prompt="hello", sampling=pb.SamplingParams(max_tokens=3, temperature=0)), timeout=60)
    assert r.usage.completion_tokens == 3, r
PY

# reference scores from the CLI (all three near 0.94 on this image)
"$bin" safety -m "$fx/vision/tiny_text.gguf" --vision "$fx/vision/tiny_sg" --ids 500,501,502,20,30 \
  --threads 2 "$fx/image/rgb_37x23.png" >"$tmp/cli.jsonl" 2>"$tmp/cli.err" ||
  bad "tessera safety: $(cat "$tmp/cli.err")"

cat >"$tmp/d.cfg" <<'CFG'
safety-thresholds = "dangerous=0.5,sexual=0.99,violence=0.99";
CFG
start_daemon --config "$tmp/d.cfg" --safety-model "$fx/vision/tiny_text.gguf" \
  --safety-vision "$fx/vision/tiny_sg" --safety-ids 500,501,502,20,30 || exit 1
cat >"$tmp/blocked.py" <<'PY'
import sys; exec(open(sys.argv[4]).read())
def check(v, part, violated):
    assert v.stage == pb.SafetyVerdict.STAGE_INPUT and v.classifier and v.part_index == part, v
    got = {s.policy: s for s in v.scores}
    assert set(got) == {"dangerous", "sexual", "violence"}, got
    for k, s in got.items():
        assert abs(s.probability - want[k]) <= 1e-4, (k, s.probability, want[k])
    assert {k for k, s in got.items() if s.violated} == violated, v
# stream: Started, Safety, Finished(SAFETY); no Delta
ev = list(stub.GenerateStream(chat(), timeout=120))
kinds = [e.WhichOneof("event") for e in ev]
assert kinds == ["started", "safety", "finished"], kinds
assert ev[2].finished.finish_reason == pb.FINISH_REASON_SAFETY and ev[2].finished.usage.completion_tokens == 0
check(ev[1].safety, 1, {"dangerous"})
assert ev[1].safety.blocked
# unary: SAFETY, the verdict, no text; the request id is echoed
r = stub.Generate(chat(), timeout=120)
assert r.finish_reason == pb.FINISH_REASON_SAFETY and r.text == "" and len(r.safety) == 1, r
check(r.safety[0], 1, {"dangerous"})
assert r.request_id.startswith("req-"), r.request_id
# a request cannot loosen a threshold: still blocked; it can tighten one
r = stub.Generate(chat(safety=pb.SafetyOptions(thresholds={"dangerous": 0.999, "violence": 0.9})), timeout=120)
assert r.finish_reason == pb.FINISH_REASON_SAFETY, r
check(r.safety[0], 1, {"dangerous", "violence"})
# ANNOTATE never blocks: admitted, and this text-only model refuses the image part
expect_error(lambda: stub.Generate(chat(safety=pb.SafetyOptions(mode=pb.SafetyOptions.MODE_ANNOTATE)), timeout=120),
             grpc.StatusCode.INVALID_ARGUMENT, "chat.messages[0].parts[1]: images need the vision model")
# OFF is not allowed; unknown policies and bad thresholds are INVALID_ARGUMENT
expect_error(lambda: stub.Generate(chat(safety=pb.SafetyOptions(mode=pb.SafetyOptions.MODE_OFF)), timeout=60),
             grpc.StatusCode.PERMISSION_DENIED, "safety.mode")
expect_error(lambda: stub.Generate(chat(safety=pb.SafetyOptions(thresholds={"nope": 0.5})), timeout=60),
             grpc.StatusCode.INVALID_ARGUMENT, "unknown policy 'nope'")
expect_error(lambda: stub.Generate(chat(safety=pb.SafetyOptions(thresholds={"sexual": 1.5})), timeout=60),
             grpc.StatusCode.INVALID_ARGUMENT, "safety.thresholds[sexual]")
# a corrupt image: INVALID_ARGUMENT naming the part; the daemon keeps serving
expect_error(lambda: list(stub.GenerateStream(chat(image=img[:100]), timeout=60)),
             grpc.StatusCode.INVALID_ARGUMENT, "chat.messages[0].parts[1]")
expect_error(lambda: stub.Generate(chat(image=b"GIF89a..."), timeout=60),
             grpc.StatusCode.INVALID_ARGUMENT, "chat.messages[0].parts[1]")
text_ok()
# text-only requests do not go through the gate
r = stub.Generate(pb.GenerateRequest(chat=pb.Chat(messages=[pb.ChatMessage(role=pb.ROLE_USER,
    parts=[pb.ContentPart(text="hi")])]), sampling=pb.SamplingParams(max_tokens=2, temperature=0)), timeout=60)
assert r.finish_reason != pb.FINISH_REASON_SAFETY and not r.safety, r
PY
client "$tmp/blocked.py" "$tmp/common.py" && ok || bad "blocked requests"

# SIGHUP: thresholds from the file again -> the same image passes the gate
cat >"$tmp/d.cfg" <<'CFG'
safety-thresholds = "dangerous=0.99,sexual=0.99,violence=0.99";
CFG
kill -HUP "$dpid"
for _ in $(seq 1 50); do grep -q "SIGHUP: safety thresholds dangerous=0.99" "$tmp/d.err" && break; sleep 0.1; done
grep -q "SIGHUP: safety thresholds dangerous=0.9900 sexual=0.9900 violence=0.9900, fail closed" "$tmp/d.err" &&
  ok || bad "reload log: $(grep SIGHUP "$tmp/d.err")"
cat >"$tmp/allowed.py" <<'PY'
import sys; exec(open(sys.argv[4]).read())
expect_error(lambda: list(stub.GenerateStream(chat(), timeout=120)),
             grpc.StatusCode.INVALID_ARGUMENT, "chat.messages[0].parts[1]: images need the vision model")
# a per-request threshold still blocks
r = stub.Generate(chat(safety=pb.SafetyOptions(thresholds={"sexual": 0.5})), timeout=120)
assert r.finish_reason == pb.FINISH_REASON_SAFETY, r
assert [s.policy for s in r.safety[0].scores if s.violated] == ["sexual"], r
# a bad file on SIGHUP keeps the thresholds (checked by the shell after this)
PY
client "$tmp/allowed.py" "$tmp/common.py" && ok || bad "allowed after SIGHUP"
echo 'safety-thresholds = "dangerous=2";' >"$tmp/d.cfg"
kill -HUP "$dpid"
for _ in $(seq 1 50); do grep -q "keeping the thresholds in use" "$tmp/d.err" && break; sleep 0.1; done
grep -q "safety-thresholds: dangerous: threshold '2' is not a number in \[0, 1\]; keeping" "$tmp/d.err" &&
  ok || bad "bad reload: $(grep SIGHUP "$tmp/d.err")"
client "$tmp/allowed.py" "$tmp/common.py" && ok || bad "thresholds kept after a bad reload"
stop_daemon
# audit: one line per decision, request id and tenant, scores, decision; never image bytes
n=$(grep -c "safety audit: request req-[0-9]* tenant - images 1: part 1: dangerous=0\.9[0-9]* sexual=0\.9[0-9]* violence=0\.9[0-9]* -> blocked" "$tmp/d.err")
[ "$n" -eq 5 ] && ok || bad "blocked audit lines: $n: $(grep 'safety audit' "$tmp/d.err")"
n=$(grep -c "safety audit: request .* -> allowed" "$tmp/d.err")
[ "$n" -eq 3 ] && ok || bad "allowed audit lines: $n"
n=$(grep -c "safety audit: request .* invalid image -> refused" "$tmp/d.err")
[ "$n" -eq 2 ] && ok || bad "invalid audit lines: $n"
grep -q "PNG\|IHDR\|GIF89" "$tmp/d.err" && bad "image bytes in the log" || ok

# no classifier: fail closed (UNAVAILABLE), or admitted with safety-fail-open = 1
start_daemon || exit 1
cat >"$tmp/closed.py" <<'PY'
import sys; exec(open(sys.argv[4]).read())
expect_error(lambda: stub.Generate(chat(), timeout=60), grpc.StatusCode.UNAVAILABLE, "no safety classifier")
expect_error(lambda: list(stub.GenerateStream(chat(), timeout=60)), grpc.StatusCode.UNAVAILABLE, "no safety classifier")
text_ok()
PY
client "$tmp/closed.py" "$tmp/common.py" && ok || bad "fail closed"
stop_daemon
grep -q "safety audit: request req-1 tenant - images 1: no classifier -> refused" "$tmp/d.err" && ok ||
  bad "fail-closed audit: $(grep 'safety audit' "$tmp/d.err")"
start_daemon --safety-fail-open 1 || exit 1
cat >"$tmp/open.py" <<'PY'
import sys; exec(open(sys.argv[4]).read())
expect_error(lambda: stub.Generate(chat(), timeout=60), grpc.StatusCode.INVALID_ARGUMENT, "images need the vision model")
PY
client "$tmp/open.py" "$tmp/common.py" && ok || bad "fail open"
stop_daemon
grep -q "no classifier -> allowed (safety-fail-open)" "$tmp/d.err" && ok || bad "fail-open audit"
"$daemon" -m "$fx/vision/tiny_text.gguf" --listen 127.0.0.1:0 --safety-thresholds violence=x >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "violence: threshold 'x'" "$tmp/err" && ok || bad "bad --safety-thresholds: $(cat "$tmp/err")"
echo "test_safety_gate (daemon): $pass passed, $failn failed"
[ $failn -eq 0 ]
