#!/usr/bin/env bash
# Issue 6: vhostd survives its front-end coming and going.
#
#   A. A QEMU guest is killed with SIGKILL in the middle of iperf3. vhostd
#      notices the disconnect and releases what the session held: its fd
#      count (ls /proc/PID/fd) and its memfd mappings (memfd lines in
#      /proc/PID/maps) return to what they were before the guest came.
#      Goroutines are not observable from outside (vhostd has no debug
#      endpoint, and SIGQUIT would kill it); the in-process test
#      TestLifecycleNoGrowth covers them. vhostd then serves the next guest,
#      which pings through it, and after that guest leaves the counts are
#      back again.
#   B. vhostd --client against a QEMU started with server=on: the guest pings
#      every 100 ms with timestamps; vhostd is killed (SIGKILL) and started
#      again; the gap between the last reply before and the first reply after
#      the restart, in guest time, is at most 2 s.
E2E_NAME=lifecycle
. "$(dirname "$0")/lib.sh"
e2e_preflight
QEMU_PIDS=()
lc_cleanup() {
  local p
  for p in "${QEMU_PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  e2e_cleanup
}
trap lc_cleanup EXIT

MAX_GAP=${E2E_MAX_RECONNECT_GAP:-2.0}
NS=vhd-lc-$$ TAP=vtap0 HOST_IP=169.254.102.1 GUEST_IP=169.254.102.2
TAP2=vtap1 HOST2_IP=169.254.103.1 GUEST2_IP=169.254.103.2
sock="$OUT/lifecycle.sock" vlog="$OUT/lifecycle-vhostd.log"
rm -f "$sock"
e2e_netns "$NS"

# The daemon's resources, from /proc.
fds()  { ls "/proc/$1/fd" | wc -l; }
maps() { grep -c memfd "/proc/$1/maps" || true; }
rss()  { awk '/^VmRSS/ {print $2 " kB"}' "/proc/$1/status"; }
# wait_counts PID FDS MAPS: up to 10 s for both counts to come back.
wait_counts() {
  local i=0
  while [ "$(fds "$1")" != "$2" ] || [ "$(maps "$1")" != "$3" ]; do
    [ "$i" -lt 100 ] || return 1
    sleep 0.1; i=$((i + 1))
  done
}
# qemu_pid FILE: the pid QEMU wrote with -pidfile (waits up to 60 s).
qemu_pid() {
  local i=0
  while [ ! -s "$1" ]; do [ "$i" -lt 600 ] || return 1; sleep 0.1; i=$((i + 1)); done
  cat "$1"
}

# ---------------------------------------------------------------- A --
ip netns exec "$NS" "$VHOSTD" --socket-path "$sock" --tap "$TAP" --log-level info >"$vlog" 2>&1 &
vpid=$!; E2E_PIDS+=("$vpid")
for _ in $(seq 50); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.1; done
ip -n "$NS" link show "$TAP" >/dev/null 2>&1 || fail "vhostd did not create tap $TAP (see $vlog)"
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up
ip netns exec "$NS" iperf3 -s -B "$HOST_IP" >"$OUT/lifecycle-iperf3-server.log" 2>&1 &
E2E_PIDS+=("$!")
e2e_wait_log "$vlog" "vhostd serving" 10 || fail "vhostd not serving (see $vlog)"
fd0=$(fds "$vpid") map0=$(maps "$vpid")
say "vhostd before any guest: fds=$fd0 memfd_mappings=$map0 rss=$(rss "$vpid")"

glogA="$OUT/lifecycle-guest-a.log" pidA="$OUT/lifecycle-qemu-a.pid"
rm -f "$pidA"; : >"$glogA"
e2e_boot "$glogA" "lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && echo E2E-IPERF-START && iperf3 -c $HOST_IP -t 60" \
  -n vhost-user -s "$sock" -i "$GUEST_IP/24" -T 180 -X "-pidfile $pidA" >/dev/null 2>&1 &
bootA=$!
qa=$(qemu_pid "$pidA") || fail "guest A did not start (see $glogA)"
QEMU_PIDS+=("$qa")
e2e_wait_log "$glogA" E2E-IPERF-START 120 || fail "guest A never reached iperf3 (see $glogA)"
sleep 3
kill -USR1 "$vpid"; sleep 0.3
written=$(e2e_stat "$vlog" tx_written)
say "guest A in iperf3: fds=$(fds "$vpid") memfd_mappings=$(maps "$vpid") rss=$(rss "$vpid") tx_written=$written"
[ "$(maps "$vpid")" -gt "$map0" ] || fail "no guest memory mapped while guest A runs"
[ "${written:-0}" -gt 1000 ] || fail "guest A's iperf3 did not reach vhostd (tx_written=$written)"
kill -KILL "$qa"
wait "$bootA" 2>/dev/null || true
e2e_wait_log "$vlog" "session ended" 10 || fail "vhostd did not notice guest A's death (see $vlog)"
if ! wait_counts "$vpid" "$fd0" "$map0"; then
  ls -l "/proc/$vpid/fd" >&2; grep memfd "/proc/$vpid/maps" >&2 || true
  fail "after SIGKILL of guest A: fds=$(fds "$vpid") (was $fd0), memfd_mappings=$(maps "$vpid") (was $map0)"
