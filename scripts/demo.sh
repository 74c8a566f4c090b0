#!/usr/bin/env bash
# make demo: vhostd's main job on a fresh machine.
#  1. installs what is missing   2. builds vhostd   3. creates a namespace and a tap
#  4. starts vhostd              5. boots a guestlab guest on it
#  6. runs iperf3 through it     7. prints throughput, packets passed whole, drops
# Everything it creates is removed on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
[ "$(id -u)" = 0 ] || { echo "demo: needs root (taps, namespaces, QEMU)"; exit 1; }
export DEBIAN_FRONTEND=noninteractive PATH="/usr/local/go/bin:$PATH"
need=()
for pair in qemu-system-x86_64:qemu-system-x86 iperf3:iperf3 ethtool:ethtool ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "demo: installing ${need[*]}"
  apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"
fi
command -v go >/dev/null || { echo "demo: Go 1.26 is missing: install it to /usr/local/go"; exit 1; }
echo "demo: building vhostd"; make -s build
echo "demo: building the guest kernel and initramfs"
bash test/guestlab/build-initramfs.sh /tmp/guestlab >/dev/null

NS=vhostd-demo TAP=vtap0 HOST_IP=169.254.100.1 GUEST_IP=169.254.100.2 SECS=${DEMO_SECS:-10}
W=$(mktemp -d /tmp/vhostd-demo.XXXXXX)
sock="$W/vhostd.sock" vlog="$W/vhostd.log" glog="$W/guest.log"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  echo "demo: cleaned up (logs kept in $W)"
}
trap cleanup EXIT
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"; ip -n "$NS" link set lo up
echo "demo: starting vhostd on $sock with tap $TAP in namespace $NS"
ip netns exec "$NS" bin/vhostd --socket-path "$sock" --tap "$TAP" >"$vlog" 2>&1 &
vpid=$!; pids+=("$vpid")
for _ in $(seq 50); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.1; done
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"; ip -n "$NS" link set "$TAP" up
ip netns exec "$NS" iperf3 -s -B "$HOST_IP" >/dev/null 2>&1 & pids+=("$!")
echo "demo: booting a guest (QEMU, $(bash test/guestlab/boot-guest.sh -P)) and running iperf3 for ${SECS}s each way"
bash test/guestlab/boot-guest.sh -o /tmp/guestlab -K no_timer_check -n vhost-user -s "$sock" -i "$GUEST_IP/24" -l "$glog" -T 300 \
  -c "lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null; iperf3 -c $HOST_IP -t $SECS; iperf3 -c $HOST_IP -t $SECS -R" \
  || { echo "demo: the guest run failed; see $glog and $vlog"; exit 1; }
kill -USR1 "$vpid"; sleep 0.5
stat() { grep -a 'msg="port stats"' "$vlog" | tail -n1 | tr ' ' '\n' | sed -n "s/^$1=//p"; }
echo
echo "== results"
tr -d '\r' <"$glog" | grep 'receiver$' | sed -n '1s/^/guest -> host: /p; 2s/^/host -> guest: /p'
echo "TX (guest -> tap): posted=$(stat tx_posted) written=$(stat tx_written) passed whole (GSO)=$(stat tx_passthrough) dropped=$(stat tx_dropped)"
echo "RX (tap -> guest): packets=$(stat rx_packets) GSO=$(stat rx_gso) dropped=$(stat rx_dropped) stalls(no guest buffers)=$(stat rx_stalls)"
w=$(stat tx_written); b=$(stat tx_bytes)
[ -n "$w" ] && [ "$w" -gt 0 ] && echo "average TX packet: $((b / w)) bytes"
