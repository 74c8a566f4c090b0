#!/usr/bin/env bash
# Issue 6 "Exposure": vhostd runs without root and without any capability
# when the tap is created beforehand, owned by vhostd's user, and set up.
# The guest then pings the host through it. Also checks the socket is 0600.
E2E_NAME=unprivileged
. "$(dirname "$0")/lib.sh"
e2e_preflight
command -v setpriv >/dev/null || fail "setpriv missing (util-linux)"
trap e2e_cleanup EXIT

NS=vhd-up-$$ TAP=utap0 USR=65534 HOST_IP=169.254.104.1 GUEST_IP=169.254.104.2
dir="$OUT/unpriv"; rm -rf "$dir"; mkdir -p "$dir"; chown "$USR:$USR" "$dir"
sock="$dir/u.sock" vlog="$OUT/unpriv-vhostd.log" glog="$OUT/unpriv-guest.log"
e2e_netns "$NS"
ip -n "$NS" tuntap add dev "$TAP" mode tap vnet_hdr user "$USR" group "$USR"
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up
ip netns exec "$NS" setpriv --reuid="$USR" --regid="$USR" --clear-groups --inh-caps=-all --bounding-set=-all \
  "$VHOSTD" --socket-path "$sock" --tap "$TAP" --admin-addr "" >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || fail "vhostd did not start unprivileged (see $vlog)"
pid=$(pgrep -f "vhostd --socket-path $sock" | head -n1)
caps=$(sed -n 's/^CapEff:\s*//p' /proc/$pid/status) uid=$(awk '/^Uid:/ {print $2}' /proc/$pid/status)
say "vhostd runs as uid $uid with effective capabilities $caps"
[ "$uid" = "$USR" ] && [ "$caps" = 0000000000000000 ] || fail "vhostd is not unprivileged"
mode=$(stat -c %a "$sock")
[ "$mode" = 600 ] || fail "socket mode $mode, want 600"
e2e_boot "$glog" "lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && ping -c 3 $HOST_IP" -n vhost-user -s "$sock" -i "$GUEST_IP/24" -T 120 \
  || fail "guest could not ping through an unprivileged vhostd (see $glog, $vlog)"
pass "unprivileged vhostd (uid $USR, no capabilities) on a pre-created tap: socket 0600, guest pings through it"
