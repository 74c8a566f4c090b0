#!/usr/bin/env bash
# Issue 14: ports come and go on a running vhostd, through its control socket.
#
#   - vhostd starts with an empty config file and no port;
#   - `vhostd port add vm1` (tap vpt1) over the control socket: a guest boots
#     on it and pings the host side of the tap, one ping after another;
#   - meanwhile a second port vm2 (two queue pairs, tap vpt2) is added and
#     removed: its socket and tap come and go, the config file follows, and
#     the first guest does not lose a ping;
#   - the read-only TCP listener answers /metrics but refuses a policy switch;
#     another user cannot use the control socket;
#   - vhostd is restarted from its config file: vm1 is back (socket, tap) and
#     a guest pings through it again;
#   - `vhostd port del vm1`: socket and tap gone, the config file has no port.
E2E_NAME=ports
. "$(dirname "$0")/lib.sh"
e2e_preflight
QEMU_PIDS=()
ports_cleanup() {
  local p
  for p in "${QEMU_PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  e2e_cleanup
}
trap ports_cleanup EXIT

NS=vhd-ports-$$ HOST_IP=169.254.120.1 GUEST_IP=169.254.120.2 ADMIN=127.0.0.1:9637
conf="$OUT/ports.conf" ctl="$OUT/ports-control.sock" caps="$OUT/ports-captures"
s1="$OUT/ports-vm1.sock" s2="$OUT/ports-vm2.sock"
vlog="$OUT/ports-vhostd.log" glog="$OUT/ports-guest.log" glog2="$OUT/ports-guest2.log"
PING_SECS=${E2E_PORTS_PING_SECS:-40}
rm -f "$s1" "$s2" "$ctl"
printf '# vhostd ports (scripts/e2e/ports.sh)\n' >"$conf"
e2e_netns "$NS"

start_vhostd() {
  ip netns exec "$NS" "$VHOSTD" --config "$conf" --control-socket "$ctl" --capture-dir "$caps" \
    --admin-addr "$ADMIN" --log-level info >>"$vlog" 2>&1 &
  vpid=$!; E2E_PIDS+=("$vpid")
  local i=0
  while [ ! -S "$ctl" ]; do
    [ "$i" -lt 100 ] || fail "vhostd did not create its control socket $ctl (see $vlog)"
    kill -0 "$vpid" 2>/dev/null || fail "vhostd exited at start (see $vlog)"
    sleep 0.1; i=$((i + 1))
  done
}
stop_vhostd() {
  kill -TERM "$vpid"; wait "$vpid" || fail "vhostd exited non-zero after SIGTERM (see $vlog)"
  local keep=() p
  for p in "${E2E_PIDS[@]}"; do [ "$p" = "$vpid" ] || keep+=("$p"); done
  E2E_PIDS=("${keep[@]:-}")
}
cli() { "$VHOSTD" "$@"; }
# config_ports: the port lines of the config file.
config_ports() { grep -v '^#' "$conf" | grep -v '^$' || true; }
# qemu_pid FILE: the pid QEMU wrote with -pidfile (waits up to 60 s).
qemu_pid() {
  local i=0
  while [ ! -s "$1" ]; do [ "$i" -lt 600 ] || return 1; sleep 0.1; i=$((i + 1)); done
  cat "$1"
}
host_side() {  # host_side TAP: address the host side of a tap vhostd made
  e2e_wait_tap "$NS" "$1" 10 || fail "vhostd did not create tap $1 (see $vlog)"
  ip -n "$NS" addr add "$HOST_IP/24" dev "$1"
  ip -n "$NS" link set "$1" up
}

: >"$vlog"
start_vhostd
[ "$(stat -c %a "$ctl")" = 600 ] || fail "control socket mode $(stat -c %a "$ctl"), want 600"
out=$(cli port list --control-socket "$ctl") || fail "port list failed"
grep -q '^no ports' <<<"$out" || fail "a fresh vhostd lists ports: $out"
pass "vhostd started with an empty config file and no port; control socket 0600"

