#!/usr/bin/env bash
# Issue 10: the guest's MTU and the egress device's limits, with a real guest.
#   A. The tap is a port of bridge br0 whose other port (vport0) has
#      gso_max_size 16384. The guest runs with host_mtu=9000 (libvirt
#      <mtu size='9000'/>): vhostd sets the tap's MTU to 9000, 8000-byte pings
#      pass, and guest->host iperf3 super-packets are re-segmented because of
#      vport0's limit, which `vhostd status` names ("egress device vport0
#      (bridge br0)"). Raising vport0's gso_max_size while the guest runs
#      lets the next super-packets pass whole, without a restart.
#   B. vhostd pinned with --mtu 1500 and a guest asking for 9000: the request
#      is refused, QEMU reports "MTU not supported by the backend", and
#      `vhostd status` says REFUSED.
E2E_NAME=limits
. "$(dirname "$0")/lib.sh"
e2e_preflight
trap e2e_cleanup EXIT

NS=vhd-lim-$$ TAP=vtaplim BR=br0 HOST_IP=169.254.103.1 GUEST_IP=169.254.103.2
ADMIN=127.0.0.1:$((19700 + $$ % 200))
sock="$OUT/limits.sock" vlog="$OUT/limits-vhostd.log" glog="$OUT/limits-guest.log"
rm -f "$sock"
e2e_netns "$NS"
ip -n "$NS" link add "$BR" type bridge
ip -n "$NS" link add vport0 mtu 9000 type veth peer name vport0p mtu 9000
ip -n "$NS" link set vport0 gso_max_size 16384
ip -n "$NS" link set vport0 master "$BR"
ip -n "$NS" link set vport0 up; ip -n "$NS" link set vport0p up
ip -n "$NS" addr add "$HOST_IP/24" dev "$BR"

ip netns exec "$NS" "$VHOSTD" --socket-path "$sock" --tap "$TAP" --admin-addr "$ADMIN" >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
e2e_wait_tap "$NS" "$TAP" 5 || fail "vhostd did not create $TAP (see $vlog)"
ip -n "$NS" link set "$TAP" master "$BR"
ip -n "$NS" link set "$TAP" up
ip -n "$NS" link set "$BR" up
ip netns exec "$NS" iperf3 -s -B "$HOST_IP" >/dev/null 2>&1 & E2E_PIDS+=("$!")

status() { ip netns exec "$NS" "$VHOSTD" status --admin-addr "$ADMIN" 2>&1; }

gcmd="lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && ping -c 3 -s 8000 $HOST_IP && \
iperf3 -c $HOST_IP -t 3 && echo E2E-PHASE1-DONE && lab-retry 40 wget -q -O /dev/null http://$HOST_IP:18080/go 2>/dev/null; \
iperf3 -c $HOST_IP -t 3"
(
  e2e_wait_log "$glog" E2E-PHASE1-DONE 240 || exit 1
  status >"$OUT/limits-status-1.txt"
  # Raise the egress limit while the guest runs; vhostd re-reads it.
  ip -n "$NS" link set vport0 gso_max_size 65536
  sleep 7
  mkdir -p "$OUT/limits-www" && echo go >"$OUT/limits-www/go"
  ip netns exec "$NS" timeout 60 busybox httpd -f -p "$HOST_IP:18080" -h "$OUT/limits-www" &
  echo $! >"$OUT/limits-httpd.pid"
) &
watcher=$!
: >"$glog"
e2e_boot "$glog" "$gcmd" -n vhost-user -s "$sock" -i "$GUEST_IP/24" -u 9000 -O host_mtu=9000 -T 300 \
  || fail "guest run failed (see $glog, $vlog)"
wait "$watcher" || fail "no phase marker in $glog"
kill "$(cat "$OUT/limits-httpd.pid" 2>/dev/null)" 2>/dev/null || true
tr -d '\r' <"$glog" >"$glog.txt"
status >"$OUT/limits-status-2.txt"

