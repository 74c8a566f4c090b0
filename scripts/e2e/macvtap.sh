#!/usr/bin/env bash
# Issue 7: a guest on a macvtap (bridge mode) over a veth; iperf3 both ways to
# a namespace on the other veth end, offloads on. The guest uses the
# macvtap's MAC (a macvtap only passes unicast to its own address).
E2E_NAME=macvtap
. "$(dirname "$0")/lib.sh"
e2e_preflight
trap e2e_cleanup EXIT

NS1=vhd-mv1-$$ NS2=vhd-mv2-$$ MAC=52:54:00:00:67:02 PEER_IP=169.254.103.1 GUEST_IP=169.254.103.2
sock="$OUT/macvtap.sock" vlog="$OUT/macvtap-vhostd.log" glog="$OUT/macvtap-guest.log"
rm -f "$sock"
e2e_netns "$NS1"; e2e_netns "$NS2"
ip -n "$NS1" link add vlow type veth peer name vpeer
ip -n "$NS1" link set vpeer netns "$NS2"
ip -n "$NS1" link set vlow up
ip -n "$NS2" addr add "$PEER_IP/24" dev vpeer
ip -n "$NS2" link set vpeer up
ip netns exec "$NS2" iperf3 -s -B "$PEER_IP" >/dev/null 2>&1 & E2E_PIDS+=("$!")

ip netns exec "$NS1" "$VHOSTD" --socket-path "$sock" --macvtap mvt0 --macvtap-lower vlow --macvtap-mac "$MAC" \
  --admin-addr "" >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
gcmd="lab-retry 60 ping -c1 -W1 $PEER_IP >/dev/null && ping -c 3 $PEER_IP && \
echo E2E-TX-B\"\"EGIN && sleep 1 && iperf3 -c $PEER_IP -t 4 && echo E2E-TX-E\"\"ND && sleep 1 && iperf3 -c $PEER_IP -t 4 -R"
(
  e2e_wait_log "$glog" E2E-TX-BEGIN 200 && kill -USR1 "$vpid" && sleep 0.3 && \
  e2e_wait_log "$glog" E2E-TX-END 200 && kill -USR1 "$vpid"
) &
watcher=$!
: >"$glog"
e2e_boot "$glog" "$gcmd" -n vhost-user -s "$sock" -i "$GUEST_IP/24" -a "$MAC" -T 240 \
  || fail "guest run failed (see $glog, $vlog)"
wait "$watcher" || fail "did not see the TX markers"
tr -d '\r' <"$glog" > "$glog.txt"
grep -q ' 0% packet loss' "$glog.txt" || fail "ping over the macvtap lost packets"
n=$(grep -c 'receiver$' "$glog.txt" || true)
[ "$n" -ge 2 ] || fail "expected 2 iperf3 results, got $n"
grep 'receiver$' "$glog.txt" | sed 's/^/    /' >&2
sed -n '/LAB-ETHTOOL-K-BEGIN/,/LAB-ETHTOOL-K-END/p' "$glog.txt" | grep -q '^tcp-segmentation-offload: on' || fail "guest TSO is off"
snap() { grep -a 'msg="port stats"' "$vlog" | sed -n "${1}p" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
p0=$(snap 1 tx_written) p1=$(snap 2 tx_written) b0=$(snap 1 tx_bytes) b1=$(snap 2 tx_bytes)
avg=$(( (b1 - b0) / (p1 - p0 > 0 ? p1 - p0 : 1) ))
say "guest -> peer over macvtap: $((p1 - p0)) packets, average $avg B"
[ "$avg" -gt 10240 ] || fail "average TX packet $avg B: super-packets were not passed whole to the macvtap"
pass "guest on a macvtap over a veth: ping, iperf3 both ways, TSO on, super-packets whole (average $avg B)"
