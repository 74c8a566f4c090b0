#!/usr/bin/env bash
# Issue 2: a real QEMU guest completes the vhost-user handshake with vhostd
# (sink backend): the guest driver comes up with carrier, and vhostd logs the
# negotiated features. Then vhostd shuts down cleanly on SIGTERM and removes
# its socket.
E2E_NAME=handshake
. "$(dirname "$0")/lib.sh"
e2e_preflight
trap e2e_cleanup EXIT

sock="$OUT/handshake.sock" vlog="$OUT/handshake-vhostd.log" glog="$OUT/handshake-guest.log"
rm -f "$sock"
"$VHOSTD" --socket-path "$sock" --backend null --log-level debug >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")

e2e_boot "$glog" 'cat /sys/class/net/eth0/carrier' -n vhost-user -s "$sock" -T 120 \
  || fail "guest run failed (see $glog, $vlog)"

tr -d '\r' <"$glog" | grep -q '^LAB-ETH0 .*carrier=1' || fail "guest eth0 has no carrier (see $glog)"
pass "guest driver up with carrier"
grep -q 'negotiated features' "$vlog" || fail "vhostd did not log negotiated features (see $vlog)"
pass "vhostd: $(grep -m1 'negotiated features' "$vlog" | sed 's/.*msg=//')"
features=$(tr -d '\r' <"$glog" | sed -n 's/^LAB-VIRTIO-FEATURE-NAMES //p')
say "guest accepted: $features"
case " $features " in *" VERSION_1 "*) ;; *) fail "guest did not accept VERSION_1";; esac

kill -TERM "$vpid"; wait "$vpid" || fail "vhostd exited non-zero after SIGTERM (see $vlog)"
E2E_PIDS=()
[ ! -e "$sock" ] || fail "vhostd left its socket file behind"
pass "clean shutdown, socket removed"

# Client mode: QEMU is the socket server (server=on) and vhostd connects,
# retrying until the socket appears.
csock="$OUT/handshake-client.sock" clog="$OUT/handshake-client-vhostd.log" cglog="$OUT/handshake-client-guest.log"
rm -f "$csock"
"$VHOSTD" --socket-path "$csock" --client --backend null >"$clog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
e2e_boot "$cglog" 'cat /sys/class/net/eth0/carrier' -n vhost-user -s "$csock" -S -T 120 \
  || fail "client-mode guest run failed (see $cglog, $clog)"
tr -d '\r' <"$cglog" | grep -q '^LAB-ETH0 .*carrier=1' || fail "client mode: guest eth0 has no carrier (see $cglog)"
grep -q 'negotiated features' "$clog" || fail "client mode: vhostd did not log negotiated features (see $clog)"
pass "client mode (QEMU server=on, vhostd --client): guest up, features negotiated"
kill -TERM "$vpid"; wait "$vpid" || fail "client-mode vhostd exited non-zero after SIGTERM (see $clog)"
E2E_PIDS=()
