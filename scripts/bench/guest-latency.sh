#!/usr/bin/env bash
# guest-latency.sh - issue 12 benchmark: request-response latency of a real
# guestlab guest (sockperf ping-pong, guest client -> host server) through
# vhostd (tap backend) with busy-polling off and on, against the same guest
# on QEMU's own tap backend (boot-guest.sh -n tap -V off: QEMU's userspace
# virtio-net). Target (issue 12): p50 and p99 at most 1.0x qemu-tap's.
#
#   scripts/bench/guest-latency.sh [-r RUNS] [-d SECS] [-m MODES] [-c CFGS] [-s BYTES] [-p VCPUS] [-q PCT] [-N NICE] [-O PROPS] [-o OUTDIR] [-V VHOSTD]
#
# Set-up, per run and configuration (all the same apart from the datapath):
#   netns NS with a tap (169.254.101.1/24) and two sockperf servers bound to
#   it (UDP port 11111, TCP port 11112); guest 169.254.101.2/24 (guestlab,
#   TCG, VCPUS vCPUs, 1 GiB) runs, for each mode in MODES (default "udp tcp"):
#     sockperf ping-pong -i HOST -p PORT [--tcp] -t SECS -m BYTES --full-rtt
#   (one request in flight, the next sent as soon as the reply is in; sockperf
#   drops its 400 ms warm-up; --full-rtt: the whole round trip, not half).
#   CFGS (default "vhostd-poll-off vhostd-poll-on qemu-tap"):
#     vhostd-poll-off  ip netns exec NS vhostd --socket-path S --tap T --poll-us 0
#     vhostd-poll-on   the same with --poll-us 50
#     vhostd-poll-N    the same with --poll-us N
#     (the guest on boot-guest.sh -n vhost-user -s S: memfd memory, INTx)
#     qemu-tap         ip tuntap add T mode tap vnet_hdr in NS; the guest on
#                      ip netns exec NS boot-guest.sh -n tap -t T -V off [-O PROPS]
# Interrupts differ: under TCG boot-guest.sh gives a vhost-user NIC no MSI-X
# (vectors=0, INTx), while the tap NIC keeps MSI-X. -O vectors=0 gives the
# qemu-tap guest INTx too, to compare like with like.
# Runs are interleaved (every configuration once per run) and the order is
# rotated from run to run (run 1: a b c, run 2: b c a, ...) so that slow load
# drifts and "who runs first" hit all configurations alike. Nothing is pinned.
#
# Measured per test (the guest prints markers around each sockperf; a host
# watcher samples at each marker):
#   p50 / p99 / p99.9   sockperf's round-trip percentiles, in usec, measured
#                       by the guest's clock (under TCG the guest's own
#                       processing is a large part of every round trip, the
#                       same in all configurations)
#   avg, obs            sockperf's average RTT and number of observations
#   CPU %               utime+stime over the test, in % of one CPU:
#                       vhostd, qemu-io (QEMU minus its vCPU threads),
#                       qemu-vcpu (the TCG vCPU threads)
#   host busy           % of all CPUs busy over the test (others' work too)
#   kicks/calls         vhostd only, from its counters (SIGUSR1) at the
#                       markers: TX kicks and TX used-buffer calls per
#                       guest->host packet, RX calls per host->guest packet
#                       (results.txt; polling shows up as fewer TX kicks)
# Ratios: vhostd-*/qemu-tap of the medians over runs, and the per-run
# (same-run) ratios they come from.
# -q PCT waits (up to 90 s) before each run until the host was at most PCT %
# busy for a second. -N NICE sets the nice value of the caller's scheduler
# autogroup for the run (see lib.sh autogroup_nice).
# Output: a Markdown table on stdout and in OUTDIR/table.md; raw rows in
# OUTDIR/results.txt; logs in OUTDIR. Cleans up what it creates (netns, taps,
# daemons, guests, sockets) on any exit.
set -euo pipefail
BENCH_NAME=guest-latency
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

