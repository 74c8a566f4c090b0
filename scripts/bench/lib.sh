# Shared helpers for the vhostd comparison benchmarks (scripts/bench/*.sh).
# Source it. Everything here reads /proc, never changes system state.

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
GUESTLAB="$BENCH_ROOT/test/guestlab"
CLK_TCK="$(getconf CLK_TCK)"

bsay() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
bdie() { bsay "error: $*"; exit 2; }

# proc_ticks PID: utime+stime of the whole process (live and exited threads
# whose time was folded in), in clock ticks; 0 if it is gone. The comm field
# may hold spaces, so cut everything up to the last ") " first.
proc_ticks() {
  local s
  s="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
  s="${s##*) }"
  # after the comm: field 3 (state) is word 1, so utime (14) is word 12
  awk '{ print $12 + $13 }' <<< "$s"
}

# vcpu_ticks PID: utime+stime summed over QEMU's vCPU threads ("CPU n/TCG" or
# "CPU n/KVM"; QEMU names threads only with -name ...,debug-threads=on).
vcpu_ticks() {
  local t s c sum=0
  for t in /proc/"$1"/task/*; do
    c="$(cat "$t/comm" 2>/dev/null)" || continue
    case "$c" in "CPU "*/TCG|"CPU "*/KVM) ;; *) continue ;; esac
    s="$(cat "$t/stat" 2>/dev/null)" || continue
    s="${s##*) }"
    sum=$((sum + $(awk '{ print $12 + $13 }' <<< "$s")))
  done
  echo "$sum"
}

# now_s: wall clock seconds with nanoseconds.
now_s() { date +%s.%N; }

# loadavg: the 1-minute load average.
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# kv LINE KEY: value of KEY=V in a space-separated key=value line.
kv() { tr ' ' '\n' <<< "$1" | sed -n "s/^$2=//p" | tail -n1; }

# median of the numbers on stdin (one per line; empty -> "-")
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# snapshot_vhostd PID LOG: make vhostd log a "port stats" line (SIGUSR1) and
# print it once it is there (waits up to 2 s; prints nothing if it never came).
snapshot_vhostd() {
  local pid="$1" log="$2" n i
  n="$(grep -ac 'msg="port stats"' "$log" 2>/dev/null || true)"
  kill -USR1 "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    [ "$(grep -ac 'msg="port stats"' "$log" 2>/dev/null || true)" -gt "${n:-0}" ] && break
    sleep 0.02
  done
  grep -a 'msg="port stats"' "$log" | tail -n1
}

# cpu_jiffies CPU: "busy total" jiffies of one CPU ("" = all CPUs) from /proc/stat.
cpu_jiffies() {
  awk -v c="cpu${1:-}" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# busy_pct "BUSY0 TOTAL0" "BUSY1 TOTAL1": busy % between two cpu_jiffies samples.
busy_pct() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
    printf "%.0f", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

# wait_quiet PCT MAXSECS: wait until the whole host was at most PCT % busy over
# one second (others' work: nothing of ours runs between runs), for at most
# MAXSECS seconds. PCT 0 (or empty) = do not wait. Prints the last busy %.
wait_quiet() {
  local pct="${1:-0}" max="${2:-120}" t0 a b p
  [ "$pct" -gt 0 ] 2>/dev/null || { echo "-"; return 0; }
  t0=$(date +%s)
  while :; do
    a="$(cpu_jiffies)"; sleep 1; b="$(cpu_jiffies)"; p="$(busy_pct "$a" "$b")"
    [ "$p" -le "$pct" ] && break
    [ $(( $(date +%s) - t0 )) -lt "$max" ] || break
  done
  echo "$p"
}

# autogroup_nice N: set the nice value of this session's scheduler autogroup
# (CONFIG_SCHED_AUTOGROUP, /proc/PID/autogroup) for the run; autogroup_restore
# puts the old value back (call it from the EXIT trap). With autogroups the
# kernel shares CPU time between sessions first and only then by nice inside
# each, so other users' busy test runs in their own sessions get as much of a
# CPU as a pinned back-end, whatever their nice value. A negative N gives this
# benchmark's session (and only it) a larger share.
AG_OLD=""
autogroup_nice() {
  local cur
  [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ] ||
    bdie "-N: scheduler autogroups are off (kernel.sched_autogroup_enabled); drop -N"
  cur="$(cat "/proc/$$/autogroup")" || bdie "-N: cannot read /proc/$$/autogroup"
  AG_OLD="${cur##* nice }"
  echo "$1" > "/proc/$$/autogroup" || bdie "-N $1: cannot set the autogroup nice value (-20..19)"
  bsay "session autogroup nice: $AG_OLD -> $1 (restored on exit)"
}
autogroup_restore() {
  [ -z "$AG_OLD" ] || echo "$AG_OLD" > "/proc/$$/autogroup" 2>/dev/null || true
  AG_OLD=""
}

# stop_pid PID [TENTHS]: TERM, then KILL if it is still there after TENTHS
# tenths of a second (default 30), and reap it.
stop_pid() {
  local p="$1" n="${2:-30}" i
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || return 0
  for ((i = 0; i < n; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

# stop_group PGID: TERM then KILL a process group started with setsid (a
# guest: boot-guest.sh, timeout, QEMU), and reap its leader.
stop_group() {
  [ -n "$1" ] || return 0
  kill -TERM -- "-$1" 2>/dev/null; sleep 0.5; kill -KILL -- "-$1" 2>/dev/null
  wait "$1" 2>/dev/null
  return 0
}
