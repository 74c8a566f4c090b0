#!/usr/bin/env bash
# Issue 13: packed virtqueues with real guests (QEMU -device
# virtio-net-pci,packed=on).
#   1. A packed guest on a tap in a network namespace: the guest's driver
#      acked RING_PACKED (console LAB-VIRTIO-FEATURE-NAMES) and vhostd
#      negotiated it (bit 34 in its "negotiated features" log line, rings
#      "packed" in vhostd status); ping, iperf3 TCP both ways and UDP both
#      ways; super-packets pass whole (average TX packet > 10 KB around the
#      guest->host iperf3); exact accounting (tx_posted == tx_written +
#      tx_dropped, and what was written is what the tap received).
#   2. Guest to guest: a packed guest and a split guest on two cross-connected
#      vhostd ports run iperf3 both ways; super-packets cross whole both ways
#      (each sender's average TX packet > 10 KB, each receiver got GSO
#      packets, nothing segmented on the way), accounting exact on both ports.
# E2E_IPERF_SECS (default 5) sets the iperf3 duration.
E2E_NAME=packed
. "$(dirname "$0")/lib.sh"
e2e_preflight
trap e2e_cleanup EXIT

SECS=${E2E_IPERF_SECS:-5}

# acked_bit LOG BIT: whether vhostd's last "negotiated features" line in LOG
# has virtio feature BIT set.
acked_bit() {
  local f
  f=$(grep -a 'msg="negotiated features"' "$1" | tail -n1 | tr ' ' '\n' | sed -n 's/^features=//p' | tail -n1)
  [ -n "$f" ] && [ $(( f >> $2 & 1 )) = 1 ]
}
guest_feats() { sed -n 's/^LAB-VIRTIO-FEATURE-NAMES //p' "$1" | tail -n1; }

# ---------------------------------------------------------------- 1. tap --
NS=vhd-pk-$$ TAP=vtappk HOST_IP=169.254.102.1 GUEST_IP=169.254.102.2
sock="$OUT/packed.sock" vlog="$OUT/packed-vhostd.log" glog="$OUT/packed-guest.log"
admin=127.0.0.1:9641
rm -f "$sock"
e2e_netns "$NS"
ip netns exec "$NS" "$VHOSTD" --socket-path "$sock" --tap "$TAP" --admin-addr "$admin" --control-socket "" \
  --log-level info ${VHOSTD_EXTRA_ARGS:-} >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
e2e_wait_tap "$NS" "$TAP" 5 || fail "vhostd did not create tap $TAP (see $vlog)"
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up
ip netns exec "$NS" iperf3 -s -B "$HOST_IP" >"$OUT/packed-iperf3-server.log" 2>&1 &
E2E_PIDS+=("$!")

# Markers around the guest->host iperf3 let the host take counter snapshots
# (SIGUSR1) exactly around it, and one after the pings for vhostd status.
gcmd="lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && ping -c 3 $HOST_IP && echo E2E-PING-D""ONE && sleep 2 && \
echo E2E-TX-B""EGIN && sleep 1 && iperf3 -c $HOST_IP -t $SECS && echo E2E-TX-E""ND && sleep 1 && \
iperf3 -c $HOST_IP -t $SECS -R && \
iperf3 -c $HOST_IP -u -b 200M -l 1400 -t 3 && \
iperf3 -c $HOST_IP -u -b 200M -l 1400 -t 3 -R"
: >"$glog"
(
  e2e_wait_log "$glog" E2E-PING-DONE 300 && \
    ip netns exec "$NS" "$VHOSTD" status --admin-addr "$admin" >"$OUT/packed-status.txt" 2>&1
  e2e_wait_log "$glog" E2E-TX-BEGIN 300 && kill -USR1 "$vpid" && sleep 0.3 && \
  e2e_wait_log "$glog" E2E-TX-END 300 && kill -USR1 "$vpid"
) &
watcher=$!
e2e_boot "$glog" "$gcmd" -n vhost-user -s "$sock" -i "$GUEST_IP/24" -O packed=on -T 300 \
  || fail "packed guest traffic failed (see $glog, $vlog)"
wait "$watcher" || fail "did not see the markers in $glog"
tr -d '\r' <"$glog" >"$glog.txt"

feats=" $(guest_feats "$glog.txt") "
say "guest acked:$feats"
case "$feats" in *" RING_PACKED "*) ;; *) fail "the guest did not ack RING_PACKED (see $glog)" ;; esac
acked_bit "$vlog" 34 || fail "vhostd did not negotiate RING_PACKED (see $vlog)"
grep -q 'size [0-9]*, packed' "$OUT/packed-status.txt" \
  || fail "vhostd status does not show packed rings (see $OUT/packed-status.txt)"
grep -a ' ring: ' "$OUT/packed-status.txt" | sed 's/^/    /' >&2
pass "RING_PACKED negotiated by the guest and by vhostd; status shows packed rings"

grep -q ' 0% packet loss' "$glog.txt" || fail "ping lost packets (see $glog)"
pass "guest pings the host side of the tap"
n=$(grep -c 'receiver$' "$glog.txt" || true)
[ "$n" -ge 4 ] || fail "expected 4 iperf3 results, got $n (see $glog)"
grep 'receiver$' "$glog.txt" | sed 's/^/    /' >&2
pass "iperf3 TCP both ways and UDP both ways over packed rings"