fi
kill -0 "$vpid" 2>/dev/null || fail "vhostd died with guest A (see $vlog)"
pass "guest killed mid-iperf3: vhostd back to fds=$fd0 memfd_mappings=$map0 (rss=$(rss "$vpid"))"

glogB="$OUT/lifecycle-guest-b.log"
e2e_boot "$glogB" "lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && ping -c 3 $HOST_IP" \
  -n vhost-user -s "$sock" -i "$GUEST_IP/24" -T 120 || fail "guest B could not ping through vhostd (see $glogB, $vlog)"
tr -d '\r' <"$glogB" | grep -q ' 0% packet loss' || fail "guest B lost pings (see $glogB)"
wait_counts "$vpid" "$fd0" "$map0" || fail "after guest B: fds=$(fds "$vpid") (was $fd0), memfd_mappings=$(maps "$vpid") (was $map0)"
pass "next guest served (ping 0% loss); after it left: fds=$fd0 memfd_mappings=$map0"
kill -TERM "$vpid"; wait "$vpid" || fail "vhostd exited non-zero after SIGTERM (see $vlog)"
E2E_PIDS=("${E2E_PIDS[@]:1}")

# ---------------------------------------------------------------- B --
# A persistent tap keeps its address while no vhostd holds it.
ip -n "$NS" tuntap add dev "$TAP2" mode tap vnet_hdr
ip -n "$NS" addr add "$HOST2_IP/24" dev "$TAP2"
ip -n "$NS" link set "$TAP2" up
csock="$OUT/lifecycle-client.sock" clog="$OUT/lifecycle-client-vhostd.log" glogC="$OUT/lifecycle-guest-c.log" pidC="$OUT/lifecycle-qemu-c.pid"
rm -f "$csock" "$pidC"; : >"$glogC"; : >"$clog"
# The guest pings every 100 ms for 40 s, each result with its uptime.
gcmd="end=\$((\$(cut -d. -f1 /proc/uptime) + 40)); \
while [ \$(cut -d. -f1 /proc/uptime) -lt \$end ]; do \
if ping -c1 -W1 $HOST2_IP >/dev/null 2>&1; then r=ok; else r=fail; fi; \
echo \"E2E-PING \$r \$(cut -d' ' -f1 /proc/uptime)\"; sleep 0.1; done"
e2e_boot "$glogC" "$gcmd" -n vhost-user -s "$csock" -S -i "$GUEST2_IP/24" -T 180 -X "-pidfile $pidC" >/dev/null 2>&1 &
bootC=$!
start_client() {
  ip netns exec "$NS" "$VHOSTD" --socket-path "$csock" --client --tap "$TAP2" --log-level info >>"$clog" 2>&1 &
  cpid=$!; E2E_PIDS+=("$cpid")
}
start_client
qc=$(qemu_pid "$pidC") || fail "guest C did not start (see $glogC)"
QEMU_PIDS+=("$qc")
oks() { tr -d '\r' <"$glogC" | grep -c '^E2E-PING ok' || true; }
i=0
while [ "$(oks)" -lt 10 ]; do
  [ "$i" -lt 1200 ] || fail "guest C never pinged through vhostd --client (see $glogC, $clog)"
  sleep 0.1; i=$((i + 1))
done
before=$(oks)
kill -KILL "$cpid"; wait "$cpid" 2>/dev/null || true
start_client
say "vhostd --client killed after $before replies and started again"
i=0
while [ "$(oks)" -lt $((before + 10)) ]; do
  [ "$i" -lt 300 ] || fail "traffic did not resume within 30 s of the restart (see $glogC, $clog)"
  sleep 0.1; i=$((i + 1))
done
tr -d '\r' <"$glogC" | grep '^E2E-PING' >"$glogC.pings"
# Gap: from the last reply counted before the kill to the next reply.
gap=$(awk -v n="$before" '$2 == "ok" { k++; if (k == n) last = $3; else if (k == n + 1) { printf "%.2f", $3 - last; exit } }' "$glogC.pings")
fails=$(awk -v n="$before" '$2 == "ok" { k++ } $2 == "fail" && k >= n { f++ } END { print f + 0 }' "$glogC.pings")
say "reconnect gap $gap s in guest time ($fails pings failed meanwhile)"
awk -v g="$gap" -v m="$MAX_GAP" 'BEGIN { exit !(g != "" && g <= m) }' || fail "traffic resumed after $gap s, more than $MAX_GAP s"
pass "vhostd --client restarted under traffic: pings resumed after $gap s (limit $MAX_GAP s)"
kill -KILL "$qc" 2>/dev/null || true
wait "$bootC" 2>/dev/null || true