cli port add vm1 --socket "$s1" --tap vpt1 --control-socket "$ctl" >&2 || fail "port add vm1 failed (see $vlog)"
[ -S "$s1" ] || fail "no socket $s1 after port add"
host_side vpt1
[ "$(config_ports)" = "name=vm1,socket=$s1,tap=vpt1" ] || fail "config file after port add: $(config_ports)"
pass "port vm1 added with the CLI: socket, tap vpt1, line in the config file"

# The guest pings the host once per iteration for PING_SECS, each result with
# its uptime; E2E-PINGS-BEGIN/END bracket the loop.
gcmd="lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && echo E2E-PINGS-BEGIN && \
end=\$((\$(cut -d. -f1 /proc/uptime) + $PING_SECS)); \
while [ \$(cut -d. -f1 /proc/uptime) -lt \$end ]; do \
if ping -c1 -W3 $HOST_IP >/dev/null 2>&1; then r=ok; else r=fail; fi; \
echo \"E2E-PING \$r \$(cut -d' ' -f1 /proc/uptime)\"; sleep 0.2; done; echo E2E-PINGS-END"
pidf="$OUT/ports-qemu.pid"; rm -f "$pidf"; : >"$glog"
e2e_boot "$glog" "$gcmd" -n vhost-user -s "$s1" -i "$GUEST_IP/24" -T $((PING_SECS + 300)) -X "-pidfile $pidf" >/dev/null 2>&1 &
boot=$!
q=$(qemu_pid "$pidf") || fail "the guest did not start (see $glog)"
QEMU_PIDS+=("$q")
oks() { tr -d '\r' <"$glog" | grep -c '^E2E-PING ok' || true; }
i=0
while [ "$(oks)" -lt 5 ]; do
  [ "$i" -lt 2400 ] || fail "the guest never pinged through vm1 (see $glog, $vlog)"
  kill -0 "$q" 2>/dev/null || fail "the guest stopped before pinging (see $glog)"
  sleep 0.1; i=$((i + 1))
done
pass "a guest booted on vm1 pings the host ($(oks) replies so far)"

# --- a second port comes and goes while vm1's guest pings.
before=$(oks)
cli port add vm2 --socket "$s2" --tap vpt2 --queues 2 --control-socket "$ctl" >&2 || fail "port add vm2 failed (see $vlog)"
[ -S "$s2" ] || fail "no socket $s2 after port add vm2"
e2e_wait_tap "$NS" vpt2 10 || fail "no tap vpt2 after port add vm2 (see $vlog)"
out=$(cli port list --control-socket "$ctl")
printf '%s\n' "$out" | sed 's/^/    /' >&2
grep -q '^vm1 .*running  *connected  *config' <<<"$out" || fail "vm1 not running and connected: $out"
grep -q '^vm2 .*running  *waiting  *config.*queues=2,tap=vpt2' <<<"$out" || fail "vm2 not listed: $out"
[ "$(config_ports | wc -l)" = 2 ] || fail "config file after port add vm2: $(config_ports)"
sleep 2
cli port del vm2 --control-socket "$ctl" >&2 || fail "port del vm2 failed (see $vlog)"
[ ! -e "$s2" ] || fail "socket $s2 still there after port del"
ip -n "$NS" link show vpt2 >/dev/null 2>&1 && fail "tap vpt2 still there after port del"
[ "$(config_ports)" = "name=vm1,socket=$s1,tap=vpt1" ] || fail "config file after port del vm2: $(config_ports)"
# Pings go on after the removal.
i=0
while [ "$(oks)" -lt $((before + 10)) ]; do
  [ "$i" -lt 600 ] || fail "vm1's guest stopped getting replies after vm2 came and went (see $glog, $vlog)"
  sleep 0.1; i=$((i + 1))
done
pass "port vm2 (2 queue pairs) added and removed: socket, tap and config line came and went"

