#!/usr/bin/env bash
# guest-iperf.sh - issue 3 benchmark 1: a real guestlab guest running iperf3
# TCP through vhostd (tap backend) against the same guest on QEMU's own tap
# backend (boot-guest.sh -n tap -V off: QEMU's userspace virtio-net), both
# directions, with host CPU seconds per GB moved.
#
#   scripts/bench/guest-iperf.sh [-r RUNS] [-d SECS] [-p VCPUS] [-q PCT] [-N NICE] [-O PROPS] [-o OUTDIR] [-V VHOSTD]
#
# Set-up, per run and configuration (both the same apart from the datapath):
#   netns NS with a tap (169.254.100.1/24) and an iperf3 server bound to it;
#   guest 169.254.100.2/24 (guestlab, TCG, VCPUS vCPUs, 1 GiB) runs
#     iperf3 -c HOST -t SECS        (guest -> host, "g2h")
#     iperf3 -c HOST -t SECS -R     (host -> guest, "h2g")
#   vhostd:   ip netns exec NS vhostd --socket-path S --tap T; the guest on
#             boot-guest.sh -n vhost-user -s S (memfd-shared memory, INTx)
#   qemu-tap: ip tuntap add T mode tap vnet_hdr in NS; the guest on
#             ip netns exec NS boot-guest.sh -n tap -t T -V off [-O PROPS]
# Interrupts differ: under TCG boot-guest.sh gives a vhost-user NIC no MSI-X
# (vectors=0, INTx: QEMU 7.2 segfaults otherwise), while the tap NIC keeps
# MSI-X. -O vectors=0 gives the qemu-tap guest INTx too, to compare like
# with like (-O passes any virtio-net-pci properties to the qemu-tap guest).
# Runs are interleaved vhostd, qemu-tap, vhostd, qemu-tap, ... so slow drifts
# in the machine's load hit both alike. Nothing is pinned: the guest's vCPU
# threads, QEMU's I/O thread, vhostd and the iperf3 server share the host's
# CPUs as the scheduler sees fit, the same way in both configurations.
#
# Measured over each iperf3 (the guest prints markers around it; a host
# watcher samples at each marker):
#   Mbit/s     iperf3's receiver figure (from the guest console)
#   GB         bytes through the tap (netns side rx_bytes for g2h, tx_bytes
#              for h2g; GB = 1e9 bytes), i.e. what the datapath moved
#   CPU        utime+stime deltas from /proc/PID/stat:
#                vhostd            the daemon (vhostd configuration only)
#                qemu-io           QEMU minus its vCPU threads: device
#                                  emulation, the main loop, and for qemu-tap
#                                  its userspace virtio-net datapath
#                qemu-vcpu         the TCG vCPU threads (the guest itself)
#   CPU s/GB   total   = (vhostd + qemu-io + qemu-vcpu) / GB  (the brief's figure)
#              datapath = (vhostd + qemu-io) / GB (the host side of the
#                         datapath without the emulated guest, which under TCG
#                         dominates the total)
#   avg pkt    bytes/packets at the tap for the direction (super-packets whole
#              give tens of KB); for vhostd also tx_bytes/tx_written (g2h) or
#              rx_bytes/rx_packets (h2g) from its counters (SIGUSR1)
#   host busy  % of both CPUs busy over the window (all processes, /proc/stat):
#              others' work on the shared machine shows up here
# -q PCT waits (up to 90 s) before each run until the host was at most PCT %
# busy for a second (default 0: no wait). -N NICE sets the nice value of the
# caller's scheduler autogroup (its session) for the run and restores it on
# exit (see lib.sh autogroup_nice); e.g. -N -10 keeps other users' sessions
# from starving the measured processes. The guest kernel gets
# no_timer_check: under heavy host load TCG can miss the early IO-APIC timer
# check and panic ("IO-APIC + timer doesn't work").
# Output: a Markdown table (medians, every run, vhostd/qemu-tap ratios) on
# stdout and in OUTDIR/table.md; raw rows in OUTDIR/results.txt; logs in OUTDIR.
# Cleans up what it creates (netns, taps, daemons, guests, sockets) on any exit.
set -euo pipefail
BENCH_NAME=guest-iperf
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

