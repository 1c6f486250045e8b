#!/usr/bin/env bash
# test_safety_policies.sh TESSERA TESSERAD REPO: custom ShieldGemma 2 policies end to end
# (docs/daemon.md "Safety policies") with the tiny random ShieldGemma 2 of
# tests/fixtures/vision and python3-grpcio clients: a `safety-policies` list in tesserad's
# config file adds a policy (its text rendered into the classifier's prompt as the built-ins'
# are: its score equals `tessera safety --custom-policy`'s), turns a built-in off and sets
# thresholds; the gate blocks on the custom policy (finish reason SAFETY, the custom name in
# the verdict, the audit line, the metrics and ModelInfo); CheckSafety takes custom names and ad-hoc
# policy texts (`tessera safety --server --policy-text`); SIGHUP swaps the set, a bad file
# keeps the old one with an error log; bad entries stop the daemon at start with a message
# naming the entry. Exits 77 without python3-grpcio.
set -u
bin=$1
daemon=$2
repo=$3
fx=$repo/tests/fixtures
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dpid=""
trap 'kill_stray "$dpid"; drop_tmp_keepable' EXIT
skip_unless_grpc grpc "python3-grpcio and protobuf-compiler-grpc"
gen_stubs
# shellcheck disable=SC2054 # --safety-ids takes one comma-separated value
sg=(--safety-model "$fx/vision/tiny_text.gguf" --safety-vision "$fx/vision/tiny_sg"
  --safety-ids 500,501,502,20,30)
# shellcheck disable=SC2054 # --vision-ids takes one comma-separated value
vis=(--vision "$fx/vision/tiny_mmproj.gguf" --vision-ids 500,501,502)
hate="No Hateful Content: The image shall not contain content that expresses, incites or promotes hate based on race, religion or origin."
weap="No Weapons: The image shall not show firearms or knives."

# reference scores: the in-process classifier (the CLI) with the same policy texts
"$bin" safety -m "$fx/vision/tiny_text.gguf" --vision "$fx/vision/tiny_sg" --ids 500,501,502,20,30 \
  --threads 2 --custom-policy "hate=$hate" --custom-policy "weapons=$weap" "$fx/image/rgb_37x23.png" \
  >"$tmp/cli.jsonl" 2>"$tmp/cli.err" || bad "tessera safety: $(cat "$tmp/cli.err")"
ref() { $py -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['scores'][sys.argv[2]])" "$tmp/cli.jsonl" "$1"; }
ph=$(ref hate) || exit 1
lo=$($py -c "print(round($ph - 0.02, 6))")
hi=$($py -c "print(round($ph + 0.02, 6))")

# ---- bad entries: the daemon does not start (exit 2), the message names the entry
refuse() { # refuse WHAT EXPECTED CONFIG-TEXT [FLAGS...]
  local what=$1 want=$2 cfg=$3
  shift 3
  printf '%s\n' "$cfg" >"$tmp/bad.cfg"
  "$daemon" -m "$fx/vision/tiny_text.gguf" --listen 127.0.0.1:0 --config "$tmp/bad.cfg" "$@" \
    >/dev/null 2>"$tmp/bad.err"
  local rc=$?
  [ $rc -eq 2 ] && grep -qF -- "$want" "$tmp/bad.err" && ok ||
    bad "$what: exit $rc: $(cat "$tmp/bad.err") (wanted: $want)"
}
long=$(head -c 5000 /dev/zero | tr '\0' 'x')
many=""
for i in $(seq 1 14); do many="$many{ name = \"p$i\"; text = \"No p$i.\"; },"; done
refuse "empty text" "bad.cfg:1: safety-policies[0] 'hate': the policy text is empty" \
  'safety-policies = ( { name = "hate"; text = ""; } );'
refuse "long text" "safety-policies[1] 'big': the policy text has 5000 bytes (at most 4096)" \
  "safety-policies = ( { name = \"ok\"; text = \"No ok.\"; }, { name = \"big\"; text = \"$long\"; } );"
refuse "duplicate" "safety-policies[1] 'hate': the name appears twice (also safety-policies[0])" \
  'safety-policies = ( { name = "hate"; text = "No hate."; }, { name = "hate"; text = "No hate 2."; } );'
refuse "duplicate built-in" "safety-policies[1] 'sexual': the name appears twice (also safety-policies[0])" \
  'safety-policies = ( { name = "sexual"; enabled = false; }, { name = "sexual"; threshold = 0.3; } );'
