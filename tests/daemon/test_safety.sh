#!/usr/bin/env bash
# test_safety.sh TESSERA TESSERAD REPO: tesserad's CheckSafety RPC end to end on loopback with
# the tiny random ShieldGemma 2 of tests/fixtures/vision (python3-grpcio client, stubs
# generated here): per-image, per-policy scores equal to `tessera safety`'s, thresholds
# chosen so that both outcomes (violated / not) happen, a corrupt image and an unknown policy
# -> INVALID_ARGUMENT while the daemon keeps serving, an audit log line per image without
# image bytes, and UNAVAILABLE from a daemon without a classifier. Exits 77 (skipped)
# without python3-grpcio / grpc_python_plugin.
set -u
bin=$1
daemon=$2
repo=$3
fx=$repo/tests/fixtures
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dpid=""
trap 'kill_stray "$dpid"; drop_tmp' EXIT
skip_unless_grpc grpc "python3-grpcio and protobuf-compiler-grpc"
gen_stubs

start_daemon() { start_fixture_daemon "$@"; }
stop_daemon() {
  kill -TERM "$dpid" 2>/dev/null
  exit_ok "$dpid" tesserad
  dpid=""
}

# reference scores from the CLI
"$bin" safety -m "$fx/vision/tiny_text.gguf" --vision "$fx/vision/tiny_sg" --ids 500,501,502,20,30 \
  --threads 2 "$fx/image/rgb_37x23.png" "$fx/image/lossy_45x31.webp" >"$tmp/cli.jsonl" 2>"$tmp/cli.err" ||
  bad "tessera safety: $(cat "$tmp/cli.err")"

start_daemon --safety-model "$fx/vision/tiny_text.gguf" --safety-vision "$fx/vision/tiny_sg" \
  --safety-ids 500,501,502,20,30 || exit 1
PYTHONPATH="$tmp/stubs" $py - "$addr" "$fx/image" "$tmp/cli.jsonl" <<'PY' && ok || bad "CheckSafety client"
import json, sys
import grpc
from tessera.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg
addr, imgdir, cli = sys.argv[1], sys.argv[2], sys.argv[3]
stub = pbg.InferenceStub(grpc.insecure_channel(addr))
imgs = [open(f"{imgdir}/{n}", "rb").read() for n in ("rgb_37x23.png", "lossy_45x31.webp")]
want = [json.loads(l)["scores"] for l in open(cli)]
# every policy; thresholds: dangerous low (violated), violence above any score (not)
req = pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=d)) for d in imgs],
                            options=pb.SafetyOptions(thresholds={"dangerous": 0.5, "violence": 0.999}))
r = stub.CheckSafety(req, timeout=120)
assert len(r.verdicts) == 2, r
for i, v in enumerate(r.verdicts):
    assert v.part_index == i and v.stage == pb.SafetyVerdict.STAGE_INPUT and v.classifier, v
    got = {s.policy: s for s in v.scores}
    assert set(got) == {"dangerous", "sexual", "violence"}, got
    for k, s in got.items():
        assert abs(s.probability - want[i][k]) <= 1e-4, (k, s.probability, want[i][k])
    assert got["dangerous"].violated and not got["violence"].violated, v
    assert v.blocked
# one named policy
r = stub.CheckSafety(pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=imgs[0]))],
                                           policies=["violence"]), timeout=120)
assert [s.policy for s in r.verdicts[0].scores] == ["violence"], r
# bad input: INVALID_ARGUMENT naming the part; the daemon keeps serving
for req, text in [
    (pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=imgs[0])),
                                  pb.ContentPart(image=pb.Image(data=imgs[1][:100]))]), "parts[1]"),
    (pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=b"GIF89a..."))]), "not JPEG, PNG or WebP"),
    (pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=imgs[0]))], policies=["nope"]), "nope"),
    (pb.SafetyCheckRequest(parts=[pb.ContentPart(text="hello")]), "only images"),
    (pb.SafetyCheckRequest(), "no image"),
]:
    try:
        stub.CheckSafety(req, timeout=60)
        raise SystemExit(f"accepted: {text}")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and text in e.details(), (e.code(), e.details())
r = stub.CheckSafety(pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=imgs[1]))]), timeout=120)
assert len(r.verdicts) == 1
PY
# the CLI client: same scores as offline, an error line for a truncated image, exit code 1
head -c 200 "$fx/image/rgb_37x23.png" >"$tmp/cut.png"
"$bin" safety --server "$addr" "$fx/image/rgb_37x23.png" "$tmp/cut.png" "$fx/image/lossy_45x31.webp" \
  >"$tmp/srv.jsonl" 2>"$tmp/srv.err"
[ $? -eq 1 ] && ok || bad "tessera safety --server exit code"
$py - "$tmp/srv.jsonl" "$tmp/cli.jsonl" <<'PY' && ok || bad "tessera safety --server output: $(cat "$tmp/srv.jsonl")"
import json, sys
got = [json.loads(l) for l in open(sys.argv[1])]
want = [json.loads(l) for l in open(sys.argv[2])]
assert len(got) == 3 and "truncated" in got[1]["error"], got
for g, w in zip([got[0], got[2]], want):
    assert set(g["scores"]) == set(w["scores"]), (g, w)
    assert all(abs(g["scores"][k] - w["scores"][k]) <= 1e-4 for k in w["scores"]), (g, w)
PY
stop_daemon
n=$(grep -c "safety audit: CheckSafety tenant" "$tmp/d.err")
[ "$n" -ge 6 ] && ok || bad "audit lines: $n"
grep "safety audit" "$tmp/d.err" | grep -q "dangerous=0\.[0-9]*.* -> violates" && ok || bad "audit content: $(grep 'safety audit' "$tmp/d.err" | head -2)"

# no classifier configured: UNAVAILABLE
start_daemon || exit 1
PYTHONPATH="$tmp/stubs" $py - "$addr" <<'PY' && ok || bad "UNAVAILABLE without a classifier"
import sys, grpc
from tessera.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg
stub = pbg.InferenceStub(grpc.insecure_channel(sys.argv[1]))
try:
    stub.CheckSafety(pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=b"x"))]), timeout=30)
    raise SystemExit("accepted")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNAVAILABLE and "safety" in e.details(), e
PY
stop_daemon
"$daemon" -m "$fx/vision/tiny_text.gguf" --listen 127.0.0.1:0 --safety-model x.gguf >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "go together" "$tmp/err" && ok || bad "--safety-model alone"
summary "test_safety (daemon)"