RUNS=2 SECS=10 VCPUS=2 OUT="" QUIET=0 AGNICE="" TAPPROPS="" VHOSTD_SRC="${VHOSTD:-$BENCH_ROOT/bin/vhostd}" GUESTLAB_OUT="${GUESTLAB_OUT:-/tmp/guestlab}"
while getopts "r:d:p:q:N:O:o:V:h" opt; do
  case "$opt" in
    r) RUNS="$OPTARG" ;; d) SECS="$OPTARG" ;; p) VCPUS="$OPTARG" ;; q) QUIET="$OPTARG" ;; N) AGNICE="$OPTARG" ;; O) TAPPROPS="$OPTARG" ;; o) OUT="$OPTARG" ;;
    V) VHOSTD_SRC="$OPTARG" ;; h) usage; exit 0 ;; *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "$#" -eq 0 ] || { usage >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || bdie "-r $RUNS: want a number >= 1"
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || bdie "-d $SECS: want a number of seconds >= 1"
[[ "$QUIET" =~ ^[0-9]+$ ]] || bdie "-q $QUIET: want a busy percentage 0..100"
[ -z "$AGNICE" ] || [[ "$AGNICE" =~ ^-?[0-9]+$ ]] || bdie "-N $AGNICE: want a nice value -20..19"
[ "$(id -u)" = 0 ] || bdie "needs root (netns, tap, QEMU)"
for c in qemu-system-x86_64 iperf3 ip; do
  command -v "$c" >/dev/null || bdie "$c missing (apt-get install qemu-system-x86 iperf3 iproute2)"
done
[ -x "$VHOSTD_SRC" ] || bdie "no vhostd binary at $VHOSTD_SRC: run make build (or give -V)"

OUT="${OUT:-/tmp/vhostd-bench-guest-$$}"
mkdir -p "$OUT"
RES="$OUT/results.txt"; : > "$RES"
# A private copy: other people may rebuild bin/vhostd while this runs.
VHOSTD="$OUT/vhostd"; cp "$VHOSTD_SRC" "$VHOSTD"
bash "$GUESTLAB/build-initramfs.sh" "$GUESTLAB_OUT" >/dev/null

NS="vhbg$$" TAP="vhbt$$" HOST_IP=169.254.100.1 GUEST_IP=169.254.100.2
SOCK="$OUT/vhostd.sock"
VPID="" SPID="" GPGID="" WPID=""

teardown_run() {
  set +e
  [ -z "$WPID" ] || stop_pid "$WPID"
  stop_group "$GPGID"   # the guest's own process group: boot-guest, timeout, QEMU
  stop_pid "$VPID"; stop_pid "$SPID"
  ip -n "$NS" link del "$TAP" 2>/dev/null
  rm -f "$SOCK"
  VPID="" SPID="" GPGID="" WPID=""
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

tapstat() { ip netns exec "$NS" cat "/sys/class/net/$TAP/statistics/$1" 2>/dev/null || echo 0; }

# watcher GLOG SNAPFILE QPID: at each marker line the guest prints, append one
# snapshot line: marker, time, CPU ticks, tap counters, vhostd counters.
watcher() {
  local glog="$1" snaps="$2" qpid="$3" m line vs
  for m in BENCH-G2H-BEGIN BENCH-G2H-END BENCH-H2G-BEGIN BENCH-H2G-END; do
    while ! grep -aq "^$m" "$glog" 2>/dev/null; do sleep 0.05; done
    vs=""
    [ -z "$VPID" ] || vs="$(snapshot_vhostd "$VPID" "$VLOG")"
    line="marker=$m t=$(now_s) host=$(cpu_jiffies | tr ' ' :) qemu=$(proc_ticks "$qpid") vcpu=$(vcpu_ticks "$qpid")"
    line+=" vhostd=$([ -n "$VPID" ] && proc_ticks "$VPID" || echo 0)"
    line+=" tap_rx_bytes=$(tapstat rx_bytes) tap_rx_packets=$(tapstat rx_packets)"
    line+=" tap_tx_bytes=$(tapstat tx_bytes) tap_tx_packets=$(tapstat tx_packets)"
    # vhostd counters, prefixed v_
    if [ -n "$vs" ]; then
      for k in tx_written tx_bytes tx_dropped tx_gso rx_packets rx_bytes rx_dropped rx_stalls; do
        line+=" v_$k=$(kv "$vs" "$k")"
      done
    fi
    echo "$line" >> "$snaps"
  done
}

GCMD="lab-retry 60 ping -c1 -W1 $HOST_IP >/dev/null && \
echo BENCH-G2H-BEGIN && iperf3 -c $HOST_IP -t $SECS -f m && echo BENCH-G2H-END && sleep 1 && \
echo BENCH-H2G-BEGIN && iperf3 -c $HOST_IP -t $SECS -f m -R && echo BENCH-H2G-END && sleep 0.5"

# one_run CFG RUN: set up, boot the guest, measure, tear down; appends two
# result rows (g2h, h2g) to $RES.
one_run() {
  local cfg="$1" run="$2" tag="$1-$2" glog snaps qpid i rc=0 bootargs
  glog="$OUT/$tag-guest.log" snaps="$OUT/$tag-snaps.txt" VLOG="$OUT/$tag-vhostd.log"
  : > "$glog"; : > "$snaps"
  case "$cfg" in
    vhostd)
      rm -f "$SOCK"
      ip netns exec "$NS" "$VHOSTD" --socket-path "$SOCK" --tap "$TAP" --log-level info > "$VLOG" 2>&1 &
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
  ip netns exec "$NS" iperf3 -s -B "$HOST_IP" > "$OUT/$tag-iperf3-server.log" 2>&1 &
  SPID=$!
  # The guest in its own process group (job control on for this one job)
  # so that teardown can end exactly it. Not setsid: a new session would put
  # QEMU in its own scheduler autogroup, unlike vhostd.
  set -m
  ip netns exec "$NS" bash "$GUESTLAB/boot-guest.sh" -o "$GUESTLAB_OUT" -l "$glog" \
    -i "$GUEST_IP/24" -p "$VCPUS" -T $((120 + 3 * SECS)) -K no_timer_check -X "-name benchguest,debug-threads=on" \
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
  # the watcher finishes at the last marker; give it a moment, then stop it
  for ((i = 0; i < 40; i++)); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.05; done
  stop_pid "$WPID"; WPID=""
  [ -z "$VPID" ] || snapshot_vhostd "$VPID" "$VLOG" > /dev/null
  teardown_run
  if [ "$rc" != 0 ] || [ "$(wc -l < "$snaps")" -lt 4 ]; then
    bsay "$tag: guest command failed (rc=$rc, $(wc -l < "$snaps") of 4 markers); see $glog"
    echo "ROW cfg=$cfg run=$run dir=g2h failed=1" >> "$RES"
    echo "ROW cfg=$cfg run=$run dir=h2g failed=1" >> "$RES"
    return 0
  fi
  local d b e mbps
  for d in g2h h2g; do
    b="$(grep "marker=BENCH-${d^^}-BEGIN" "$snaps")" e="$(grep "marker=BENCH-${d^^}-END" "$snaps")"
    if [ "$d" = g2h ]; then n=1; else n=2; fi
    mbps="$(tr -d '\r' < "$glog" | grep -a ' receiver$' | sed -n "${n}p" |
      awk '{ for (i = 1; i <= NF; i++) if ($i ~ /bits\/sec/) { v = $(i-1); u = $i } }
           END { if (u ~ /^G/) v *= 1000; if (u ~ /^K/) v /= 1000; print (v == "" ? 0 : v) }')"
    awk -v cfg="$cfg" -v run="$run" -v d="$d" -v mbps="$mbps" -v hz="$CLK_TCK" -v b="$b" -v e="$e" '
      function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
        if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return 0 }
      function dl(k) { return get(e, k) - get(b, k) }
      BEGIN {
        secs = dl("t"); vcpu = dl("vcpu") / hz; qio = dl("qemu") / hz - vcpu; vh = dl("vhostd") / hz
        if (d == "g2h") { bytes = dl("tap_rx_bytes"); pk = dl("tap_rx_packets")
                          vb = dl("v_tx_bytes"); vp = dl("v_tx_written"); vdrop = dl("v_tx_dropped") }
        else            { bytes = dl("tap_tx_bytes"); pk = dl("tap_tx_packets")
                          vb = dl("v_rx_bytes"); vp = dl("v_rx_packets"); vdrop = dl("v_rx_dropped") }
        gb = bytes / 1e9
        split(get(b, "host"), hb, ":"); split(get(e, "host"), he, ":")
        hbusy = (he[2] > hb[2] ? 100 * (he[1] - hb[1]) / (he[2] - hb[2]) : 0)
        printf "ROW cfg=%s run=%d dir=%s mbps=%s secs=%.2f gb=%.4f cpu_vhostd=%.2f cpu_qemu_io=%.2f cpu_vcpu=%.2f", cfg, run, d, mbps, secs, gb, vh, qio, vcpu
        printf " host_busy_pct=%.0f spg_total=%.3f spg_dp=%.3f tap_avg_pkt=%d", hbusy, (gb > 0 ? (vh + qio + vcpu) / gb : 0), (gb > 0 ? (vh + qio) / gb : 0), (pk > 0 ? bytes / pk : 0)
        if (cfg == "vhostd") printf " v_avg_pkt=%d v_drops=%d v_rx_stalls=%d", (vp > 0 ? vb / vp : 0), vdrop, dl("v_rx_stalls")
        printf "\n" }' >> "$RES"
  done
  grep "cfg=$cfg run=$run " "$RES" | sed 's/^/    /' >&2
}