refuse "threshold" "safety-policies[0] 'hate': threshold 1.5 is not in [0, 1]" \
  'safety-policies = ( { name = "hate"; text = "No hate."; threshold = 1.5; } );'
refuse "built-in text" "safety-policies[0] 'violence': a built-in policy's text cannot be changed" \
  'safety-policies = ( { name = "violence"; text = "No blood."; } );'
refuse "no text" "safety-policies[0] 'hate': a custom policy needs a text" \
  'safety-policies = ( { name = "hate"; threshold = 0.3; } );'
refuse "unknown field" "safety-policies[0]: unknown or mistyped field 'txt'" \
  'safety-policies = ( { name = "hate"; txt = "No hate."; } );'
refuse "bad name" "safety-policies[0]: the name '9lives' must start with a letter" \
  'safety-policies = ( { name = "9lives"; text = "No cats."; } );'
refuse "control token" "safety-policies[0] 'hate': the policy text holds the control token '<end_of_'" \
  'safety-policies = ( { name = "hate"; text = "No hate.<end_of_turn>"; } );'
refuse "too many" "safety-policies[13] 'p14': more than 16 policies (built-ins included)" \
  "safety-policies = ( ${many%,} );"
refuse "all off" "safety-policies: every policy is disabled" \
  'safety-policies = ( { name = "dangerous"; enabled = false; }, { name = "sexual"; enabled = false; }, { name = "violence"; enabled = false; } );'
refuse "not a list" "safety-policies must be a list of groups" 'safety-policies = "hate";'
refuse "thresholds name" "safety-thresholds: unknown policy 'nope' (dangerous, sexual, violence, hate)" \
  'safety-policies = ( { name = "hate"; text = "No hate."; } ); safety-thresholds = "hate=0.2,nope=0.1";'
refuse "flag" "--safety-policies: this setting is only read from the --config file" \
  'log-level = "info";' --safety-policies x

# ---- the gate with a custom policy: blocked by it alone
cat >"$tmp/d.cfg" <<CFG
safety-policies = (
  { name = "sexual"; enabled = false; },
  { name = "violence"; threshold = 0.999; },
  { name = "hate"; text = "$hate"; threshold = $lo; }
);
safety-thresholds = "dangerous=0.999";
CFG
: >"$tmp/d.out"
TESSERA_LOG=info "$daemon" -m "$fx/vision/tiny_text.gguf" --listen 127.0.0.1:0 --threads 2 \
  --config "$tmp/d.cfg" --metrics 127.0.0.1:0 "${vis[@]}" "${sg[@]}" >"$tmp/d.out" 2>"$tmp/d.err" &
dpid=$!
wait_addr "$dpid" 300 's/.*serving .* on \(127\.0\.0\.1:[0-9]*\) .*/\1/p' ||
  { bad "tesserad did not start: $(tail -5 "$tmp/d.err")"; exit 1; }
maddr=$(sed -n 's|.*metrics at http://\(.*\)/metrics|\1|p' "$tmp/d.out")
cat >"$tmp/common.py" <<'PY'
import json, sys
import grpc
from tessera.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg
addr, imgdir, cli = sys.argv[1], sys.argv[2], sys.argv[3]
stub = pbg.InferenceStub(grpc.insecure_channel(addr))
img = open(f"{imgdir}/rgb_37x23.png", "rb").read()
want = json.loads(open(cli).readline())["scores"]
def chat(safety=None):
    parts = [pb.ContentPart(text="Describe this:"), pb.ContentPart(image=pb.Image(data=img))]
    return pb.GenerateRequest(chat=pb.Chat(messages=[pb.ChatMessage(role=pb.ROLE_USER, parts=parts)]),
                              sampling=pb.SamplingParams(max_tokens=4, temperature=0), safety=safety)
def scores(v, names, violated):
    got = {s.policy: s for s in v.scores}
    assert [s.policy for s in v.scores] == names, [s.policy for s in v.scores]
    for k, s in got.items():
        assert abs(s.probability - want[k]) <= 1e-4, (k, s.probability, want[k])
    assert {k for k, s in got.items() if s.violated} == violated, v
def expect_error(fn, code, text):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code and text in e.details(), (e.code(), e.details())
        return
    raise SystemExit(f"accepted, expected {code} {text}")
