#!/usr/bin/env bash
# test_multihost.sh TESSERA MPIRUN: several hosts for real on one machine
# (../shared/docs/multihost-testing.md). Two "hosts" are network namespaces joined to a
# bridge by veth links; mpirun starts one rank in each through an rsh agent that enters the
# namespace, with Open MPI kept on that network (TCP only, no shared memory), so MPI and the
# control plane cross a real network stack.
#   1. pipeline (pp 2) and tensor (tp 2) parallel greedy runs give the same tokens as one rank;
#   2. cutting one host's link mid-generation ends the job within seconds with Open MPI's
#      message naming the lost host (TCP keepalive settings below), never a hang.
# Each "host" also gets its own host name (a UTS namespace) and its own TMPDIR: with the
# machine's one host name and one /tmp, the two Open MPI daemons shared a session directory
# and one of them sometimes died right after daemonizing (the job then hung, or mpirun
# crashed). Every daemon is started by mpirun itself and talks to it directly (no tree
# spawn, routed direct).
# Needs root and iproute2 (exit 77, skipped, otherwise). Cleans up everything it made.
set -u
bin=$1
mpirun=$2
pass=0
failn=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failn=$((failn + 1)); }

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
  echo "SKIP: needs root and iproute2 (ip netns)"
  exit 77
fi
tag=$(( ($$ + RANDOM) % 9000 + 1000 ))
sub=$(( RANDOM % 200 + 20 ))
net=10.77.$sub
br=tsb$tag
nsa=tsh${tag}a
nsb=tsh${tag}b
tmp=$(mktemp -d)
cleanup() {
  ip netns pids "$nsa" 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns pids "$nsb" 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns del "$nsa" 2>/dev/null
  ip netns del "$nsb" 2>/dev/null
  ip link del "$br" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

ip link add "$br" type bridge && ip addr add "$net.1/24" dev "$br" && ip link set "$br" up || {
  echo "SKIP: cannot create a bridge here"; exit 77; }
i=0
for ns in "$nsa" "$nsb"; do
  i=$((i + 1))
  ip netns add "$ns" &&
    ip link add "vt$tag$i" type veth peer name eth0 netns "$ns" &&
    ip link set "vt$tag$i" master "$br" && ip link set "vt$tag$i" up &&
    ip netns exec "$ns" ip addr add "$net.1$i/24" dev eth0 &&
    ip netns exec "$ns" ip link set eth0 up && ip netns exec "$ns" ip link set lo up ||
    { echo "SKIP: cannot create network namespaces here"; exit 77; }
done
cat >"$tmp/agent" <<AG
#!/bin/sh
host=\$1; shift
case "\$host" in
  $net.11) ns=$nsa ;;
  $net.12) ns=$nsb ;;
  *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
mkdir -p "$tmp/\$ns"
exec ip netns exec "\$ns" unshare --uts env TMPDIR="$tmp/\$ns" sh -c "hostname \$ns && \$*"
AG
chmod +x "$tmp/agent"
printf '%s slots=1\n%s slots=1\n' "$net.11" "$net.12" >"$tmp/hosts"
# shellcheck disable=SC2054 # "tcp,self" is one Open MPI value
mpi=("$mpirun" --allow-run-as-root --oversubscribe --hostfile "$tmp/hosts" -np 2
     --mca plm_rsh_agent "$tmp/agent" --mca oob_tcp_if_include "$net.0/24"
     --mca btl_tcp_if_include "$net.0/24" --mca btl tcp,self
     --mca routed direct --mca plm_rsh_no_tree_spawn 1
     --mca oob_tcp_keepalive_time 4 --mca oob_tcp_keepalive_intvl 1
     --mca oob_tcp_keepalive_probes 3 -x TESSERA_COMM_TIMEOUT=30)

"$bin" mkmodel --size tiny --type q8_0 --vocab 1024 --seed 11 -o "$tmp/tiny.gguf" >/dev/null || bad "mkmodel tiny"
ids() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ids'])" "$1"; }
"$bin" run -m "$tmp/tiny.gguf" -p "hello from one host" --temp 0 -n 24 --json >"$tmp/one.json" ||
  bad "single-rank run"
for plan in "--pp 2" "--tp 2"; do
  # shellcheck disable=SC2086
  timeout 120 "${mpi[@]}" "$bin" run $plan -m "$tmp/tiny.gguf" -p "hello from one host" \
    --temp 0 -n 24 --json >"$tmp/two.json" 2>"$tmp/two.err"
  rc=$?
  if [ $rc -eq 0 ] && [ "$(ids "$tmp/one.json")" = "$(ids "$tmp/two.json")" ]; then ok
  else bad "two hosts, $plan: rc=$rc, $(tail -3 "$tmp/two.err")"; fi
done

# cut one host's link in the middle of a long generation (reference kernels: slow)
"$bin" mkmodel --size 270m --type q8_0 --vocab 1024 --seed 11 -o "$tmp/m.gguf" >/dev/null || bad "mkmodel 270m"
start=$(date +%s)
timeout 120 "${mpi[@]}" "$bin" run --pp 2 --reference -m "$tmp/m.gguf" -p "a long story" \
  --temp 0 -n 400 --ctx 512 >"$tmp/cut.out" 2>"$tmp/cut.err" &
job=$!
sleep 6
ip link set "vt${tag}2" down
wait $job
rc=$?
secs=$(( $(date +%s) - start - 6 ))
# Open MPI's message names the lost host; ours (if our transport deadline fires first)
# names the rank and the operation. mpirun itself sometimes crashes in its teardown after a
# lost host (rc 139): the job still ended, with the message.
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $secs -le 40 ] &&
   { { grep -q "lost communication with a remote daemon" "$tmp/cut.err" &&
       grep -q "$net.12" "$tmp/cut.err"; } ||
     grep -q "did not complete within" "$tmp/cut.err"; }; then
  ok
else
  bad "link cut: rc=$rc after ${secs}s: $(grep -v '^$' "$tmp/cut.err" | grep -v '^\[' | head -8)"
fi
echo "$pass passed, $failn failed"
[ $failn -eq 0 ]
