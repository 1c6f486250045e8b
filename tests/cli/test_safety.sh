#!/usr/bin/env bash
# test_safety.sh TESSERA FIXTURES: `tessera safety` as users run it, on the tiny random
# ShieldGemma 2 of tests/fixtures/vision (its vocabulary lacks the marker and Yes/No tokens:
# --ids gives them). Checks the output format, custom policies, that a broken image gets an
# error line naming it while the others are scored (exit code 1), usage errors, and that the
# reference and optimized paths agree.
set -u
bin=$1
fx=$2
pass=0
failn=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failn=$((failn + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2054 # --ids takes one comma-separated value
m=(-m "$fx/vision/tiny_text.gguf" --vision "$fx/vision/tiny_sg" --ids 500,501,502,20,30 --threads 2)

"$bin" safety >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "required" "$tmp/err" && ok || bad "no args"
"$bin" safety "${m[@]}" --policy nope x.png >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "unknown policy 'nope'" "$tmp/err" && ok || bad "unknown policy"
"$bin" safety "${m[@]}" --custom-policy broken x.png >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && ok || bad "bad custom policy"
"$bin" safety -m "$fx/vision/tiny_text.gguf" --vision /nonexistent x.png >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "/nonexistent" "$tmp/err" && ok || bad "missing vision model: $(cat "$tmp/err")"

head -c 300 "$fx/image/photo_61x45.jpg" >"$tmp/cut.jpg"
"$bin" safety "${m[@]}" --custom-policy "mine=No mine: nothing here." \
  "$fx/image/rgb_37x23.png" "$tmp/cut.jpg" "$fx/image/alpha_29x35.webp" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] && ok || bad "exit code $rc with one broken image"
python3 - "$tmp/out" "$tmp/cut.jpg" <<'PY' && ok || bad "output: $(cat "$tmp/out")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 3, lines
assert lines[1]["image"] == sys.argv[2] and "truncated JPEG" in lines[1]["error"], lines[1]
for l in (lines[0], lines[2]):
    s = l["scores"]
    assert set(s) == {"dangerous", "sexual", "violence", "mine"}, s
    assert all(0.0 < v < 1.0 for v in s.values()), s
PY
"$bin" safety "${m[@]}" --reference --policy violence "$fx/image/rgb_37x23.png" >"$tmp/ref" 2>"$tmp/err" || bad "reference run: $(cat "$tmp/err")"
python3 - "$tmp/out" "$tmp/ref" <<'PY' && ok || bad "reference vs optimized"
import json, sys
a = json.loads(open(sys.argv[1]).readline())["scores"]["violence"]
b = json.loads(open(sys.argv[2]).readline())["scores"]["violence"]
assert abs(a - b) <= 1e-3, (a, b)
PY
# --policy-text: an ad-hoc policy named custom-1 (the same score as --custom-policy's)
"$bin" safety "${m[@]}" --policy violence --policy-text "No mine: nothing here." \
  "$fx/image/rgb_37x23.png" >"$tmp/pt" 2>"$tmp/err" || bad "--policy-text: $(cat "$tmp/err")"
python3 - "$tmp/out" "$tmp/pt" <<'PY' && ok || bad "--policy-text output: $(cat "$tmp/pt")"
import json, sys
a = json.loads(open(sys.argv[1]).readline())["scores"]
b = json.loads(open(sys.argv[2]).readline())["scores"]
assert set(b) == {"violence", "custom-1"}, b
assert b["custom-1"] == a["mine"] and b["violence"] == a["violence"], (a, b)
PY
"$bin" safety "${m[@]}" --policy-text "" x.png >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "policy-text expects" "$tmp/err" && ok || bad "empty --policy-text"
# --bench (the images/s benchmark, docs/vision.md): runs, prints every stage; bad values refused
"$bin" safety "${m[@]}" --bench 2 "$fx/image/rgb_37x23.png" "$fx/image/alpha_29x35.webp" \
  >"$tmp/bench" 2>"$tmp/err" || bad "bench: $(cat "$tmp/err")"
for k in "2 image(s) x 2 rounds, 3 policies" "decode+preprocess" "encoder " "text scoring" "total " "images/s"; do
  grep -qF "$k" "$tmp/bench" && ok || bad "bench output lacks '$k': $(cat "$tmp/bench")"
done
"$bin" safety "${m[@]}" --bench 0 "$fx/image/rgb_37x23.png" >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "--bench 0 is a usage error"
"$bin" safety "${m[@]}" --backend tpu "$fx/image/rgb_37x23.png" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "cpu or cuda" "$tmp/err" && ok || bad "--backend tpu is a usage error"
echo "test_safety: $pass passed, $failn failed"
[ $failn -eq 0 ]
