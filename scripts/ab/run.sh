#!/usr/bin/env bash
# run.sh - the A/B harness (make ab): one real guest on vhostd, iperf3 under
# each GSO policy, switched live through the admin API, with a Markdown report
# and an SVG chart.
#
#   scripts/ab/run.sh [-d SECS] [-r ROUNDS] [-g GSO_MAX_SIZE] [-o REPORT] [-s SVG]
#                     [-t "TESTS"] [-p VCPUS] [-u UDP_RATE] [-L LOAD] [-W SECS] [-q PCT]
#                     [-V VHOSTD] [-k]
#   scripts/ab/run.sh -R REPORT [-o REPORT] [-s SVG]     (re-render only)
#
#   -d SECS      iperf3 seconds per run                     (default 5)
#   -r ROUNDS    rounds; each round runs every test under every policy (default 2)
#   -g BYTES     vhostd --gso-max-size, the limit the auto arm works against (16384)
#   -o REPORT    Markdown report                             (default docs/ab-report.md)
#   -s SVG       chart                                       (default: ab-chart.svg next to REPORT)
#   -t TESTS     any of tcp4 tcp6 udp4 tcp4-rx               (default: all four)
#   -p VCPUS     guest vCPUs                                 (default 2)
#   -u RATE      iperf3 -b for udp4, 0 = as fast as the guest can send (default 0)
#   -L LOAD      before starting, wait until the 1-minute load average is at
#                most LOAD (others' fuzzers share the machine)   (default 3)
#   -W SECS      ... but at most this long, then run anyway and say so (120)
#   -q PCT       before each run, wait until the whole host was at most PCT %
#                busy over one second (our guest idles between runs, so this is
#                mostly others' work); at most 20 s per run and 120 s in all,
#                then run anyway. 0 = do not wait             (default 35)
#   -V VHOSTD    vhostd binary                               (default bin/vhostd)
#   -k           keep the work directory (logs, scrapes, raw rows) on success
#   -R REPORT    run nothing: render the report and the chart again from the
#                raw rows at the end of an earlier REPORT (after changing
#                report.awk or chart.awk); -o defaults to REPORT itself
#
# What it does (everything inside a private network namespace, removed on exit):
#   - starts ONE vhostd: --tap T (in netns NS, 169.254.100.1/24 + fd00::1/64),
#     --gso-max-size GSO_MAX_SIZE, read-only /metrics on 127.0.0.1:9637 inside
#     NS, control socket WORK/control.sock;
#   - boots ONE guestlab guest (TCG under this machine's PVM /dev/kvm) on it:
#     169.254.100.2/24 + fd00::2/64, running an iperf3 server for all runs;
#   - runs iperf3 clients from NS against the guest. Tests (direction g2h =
#     guest transmits, so vhostd's TX path and its GSO policy are exercised):
#       tcp4     TCP over IPv4, guest -> host (iperf3 -c GUEST -R)
#       tcp6     TCP over IPv6, guest -> host
#       udp4     UDP over IPv4, 1448 B datagrams, guest -> host (iperf3 has no
#                UDP GSO here, so every policy sees plain packets: a control)
#       tcp4-rx  TCP over IPv4, host -> guest (RX path; the policy does not
#                apply: a control)
#   - for each test runs the three policies back to back, switching the port's
#     policy live (PUT /ports/ab/policy on the control socket) between runs: defer, software, auto
#     in odd rounds and auto, software, defer in even rounds (ABC CBA), so that
#     a linear drift of the shared machine's speed cancels out in the medians;
#   - around each run: scrapes /metrics (before and after), and reads
#     utime+stime of vhostd and QEMU (vCPU threads apart) from /proc/PID/stat.
#
# The policies and the one gso_max_size: vhostd's --gso-max-size applies to the
# port whatever the policy, but only `auto` looks at it (the capability check:
# a 64 KB super-packet above 16384 is re-segmented into super-packets that
# fit). `defer` passes every super-packet whole and `software` cuts every one
# to MSS without consulting the limit, so one daemon serves all three arms.
# The tap itself keeps the kernel's limit (65536): with `defer` a super-packet
# goes into the namespace's stack whole, as the kernel would take it.
#
# Per run it records: iperf3's receiver Mbit/s (and sender retransmits or UDP
# loss), bytes moved (vhostd's tx_bytes for g2h, rx_bytes for h2g: guest
# frame bytes, the same whatever vhostd then does with them), CPU seconds of
# vhostd, QEMU's I/O side and QEMU's vCPUs, CPU s/GB, and every vhostd counter
# that moved (paths, decision reasons, segments, drops, write errors).
# Exit status: 0 when every run produced a result, 1 otherwise (the report is
# written either way once the guest came up).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
. "$HERE/lib.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