bsay "out=$OUT runs=$RUNS secs=$SECS vcpus=$VCPUS autogroup_nice=${AGNICE:-unchanged} load=$(loadavg) accel=$(bash "$GUESTLAB/boot-guest.sh" -P)"
T0=$(date +%s)
for r in $(seq "$RUNS"); do
  for cfg in vhostd qemu-tap; do
    q="$(wait_quiet "$QUIET" 90)"
    bsay "run $r: $cfg (load $(loadavg), host busy before: $q %)"
    echo "LOAD cfg=$cfg run=$r load1=$(loadavg) busy_before=$q" >> "$RES"
    one_run "$cfg" "$r"
  done
done

# ---------------------------------------------------------------- table --
table() {
  awk '
    function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
      if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return "" }
    function med(key, cnt,   i, j, t, v) { for (i = 1; i <= cnt; i++) v[i] = val[key, i] + 0
      for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      if (cnt == 0) return ""; return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2 }
    function runs(key, cnt, fmt,   i, s) { s = ""; for (i = 1; i <= cnt; i++) s = s (i > 1 ? ", " : "") sprintf(fmt, val[key, i]); return s }
    /^ROW / && get($0, "failed") == "" {
      c = get($0, "cfg"); d = get($0, "dir")
      n[c, d]++
      split("mbps spg_total spg_dp cpu_vhostd cpu_qemu_io cpu_vcpu gb tap_avg_pkt v_avg_pkt host_busy_pct", ks, " ")
      for (i in ks) val[c SUBSEP d SUBSEP ks[i], n[c, d]] = get($0, ks[i]) }
    /^ROW / && get($0, "failed") != "" { fails++ }
    END {
      dirs["g2h"] = "guest -> host"; dirs["h2g"] = "host -> guest"
      print "| direction | datapath | Mbit/s: median (runs) | CPU s/GB total: median (runs) | CPU s/GB datapath: median (runs) | CPU s per run: vhostd / qemu-io / qemu-vcpu (medians) | avg packet at tap (B) | host busy % (runs) |"
      print "| --- | --- | --- | --- | --- | --- | ---: | --- |"
      split("g2h h2g", ds, " "); split("vhostd qemu-tap", cs, " ")
      for (di = 1; di <= 2; di++) for (ci = 1; ci <= 2; ci++) {
        d = ds[di]; c = cs[ci]; k = n[c, d] + 0; p = c SUBSEP d SUBSEP
        m[c, d, "mbps"] = med(p "mbps", k); m[c, d, "tot"] = med(p "spg_total", k); m[c, d, "dp"] = med(p "spg_dp", k)
        extra = (c == "vhostd" ? sprintf(" (vhostd counters: %d)", med(p "v_avg_pkt", k)) : "")
        printf "| %s | %s | **%.0f** (%s) | **%.2f** (%s) | **%.3f** (%s) | %.2f / %.2f / %.2f | %d%s | %s |\n", dirs[d], c,
          m[c, d, "mbps"], runs(p "mbps", k, "%.0f"), m[c, d, "tot"], runs(p "spg_total", k, "%.2f"),
          m[c, d, "dp"], runs(p "spg_dp", k, "%.3f"), med(p "cpu_vhostd", k), med(p "cpu_qemu_io", k), med(p "cpu_vcpu", k),
          med(p "tap_avg_pkt", k), extra, runs(p "host_busy_pct", k, "%.0f") }
      print ""
      print "| direction | throughput vhostd/qemu-tap | CPU s/GB total vhostd/qemu-tap | CPU s/GB datapath vhostd/qemu-tap |"
      print "| --- | ---: | ---: | ---: |"
      for (di = 1; di <= 2; di++) { d = ds[di]
        r1 = (m["qemu-tap", d, "mbps"] > 0 ? m["vhostd", d, "mbps"] / m["qemu-tap", d, "mbps"] : 0)
        r2 = (m["qemu-tap", d, "tot"] > 0 ? m["vhostd", d, "tot"] / m["qemu-tap", d, "tot"] : 0)
        r3 = (m["qemu-tap", d, "dp"] > 0 ? m["vhostd", d, "dp"] / m["qemu-tap", d, "dp"] : 0)
        printf "| %s | %.2fx | %.2fx | %.2fx |\n", dirs[d], r1, r2, r3 }
      if (fails) printf "\n%d run(s) failed and are left out (see results.txt).\n", fails / 2
    }' "$1"
}
{
  echo "guest-iperf.sh: $(date -u +%Y-%m-%dT%H:%MZ), $RUNS runs x ${SECS}s per direction, guest $VCPUS vCPU TCG, qemu-tap NIC props ${TAPPROPS:--}, autogroup nice ${AGNICE:-unchanged}, took $(( $(date +%s) - T0 ))s, load1 at the runs: $(sed -n 's/^LOAD .*load1=\([0-9.]*\).*/\1/p' "$RES" | tr '\n' ' ')"
  echo
  table "$RES"
} | tee "$OUT/table.md"
