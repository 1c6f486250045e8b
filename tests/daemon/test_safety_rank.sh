#!/usr/bin/env bash
# test_safety_rank.sh TESSERA TESSERAD REPO: ShieldGemma 2 on a rank of its own (docs/vision.md
# "Where the classifier runs") under real mpirun with python3-grpcio clients:
#  - `mpirun -np 2 tesserad --safety-rank 1`: the tiny random ShieldGemma 2 on rank 1, the
#    tiny multimodal text model on rank 0: the plan names rank 1; the gate blocks (finish
#    reason SAFETY) and, after a reload (SIGUSR2 to mpirun), admits and generates; the scores
#    (gate verdicts, CheckSafety, `tessera safety --server`) equal the in-process
#    classifier's (`tessera safety`, same threads); a stopped safety rank (SIGSTOP) fails the
#    request closed (UNAVAILABLE naming rank 1) within safety-timeout (60 s while the rest
#    runs, 3 s after a reload, so that a loaded machine does not time out), later requests fail
#    at once, and after SIGCONT the rank serves again; with safety-fail-open = 1 a stopped
#    rank's requests are admitted; SIGUSR1 to mpirun drains and ends the job with status 0.
#  - `mpirun -np 3 tesserad --pp 2` (auto): a two-stage engine on ranks 0-1, the classifier
#    on rank 2: CheckSafety scores equal, text generation works.
#  - bad --safety-rank values: exit 2 with a message; a classifier that cannot load on its
#    rank ends the job with a message from rank 0 naming the rank.
# Exits 77 without mpirun or python3-grpcio.
set -u
bin=$1
daemon=$2
repo=$3
fx=$repo/tests/fixtures
mpirun=${TESSERA_MPIRUN:-mpirun}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
jpid=""
cleanup() {
  [ -n "${srpid:-}" ] && kill -CONT "$srpid" 2>/dev/null
  kill_stray "$jpid"
  drop_tmp_keepable
}
trap cleanup EXIT
if ! command -v "$mpirun" >/dev/null || ! $py -c "import grpc" 2>/dev/null ||
   ! command -v grpc_python_plugin >/dev/null; then
  echo "SKIP: needs mpirun, python3-grpcio and protobuf-compiler-grpc (scripts/deps.sh)"
  exit 77
fi
gen_stubs
# shellcheck disable=SC2054 # --safety-ids takes one comma-separated value
sg=(--safety-model "$fx/vision/tiny_text.gguf" --safety-vision "$fx/vision/tiny_sg"
  --safety-ids 500,501,502,20,30)
# shellcheck disable=SC2054 # --vision-ids takes one comma-separated value
vis=(--vision "$fx/vision/tiny_mmproj.gguf" --vision-ids 500,501,502)

# the in-process classifier's scores (2 threads, as the safety rank below)
"$bin" safety -m "$fx/vision/tiny_text.gguf" --vision "$fx/vision/tiny_sg" --ids 500,501,502,20,30 \
  --threads 2 "$fx/image/rgb_37x23.png" "$fx/image/lossy_45x31.webp" >"$tmp/cli.jsonl" 2>"$tmp/cli.err" ||
  bad "tessera safety: $(cat "$tmp/cli.err")"

start_job() { # start_job NP ARGS...: sets $jpid (mpirun), $addr
  local np=$1
  shift
  : >"$tmp/d.out"
  : >"$tmp/d.err"
  TESSERA_LOG=info "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -np "$np" \
    "$daemon" -m "$fx/vision/tiny_text.gguf" --listen 127.0.0.1:0 --threads 2 "$@" \
    >"$tmp/d.out" 2>"$tmp/d.err" &
  jpid=$!
  wait_addr "$jpid" 300 's/.*serving .* on \(127\.0\.0\.1:[0-9]*\) .*/\1/p' && return 0
  bad "the job did not start: $(tail -5 "$tmp/d.err")"
  return 1
}
stop_job() { # SIGUSR1 to mpirun (forwarded: rank 0 drains, the others follow)
  kill -USR1 "$jpid"
  wait_gone "$jpid"
  exit_ok "$jpid" job 5
  jpid=""
  sanitizer_brief
}
cat >"$tmp/common.py" <<'PY'
import json, sys
import grpc
from tessera.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg
addr, imgdir, cli = sys.argv[1], sys.argv[2], sys.argv[3]
stub = pbg.InferenceStub(grpc.insecure_channel(addr))
imgs = [open(f"{imgdir}/{n}", "rb").read() for n in ("rgb_37x23.png", "lossy_45x31.webp")]
want = [json.loads(l)["scores"] for l in open(cli)]
def chat(i=0):
    parts = [pb.ContentPart(text="Describe this:"), pb.ContentPart(image=pb.Image(data=imgs[i]))]
    return pb.GenerateRequest(chat=pb.Chat(messages=[pb.ChatMessage(role=pb.ROLE_USER, parts=parts)]),
                              sampling=pb.SamplingParams(max_tokens=4, temperature=0))
