#!/usr/bin/env bash
# Issue 10: a multiqueue port whose guest uses fewer queue pairs than the port
# has. A 1-vCPU guest on a 2-queue vhostd port (vhostd --queues 2, QEMU
# queues=2,mq=on): Linux enables min(queues, vCPUs) = 1 pair, so QEMU disables
# pair 1 (SET_VRING_ENABLE 0). The tap still has 2 queues, and tun spreads the
# host's new flows over its attached queues by flow hash, so a host-initiated
# connection whose hash picks tap queue 1 is lost unless vhostd detaches that
# queue (TUNSETQUEUE IFF_DETACH_QUEUE) while the pair is disabled.
#
#   phase 1: 1 pair enabled (the guest's default with 1 vCPU);
#   phase 2: the guest runs ethtool -L eth0 combined 2;
#   phase 3: the guest runs ethtool -L eth0 combined 1.
# In each phase 32 TCP connections are opened from the host side (in the
# namespace) to busybox httpd in the guest, all at once, each from its own
# source port (so tun's flow hash spreads them over the tap queues), and each
# must fetch the page. When vhostd's "port stats" lines carry
# backend_attached/backend_attaches/backend_detaches, pair 1 must be detached
# in phases 1 and 3 and attached in phase 2.
#
# Coordination does not use the network under test: the guest prints
# "MQA-PHASE N combined=C" on its console (-l log, which the host watches), and
# waits for the host's go-ahead on a second serial port (/dev/ttyS1), which
# QEMU connects to a FIFO pair ($OUT/mq-attach-ctl.in/.out).
# Static neighbour entries on both sides keep ARP out of the picture.
E2E_NAME=mq-attach
. "$(dirname "$0")/lib.sh"
e2e_preflight
command -v curl >/dev/null || { say "curl missing: apt-get install curl"; [ -n "${CI:-}" ] && exit 1; exit 77; }

NS=vhd-mqa-$$ TAP=vtapma HOST_IP=169.254.111.1 GUEST_IP=169.254.111.2 PORT=8080
NCONN=${E2E_MQA_CONNS:-32}
sock="$OUT/mq-attach.sock" vlog="$OUT/mq-attach-vhostd.log" glog="$OUT/mq-attach-guest.log"
qlog="$OUT/mq-attach-qemu.log" ctl="$OUT/mq-attach-ctl" qpidf="$OUT/mq-attach-qemu.pid"
rm -f "$sock" "$ctl.in" "$ctl.out" "$qpidf"
QEMU_PID=""
mqa_cleanup() {
  [ -z "$QEMU_PID" ] || kill -KILL "$QEMU_PID" 2>/dev/null || true
  e2e_cleanup
  rm -f "$ctl.in" "$ctl.out"
}
trap mqa_cleanup EXIT

e2e_netns "$NS"
ip netns exec "$NS" "$VHOSTD" --socket-path "$sock" --tap "$TAP" --queues 2 --log-level info --admin-addr "" \
  ${VHOSTD_EXTRA_ARGS:-} >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
e2e_wait_tap "$NS" "$TAP" 5 || fail "vhostd did not create tap $TAP (see $vlog)"
ip netns exec "$NS" sysctl -qw "net.ipv6.conf.$TAP.disable_ipv6=1" || true
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up
tap_mac=$(ip -n "$NS" link show "$TAP" | awk '/link\/ether/ { print $2 }')
guest_mac=$(printf '52:54:00:00:%02x:%02x' "$(echo "$GUEST_IP" | cut -d. -f3)" "$(echo "$GUEST_IP" | cut -d. -f4)")
ip -n "$NS" neigh replace "$GUEST_IP" lladdr "$guest_mac" dev "$TAP" nud permanent

# The control channel: QEMU opens both FIFOs read-write, so neither side blocks.
mkfifo "$ctl.in" "$ctl.out"
exec 5<>"$ctl.in" 6<>"$ctl.out"
send() { echo "$1" >&5; }

# shellcheck disable=SC2016
gcmd='stty -F /dev/ttyS1 raw -echo && exec 3</dev/ttyS1 || exit 3
echo 1 >/proc/sys/net/ipv6/conf/eth0/disable_ipv6
ip neigh replace '$HOST_IP' lladdr '$tap_mac' dev eth0 nud permanent
mkdir -p /tmp/www && echo mq-attach-ok >/tmp/www/index.html && httpd -p '$PORT' -h /tmp/www || exit 4
w(){ while read -r l <&3; do [ "$l" = "$1" ] && return 0; done; return 1; }
p(){ echo "MQA-PHASE $1 combined=$(ethtool -l eth0 | awk "/^Combined:/ {c=\$2} END {print c}")"; }
p 1; w go2 || exit 5; ethtool -L eth0 combined 2; p 2; w go3 || exit 5; ethtool -L eth0 combined 1; p 3; w end'