SECS=5 ROUNDS=2 GSO_MAX=16384 REPORT="$ROOT/docs/ab-report.md" SVG="" TESTS="tcp4 tcp6 udp4 tcp4-rx"
VCPUS=2 UDP_RATE=0 MAXLOAD=3 LOADWAIT=120 QUIET=35 VHOSTD_SRC="${VHOSTD:-$ROOT/bin/vhostd}" KEEP=0 RERENDER="" OUT_SET=0
while getopts "d:r:g:o:s:t:p:u:L:W:q:V:kR:h" opt; do
  case "$opt" in
    d) SECS="$OPTARG" ;; r) ROUNDS="$OPTARG" ;; g) GSO_MAX="$OPTARG" ;; o) REPORT="$OPTARG"; OUT_SET=1 ;;
    s) SVG="$OPTARG" ;; t) TESTS="$OPTARG" ;; p) VCPUS="$OPTARG" ;; u) UDP_RATE="$OPTARG" ;;
    L) MAXLOAD="$OPTARG" ;; W) LOADWAIT="$OPTARG" ;; q) QUIET="$OPTARG" ;; V) VHOSTD_SRC="$OPTARG" ;; k) KEEP=1 ;; R) RERENDER="$OPTARG" ;;
    h) usage; exit 0 ;; *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "$#" -eq 0 ] || { usage >&2; exit 2; }

# render META RESULTS: the report and the chart from the meta lines (key=value)
# and the ROW lines; report.awk appends both to the report as its raw block.
render() {
  local meta="$1" res="$2"
  mkdir -p "$(dirname "$REPORT")" "$(dirname "$SVG")"
  { grep -v '^svg=' "$meta"; echo "svg=$(realpath -m --relative-to="$(dirname "$REPORT")" "$SVG")"; } > "$meta.r"
  awk -f "$HERE/report.awk" "$meta.r" "$res" > "$REPORT.tmp" && mv "$REPORT.tmp" "$REPORT"
  awk -f "$HERE/chart.awk" "$meta.r" "$res" > "$SVG.tmp" && mv "$SVG.tmp" "$SVG"
  rm -f "$meta.r"
}
if [ -n "$RERENDER" ]; then
  [ -r "$RERENDER" ] || ab_die "-R $RERENDER: no such report"
  grep -q '^<!-- ab-raw' "$RERENDER" || ab_die "-R $RERENDER: no raw block (<!-- ab-raw ...) at its end; was it written by this script?"
  [ "$OUT_SET" = 1 ] || REPORT="$RERENDER"
  [ -n "$SVG" ] || SVG="$(dirname "$REPORT")/ab-chart.svg"
  tmp="$(mktemp -d /tmp/vhostd-ab-render.XXXXXX)"
  sed -n '/^<!-- ab-raw/,/^-->/p' "$RERENDER" | sed -n 's/^META //p' > "$tmp/meta.txt"
  sed -n '/^<!-- ab-raw/,/^-->/p' "$RERENDER" | grep '^ROW ' > "$tmp/results.txt" || true
  render "$tmp/meta.txt" "$tmp/results.txt"
  rm -rf "$tmp"
  ab_say "re-rendered $REPORT and $SVG from the raw rows of $RERENDER"
  exit 0
fi
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || ab_die "-d $SECS: want whole seconds >= 1"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || ab_die "-r $ROUNDS: want a number of rounds >= 1"
[[ "$GSO_MAX" =~ ^[1-9][0-9]*$ ]] || ab_die "-g $GSO_MAX: want a size in bytes"
[[ "$VCPUS" =~ ^[1-9][0-9]*$ ]] || ab_die "-p $VCPUS: want a number of vCPUs"
[[ "$LOADWAIT" =~ ^[0-9]+$ ]] || ab_die "-W $LOADWAIT: want seconds"
[[ "$QUIET" =~ ^[0-9]+$ ]] && [ "$QUIET" -le 100 ] || ab_die "-q $QUIET: want a busy percentage 0..100"
for t in $TESTS; do
  case "$t" in tcp4|tcp6|udp4|tcp4-rx) ;; *) ab_die "-t: unknown test $t (tcp4 tcp6 udp4 tcp4-rx)" ;; esac