def same(v, i):  # the in-process classifier's scores (same code, same threads)
    got = {s.policy: s.probability for s in v.scores}
    assert set(got) == set(want[i]), got
    for k in got:
        assert abs(got[k] - want[i][k]) <= 2e-6, (k, got[k], want[i][k])
def generated(r):
    assert r.finish_reason == pb.FINISH_REASON_LENGTH and r.usage.completion_tokens == 4, r
    assert r.usage.image_tokens == 4 and not r.safety, r
def check_safety():
    r = stub.CheckSafety(pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=d)) for d in imgs]), timeout=120)
    assert len(r.verdicts) == 2, r
    for i, v in enumerate(r.verdicts): same(v, i)
def unavailable(text):
    try:
        stub.Generate(chat(), timeout=60)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE and text in e.details(), (e.code(), e.details())
        return
    raise SystemExit("admitted, expected UNAVAILABLE")
PY

# ---- -np 2: text model on rank 0, ShieldGemma 2 on rank 1
cat >"$tmp/d.cfg" <<'CFG'
safety-thresholds = "dangerous=0.5,sexual=0.99,violence=0.99";
safety-timeout = 60;
CFG
start_job 2 --safety-rank 1 --config "$tmp/d.cfg" "${vis[@]}" "${sg[@]}" || exit 1
grep -q "safety classifier tiny_text.gguf on rank 1 (a rank of its own)" "$tmp/d.err" && ok ||
  bad "plan: $(grep 'safety classifier' "$tmp/d.err")"
grep -q ", ranks 2, pid" "$tmp/d.out" && ok || bad "serving line: $(cat "$tmp/d.out")"
srpid=$(sed -n 's/.*rank 1 (pid \([0-9]*\)): safety classifier tiny_text.gguf loaded.*/\1/p' "$tmp/d.err")
[ -n "$srpid" ] && ok || bad "no safety rank pid: $(grep 'rank 1' "$tmp/d.err")"
cat >"$tmp/blocked.py" <<'PY'
import sys; exec(open(sys.argv[4]).read())
r = stub.Generate(chat(), timeout=120)
assert r.finish_reason == pb.FINISH_REASON_SAFETY and r.text == "" and len(r.safety) == 1, r
same(r.safety[0], 0)
assert [s.policy for s in r.safety[0].scores if s.violated] == ["dangerous"], r
ev = list(stub.GenerateStream(chat(1), timeout=120))
assert [e.WhichOneof("event") for e in ev] == ["started", "safety", "finished"], ev
assert ev[2].finished.finish_reason == pb.FINISH_REASON_SAFETY
same(ev[1].safety, 1)
check_safety()
PY
client "$tmp/blocked.py" "$tmp/common.py" && ok || bad "np 2: blocked / CheckSafety"
"$bin" safety --server "$addr" "$fx/image/rgb_37x23.png" "$fx/image/lossy_45x31.webp" >"$tmp/srv.jsonl" 2>"$tmp/srv.err" &&
  ok || bad "tessera safety --server: $(cat "$tmp/srv.err")"
cmp -s "$tmp/srv.jsonl" "$tmp/cli.jsonl" && ok || bad "tessera safety --server differs: $(cat "$tmp/srv.jsonl" "$tmp/cli.jsonl")"
# a reload (SIGUSR2 to mpirun, forwarded to rank 0): admitted and generated
echo 'safety-thresholds = "dangerous=0.99,sexual=0.99,violence=0.99";' >"$tmp/d.cfg"
kill -USR2 "$jpid"
for _ in $(seq 1 50); do grep -q "SIGHUP: safety thresholds dangerous=0.9900" "$tmp/d.err" && break; sleep 0.1; done
cat >"$tmp/allowed.py" <<'PY'
import sys; exec(open(sys.argv[4]).read())
generated(stub.Generate(chat(), timeout=120))
ev = list(stub.GenerateStream(chat(1), timeout=120))
assert ev[-1].finished.finish_reason == pb.FINISH_REASON_LENGTH and "safety" not in [e.WhichOneof("event") for e in ev], ev
PY
client "$tmp/allowed.py" "$tmp/common.py" && ok || bad "np 2: allowed after the reload"
# a stopped safety rank: fail closed within the timeout, naming rank 1; then at once
if [ -n "$srpid" ]; then
  # a short timeout from here on (SIGHUP reloads it)
  printf 'safety-thresholds = "dangerous=0.99,sexual=0.99,violence=0.99";\nsafety-timeout = 3;\n' >"$tmp/d.cfg"
  kill -USR2 "$jpid"
  for _ in $(seq 1 50); do grep -q "SIGHUP: safety-timeout 3 s" "$tmp/d.err" && break; sleep 0.1; done
  grep -q "SIGHUP: safety-timeout 3 s" "$tmp/d.err" && ok || bad "safety-timeout reload: $(grep SIGHUP "$tmp/d.err")"
  kill -STOP "$srpid"
  cat >"$tmp/dead.py" <<'PY'