RUNS=3 SECS=10 VCPUS=2 OUT="" QUIET=0 AGNICE="" TAPPROPS="" MODES="udp tcp" MSGSIZE=14
CFGS="vhostd-poll-off vhostd-poll-on qemu-tap"
VHOSTD_SRC="${VHOSTD:-$BENCH_ROOT/bin/vhostd}" GUESTLAB_OUT="${GUESTLAB_OUT:-/tmp/guestlab}"
while getopts "r:d:m:c:s:p:q:N:O:o:V:h" opt; do
  case "$opt" in
    r) RUNS="$OPTARG" ;; d) SECS="$OPTARG" ;; m) MODES="$OPTARG" ;; c) CFGS="$OPTARG" ;; s) MSGSIZE="$OPTARG" ;;
    p) VCPUS="$OPTARG" ;; q) QUIET="$OPTARG" ;; N) AGNICE="$OPTARG" ;; O) TAPPROPS="$OPTARG" ;; o) OUT="$OPTARG" ;;
    V) VHOSTD_SRC="$OPTARG" ;; h) usage; exit 0 ;; *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "$#" -eq 0 ] || { usage >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || bdie "-r $RUNS: want a number >= 1"
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || bdie "-d $SECS: want a number of seconds >= 1"
[[ "$MSGSIZE" =~ ^[1-9][0-9]*$ ]] || bdie "-s $MSGSIZE: want a message size in bytes >= 1"
[[ "$QUIET" =~ ^[0-9]+$ ]] || bdie "-q $QUIET: want a busy percentage 0..100"
[ -z "$AGNICE" ] || [[ "$AGNICE" =~ ^-?[0-9]+$ ]] || bdie "-N $AGNICE: want a nice value -20..19"
for m in $MODES; do case "$m" in udp|tcp) ;; *) bdie "-m: unknown mode $m (udp, tcp)" ;; esac; done
[ -n "$MODES" ] || bdie "-m: no mode"
HAVE_TAP=0
for c in $CFGS; do
  case "$c" in
    qemu-tap) HAVE_TAP=1 ;; vhostd-poll-off|vhostd-poll-on) ;;
    vhostd-poll-*) [[ "${c#vhostd-poll-}" =~ ^[0-9]+$ ]] || bdie "-c: bad configuration $c" ;;
    *) bdie "-c: unknown configuration $c (vhostd-poll-off, vhostd-poll-on, vhostd-poll-N, qemu-tap)" ;;
  esac
done
[ -n "$CFGS" ] || bdie "-c: no configuration"
[ "$(id -u)" = 0 ] || bdie "needs root (netns, tap, QEMU)"
for c in qemu-system-x86_64 ip; do
  command -v "$c" >/dev/null || bdie "$c missing (apt-get install qemu-system-x86 iproute2)"
done
if ! command -v sockperf >/dev/null; then
  bsay "installing sockperf (host side server; build-initramfs.sh copies it into the guest)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sockperf >&2 || bdie "sockperf missing (apt-get install sockperf)"
fi
[ -x "$VHOSTD_SRC" ] || bdie "no vhostd binary at $VHOSTD_SRC: run make build (or give -V)"

OUT="${OUT:-/tmp/vhostd-bench-latency-$$}"
mkdir -p "$OUT"
RES="$OUT/results.txt"; : > "$RES"
# A private copy: other people may rebuild bin/vhostd while this runs.
VHOSTD="$OUT/vhostd"; cp "$VHOSTD_SRC" "$VHOSTD"
bash "$GUESTLAB/build-initramfs.sh" "$GUESTLAB_OUT" >/dev/null

NS="vhbl$$" TAP="vhlt$$" HOST_IP=169.254.101.1 GUEST_IP=169.254.101.2 UDP_PORT=11111 TCP_PORT=11112
SOCK="$OUT/vhostd.sock"
VPID="" SPIDS="" GPGID="" WPID=""

