#!/usr/bin/env bash
# pmd-vs-dpdk.sh - issue 3 benchmark 2: packet rate of vhostd's datapath
# against DPDK's vhost PMD, with the same DPDK virtio-user front-end
# (test/guestlab/pmd-client.sh, dpdk-testpmd) as the client. No VM.
#
#   scripts/bench/pmd-vs-dpdk.sh [-r RUNS] [-d SECS] [-w SECS] [-S SIZES] [-D DIRS]
#                                [-p] [-i 0|1] [-o CLIENTOPTS] [-P GOMAXPROCS] [-q PCT] [-N NICE]
#                                [-V VHOSTD] [-O OUTDIR]
#
# Client ring layout (DPDK virtio-user devargs, the same for both back-ends):
#   -p      packed_vq=1: packed virtqueues (default: split)
#   -i N    in_order=N (DPDK 22.11's default is in_order=1; vhostd offers
#           IN_ORDER since issue 13, so the client may pick its in-order path)
#   -o OPTS any more virtio-user devargs, comma-separated (mrg_rxbuf=0, ...)
# The datapath the client picked against each back-end (testpmd logs its
# Rx/Tx burst functions) is in every ROW and under the table.
#
# Directions (-D, default "c2p p2c"):
#   c2p  client txonly (UDP/IPv4 frames of SIZE bytes) into the back-end, which
#        drains: vhostd --backend null (counting sink), or
#        pmd-peer.sh start -m rxonly (DPDK net_vhost, count and free).
#        Figure: the client's Tx Mpps (what the ring took; the back-end sets
#        the pace when the client sees tx_dropped, i.e. a full ring).
#   p2c  client rxonly; the back-end transmits SIZE-byte UDP frames as fast as
#        the client posts buffers: vhostd --backend null --null-rx-size SIZE,
#        or pmd-peer.sh start -m txonly -s SIZE. Figure: the client's Rx Mpps.
# Sizes (-S, default "64 1518"): Ethernet frame bytes without CRC.
# Every (direction, size) cell runs RUNS times (default 3) per back-end,
# interleaved vhostd, dpdk, vhostd, dpdk, ... Each run starts a fresh back-end
# and a fresh client (pmd-client.sh: 2 s warm-up, then a SECS window).
#
# Pinning (2 CPUs): the client's forwarding lcore on CPU 0 (its main lcore,
# idle in the command line, on CPU 1). The back-end on CPU 1: vhostd under
# taskset -c 1 with GOMAXPROCS=1 (default -P 1: one P, like one DPDK lcore;
# its TX and RX loops are two goroutines on it), and DPDK's forwarding lcore on
# CPU 1 (its main lcore on CPU 0, idle).
#
# CPU: utime+stime of the back-end process over exactly the client's window
# (a watcher samples /proc/PID/stat when the client's testpmd prints the port
# stats that open and close the window). DPDK's lcore busy-polls, so it shows
# ~100% of a core whatever the load; vhostd sleeps on kicks when the ring is
# empty. For vhostd also ns of CPU per packet (its counters over the window).
# The machine is shared: each ROW also records how busy CPU 0 and CPU 1 were
# over the window (all processes; /proc/stat), so runs where other work took
# the back-end's CPU stand out. -q PCT waits (up to 90 s) before each run
# until the host was at most PCT % busy for a second (default 0: no wait).
# -N NICE sets the nice value of the caller's scheduler autogroup (its
# session) for the run and restores it on exit (see lib.sh autogroup_nice):
# with autogroups, another user's busy session gets as much of CPU 1 as the
# pinned back-end whatever their nice value; -N -10 stops that.
# Output: a Markdown table (medians, every run, vhostd/DPDK ratio per cell;
# target >= 0.7x) on stdout and in OUTDIR/table.md; raw rows in results.txt.
# Cleans up what it creates (vhostd, testpmd peers and clients, sockets, DPDK
# runtime dirs via the guestlab scripts) on any exit.
set -euo pipefail
BENCH_NAME=pmd-vs-dpdk
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

