#!/usr/bin/env bash
# Issue 7: multiqueue. A guest with two queue pairs (-netdev vhost-user,queues=2,
# ethtool -L eth0 combined 2) on a two-queue tap runs parallel iperf3 streams
# both ways; both queue pairs carry traffic in both directions.
E2E_NAME=mq
. "$(dirname "$0")/lib.sh"
e2e_preflight
trap e2e_cleanup EXIT

NS=vhd-mq-$$ TAP=vtapmq HOST_IP=169.254.102.1 GUEST_IP=169.254.102.2
sock="$OUT/mq.sock" vlog="$OUT/mq-vhostd.log" glog="$OUT/mq-guest.log"
rm -f "$sock"
e2e_netns "$NS"
ip netns exec "$NS" "$VHOSTD" --socket-path "$sock" --tap "$TAP" --queues 2 --admin-addr "" >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
for _ in $(seq 50); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.1; done
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"; ip -n "$NS" link set "$TAP" up
ip netns exec "$NS" iperf3 -s -B "$HOST_IP" >/dev/null 2>&1 & E2E_PIDS+=("$!")

gcmd="ethtool -L eth0 combined 2 && ethtool -l eth0 | tail -n 5 && lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && \
iperf3 -c $HOST_IP -t 4 -P 4 && iperf3 -c $HOST_IP -t 4 -P 4 -R"
# TCG needs INTx (vectors=0, see boot-guest.sh); mq=on exposes both pairs.
e2e_boot "$glog" "$gcmd" -n vhost-user -s "$sock" -i "$GUEST_IP/24" -N queues=2 -O mq=on -T 240 \
  || fail "guest run failed (see $glog, $vlog)"
grep -aq 'queues=2\|combined' "$glog" || true
kill -USR1 "$vpid"; sleep 0.5
stat() { grep -a 'msg="port stats"' "$vlog" | grep "queue_pair=$1 " | tail -n1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }
for q in 0 1; do
  tx=$(stat $q tx_written) rx=$(stat $q rx_packets)
  say "queue pair $q: tx_written=$tx rx_packets=$rx"
  [ -n "$tx" ] && [ "$tx" -gt 100 ] || fail "queue pair $q carried no guest TX traffic"
  [ -n "$rx" ] && [ "$rx" -gt 100 ] || fail "queue pair $q carried no guest RX traffic"
done
pass "both queue pairs carry traffic both ways"