done
[ -n "$SVG" ] || SVG="$(dirname "$REPORT")/ab-chart.svg"
[ "$(id -u)" = 0 ] || ab_die "needs root (network namespace, tap, QEMU): run it with sudo"
for c in qemu-system-x86_64:qemu-system-x86 iperf3:iperf3 ip:iproute2 curl:curl; do
  command -v "${c%%:*}" >/dev/null || ab_die "${c%%:*} is missing: apt-get install ${c#*:}"
done
[ -x "$VHOSTD_SRC" ] || ab_die "no vhostd binary at $VHOSTD_SRC: run make build (or give -V)"
mkdir -p "$(dirname "$REPORT")" "$(dirname "$SVG")"

POLICIES="defer software auto"
NS="vhab$$" TAP="vhabt$$" PORT=ab ADMIN=127.0.0.1:9637
HOST4=169.254.100.1 GUEST4=169.254.100.2 HOST6=fd00::1 GUEST6=fd00::2 STOP_PORT=5399
WORK="$(mktemp -d /tmp/vhostd-ab.XXXXXX)"
RES="$WORK/results.txt" VLOG="$WORK/vhostd.log" GLOG="$WORK/guest.log" SOCK="$WORK/vhostd.sock"
CTL="$WORK/control.sock"   # policy switches go through the control socket (TCP is read-only)
VHOSTD="$WORK/vhostd"   # a private copy: others may rebuild bin/vhostd meanwhile
VPID="" GPGID="" QPID="" CPID="" NS_MADE=0 OK=0