RUNS=3 SECS=10 WARM=2 SIZES="64 1518" DIRS="c2p p2c" COPTS="" GMP=1 OUT="" QUIET=0 AGNICE="" PACKED=0 INORDER=""
VHOSTD_SRC="${VHOSTD:-$BENCH_ROOT/bin/vhostd}"
CLIENT_CPU=0 BACKEND_CPU=1
while getopts "r:d:w:S:D:o:P:q:N:V:O:pi:h" opt; do
  case "$opt" in
    p) PACKED=1 ;; i) INORDER="$OPTARG" ;;
    r) RUNS="$OPTARG" ;; d) SECS="$OPTARG" ;; w) WARM="$OPTARG" ;; S) SIZES="$OPTARG" ;;
    D) DIRS="$OPTARG" ;; o) COPTS="$OPTARG" ;; P) GMP="$OPTARG" ;; V) VHOSTD_SRC="$OPTARG" ;;
    q) QUIET="$OPTARG" ;; N) AGNICE="$OPTARG" ;; O) OUT="$OPTARG" ;; h) usage; exit 0 ;; *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "$#" -eq 0 ] || { usage >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || bdie "-r $RUNS: want a number >= 1"
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || bdie "-d $SECS: want seconds >= 1"
[[ "$GMP" =~ ^[1-9][0-9]*$ ]] || bdie "-P $GMP: want GOMAXPROCS >= 1"
[[ "$QUIET" =~ ^[0-9]+$ ]] || bdie "-q $QUIET: want a busy percentage 0..100"
[ -z "$AGNICE" ] || [[ "$AGNICE" =~ ^-?[0-9]+$ ]] || bdie "-N $AGNICE: want a nice value -20..19"
[ -z "$INORDER" ] || [[ "$INORDER" =~ ^[01]$ ]] || bdie "-i $INORDER: want 0 or 1"
[ "$PACKED" = 0 ] || COPTS="packed_vq=1${COPTS:+,$COPTS}"
[ -z "$INORDER" ] || COPTS="in_order=$INORDER${COPTS:+,$COPTS}"
for d in $DIRS; do case "$d" in c2p|p2c) ;; *) bdie "-D: unknown direction $d (c2p or p2c)" ;; esac; done
for s in $SIZES; do
  { [[ "$s" =~ ^[0-9]+$ ]] && [ "$s" -ge 60 ] && [ "$s" -le 2048 ]; } || bdie "-S: size $s: want 60..2048"
done
[ "$(id -u)" = 0 ] || bdie "needs root (DPDK, /var/run/dpdk)"
# DPDK 22.11 from Debian: testpmd and the virtio-user and vhost PMDs.
need=()
command -v dpdk-testpmd >/dev/null || need+=(dpdk dpdk-dev)
ls /usr/lib/*/dpdk/pmds-*/librte_net_vhost.so* >/dev/null 2>&1 || need+=(librte-net-vhost23)
ls /usr/lib/*/dpdk/pmds-*/librte_net_virtio.so* >/dev/null 2>&1 || need+=(librte-net-virtio23)
if [ "${#need[@]}" -gt 0 ]; then
  bsay "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 ||
    bdie "cannot install ${need[*]}"
fi
[ -x "$VHOSTD_SRC" ] || bdie "no vhostd binary at $VHOSTD_SRC: run make build (or give -V)"
[ "$(nproc)" -ge 2 ] || bdie "needs 2 CPUs (client and back-end pinned apart)"

OUT="${OUT:-/tmp/vhostd-bench-pmd-$$}"
mkdir -p "$OUT"
RES="$OUT/results.txt"; : > "$RES"
VHOSTD="$OUT/vhostd"; cp "$VHOSTD_SRC" "$VHOSTD"   # private copy: bin/ may be rebuilt meanwhile
SOCK="$OUT/vhostd.sock" PEERDIR="$OUT/peer"
VPID="" CPID="" WPID="" PEER_UP=0