teardown_run() {
  local p
  set +e
  [ -z "$WPID" ] || stop_pid "$WPID"
  stop_group "$GPGID"   # the guest's own process group: boot-guest, timeout, QEMU
  stop_pid "$VPID"
  for p in $SPIDS; do stop_pid "$p"; done
  ip -n "$NS" link del "$TAP" 2>/dev/null
  rm -f "$SOCK"
  VPID="" SPIDS="" GPGID="" WPID=""
  set -e
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  teardown_run
  autogroup_restore
  ip netns del "$NS" 2>/dev/null || true
  rm -f "$VHOSTD"
  [ "$rc" = 0 ] || bsay "failed (rc=$rc); logs in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -z "$AGNICE" ] || autogroup_nice "$AGNICE"

ip netns add "$NS"
ip -n "$NS" link set lo up

MARKERS=""
for m in $MODES; do MARKERS+=" BENCH-${m^^}-BEGIN BENCH-${m^^}-END"; done

# watcher GLOG SNAPFILE QPID: at each marker line the guest prints, append one
# snapshot line: marker, time, host CPU jiffies, CPU ticks of QEMU and vhostd.
watcher() {
  local glog="$1" snaps="$2" qpid="$3" m line vs k
  for m in $MARKERS; do
    while ! grep -aq "^$m" "$glog" 2>/dev/null; do sleep 0.05; done
    line="marker=$m t=$(now_s) host=$(cpu_jiffies | tr ' ' :) qemu=$(proc_ticks "$qpid") vcpu=$(vcpu_ticks "$qpid") vhostd=$([ -n "$VPID" ] && proc_ticks "$VPID" || echo 0)"
    if [ -n "$VPID" ]; then   # vhostd's counters (SIGUSR1 "port stats"), prefixed v_
      vs="$(snapshot_vhostd "$VPID" "$VLOG")"
      for k in tx_written tx_kicks tx_calls rx_packets rx_kicks rx_calls; do line+=" v_$k=$(kv "$vs" "$k")"; done
    fi
    echo "$line" >> "$snaps"
  done
}

GCMD="lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && ping -c 5 -i 0.2 $HOST_IP >/dev/null; rc=0"
for m in $MODES; do
  if [ "$m" = tcp ]; then sp="-p $TCP_PORT --tcp"; else sp="-p $UDP_PORT"; fi
  GCMD+="; echo BENCH-${m^^}-BEGIN; sockperf ping-pong -i $HOST_IP $sp -t $SECS -m $MSGSIZE --full-rtt; r=\$?; echo BENCH-${m^^}-END rc=\$r; [ \$r = 0 ] || rc=\$r; sleep 0.5"
done
GCMD+="; exit \$rc"
NMODES=$(wc -w <<< "$MODES")

# parse_sockperf GLOG MODE: key=value fields of the sockperf output between
# the mode's markers (p50 p99 p999 avg max obs; "-" where sockperf printed none).
parse_sockperf() {
  tr -d '\r' < "$1" | sed 's/\x1b\[[0-9;]*m//g' | awk -v b="BENCH-${2^^}-BEGIN" -v e="BENCH-${2^^}-END" '
    index($0, b) == 1 { on = 1; next }
    index($0, e) == 1 { on = 0; next }
    !on { next }
    /avg-rtt=/ { s = $0; sub(/.*avg-rtt=/, "", s); sub(/[^0-9.].*/, "", s); avg = s }
    /Total [0-9]+ observations/ { s = $0; sub(/.*Total /, "", s); sub(/ .*/, "", s); obs = s }
    /percentile 50\.000 =/ { p50 = $NF }
    /percentile 99\.000 =/ { p99 = $NF }
    /percentile 99\.900 =/ { p999 = $NF }
    /<MAX> observation =/ { mx = $NF }
    END { printf "p50=%s p99=%s p999=%s avg=%s max=%s obs=%s", (p50 == "" ? "-" : p50), (p99 == "" ? "-" : p99),
      (p999 == "" ? "-" : p999), (avg == "" ? "-" : avg), (mx == "" ? "-" : mx), (obs == "" ? "-" : obs) }'
}

# one_run CFG RUN: set up, boot the guest, measure, tear down; appends one
# result row per mode to $RES.
one_run() {
  local cfg="$1" run="$2" tag="$1-$2" glog snaps qpid i rc=0 bootargs vargs=()
  glog="$OUT/$tag-guest.log" snaps="$OUT/$tag-snaps.txt" VLOG="$OUT/$tag-vhostd.log"
  : > "$glog"; : > "$snaps"
  case "$cfg" in
    vhostd-*)
      case "$cfg" in
        vhostd-poll-off) vargs=(--poll-us 0) ;;
        vhostd-poll-on) vargs=(--poll-us 50) ;;
        *) vargs=(--poll-us "${cfg#vhostd-poll-}") ;;
      esac
      rm -f "$SOCK"
      ip netns exec "$NS" "$VHOSTD" --socket-path "$SOCK" --tap "$TAP" --log-level info ${vargs[@]+"${vargs[@]}"} > "$VLOG" 2>&1 &
      VPID=$!
      for ((i = 0; i < 50; i++)); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.1; done
      ip -n "$NS" link show "$TAP" >/dev/null 2>&1 || bdie "vhostd did not create $TAP (see $VLOG)"
      bootargs=(-n vhost-user -s "$SOCK")
      ;;
    qemu-tap)
      ip -n "$NS" tuntap add dev "$TAP" mode tap vnet_hdr
      bootargs=(-n tap -t "$TAP" -V off ${TAPPROPS:+-O "$TAPPROPS"})
      ;;
  esac
  ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
  ip -n "$NS" link set "$TAP" up
  ip netns exec "$NS" sockperf server -i "$HOST_IP" -p "$UDP_PORT" > "$OUT/$tag-sockperf-udp.log" 2>&1 &
  SPIDS="$!"
  ip netns exec "$NS" sockperf server -i "$HOST_IP" -p "$TCP_PORT" --tcp > "$OUT/$tag-sockperf-tcp.log" 2>&1 &
  SPIDS+=" $!"
  # The guest in its own process group (job control on for this one job) so
  # that teardown can end exactly it; not setsid (same autogroup as vhostd).
  set -m
  ip netns exec "$NS" bash "$GUESTLAB/boot-guest.sh" -o "$GUESTLAB_OUT" -l "$glog" \
    -i "$GUEST_IP/24" -p "$VCPUS" -T $((150 + NMODES * (2 * SECS + 10))) -K no_timer_check -X "-name benchguest,debug-threads=on" \
    -c "$GCMD" "${bootargs[@]}" > "$OUT/$tag-boot.log" 2>&1 &
  GPGID=$!
  set +m
  qpid=""
  for ((i = 0; i < 200; i++)); do
    qpid="$(pgrep -g "$GPGID" -x qemu-system-x86 | head -n1 || true)"
    [ -n "$qpid" ] && break
    kill -0 "$GPGID" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$qpid" ] || bdie "QEMU did not start (see $OUT/$tag-boot.log)"
  watcher "$glog" "$snaps" "$qpid" &
  WPID=$!
  wait "$GPGID" || rc=$?
  GPGID=""
  for ((i = 0; i < 40; i++)); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.05; done
  stop_pid "$WPID"; WPID=""
  [ -z "$VPID" ] || snapshot_vhostd "$VPID" "$VLOG" > /dev/null
  teardown_run
  [ "$rc" = 0 ] || bsay "$tag: guest command failed (rc=$rc); see $glog"
  local m b e fields
  for m in $MODES; do
    b="$(grep "marker=BENCH-${m^^}-BEGIN" "$snaps" || true)" e="$(grep "marker=BENCH-${m^^}-END" "$snaps" || true)"
    fields="$(parse_sockperf "$glog" "$m")"
    if [ -z "$b" ] || [ -z "$e" ] || [ "$(kv "$fields" p50)" = - ] || [ "$(kv "$fields" p99)" = - ]; then
      echo "ROW cfg=$cfg run=$run mode=$m failed=1" >> "$RES"
      continue
    fi
    awk -v cfg="$cfg" -v run="$run" -v m="$m" -v f="$fields" -v hz="$CLK_TCK" -v b="$b" -v e="$e" '
      function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
        if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return 0 }
      function dl(k) { return get(e, k) - get(b, k) }
      BEGIN {
        secs = dl("t"); vcpu = dl("vcpu") / hz; qio = dl("qemu") / hz - vcpu; vh = dl("vhostd") / hz
        split(get(b, "host"), hb, ":"); split(get(e, "host"), he, ":")
        hbusy = (he[2] > hb[2] ? 100 * (he[1] - hb[1]) / (he[2] - hb[2]) : 0)
        printf "ROW cfg=%s run=%d mode=%s %s secs=%.2f cpu_vhostd_pct=%.0f cpu_qemu_io_pct=%.0f cpu_vcpu_pct=%.0f host_busy_pct=%.0f",
          cfg, run, m, f, secs, (secs > 0 ? 100 * vh / secs : 0), (secs > 0 ? 100 * qio / secs : 0), (secs > 0 ? 100 * vcpu / secs : 0), hbusy
        # per guest->host packet: TX kicks and TX used-calls; per host->guest packet: RX calls
        tp = dl("v_tx_written"); rp = dl("v_rx_packets")
        if (cfg ~ /^vhostd/ && tp > 0 && rp > 0)
          printf " v_tx_pkts=%d v_tx_kicks_per_pkt=%.2f v_tx_calls_per_pkt=%.2f v_rx_calls_per_pkt=%.2f", tp, dl("v_tx_kicks") / tp, dl("v_tx_calls") / tp, dl("v_rx_calls") / rp
        printf "\n" }' >> "$RES"
  done
  grep "cfg=$cfg run=$run " "$RES" | sed 's/^/    /' >&2
}