stop_pid() {  # stop_pid PID: TERM, KILL after 3 s; only our own children
  local p="$1" i
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || return 0
  for ((i = 0; i < 30; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_pid "$CPID"
  if [ -n "$GPGID" ]; then   # the guest's own process group: boot-guest.sh, timeout, QEMU
    kill -TERM -- "-$GPGID" 2>/dev/null; sleep 0.5; kill -KILL -- "-$GPGID" 2>/dev/null
    wait "$GPGID" 2>/dev/null
  fi
  stop_pid "$VPID"
  [ "$NS_MADE" = 0 ] || ip netns del "$NS" 2>/dev/null   # takes the tap and the iperf3 clients' netns with it
  rm -f "$VHOSTD" "$SOCK" "$CTL"
  if [ "$rc" = 0 ] && [ "$KEEP" = 0 ] && [ "$OK" = 1 ]; then rm -rf "$WORK"
  else ab_say "logs, scrapes and raw rows kept in $WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$VHOSTD_SRC" "$VHOSTD"
bash "$ROOT/test/guestlab/build-initramfs.sh" /tmp/guestlab >/dev/null \
  || ab_die "building the guest kernel and initramfs failed (test/guestlab/build-initramfs.sh)"
ACCEL="$(bash "$ROOT/test/guestlab/boot-guest.sh" -P)"

LOAD0="$(ab_load1)"
if awk -v l="$LOAD0" -v m="$MAXLOAD" 'BEGIN { exit !(l > m) }'; then
  ab_say "load average $LOAD0 > $MAXLOAD: waiting up to ${LOADWAIT}s for the machine to calm down"
  LOAD0="$(ab_wait_load "$MAXLOAD" "$LOADWAIT")"
fi
ab_say "work dir $WORK, load $LOAD0, accel $ACCEL, ${ROUNDS} rounds x {$TESTS} x {$POLICIES}, ${SECS}s each"
T0=$(date +%s)

# ---------------------------------------------------------------- set-up --
ip netns add "$NS"; NS_MADE=1
ip -n "$NS" link set lo up
ip netns exec "$NS" "$VHOSTD" --socket-path "$SOCK" --tap "$TAP" --name "$PORT" --policy auto \
  --gso-max-size "$GSO_MAX" --admin-addr "$ADMIN" --control-socket "$CTL" --log-level info > "$VLOG" 2>&1 &
VPID=$!
for ((i = 0; i < 50; i++)); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.1; done
ip -n "$NS" link show "$TAP" >/dev/null 2>&1 || ab_die "vhostd did not create tap $TAP (see $VLOG)"
ip -n "$NS" addr add "$HOST4/24" dev "$TAP"
ip -n "$NS" addr add "$HOST6/64" dev "$TAP" nodad
ip -n "$NS" link set "$TAP" up

admin() { ip netns exec "$NS" curl -sS --max-time 10 "$@"; }
for ((i = 0; i < 50; i++)); do admin -o /dev/null "http://$ADMIN/metrics" 2>/dev/null && break; sleep 0.1; done
admin -o /dev/null "http://$ADMIN/metrics" || ab_die "vhostd's admin API on $ADMIN (in $NS) does not answer (see $VLOG)"

# The guest: IPv6 by hand (its /init only sets lab.ip), an iperf3 server for
# every run, then it waits for a connection on STOP_PORT to power off. DAD is
# off so fd00::2 is usable at once.
GCMD="echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_dad; \
ip -6 addr add $GUEST6/64 dev eth0 nodad 2>/dev/null || ip -6 addr add $GUEST6/64 dev eth0; \
iperf3 -s >/dev/null 2>&1 & echo AB-GUEST-UP; nc -l -p $STOP_PORT >/dev/null 2>&1 || sleep 100000; echo AB-GUEST-DONE"
NTESTS=$(wc -w <<< "$TESTS")
GUEST_TMO=$((240 + ROUNDS * NTESTS * 3 * (SECS + 15)))
: > "$GLOG"
setsid ip netns exec "$NS" bash "$ROOT/test/guestlab/boot-guest.sh" -o /tmp/guestlab -l "$GLOG" \
  -n vhost-user -s "$SOCK" -i "$GUEST4/24" -p "$VCPUS" -T "$GUEST_TMO" -K no_timer_check \
  -X "-name abguest,debug-threads=on" -c "$GCMD" > "$WORK/boot.log" 2>&1 &
GPGID=$!
for ((i = 0; i < 200; i++)); do
  QPID="$(pgrep -g "$GPGID" -x qemu-system-x86 | head -n1 || true)"
  [ -n "$QPID" ] && break
  kill -0 "$GPGID" 2>/dev/null || break
  sleep 0.05
done
[ -n "$QPID" ] || ab_die "QEMU did not start (see $WORK/boot.log)"
for ((i = 0; i < 1800; i++)); do
  grep -aq AB-GUEST-UP "$GLOG" && break
  kill -0 "$QPID" 2>/dev/null || ab_die "the guest stopped before it was up (see $GLOG, $WORK/boot.log)"
  sleep 0.1
done
grep -aq AB-GUEST-UP "$GLOG" || ab_die "the guest did not come up in 180 s (see $GLOG)"
grep -aq 'tcp-segmentation-offload: on' "$GLOG" || ab_say "warning: the guest's ethtool -k does not show TSO on (see $GLOG)"
ab_say "guest up $(( $(date +%s) - T0 ))s after start; QEMU pid $QPID, vhostd pid $VPID"

# iperf3 CLIENT TEST SECS OUTFILE: one iperf3 client from NS; 0 if it produced a result.
iperf_client() {
  local test="$1" secs="$2" out="$3" args rc=0
  case "$test" in
    tcp4)    args=(-c "$GUEST4" -R) ;;
    tcp6)    args=(-c "$GUEST6" -R) ;;
    udp4)    args=(-c "$GUEST4" -R -u -b "$UDP_RATE" -l 1448) ;;
    tcp4-rx) args=(-c "$GUEST4") ;;
  esac
  ip netns exec "$NS" timeout -k 5 $((secs + 40)) iperf3 "${args[@]}" -t "$secs" -f m --connect-timeout 5000 > "$out" 2>&1 &
  CPID=$!
  wait "$CPID" || rc=$?
  CPID=""
  [ "$rc" = 0 ] && grep -aq ' receiver' "$out"
}