mtu=$(ip -n "$NS" -o link show "$TAP" | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
[ "$mtu" = 9000 ] || fail "tap MTU $mtu, want 9000 from the guest's host_mtu"
pass "the guest's MTU 9000 reached the tap"
grep -q '3 packets received' "$glog.txt" || fail "8000-byte pings failed (see $glog)"
pass "8000-byte pings pass"
s1="$OUT/limits-status-1.txt" s2="$OUT/limits-status-2.txt"
grep -q 'Guest MTU: *9000: backend link MTU set to 9000' "$s1" || { cat "$s1" >&2; fail "status lacks the guest MTU line"; }
grep -q 'Limits from: *vport0 (bridge br0)' "$s1" || { cat "$s1" >&2; fail "status does not name vport0 (bridge br0)"; }
grep -q 'gso_max_size 16384 on egress device vport0 (bridge br0) of tap' "$s1" || { cat "$s1" >&2; fail "diagnosis does not name the egress device"; }
pass "status names the egress device whose limit decided, and the guest MTU"
sed -n '/Diagnosis/,$p' "$s1" | head -n 4 | sed 's/^/    /' >&2
# Split = re-segmented + cut to MSS (at MTU 9000 a 16384-byte chunk holds
# one MSS, so vhostd cuts to MSS, as the kernel would).
split() { sed -n 's/.*TX: .* \([0-9]*\) resegmented, \([0-9]*\) segmented.*/\1 \2/p' "$1" | head -n1 | awk '{print $1+$2}'; }
reseg1=$(split "$s1") reseg2=$(split "$s2")
pt1=$(sed -n 's/.*TX: .* \([0-9]*\) passthrough.*/\1/p' "$s1" | head -n1)
pt2=$(sed -n 's/.*TX: .* \([0-9]*\) passthrough.*/\1/p' "$s2" | head -n1)
say "phase 1: split $reseg1 passthrough $pt1; after raising vport0: split $reseg2 passthrough $pt2"
[ "${reseg1:-0}" -gt 10 ] || fail "phase 1 split no super-packets for vport0's 16384"
[ "${reseg2:-0}" = "$reseg1" ] || fail "super-packets were still split after raising vport0's limit ($reseg1 -> $reseg2)"
grep -q 'gso_max_size 65536' "$s2" || { cat "$s2" >&2; fail "the raised limit did not reach vhostd"; }
[ $(( ${pt2:-0} - ${pt1:-0} )) -gt 10 ] || fail "after raising vport0's limit no super-packet passed whole"
pass "vhostd followed vport0's gso_max_size change live"

# B: --mtu pins the MTU; the guest's 9000 is refused.
kill "$vpid"; wait "$vpid" 2>/dev/null || true
rm -f "$sock"
ip netns exec "$NS" "$VHOSTD" --socket-path "$sock" --tap "$TAP" --mtu 1500 --admin-addr "$ADMIN" >"$vlog.b" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
sleep 1
e2e_boot "$glog.b" "sleep 3" -n vhost-user -s "$sock" -i "$GUEST_IP/24" -O host_mtu=9000 -T 120 2>"$OUT/limits-qemu-b.err" || true
grep -q 'MTU not supported by the backend' "$OUT/limits-qemu-b.err" || { cat "$OUT/limits-qemu-b.err" >&2; fail "QEMU did not report the refused MTU"; }
pass "QEMU reports: $(grep -m1 'MTU not supported' "$OUT/limits-qemu-b.err")"
grep -q 'front-end MTU refused' "$vlog.b" || fail "vhostd did not log the refusal"
status >"$OUT/limits-status-3.txt"
grep -q 'Guest MTU: *9000 REFUSED' "$OUT/limits-status-3.txt" || { cat "$OUT/limits-status-3.txt" >&2; fail "status does not say REFUSED"; }
pass "vhostd status: $(grep -m1 'Guest MTU' "$OUT/limits-status-3.txt" | sed 's/^ *//')"