PY
cat >"$tmp/blocked.py" <<'PY'
import sys; exec(open(sys.argv[4]).read())
weap = sys.argv[5]
r = stub.Generate(chat(), timeout=120)
assert r.finish_reason == pb.FINISH_REASON_SAFETY and r.text == "" and len(r.safety) == 1, r
scores(r.safety[0], ["dangerous", "violence", "hate"], {"hate"})
# ModelInfo lists the policies in use
assert list(stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30).safety_policies) == ["dangerous", "violence", "hate"]
assert list(stub.ListModels(pb.ListModelsRequest(), timeout=30).models[0].safety_policies) == ["dangerous", "violence", "hate"]
ev = list(stub.GenerateStream(chat(), timeout=120))
assert [e.WhichOneof("event") for e in ev] == ["started", "safety", "finished"], ev
assert ev[2].finished.finish_reason == pb.FINISH_REASON_SAFETY
# a request cannot loosen the custom threshold; a disabled built-in is unknown
r = stub.Generate(chat(pb.SafetyOptions(thresholds={"hate": 0.9999})), timeout=120)
assert r.finish_reason == pb.FINISH_REASON_SAFETY, r
expect_error(lambda: stub.Generate(chat(pb.SafetyOptions(thresholds={"sexual": 0.1})), timeout=60),
             grpc.StatusCode.INVALID_ARGUMENT, "unknown policy 'sexual' (dangerous, violence, hate)")
# CheckSafety: the configured set and thresholds by default
r = stub.CheckSafety(pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=img))]), timeout=120)
scores(r.verdicts[0], ["dangerous", "violence", "hate"], {"hate"})
# custom names, an ad-hoc policy text (scored after the names), thresholds for both
r = stub.CheckSafety(pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=img))],
                                           policies=["hate"], policy_texts={"weapons": weap},
                                           options=pb.SafetyOptions(thresholds={"hate": 0.9999, "weapons": 0.0})),
                     timeout=120)
scores(r.verdicts[0], ["hate", "weapons"], {"weapons"})
img_part = [pb.ContentPart(image=pb.Image(data=img))]
for req, text in [
    (pb.SafetyCheckRequest(parts=img_part, policies=["sexual"]), "unknown policy 'sexual' (dangerous, violence, hate"),
    (pb.SafetyCheckRequest(parts=img_part, policy_texts={"hate": "No hate."}), "policy_texts[hate]: a server policy has this name"),
    (pb.SafetyCheckRequest(parts=img_part, policy_texts={"sexual": "No hate."}), "policy_texts[sexual]: a server policy"),
    (pb.SafetyCheckRequest(parts=img_part, policy_texts={"x": ""}), "policy_texts[x]: the policy text is empty"),
    (pb.SafetyCheckRequest(parts=img_part, policy_texts={"x": "a" * 4097}), "has 4097 bytes (at most 4096)"),
    (pb.SafetyCheckRequest(parts=img_part, policy_texts={"x": "No <start_of_image> here"}), "control token"),
    (pb.SafetyCheckRequest(parts=img_part, policy_texts={"bad name": "No x."}), "must start with a letter"),
    (pb.SafetyCheckRequest(parts=img_part, policy_texts={f"p{i}": "No x." for i in range(40)}), "ad-hoc policies"),
    (pb.SafetyCheckRequest(parts=img_part, options=pb.SafetyOptions(thresholds={"weapons": 0.5})), "not among the policies"),
]:
    expect_error(lambda: stub.CheckSafety(req, timeout=60), grpc.StatusCode.INVALID_ARGUMENT, text)
PY
client "$tmp/blocked.py" "$tmp/common.py" "$weap" && ok || bad "custom policy: blocked / CheckSafety"
# the CLI client: a custom name and an ad-hoc text
"$bin" safety --server "$addr" --policy hate --policy-text "$weap" "$fx/image/rgb_37x23.png" \
  >"$tmp/srv.jsonl" 2>"$tmp/srv.err" || bad "tessera safety --server --policy-text: $(cat "$tmp/srv.err")"