# Warm-up, and the check that the guest is reachable over IPv4 and IPv6 (the
# host has no ping; iperf3 is what matters): the first connections after boot
# are slower (ARP/ND, page faults). Retried while the guest's server starts.
for test in tcp4 tcp6; do
  for ((i = 0; i < 15; i++)); do iperf_client "$test" 2 "$WORK/warmup-$test.txt" && break; sleep 1; done
  grep -aq ' receiver' "$WORK/warmup-$test.txt" \
    || ab_die "the warm-up iperf3 ($test) against the guest failed (see $WORK/warmup-$test.txt, $GLOG, $VLOG)"
done

# set_policy P: switch the port live and check the answer.
set_policy() {
  local ans
  ans="$(curl -sS --max-time 10 --unix-socket "$CTL" -X PUT --data-binary "$1" "http://vhostd/ports/$PORT/policy")" \
    || ab_die "PUT /ports/$PORT/policy failed (see $VLOG)"
  grep -q "\"policy\": *\"$1\"" <<< "$ans" || ab_die "policy switch to $1 not confirmed: $ans"
}
scrape() { admin "http://$ADMIN/metrics" > "$1.prom" || ab_die "GET /metrics failed (see $VLOG)"; ab_metrics_flat "$1.prom" > "$1"; }