teardown_run() {
  set +e
  stop_pid "$WPID" 50; stop_pid "$CPID" 50   # pmd-client.sh ends its testpmd on TERM
  stop_pid "$VPID" 50
  [ "$PEER_UP" = 0 ] || bash "$GUESTLAB/pmd-peer.sh" stop "$PEERDIR" > "$OUT/peer-stop.txt" 2>&1
  rm -f "$SOCK"
  VPID="" CPID="" WPID="" PEER_UP=0
  set -e
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  teardown_run
  autogroup_restore
  rm -f "$VHOSTD"
  [ "$rc" = 0 ] || bsay "failed (rc=$rc); logs in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -z "$AGNICE" ] || autogroup_nice "$AGNICE"

# watcher CLIENTLOG BPID SNAPS: sample the back-end's CPU (and vhostd's
# counters) when the client opens and closes its window, i.e. when the first
# and the second "NIC statistics for port" block appear in its log.
watcher() {
  local log="$1" bpid="$2" snaps="$3" want n vs line
  for want in 1 2; do
    while :; do
      n="$(grep -ac 'NIC statistics for port' "$log" 2>/dev/null || true)"
      [ "${n:-0}" -ge "$want" ] && break
      sleep 0.02
    done
    line="t=$(now_s) ticks=$(proc_ticks "$bpid") c0=$(cpu_jiffies 0 | tr ' ' :) c1=$(cpu_jiffies 1 | tr ' ' :)"
    if [ -n "$VPID" ]; then
      vs="$(snapshot_vhostd "$VPID" "$VLOG")"
      line+=" v_tx_posted=$(kv "$vs" tx_posted) v_tx_dropped=$(kv "$vs" tx_dropped)"
      line+=" v_rx_packets=$(kv "$vs" rx_packets) v_rx_dropped=$(kv "$vs" rx_dropped)"
      line+=" v_tx_kicks=$(kv "$vs" tx_kicks) v_rx_stalls=$(kv "$vs" rx_stalls)"
    fi
    echo "$line" >> "$snaps"
  done
}

# one_run BACKEND DIR SIZE RUN: appends one ROW to $RES
one_run() {
  local be="$1" dir="$2" size="$3" run="$4" tag="$1-$2-$3-$4" bpid cmode cw snaps cout rc=0 i
  snaps="$OUT/$tag-snaps.txt" cout="$OUT/$tag-client.txt" cw="$OUT/$tag-client"
  VLOG="$OUT/$tag-vhostd.log"
  : > "$snaps"
  if [ "$dir" = c2p ]; then cmode=txonly; else cmode=rxonly; fi
  case "$be" in
    vhostd)
      local rxarg=()
      [ "$dir" = c2p ] || rxarg=(--null-rx-size "$size")
      rm -f "$SOCK"
      GOMAXPROCS="$GMP" taskset -c "$BACKEND_CPU" "$VHOSTD" --socket-path "$SOCK" --backend null \
        "${rxarg[@]}" --log-level info > "$VLOG" 2>&1 &
      VPID=$! bpid=$!
      for ((i = 0; i < 50; i++)); do [ -S "$SOCK" ] && break; sleep 0.1; done
      [ -S "$SOCK" ] || bdie "vhostd did not listen on $SOCK (see $VLOG)"
      sock="$SOCK"
      ;;
    dpdk)
      local pmode=rxonly
      [ "$dir" = c2p ] || pmode=txonly
      sock="$(bash "$GUESTLAB/pmd-peer.sh" start -m "$pmode" -s "$size" -c "$BACKEND_CPU" -M "$CLIENT_CPU" "$PEERDIR" 2> "$OUT/$tag-peer-start.txt")" ||
        bdie "pmd-peer.sh start failed (see $OUT/$tag-peer-start.txt)"
      PEER_UP=1
      bpid="$(cat "$PEERDIR/testpmd.pid")"
      ;;
  esac
  mkdir -p "$cw"
  watcher "$cw/testpmd.log" "$bpid" "$snaps" &
  WPID=$!
  bash "$GUESTLAB/pmd-client.sh" -m "$cmode" -s "$size" -d "$SECS" -w "$WARM" -c "$CLIENT_CPU" -M "$BACKEND_CPU" \
    ${COPTS:+-o "$COPTS"} -W "$cw" "$sock" > "$cout" 2> "$OUT/$tag-client.err" &
  CPID=$!
  wait "$CPID" || rc=$?
  CPID=""
  for ((i = 0; i < 100; i++)); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.02; done
  stop_pid "$WPID" 50; WPID=""
  local res b e
  res="$(grep '^RESULT ' "$cout" || true)"
  if [ "$rc" != 0 ] || [ -z "$res" ] || [ "$(wc -l < "$snaps")" -lt 2 ]; then
    bsay "$tag: client failed (rc=$rc); see $OUT/$tag-client.err"
    echo "ROW be=$be dir=$dir size=$size run=$run failed=1" >> "$RES"
    teardown_run
    return 0
  fi
  b="$(sed -n 1p "$snaps")" e="$(sed -n 2p "$snaps")"
  teardown_run
  awk -v be="$be" -v dir="$dir" -v size="$size" -v run="$run" -v hz="$CLK_TCK" -v b="$b" -v e="$e" -v r="$res" '
    function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
      if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return "" }
    function dl(k) { return get(e, k) - get(b, k) }
    BEGIN {
      pps = (dir == "c2p" ? get(r, "tx_pps") : get(r, "rx_pps"))
      secs = dl("t"); cpu = dl("ticks") / hz; pct = (secs > 0 ? 100 * cpu / secs : 0)
      printf "ROW be=%s dir=%s size=%s run=%d pps=%s cpu_pct=%.1f window_s=%.2f", be, dir, size, run, pps, pct, secs
      split(get(b, "c0"), c0b, ":"); split(get(e, "c0"), c0e, ":"); split(get(b, "c1"), c1b, ":"); split(get(e, "c1"), c1e, ":")
      printf " host_cpu0_pct=%.0f host_cpu1_pct=%.0f", (c0e[2] > c0b[2] ? 100 * (c0e[1] - c0b[1]) / (c0e[2] - c0b[2]) : 0), (c1e[2] > c1b[2] ? 100 * (c1e[1] - c1b[1]) / (c1e[2] - c1b[2]) : 0)
      printf " client_tx_dropped=%s rx_path=%s tx_path=%s", get(r, "tx_dropped"), get(r, "rx_path"), get(r, "tx_path")
      if (be == "vhostd") {
        np = (dir == "c2p" ? dl("v_tx_posted") : dl("v_rx_packets"))
        printf " v_pkts=%d v_pps=%.0f ns_per_pkt=%.1f v_drops=%d v_tx_kicks=%d v_rx_stalls=%d", np, (secs > 0 ? np / secs : 0),
          (np > 0 ? 1e9 * cpu / np : 0), dl("v_tx_dropped") + dl("v_rx_dropped"), dl("v_tx_kicks"), dl("v_rx_stalls")
      }
      printf "\n" }' >> "$RES"
  tail -n1 "$RES" | sed 's/^/    /' >&2
}