CFGARR=($CFGS)
NC=${#CFGARR[@]}
bsay "out=$OUT runs=$RUNS secs=$SECS modes=($MODES) cfgs=($CFGS) msg=${MSGSIZE}B vcpus=$VCPUS autogroup_nice=${AGNICE:-unchanged} load=$(loadavg) accel=$(bash "$GUESTLAB/boot-guest.sh" -P)"
T0=$(date +%s)
for r in $(seq "$RUNS"); do
  for ((k = 0; k < NC; k++)); do
    cfg="${CFGARR[$(( (r - 1 + k) % NC ))]}"
    q="$(wait_quiet "$QUIET" 90)"
    bsay "run $r: $cfg (load $(loadavg), host busy before: $q %)"
    echo "LOAD cfg=$cfg run=$r load1=$(loadavg) busy_before=$q" >> "$RES"
    one_run "$cfg" "$r"
  done
done

# ---------------------------------------------------------------- table --
table() {
  awk -v cfgs="$CFGS" -v modes="$MODES" -v runs="$RUNS" '
    function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
      if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return "" }
    function med(arr, cnt,   i, j, t, v) { for (i = 1; i <= cnt; i++) v[i] = arr[i] + 0
      for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      if (cnt == 0) return ""; return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2 }
    # medk C M K: median of key K over the runs of cfg C, mode M (skipping "-")
    function medk(c, m, k,   r, n, a) { n = 0; for (r = 1; r <= runs; r++) if (((c, m, r, k) in val) && val[c, m, r, k] != "-") a[++n] = val[c, m, r, k]
      return med(a, n) }
    function runsk(c, m, k, fmt,   r, s, x) { s = ""; for (r = 1; r <= runs; r++) { x = ((c, m, r, k) in val) ? val[c, m, r, k] : "x"
      if (x != "x" && x != "-") x = sprintf(fmt, x); s = s (r > 1 ? ", " : "") x } return s }
    function fmtv(x, fmt) { return (x == "" ? "-" : sprintf(fmt, x)) }
    /^ROW / {
      c = get($0, "cfg"); m = get($0, "mode"); r = get($0, "run")
      if (get($0, "failed") != "") { fails++; next }
      split("p50 p99 p999 avg obs cpu_vhostd_pct cpu_qemu_io_pct cpu_vcpu_pct host_busy_pct v_tx_kicks_per_pkt v_rx_calls_per_pkt", ks, " ")
      for (i in ks) val[c, m, r, ks[i]] = get($0, ks[i]) }
    END {
      nc = split(cfgs, cs, " "); nm = split(modes, ms, " ")
      print "Round trip in usec (sockperf ping-pong --full-rtt, guest client, host server): median over runs, then every run in run order (x = failed run)."
      print ""
      print "| mode | datapath | p50: median (runs) | p99: median (runs) | p99.9: median (runs) | avg | observations per run | CPU % of one CPU: vhostd / qemu-io / qemu-vcpu | vhostd TX kicks / RX calls per packet | host busy % (runs) |"
      print "| --- | --- | --- | --- | --- | ---: | --- | --- | --- | --- |"
      for (mi = 1; mi <= nm; mi++) for (ci = 1; ci <= nc; ci++) { m = ms[mi]; c = cs[ci]
        kc = (c ~ /^vhostd/ && medk(c, m, "v_tx_kicks_per_pkt") != "" ? sprintf("%.2f / %.2f", medk(c, m, "v_tx_kicks_per_pkt"), medk(c, m, "v_rx_calls_per_pkt")) : "-")
        printf "| %s | %s | **%s** (%s) | **%s** (%s) | %s (%s) | %s | %s | %s / %s / %s | %s | %s |\n", toupper(m), c,
          fmtv(medk(c, m, "p50"), "%.1f"), runsk(c, m, "p50", "%.1f"), fmtv(medk(c, m, "p99"), "%.1f"), runsk(c, m, "p99", "%.1f"),
          fmtv(medk(c, m, "p999"), "%.1f"), runsk(c, m, "p999", "%.1f"), fmtv(medk(c, m, "avg"), "%.1f"), runsk(c, m, "obs", "%d"),
          fmtv(medk(c, m, "cpu_vhostd_pct"), "%.0f"), fmtv(medk(c, m, "cpu_qemu_io_pct"), "%.0f"), fmtv(medk(c, m, "cpu_vcpu_pct"), "%.0f"),
          kc, runsk(c, m, "host_busy_pct", "%.0f") }
      base = "qemu-tap"; hb = 0; for (ci = 1; ci <= nc; ci++) if (cs[ci] == base) hb = 1
      if (hb) {
        print ""
        print "Ratios to qemu-tap (target: at most 1.00x for p50 and p99): ratio of the medians, then the same-run ratios in run order."
        print ""
        print "| mode | datapath | p50 vs qemu-tap | p99 vs qemu-tap | p99.9 vs qemu-tap |"
        print "| --- | --- | --- | --- | --- |"
        for (mi = 1; mi <= nm; mi++) for (ci = 1; ci <= nc; ci++) { m = ms[mi]; c = cs[ci]; if (c == base) continue
          line = sprintf("| %s | %s", toupper(m), c)
          split("p50 p99 p999", ks, " ")
          for (ki = 1; ki <= 3; ki++) { k = ks[ki]; a = medk(c, m, k); q = medk(base, m, k)
            s = ""; for (r = 1; r <= runs; r++) { x = "x"
              if (((c, m, r, k) in val) && ((base, m, r, k) in val) && val[c, m, r, k] != "-" && val[base, m, r, k] + 0 > 0)
                x = sprintf("%.2f", val[c, m, r, k] / val[base, m, r, k])
              s = s (r > 1 ? ", " : "") x }
            line = line sprintf(" | **%s** (%s)", (a != "" && q + 0 > 0 ? sprintf("%.2fx", a / q) : "-"), s) }
          print line " |" }
      }
      if (fails) printf "\n%d test(s) failed and are left out (see results.txt).\n", fails
    }' "$1"
}
{
  echo "guest-latency.sh: $(date -u +%Y-%m-%dT%H:%MZ), $RUNS runs x ${SECS}s per mode ($MODES), ${MSGSIZE}-byte messages, guest $VCPUS vCPU TCG, qemu-tap NIC props ${TAPPROPS:--}, autogroup nice ${AGNICE:-unchanged}, took $(( $(date +%s) - T0 ))s, load1 at the runs: $(sed -n 's/^LOAD .*load1=\([0-9.]*\).*/\1/p' "$RES" | tr '\n' ' ')"
  echo
  table "$RES"
} | tee "$OUT/table.md"