# ------------------------------------------------------------------ runs --
: > "$RES"
SEQ=0 FAILS=0 QUIET_BUDGET=120
for ((round = 1; round <= ROUNDS; round++)); do
  if ((round % 2)); then order="$POLICIES"; else order="$(tr ' ' '\n' <<< "$POLICIES" | tac | tr '\n' ' ')"; fi
  for test in $TESTS; do
    for policy in $order; do
      SEQ=$((SEQ + 1))
      kill -0 "$QPID" 2>/dev/null || ab_die "the guest died before run $SEQ (see $GLOG)"
      set_policy "$policy"
      # others' work right before the run (and a short wait for it to pass)
      quiet="$(ab_wait_quiet "$QUIET" "$((QUIET_BUDGET < 20 ? QUIET_BUDGET : 20))")"
      QUIET_BUDGET=$((QUIET_BUDGET - ${quiet#* }))
      quiet="${quiet%% *}"
      tag="$(printf '%02d' "$SEQ")-$test-$policy"
      scrape "$WORK/$tag.before"
      v0=$(ab_proc_ticks "$VPID") q0=$(ab_proc_ticks "$QPID") c0=$(ab_vcpu_ticks "$QPID") h0="$(ab_host_jiffies)" t0=$(date +%s.%N)
      ok=1; iperf_client "$test" "$SECS" "$WORK/$tag.iperf.txt" || ok=0
      t1=$(date +%s.%N) v1=$(ab_proc_ticks "$VPID") q1=$(ab_proc_ticks "$QPID") c1=$(ab_vcpu_ticks "$QPID") h1="$(ab_host_jiffies)"
      scrape "$WORK/$tag.after"
      if [ "$ok" = 0 ] && grep -aq 'server is busy' "$WORK/$tag.iperf.txt"; then
        # the guest's iperf3 server had not finished the previous test yet: once more
        sleep 2
        scrape "$WORK/$tag.before"
        v0=$(ab_proc_ticks "$VPID") q0=$(ab_proc_ticks "$QPID") c0=$(ab_vcpu_ticks "$QPID") h0="$(ab_host_jiffies)" t0=$(date +%s.%N)
        ok=1; iperf_client "$test" "$SECS" "$WORK/$tag.iperf.txt" || ok=0
        t1=$(date +%s.%N) v1=$(ab_proc_ticks "$VPID") q1=$(ab_proc_ticks "$QPID") c1=$(ab_vcpu_ticks "$QPID") h1="$(ab_host_jiffies)"
        scrape "$WORK/$tag.after"
      fi
      delta="$(ab_metrics_delta "$WORK/$tag.before" "$WORK/$tag.after")"
      if [ "$ok" = 0 ]; then
        FAILS=$((FAILS + 1))
        ab_say "run $SEQ ($test, $policy) failed: $(tail -n1 "$WORK/$tag.iperf.txt")"
        echo "ROW seq=$SEQ round=$round test=$test policy=$policy failed=1" >> "$RES"
        continue
      fi
      summ="$(ab_iperf_summary "$WORK/$tag.iperf.txt")"
      awk -v seq="$SEQ" -v round="$round" -v test="$test" -v policy="$policy" -v summ="$summ" -v d="$delta" \
          -v hz="$(getconf CLK_TCK)" -v v="$((v1 - v0))" -v q="$((q1 - q0))" -v c="$((c1 - c0))" \
          -v t0="$t0" -v t1="$t1" -v h0="$h0" -v h1="$h1" -v load="$(ab_load1)" -v quiet="$quiet" '
        function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
          if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return 0 }
        BEGIN {
          rx = (test ~ /-rx$/)
          if (rx) bytes = get(d, "rx_bytes")
          else { n = split("passthrough resegmented segmented csum_completed plain", ps, " ")
                 for (i = 1; i <= n; i++) bytes += get(d, "tx_bytes_" ps[i]) }
          gb = bytes / 1e9
          vh = v / hz; qe = q / hz; vc = c / hz; io = qe - vc
          split(h0, a, " "); split(h1, b, " ")
          busy = (b[2] > a[2] ? 100 * (b[1] - a[1]) / (b[2] - a[2]) : 0)
          printf "ROW seq=%d round=%d test=%s policy=%s %s secs=%.2f gb=%.4f", seq, round, test, policy, summ, t1 - t0, gb
          printf " cpu_vhostd=%.2f cpu_qemu_io=%.2f cpu_vcpu=%.2f", vh, io, vc
          printf " spg_total=%.3f spg_dp=%.3f spg_vhostd=%.3f", (gb > 0 ? (vh + qe) / gb : 0), (gb > 0 ? (vh + io) / gb : 0), (gb > 0 ? vh / gb : 0)
          printf " host_busy=%.0f busy_before=%s load1=%s %s\n", busy, quiet, load, d }' >> "$RES"
      ab_say "run $SEQ/$((ROUNDS * NTESTS * 3)) $test $policy: $summ ($(grep -o 'spg_total=[0-9.]*' "$RES" | tail -n1))"
    done
  done
done
ELAPSED=$(( $(date +%s) - T0 ))

# ------------------------------------------------------------- shut down --
# Tell the guest to power off (its nc -l returns), then stop the daemon.
ip netns exec "$NS" timeout 5 bash -c "exec 3<>/dev/tcp/$GUEST4/$STOP_PORT && echo stop >&3" 2>/dev/null || true
for ((i = 0; i < 150; i++)); do kill -0 "$GPGID" 2>/dev/null || break; sleep 0.1; done
if ! kill -0 "$GPGID" 2>/dev/null; then wait "$GPGID" 2>/dev/null || true; GPGID=""; fi
admin "http://$ADMIN/status" > "$WORK/status.json" 2>/dev/null || true
ip netns exec "$NS" "$VHOSTD" stats --admin-addr "$ADMIN" > "$WORK/stats.txt" 2>/dev/null || true
stop_pid "$VPID"; VPID=""

# ---------------------------------------------------------------- report --
VHOSTD_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || VHOSTD_REV="$VHOSTD_REV (+ uncommitted changes)"
META="date=$(date -u +%Y-%m-%dT%H:%MZ)
nproc=$(nproc)
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
kernel=$(uname -r)
accel=$ACCEL
qemu=$(qemu-system-x86_64 --version | head -n1 | sed 's/^QEMU emulator version //')
iperf3=$(iperf3 --version | head -n1 | awk '{ print $2 }')
vhostd=$VHOSTD_REV
vcpus=$VCPUS
secs=$SECS
rounds=$ROUNDS
gso_max_size=$GSO_MAX
udp_rate=$UDP_RATE
quiet=$QUIET
tests=$TESTS
load_start=$LOAD0
load_end=$(ab_load1)
elapsed=$ELAPSED
fails=$FAILS
cmdline=scripts/ab/run.sh -d $SECS -r $ROUNDS -g $GSO_MAX"
printf '%s\n' "$META" > "$WORK/meta.txt"
render "$WORK/meta.txt" "$RES"
OK=1
ab_say "report: $REPORT, chart: $SVG ($ELAPSED s of runs, $FAILS failed)"
awk '/^## Medians/,/^## Counters/' "$REPORT" | sed '$d' >&2
[ "$FAILS" = 0 ]