e2e_boot "$glog" "$gcmd" -n vhost-user -s "$sock" -i "$GUEST_IP/24" -p 1 -N queues=2 -O mq=on -T 300 \
  -X "-pidfile $qpidf -chardev pipe,id=ctl,path=$ctl -device isa-serial,chardev=ctl" >"$qlog" 2>&1 &
bootpid=$!; E2E_PIDS+=("$bootpid")
for _ in $(seq 600); do [ -s "$qpidf" ] && break; sleep 0.1; done
QEMU_PID=$(cat "$qpidf" 2>/dev/null || true)
[ -n "$QEMU_PID" ] || fail "QEMU did not start (see $qlog)"

# connect PHASE: NCONN parallel HTTP fetches from distinct source ports; prints
# how many got the page.
connect() {
  ip netns exec "$NS" bash -c '
    n=$1 base=$2 url=$3
    for i in $(seq 0 $((n - 1))); do
      ( [ "$(curl -s --connect-timeout 20 -m 30 --local-port $((base + i)) "$url")" = mq-attach-ok ] && echo ok ) &
    done
    wait' _ "$NCONN" $((20000 + 100 * $1)) "http://$GUEST_IP:$PORT/" | grep -c '^ok$' || true
}

KEYS="backend_attached backend_attaches backend_detaches"
declare -A prev
rc=0 results=()
for phase in 1 2 3; do
  e2e_wait_log "$glog" "MQA-PHASE $phase " 180 || fail "guest never reached phase $phase (see $glog, $qlog)"
  combined=$(tr -d '\r' <"$glog" | sed -n "s/^MQA-PHASE $phase combined=//p" | tail -n1)
  want=1; [ "$phase" = 2 ] && want=2
  [ "$combined" = "$want" ] || { say "phase $phase: guest reports combined=$combined, want $want"; rc=1; }
  sleep 0.5
  t0=$(date +%s)
  ok=$(connect "$phase")
  dt=$(( $(date +%s) - t0 ))
  e2e_dump_stats "$vpid" "$vlog" 2 || fail "no port stats lines from vhostd (see $vlog)"
  summary="phase $phase (combined $combined): $ok/$NCONN connections ok in ${dt}s"
  for q in 0 1; do
    line="pair $q:"
    for k in rx_packets tx_written rx_dropped tx_dropped; do
      v=$(e2e_stat_qp "$vlog" $q $k)
      line="$line $k=$v(+$(( ${v:-0} - ${prev[$q$k]:-0} )))"
      prev[$q$k]=${v:-0}
    done
    for k in $KEYS; do
      v=$(e2e_stat_qp "$vlog" $q $k)
      [ -z "$v" ] || line="$line $k=$v"
    done
    d=$(e2e_drops "$vlog" $q); [ -z "$d" ] || line="$line [$d]"
    say "  $line"
  done
  # With two pairs enabled tun must have spread some of the 32 flows to queue 1.
  if [ "$phase" = 2 ] && [ "$(( ${prev[1rx_packets]} - ${p1rx:-0} ))" -le 0 ]; then
    say "phase 2: pair 1 received nothing: the flows were not spread over both queues"; rc=1
  fi
  p1rx=${prev[1rx_packets]}
  att=$(e2e_stat_qp "$vlog" 1 backend_attached)
  if [ -n "$att" ]; then
    want_att=0; [ "$phase" = 2 ] && want_att=1
    if [ "$att" != "$want_att" ]; then
      say "phase $phase: pair 1 backend_attached=$att, want $want_att"; rc=1
      summary="$summary, pair 1 backend_attached=$att (want $want_att)"
    else
      summary="$summary, pair 1 backend_attached=$att"
    fi
  else
    summary="$summary, backend_attached not reported"
  fi
  say "$summary"
  results+=("$summary")
  [ "$ok" = "$NCONN" ] || rc=1
  case $phase in 1) send go2 ;; 2) send go3 ;; 3) send end ;; esac
done

grc=0; wait "$bootpid" || grc=$?
E2E_PIDS=("$vpid")
QEMU_PID=""
[ "$grc" = 0 ] || { say "guest exited with $grc (see $glog, $qlog)"; rc=1; }
kill -0 "$vpid" 2>/dev/null || { say "vhostd died (see $vlog)"; rc=1; }
say "summary:"
for r in "${results[@]}"; do say "  $r"; done
[ "$rc" = 0 ] || fail "not every host-side connection was answered in every phase (logs: $vlog, $glog)"
pass "all $NCONN connections answered with 1, 2 and again 1 enabled queue pairs"