import sys, time; exec(open(sys.argv[4]).read())
t0 = time.time()
unavailable("the safety classifier on rank 1 did not answer within 3 s")
assert 2.5 < time.time() - t0 < 30, time.time() - t0
t0 = time.time()
unavailable("the safety classifier on rank 1 has not answered request")
assert time.time() - t0 < 2.5, time.time() - t0
stub.Generate(pb.GenerateRequest(prompt="hello", sampling=pb.SamplingParams(max_tokens=3)), timeout=60)
PY
  client "$tmp/dead.py" "$tmp/common.py" && ok || bad "stopped safety rank: fail closed"
  kill -CONT "$srpid"
  cat >"$tmp/back.py" <<'PY'
import sys, time; exec(open(sys.argv[4]).read())
for _ in range(40):  # the resumed rank answers the stale request first
    try:
        check_safety()
        break
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE and "has not answered" in e.details(), e
        time.sleep(0.5)
else:
    raise SystemExit("the safety rank did not come back")
PY
  client "$tmp/back.py" "$tmp/common.py" && client "$tmp/allowed.py" "$tmp/common.py" && ok ||
    bad "safety rank back in service"
  grep -q "the safety classifier on rank 1 answered request [0-9]* after .* in service again" "$tmp/d.err" &&
    ok || bad "no back-in-service log"
  # fail open: a stopped rank's requests are admitted (after the timeout)
  printf 'safety-thresholds = "dangerous=0.99,sexual=0.99,violence=0.99";\nsafety-fail-open = 1;\nsafety-timeout = 3;\n' >"$tmp/d.cfg"
  kill -USR2 "$jpid"
  for _ in $(seq 1 50); do grep -q "fail open" "$tmp/d.err" && break; sleep 0.1; done
  kill -STOP "$srpid"
  echo 'import sys; exec(open(sys.argv[4]).read()); generated(stub.Generate(chat(), timeout=60))' >"$tmp/open.py"
  client "$tmp/open.py" "$tmp/common.py" && ok || bad "stopped safety rank: fail open"
  kill -CONT "$srpid"
  grep -q "classifier error (.*rank 1 did not answer within 3 s.*) -> allowed (safety-fail-open)" "$tmp/d.err" &&
    ok || bad "fail-open audit: $(grep 'classifier error' "$tmp/d.err")"
  grep -q "classifier error (.*rank 1 did not answer within 3 s.*) -> refused" "$tmp/d.err" &&
    ok || bad "fail-closed audit: $(grep 'classifier error' "$tmp/d.err")"
fi
stop_job
srpid=""

# ---- -np 3 --pp 2: the engine on ranks 0-1, the classifier on rank 2 (auto)
start_job 3 --pp 2 "${sg[@]}" || exit 1
grep -q "safety classifier tiny_text.gguf on rank 2 (a rank of its own)" "$tmp/d.err" && ok ||
  bad "np 3 plan: $(grep 'safety classifier' "$tmp/d.err")"
grep -q "plan: 2 ranks = tp 1 x pp 2" "$tmp/d.err" && ok || bad "np 3 engine plan: $(grep plan "$tmp/d.err")"
cat >"$tmp/np3.py" <<'PY'
import sys; exec(open(sys.argv[4]).read())
check_safety()
r = stub.Generate(pb.GenerateRequest(prompt="hello", sampling=pb.SamplingParams(max_tokens=5, temperature=0)), timeout=60)
assert r.usage.completion_tokens == 5, r
PY
client "$tmp/np3.py" "$tmp/common.py" && ok || bad "np 3: CheckSafety / generation"
stop_job

# ---- bad values
if "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -np 2 "$daemon" -m "$fx/vision/tiny_text.gguf" \
  --listen 127.0.0.1:0 --safety-rank 5 "${sg[@]}" >/dev/null 2>"$tmp/err"; then
  bad "--safety-rank 5 accepted"
else
  grep -q "safety-rank 5: the job has 2 ranks" "$tmp/err" && ok || bad "--safety-rank 5: $(cat "$tmp/err")"
fi
# the classifier cannot load on its rank: rank 0 says so and the job ends with a failure
if "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -np 2 "$daemon" -m "$fx/vision/tiny_text.gguf" \
  --listen 127.0.0.1:0 --safety-rank 1 --safety-model "$fx/vision/tiny_text.gguf" --safety-vision /nonexistent \
  >/dev/null 2>"$tmp/err"; then
  bad "a job whose classifier cannot load ran"
else
  grep -q "tesserad: safety classifier: rank 1: safety classifier: /nonexistent" "$tmp/err" && ok ||
    bad "classifier load failure on its rank: $(cat "$tmp/err")"
fi
"$daemon" -m "$fx/vision/tiny_text.gguf" --listen 127.0.0.1:0 --safety-rank 1 "${sg[@]}" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "safety-rank 1: the daemon was not started by mpirun" "$tmp/err" && ok || bad "--safety-rank 1 alone: $(cat "$tmp/err")"
"$daemon" -m "$fx/vision/tiny_text.gguf" --listen 127.0.0.1:0 --safety-rank one "${sg[@]}" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "safety-rank expects auto, none or a rank number, got 'one'" "$tmp/err" && ok || bad "--safety-rank one: $(cat "$tmp/err")"
summary "test_safety_rank (daemon, mpi)"
