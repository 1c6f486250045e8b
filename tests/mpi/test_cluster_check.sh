#!/usr/bin/env bash
# test_cluster_check.sh TESSERA MPIRUN: `tessera cluster-check` under a real
# `mpirun -np 2` (JSON report: both ranks with host, device, memory, bandwidths; MPI
# all-reduce and send/recv figures; a proposed plan for a tiny mkmodel GGUF that the
# planner accepts at the proposed context), and `tessera plan` on the real 27B shape:
# the longest context it reports fits (--ctx N: exit 0) and one more position does not
# (exit 1), for every sizing-table configuration of docs/operations.md.
set -u
bin=$1
mpirun=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
py=python3

"$bin" mkmodel --size tiny --type q8_0 --vocab 1024 --seed 7 -o "$tmp/tiny.gguf" >/dev/null || { bad mkmodel; exit 1; }
"$mpirun" -np 2 --oversubscribe --allow-run-as-root "$bin" cluster-check -m "$tmp/tiny.gguf" \
  --json --mb 8 >"$tmp/cc.json" 2>"$tmp/cc.err" || bad "cluster-check -np 2: $(cat "$tmp/cc.err")"
$py - "$tmp/cc.json" <<'EOP' || bad "cluster-check report"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
assert len(lines) == 1, f"rank 0 alone prints one object, got {len(lines)} lines"
d = json.loads(lines[0])
assert d["world"] == 2 and len(d["ranks"]) == 2, d
for i, r in enumerate(d["ranks"]):
    assert r["rank"] == i and r["host"] and r["device"], r
    assert 0 < r["memory_free_bytes"] <= r["memory_total_bytes"], r
    assert r["memory_bandwidth_gbps"] > 0, r
    assert r["sendrecv_to"] == (i + 1) % 2 and r["mpi_sendrecv_gbps"] > 0, r
assert d["mpi_allreduce_busbw_gbps"] > 0, d
assert d["proposed"]["tp"] * d["proposed"]["pp"] == 2, d
p = d["plan"]
assert p["context"] == min(512, d["proposed"]["max_context"]) and p["context"] > 0, p
ranks = p["ranks"]
assert [r["rank"] for r in ranks] == [0, 1], ranks
assert ranks[0]["layer_begin"] == 0 and ranks[-1]["layer_end"] == 8, ranks
for r in ranks:
    assert r["weight_bytes"] + r["kv_bytes"] <= r["budget_bytes"], r
print("cluster-check ok:", d["ranks"][0]["device"], d["mpi_allreduce_busbw_gbps"], "GB/s")
EOP
# a model that cannot be read: every rank ends, rank 0 says why, exit 1
"$mpirun" -np 2 --oversubscribe --allow-run-as-root "$bin" cluster-check -m "$tmp/nope.gguf" \
  >/dev/null 2>"$tmp/cc.err"
rc=$?
[ $rc -ne 0 ] && grep -q "nope.gguf" "$tmp/cc.err" || bad "cluster-check with a missing model: rc $rc $(cat "$tmp/cc.err")"
# without mpirun: one rank, no MPI figures. Leak checking on (under ASan) for what runs
# without Open MPI (CI turns it off for the mpi label: Open MPI's own allocations)
lsan="${ASAN_OPTIONS:-}:detect_leaks=1"
ASAN_OPTIONS=$lsan "$bin" cluster-check --json --mb 8 >"$tmp/one.json" 2>"$tmp/cc.err" || bad "cluster-check alone: $(cat "$tmp/cc.err")"
$py -c "
import json,sys; d=json.load(open('$tmp/one.json'))
assert d['world'] == 1 and 'mpi_allreduce_busbw_gbps' not in d and 'plan' not in d, d
" || bad "cluster-check alone report"

# tessera plan: the reported maximum is exact for each sizing configuration
for devs in 2x12G 3x8G 4x8G 2x24G; do
  ASAN_OPTIONS=$lsan "$bin" plan --size 27b --type q4_0 --devices "$devs" --json >"$tmp/p.json" || { bad "plan $devs"; continue; }
  $py - "$tmp/p.json" >"$tmp/layouts" <<'EOP' || { bad "plan $devs json"; continue; }
import json, sys
d = json.load(open(sys.argv[1]))
for l in d["layouts"]:
    if l["max_context"]:
        print(l["tp"], l["pp"], l["max_context"])
EOP
  [ -s "$tmp/layouts" ] || bad "plan $devs: nothing fits"
  while read -r tp pp ctx; do
    "$bin" plan --size 27b --devices "$devs" --tp "$tp" --pp "$pp" --ctx "$ctx" >/dev/null ||
      bad "plan $devs tp $tp pp $pp: context $ctx reported but refused"
    if [ "$ctx" -lt 131072 ]; then
      "$bin" plan --size 27b --devices "$devs" --tp "$tp" --pp "$pp" --ctx $((ctx + 1)) >"$tmp/o" 2>&1
      [ $? -eq 1 ] && grep -q "does not fit" "$tmp/o" ||
        bad "plan $devs tp $tp pp $pp: context $((ctx + 1)) accepted above the maximum $ctx"
    fi
  done <"$tmp/layouts"
done
# usage errors
"$bin" plan --size 27b --devices 12X >/dev/null 2>&1; [ $? -eq 2 ] || bad "plan: bad --devices not refused"
"$bin" plan --size 99b --devices 12G >/dev/null 2>&1; [ $? -eq 2 ] || bad "plan: unknown size not refused"
"$bin" plan --size 27b --devices 2x12G --tp 2 --pp 2 >/dev/null 2>&1; [ $? -eq 2 ] || bad "plan: tp x pp != devices not refused"
[ $fail -eq 0 ] && echo "all passed"
exit $fail