$py - "$tmp/srv.jsonl" "$tmp/cli.jsonl" <<'PY' && ok || bad "tessera safety --server scores: $(cat "$tmp/srv.jsonl")"
import json, sys
g = json.loads(open(sys.argv[1]).readline())["scores"]
w = json.loads(open(sys.argv[2]).readline())["scores"]
assert set(g) == {"hate", "custom-1"}, g
assert abs(g["hate"] - w["hate"]) <= 1e-4 and abs(g["custom-1"] - w["weapons"]) <= 1e-4, (g, w)
PY
# metrics carry the custom name (registered at 0 for every outcome, counted on decisions)
$py - "$maddr" <<'PY' && ok || bad "metrics"
import sys, urllib.request
t = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10).read().decode()
def v(lbl):
    for line in t.splitlines():
        if line.startswith("tessera_safety_decisions_total{" + lbl + "}"):
            return float(line.split()[-1])
    raise SystemExit(f"no {lbl} in\n" + "\n".join(l for l in t.splitlines() if "safety" in l))
assert v('policy="hate",outcome="blocked"') == 3, t
assert v('policy="dangerous_content",outcome="allowed"') == 3
assert v('policy="violence",outcome="allowed"') == 3
assert v('policy="sexually_explicit",outcome="allowed"') == 0
PY

# ---- SIGHUP: a new set (hate under its threshold, a new policy) -> admitted and generated
cat >"$tmp/d.cfg" <<CFG
safety-policies = (
  { name = "sexual"; enabled = false; },
  { name = "violence"; threshold = 0.999; },
  { name = "hate"; text = "$hate"; threshold = $hi; },
  { name = "weapons"; text = "$weap"; threshold = 0.9999; }
);
safety-thresholds = "dangerous=0.999";
CFG
kill -HUP "$dpid"
for _ in $(seq 1 50); do grep -q "SIGHUP: safety thresholds" "$tmp/d.err" && break; sleep 0.1; done
grep -q "SIGHUP: safety thresholds dangerous=0.9990 violence=0.9990 hate=0\.[0-9]* weapons=0.9999, fail closed" "$tmp/d.err" &&
  ok || bad "reload log: $(grep SIGHUP "$tmp/d.err")"
cat >"$tmp/allowed.py" <<'PY'
import sys; exec(open(sys.argv[4]).read())
r = stub.Generate(chat(), timeout=120)
assert r.finish_reason == pb.FINISH_REASON_LENGTH and r.usage.completion_tokens == 4 and not r.safety, r
assert list(stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30).safety_policies) == ["dangerous", "violence", "hate", "weapons"]
r = stub.Generate(chat(pb.SafetyOptions(mode=pb.SafetyOptions.MODE_ANNOTATE)), timeout=120)
assert r.finish_reason == pb.FINISH_REASON_LENGTH, r
r = stub.CheckSafety(pb.SafetyCheckRequest(parts=[pb.ContentPart(image=pb.Image(data=img))]), timeout=120)
scores(r.verdicts[0], ["dangerous", "violence", "hate", "weapons"], set())
PY
client "$tmp/allowed.py" "$tmp/common.py" && ok || bad "allowed after SIGHUP"
# a bad file keeps the set in use, with an error log naming the entry
cat >"$tmp/d.cfg" <<'CFG'
safety-policies = ( { name = "hate"; text = "No hate."; }, { name = "hate"; text = "No hate."; } );
CFG
kill -HUP "$dpid"
for _ in $(seq 1 50); do grep -q "keeping the safety policies" "$tmp/d.err" && break; sleep 0.1; done
grep -q "SIGHUP: .*d.cfg:1: safety-policies\[1\] 'hate': the name appears twice (also safety-policies\[0\]); keeping the safety policies and thresholds in use" "$tmp/d.err" &&
  ok || bad "bad reload: $(grep SIGHUP "$tmp/d.err")"
client "$tmp/allowed.py" "$tmp/common.py" && ok || bad "set kept after a bad reload"
kill -TERM "$dpid"
exit_ok "$dpid" tesserad 5
dpid=""
sanitizer_brief
# audit lines carry the custom names; never a policy text
n=$(grep -c "safety audit: request req-[0-9]* tenant - images 1: part 1: dangerous=0\.[0-9]* violence=0\.[0-9]* hate=0\.[0-9]* -> blocked" "$tmp/d.err")
[ "$n" -eq 3 ] && ok || bad "blocked audit lines: $n: $(grep 'safety audit' "$tmp/d.err")"
grep -q "safety audit: request .* hate=0\.[0-9]* weapons=0\.[0-9]* -> allowed" "$tmp/d.err" && ok || bad "allowed audit"
grep "safety audit" "$tmp/d.err" | grep -q "Hateful\|Weapons" && bad "a policy text in the audit log" || ok
summary "test_safety_policies (daemon)"
