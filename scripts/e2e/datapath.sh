#!/usr/bin/env bash
# Issue 3: a real guest's traffic flows through vhostd to a tap in a network
# namespace and back, with offloads kept end to end.
#   - the guest pings the host side of the tap;
#   - iperf3 TCP both ways, then UDP;
#   - the guest's ethtool -k shows TSO on;
#   - super-packets pass whole: average TX packet size > 10 KB during the
#     guest->host iperf3 (from vhostd's counters, dumped on SIGUSR1);
#   - accounting: posted == written + dropped, and written == the tap's rx_packets.
E2E_NAME=datapath
. "$(dirname "$0")/lib.sh"
e2e_preflight
trap e2e_cleanup EXIT

NS=vhd-e2e-$$ TAP=vtap0 HOST_IP=169.254.100.1 GUEST_IP=169.254.100.2
SECS=${E2E_IPERF_SECS:-5}
sock="$OUT/datapath.sock" vlog="$OUT/datapath-vhostd.log" glog="$OUT/datapath-guest.log"
rm -f "$sock"
e2e_netns "$NS"
ip netns exec "$NS" "$VHOSTD" --socket-path "$sock" --tap "$TAP" --log-level info ${VHOSTD_EXTRA_ARGS:-} >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
for _ in $(seq 50); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.1; done
ip -n "$NS" link show "$TAP" >/dev/null 2>&1 || fail "vhostd did not create tap $TAP (see $vlog)"
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up
ip netns exec "$NS" iperf3 -s -B "$HOST_IP" >"$OUT/datapath-iperf3-server.log" 2>&1 &
E2E_PIDS+=("$!")

# The guest prints markers around the guest->host iperf3 so the host can take
# counter snapshots exactly around it.
gcmd="lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && ping -c 3 $HOST_IP && \
echo E2E-TX-B""EGIN && sleep 1 && iperf3 -c $HOST_IP -t $SECS && echo E2E-TX-E""ND && sleep 1 && \
iperf3 -c $HOST_IP -t $SECS -R && \
iperf3 -c $HOST_IP -u -b 200M -l 1400 -t 3 && \
iperf3 -c $HOST_IP -u -b 200M -l 1400 -t 3 -R"
(
  e2e_wait_log "$glog" E2E-TX-BEGIN 200 && kill -USR1 "$vpid" && sleep 0.3 && \
  e2e_wait_log "$glog" E2E-TX-END 200 && kill -USR1 "$vpid"
) &
watcher=$!
: >"$glog"
e2e_boot "$glog" "$gcmd" -n vhost-user -s "$sock" -i "$GUEST_IP/24" -T 240 \
  || fail "guest traffic failed (see $glog, $vlog)"
wait "$watcher" || fail "did not see the TX markers in $glog"
tr -d '\r' <"$glog" > "$glog.txt"

grep -q ' 0% packet loss' "$glog.txt" || fail "ping lost packets (see $glog)"
pass "guest pings the host side of the tap"
n=$(grep -c 'receiver$' "$glog.txt" || true)
[ "$n" -ge 4 ] || fail "expected 4 iperf3 results, got $n (see $glog)"
grep 'receiver$' "$glog.txt" | sed 's/^/    /' >&2
pass "iperf3 TCP both ways and UDP both ways"
sed -n '/LAB-ETHTOOL-K-BEGIN/,/LAB-ETHTOOL-K-END/p' "$glog.txt" | grep -q '^tcp-segmentation-offload: on' \
  || fail "guest ethtool -k does not show TSO on"
pass "guest TSO on"

# Counter snapshots: the two "port stats" lines logged on SIGUSR1.
snap() { grep -a 'msg="port stats"' "$vlog" | sed -n "${1}p" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
p0=$(snap 1 tx_written) p1=$(snap 2 tx_written) b0=$(snap 1 tx_bytes) b1=$(snap 2 tx_bytes)
[ -n "$p0" ] && [ -n "$p1" ] || fail "no counter snapshots in $vlog"
avg=$(( (b1 - b0) / (p1 - p0 > 0 ? p1 - p0 : 1) ))
say "guest->host iperf3: $((p1 - p0)) packets, $((b1 - b0)) bytes, average $avg bytes per TX packet"
[ "$avg" -gt 10240 ] || fail "average TX packet $avg B <= 10 KB: super-packets were not passed whole"
pass "super-packets passed whole (average $avg B)"

tap_rx=$(ip netns exec "$NS" cat /sys/class/net/$TAP/statistics/rx_packets)
kill -TERM "$vpid"; wait "$vpid" || fail "vhostd exited non-zero (see $vlog)"
E2E_PIDS=("${E2E_PIDS[@]:1}")
posted=$(e2e_stat "$vlog" tx_posted) written=$(e2e_stat "$vlog" tx_written) dropped=$(e2e_stat "$vlog" tx_dropped)
split=$(( $(e2e_stat "$vlog" tx_segmented) + $(e2e_stat "$vlog" tx_resegmented) )) segs=$(e2e_stat "$vlog" tx_segments)
say "accounting: posted=$posted written=$written dropped=$dropped (split=$split into $segs) tap_rx_packets=$tap_rx"
[ "$posted" = $((written + dropped)) ] || fail "posted != written + dropped"
# A split super-packet reaches the tap as its segments.
[ $((written - split + segs)) = "$tap_rx" ] || fail "written - split + segments ($((written - split + segs))) != tap rx_packets ($tap_rx)"
pass "every posted packet delivered or counted"