bsay "out=$OUT runs=$RUNS secs=$SECS dirs=$DIRS sizes=$SIZES client_opts=${COPTS:--} GOMAXPROCS=$GMP autogroup_nice=${AGNICE:-unchanged} load=$(loadavg)"
T0=$(date +%s)
for r in $(seq "$RUNS"); do
  for d in $DIRS; do
    for s in $SIZES; do
      for be in vhostd dpdk; do
        q="$(wait_quiet "$QUIET" 90)"
        echo "LOAD be=$be dir=$d size=$s run=$r load1=$(loadavg) busy_before=$q" >> "$RES"
        bsay "run $r: $d $s B $be (load $(loadavg), host busy before: $q %)"
        one_run "$be" "$d" "$s" "$r"
      done
    done
  done
done

table() {
  awk '
    function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
      if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return "" }
    function med(key, cnt,   i, j, t, v) { if (cnt == 0) return 0; for (i = 1; i <= cnt; i++) v[i] = val[key, i] + 0
      for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2 }
    function runs(key, cnt, div, fmt,   i, s) { s = ""; for (i = 1; i <= cnt; i++) s = s (i > 1 ? ", " : "") sprintf(fmt, val[key, i] / div); return s }
    /^ROW / && get($0, "failed") != "" { fails++ }
    /^ROW / && get($0, "failed") == "" {
      be = get($0, "be"); cell = get($0, "dir") " " get($0, "size")
      if (!(cell in seen)) { seen[cell] = 1; order[++nc] = cell }
      k = ++n[be, cell]; run = get($0, "run")
      split("pps cpu_pct ns_per_pkt host_cpu0_pct host_cpu1_pct", ks, " ")
      for (i in ks) val[be SUBSEP cell SUBSEP ks[i], k] = get($0, ks[i])
      byrun[be, cell, run] = get($0, "pps"); path[be, cell] = get($0, "rx_path") "/" get($0, "tx_path") }
    END {
      print "| direction | size (B) | vhostd Mpps: median (runs) | DPDK vhost PMD Mpps: median (runs) | vhostd/DPDK (per-run pairs) | vhostd CPU %: median (runs) | DPDK CPU % | vhostd ns/pkt | Mpps per back-end core: vhostd / DPDK | host CPU0 / CPU1 busy %: vhostd runs; DPDK runs |"
      print "| --- | ---: | --- | --- | --- | --- | ---: | ---: | --- | --- |"
      for (c = 1; c <= nc; c++) {
        cell = order[c]; split(cell, cs, " ")
        kv = n["vhostd", cell] + 0; kd = n["dpdk", cell] + 0
        pv = "vhostd" SUBSEP cell SUBSEP; pd = "dpdk" SUBSEP cell SUBSEP
        mv = med(pv "pps", kv); md = med(pd "pps", kd); cv = med(pv "cpu_pct", kv); cd = med(pd "cpu_pct", kd)
        pairs = ""
        for (r = 1; r <= 100; r++) if (((("vhostd", cell, r) in byrun)) && ((("dpdk", cell, r) in byrun)) && byrun["dpdk", cell, r] > 0)
          pairs = pairs (pairs == "" ? "" : ", ") sprintf("%.2f", byrun["vhostd", cell, r] / byrun["dpdk", cell, r])
        printf "| %s | %s | **%.2f** (%s) | **%.2f** (%s) | **%.2fx** (%s) | %.0f (%s) | %.0f | %.0f | %.2f / %.2f | %.0f / %.0f; %.0f / %.0f |\n",
          cs[1], cs[2], mv / 1e6, runs(pv "pps", kv, 1e6, "%.2f"), md / 1e6, runs(pd "pps", kd, 1e6, "%.2f"),
          (md > 0 ? mv / md : 0), pairs, cv, runs(pv "cpu_pct", kv, 1, "%.0f"), cd, med(pv "ns_per_pkt", kv),
          (cv > 0 ? mv / 1e6 / (cv / 100) : 0), (cd > 0 ? md / 1e6 / (cd / 100) : 0),
          med(pv "host_cpu0_pct", kv), med(pv "host_cpu1_pct", kv), med(pd "host_cpu0_pct", kd), med(pd "host_cpu1_pct", kd)
      }
      print ""
      for (c = 1; c <= nc; c++) { cell = order[c]
        printf "virtio-user datapath picked, %s: against vhostd %s, against DPDK %s (Rx/Tx)\n", cell, path["vhostd", cell], path["dpdk", cell] }
      if (fails) printf "\n%d run(s) failed and are left out (see results.txt).\n", fails
    }' "$1"
}
{
  echo "pmd-vs-dpdk.sh: $(date -u +%Y-%m-%dT%H:%MZ), $RUNS runs x ${SECS}s, client opts ${COPTS:--}, vhostd GOMAXPROCS=$GMP, autogroup nice ${AGNICE:-unchanged}, took $(( $(date +%s) - T0 ))s, load1 during runs: min $(sed -n 's/^LOAD .*load1=\([0-9.]*\).*/\1/p' "$RES" | sort -g | head -n1) max $(sed -n 's/^LOAD .*load1=\([0-9.]*\).*/\1/p' "$RES" | sort -g | tail -n1)"
  echo
  table "$RES"
} | tee "$OUT/table.md"
