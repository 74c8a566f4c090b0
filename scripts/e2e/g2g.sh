#!/usr/bin/env bash
# Issue 7: two guests on two vhostd ports (a cross-connect) run iperf3
# between themselves; super-packets cross whole: the sender's average TX
# packet is above 10 KB and the receiver gets GSO packets.
E2E_NAME=g2g
. "$(dirname "$0")/lib.sh"
e2e_preflight
trap e2e_cleanup EXIT

SECS=${E2E_IPERF_SECS:-5}
s1="$OUT/g2g-1.sock" s2="$OUT/g2g-2.sock" vlog="$OUT/g2g-vhostd.log"
l1="$OUT/g2g-guest1.log" l2="$OUT/g2g-guest2.log"
rm -f "$s1" "$s2"
"$VHOSTD" --port "name=vm1,socket=$s1" --port "name=vm2,socket=$s2" --admin-addr "" ${VHOSTD_EXTRA_ARGS:-} >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")

e2e_boot "$l1" 'iperf3 -s -1' -n vhost-user -s "$s1" -i 169.254.101.2/24 -p 1 -T 240 &
g1=$!
e2e_boot "$l2" "lab-retry 60 ping -c1 -W1 169.254.101.2 >/dev/null && ping -c 3 169.254.101.2 && lab-retry 20 iperf3 -c 169.254.101.2 -t $SECS" \
  -n vhost-user -s "$s2" -i 169.254.101.3/24 -p 1 -T 240 || fail "sending guest failed (see $l2, $vlog)"
wait "$g1" || fail "receiving guest failed (see $l1)"
tr -d '\r' <"$l2" | grep 'receiver$' | sed 's/^/    /' >&2
tr -d '\r' <"$l2" | grep -q ' 0% packet loss' || fail "ping between the guests lost packets"
pass "guests ping each other through the cross-connect"

kill -TERM "$vpid"; wait "$vpid" || fail "vhostd exited non-zero (see $vlog)"
E2E_PIDS=()
stat() { grep -a 'msg="port stats"' "$vlog" | grep "port=$1 " | tail -n1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }
w=$(stat vm2 tx_written) b=$(stat vm2 tx_bytes) g=$(stat vm1 rx_gso) p=$(stat vm2 tx_passthrough)
[ -n "$w" ] && [ "$w" -gt 0 ] || fail "no TX counters for vm2 in $vlog"
avg=$((b / w))
say "vm2 -> vm1: $w packets ($p super-packets passed whole), average $avg B; vm1 received $g GSO packets"
[ "$avg" -gt 10240 ] || fail "average TX packet $avg B <= 10 KB: super-packets did not cross whole"
[ "$g" -gt 0 ] || fail "the receiving guest got no GSO packets"
posted=$(stat vm2 tx_posted) dropped=$(stat vm2 tx_dropped)
[ "$posted" = $((w + dropped)) ] || fail "vm2: posted $posted != written $w + dropped $dropped"
pass "super-packets crossed whole (average $avg B), accounting exact"