# --- the read-only TCP listener; another user on the control socket.
code=$(ip netns exec "$NS" curl -s -o "$OUT/ports-tcp-put.txt" -w '%{http_code}' -X PUT "http://$ADMIN/ports/vm1/policy?policy=software")
[ "$code" = 403 ] || fail "PUT policy over TCP answered $code, want 403 ($(cat "$OUT/ports-tcp-put.txt"))"
grep -q 'use the control socket' "$OUT/ports-tcp-put.txt" || fail "the 403 does not point to the control socket: $(cat "$OUT/ports-tcp-put.txt")"
ip netns exec "$NS" curl -sf "http://$ADMIN/metrics" | grep -q 'vhostd_vhost_user_connected{port="vm1"} 1' \
  || fail "GET /metrics over TCP does not show vm1 connected"
cli policy --control-socket "$ctl" --port vm1 | grep -q 'vm1: auto' || fail "the policy changed through TCP"
if command -v setpriv >/dev/null && setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$VHOSTD" 2>/dev/null; then
  err=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$VHOSTD" port list --control-socket "$ctl" 2>&1) \
    && fail "uid 65534 listed the ports: $err"
  grep -q 'permission denied on the control socket' <<<"$err" || fail "uid 65534: $err"
  pass "TCP refuses a policy switch (403, advice), serves /metrics; uid 65534 is refused on the control socket"
else
  pass "TCP refuses a policy switch (403, advice), serves /metrics (uid 65534 check skipped: $VHOSTD not reachable by nobody)"
fi

wait "$boot" || fail "the pinging guest failed (see $glog, $vlog)"
tr -d '\r' <"$glog" | grep '^E2E-PING ' >"$glog.pings"
tr -d '\r' <"$glog" | grep -q '^E2E-PINGS-END' || fail "the ping loop did not finish (see $glog)"
n_ok=$(grep -c ' ok ' "$glog.pings" || true) n_fail=$(grep -c ' fail ' "$glog.pings" || true)
say "vm1's guest: $n_ok pings answered, $n_fail lost, over ${PING_SECS}s while vm2 came and went"
[ "$n_fail" = 0 ] || fail "vm1's guest lost $n_fail pings (see $glog.pings)"
pass "the first guest lost no ping ($n_ok answered)"

# --- restart from the config file.
stop_vhostd
[ ! -e "$s1" ] || fail "socket $s1 left after vhostd stopped"
ip -n "$NS" link show vpt1 >/dev/null 2>&1 && fail "tap vpt1 left after vhostd stopped"
start_vhostd
out=$(cli port list --control-socket "$ctl")
grep -q "^vm1 .*running .*config  *name=vm1,socket=$s1,tap=vpt1" <<<"$out" || fail "vm1 not restored from the config file: $out"
[ -S "$s1" ] || fail "no socket $s1 after the restart"
host_side vpt1
: >"$glog2"
e2e_boot "$glog2" "lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && ping -c 3 $HOST_IP" \
  -n vhost-user -s "$s1" -i "$GUEST_IP/24" -T 300 || fail "a guest could not ping through the restored vm1 (see $glog2, $vlog)"
tr -d '\r' <"$glog2" | grep -q ' 0% packet loss' || fail "pings lost through the restored vm1 (see $glog2)"
pass "vhostd restarted from its config file: vm1 restored, a guest pings through it"

cli port del vm1 --control-socket "$ctl" >&2 || fail "port del vm1 failed"
[ ! -e "$s1" ] || fail "socket $s1 still there after port del vm1"
ip -n "$NS" link show vpt1 >/dev/null 2>&1 && fail "tap vpt1 still there after port del vm1"
[ -z "$(config_ports)" ] || fail "config file after port del vm1: $(config_ports)"
grep -q '^# vhostd ports' "$conf" || fail "the config file lost its comment"
out=$(cli port list --control-socket "$ctl"); grep -q '^no ports' <<<"$out" || fail "ports left: $out"
stop_vhostd
pass "port vm1 removed: socket, tap and config line gone (comment kept)"