snap() { grep -a 'msg="port stats"' "$vlog" | sed -n "${1}p" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
p0=$(snap 1 tx_written) p1=$(snap 2 tx_written) b0=$(snap 1 tx_bytes) b1=$(snap 2 tx_bytes)
[ -n "$p0" ] && [ -n "$p1" ] || fail "no counter snapshots in $vlog"
avg=$(( (b1 - b0) / (p1 - p0 > 0 ? p1 - p0 : 1) ))
say "guest->host iperf3: $((p1 - p0)) packets, $((b1 - b0)) bytes, average $avg bytes per TX packet"
[ "$avg" -gt 10240 ] || fail "average TX packet $avg B <= 10 KB: super-packets were not passed whole"
pass "super-packets passed whole over packed rings (average $avg B)"

tap_rx=$(ip netns exec "$NS" cat /sys/class/net/$TAP/statistics/rx_packets)
kill -TERM "$vpid"; wait "$vpid" || fail "vhostd exited non-zero (see $vlog)"
E2E_PIDS=("${E2E_PIDS[@]:1}")
posted=$(e2e_stat "$vlog" tx_posted) written=$(e2e_stat "$vlog" tx_written) dropped=$(e2e_stat "$vlog" tx_dropped)
split=$(( $(e2e_stat "$vlog" tx_segmented) + $(e2e_stat "$vlog" tx_resegmented) )) segs=$(e2e_stat "$vlog" tx_segments)
rxp=$(e2e_stat "$vlog" rx_packets) rxd=$(e2e_stat "$vlog" rx_dropped)
say "accounting: tx_posted=$posted tx_written=$written tx_dropped=$dropped (split=$split into $segs) tap_rx_packets=$tap_rx rx_packets=$rxp rx_dropped=$rxd"
[ "$posted" = $((written + dropped)) ] || fail "tx_posted != tx_written + tx_dropped"
[ $((written - split + segs)) = "$tap_rx" ] || fail "written - split + segments ($((written - split + segs))) != tap rx_packets ($tap_rx)"
[ "$rxp" -gt 0 ] || fail "no RX packets counted"
pass "every posted packet delivered or counted (tx_posted == tx_written + tx_dropped)"

# --------------------------------------------------- 2. packed <-> split --
s1="$OUT/packed-g2g-1.sock" s2="$OUT/packed-g2g-2.sock" vlog2="$OUT/packed-g2g-vhostd.log"
l1="$OUT/packed-g2g-packed.log" l2="$OUT/packed-g2g-split.log"
rm -f "$s1" "$s2"
"$VHOSTD" --port "name=vm1,socket=$s1" --port "name=vm2,socket=$s2" --admin-addr "" --control-socket "" \
  --log-level info ${VHOSTD_EXTRA_ARGS:-} >"$vlog2" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")

# vm1: the packed guest, iperf3 server for two tests (-1 serves one client).
e2e_boot "$l1" 'iperf3 -s -1 && iperf3 -s -1' -n vhost-user -s "$s1" -i 169.254.103.2/24 -p 1 -O packed=on -T 300 &
g1=$!
# vm2: the split guest sends, then receives (-R).
e2e_boot "$l2" "lab-retry 60 ping -c1 -W1 169.254.103.2 >/dev/null && ping -c 3 169.254.103.2 && \
lab-retry 20 iperf3 -c 169.254.103.2 -t $SECS && sleep 1 && lab-retry 20 iperf3 -c 169.254.103.2 -t $SECS -R" \
  -n vhost-user -s "$s2" -i 169.254.103.3/24 -p 1 -T 300 || fail "split guest failed (see $l2, $vlog2)"
wait "$g1" || fail "packed guest failed (see $l1)"
tr -d '\r' <"$l1" >"$l1.txt"; tr -d '\r' <"$l2" >"$l2.txt"
f1=" $(guest_feats "$l1.txt") " f2=" $(guest_feats "$l2.txt") "
case "$f1" in *" RING_PACKED "*) ;; *) fail "vm1 did not ack RING_PACKED (see $l1)" ;; esac
case "$f2" in *" RING_PACKED "*) fail "vm2 acked RING_PACKED without packed=on" ;; esac
pass "vm1 runs packed rings, vm2 split rings"
grep 'receiver$' "$l2.txt" | sed 's/^/    /' >&2
[ "$(grep -c 'receiver$' "$l2.txt" || true)" -ge 2 ] || fail "expected 2 iperf3 results (see $l2)"
grep -q ' 0% packet loss' "$l2.txt" || fail "ping between the guests lost packets"
pass "the guests ping each other and run iperf3 both ways"

kill -TERM "$vpid"; wait "$vpid" || fail "vhostd exited non-zero (see $vlog2)"
E2E_PIDS=()
stat() { grep -a 'msg="port stats"' "$vlog2" | grep "port=$1 " | tail -n1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }
for dir in "vm2 vm1" "vm1 vm2"; do
  set -- $dir
  w=$(stat "$1" tx_written) b=$(stat "$1" tx_bytes) p=$(stat "$1" tx_passthrough) g=$(stat "$2" rx_gso)
  sg=$(stat "$2" rx_segmented)
  posted=$(stat "$1" tx_posted) dropped=$(stat "$1" tx_dropped)
  [ -n "$w" ] && [ "$w" -gt 0 ] || fail "no TX counters for $1 in $vlog2"
  avg=$((b / w))
  say "$1 -> $2: $w packets ($p super-packets passed whole), average $avg B; $2 received $g GSO packets, segmented ${sg:-0}"
  [ "$avg" -gt 10240 ] || fail "$1 -> $2: average TX packet $avg B <= 10 KB: super-packets did not cross whole"
  [ "$g" -gt 0 ] || fail "$2 got no GSO packets"
  [ "${sg:-0}" = 0 ] || fail "$2 had $sg super-packets segmented on the way"
  [ "$posted" = $((w + dropped)) ] || fail "$1: tx_posted $posted != tx_written $w + tx_dropped $dropped"
done
pass "super-packets cross whole both ways between a packed and a split guest, accounting exact"
