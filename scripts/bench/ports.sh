#!/usr/bin/env bash
# ports.sh - issue 12: what many ports cost when idle, and how fairly a few
# ports at full rate share the machine. One vhostd, null backend, the Go
# front-end test/portload as the guests; everything on unix sockets in OUTDIR,
# no network traffic at all.
#
#   scripts/bench/ports.sh [-r RUNS] [-n PORTS] [-i SECS] [-f PORTS] [-d SECS]
#                          [-S SIZES] [-p POLLS] [-q PCT] [-V VHOSTD] [-O OUTDIR]
#
# Idle (target: 32 ports with attached idle front-ends cost < 1% of a core
# over 10 s): vhostd --config FILE (-n ports, default 32, each
# name=pN,socket=OUTDIR/sock/pN.sock,null). Its CPU (utime+stime of the whole
# process, /proc/PID/stat) is measured over -i seconds (default 10) twice:
#   unattached  the ports listen, no front-end (after a 1 s settle)
#   attached    portload -mode idle holds every port: handshake done, rings
#               up, kick/call fds given, RX ring full of posted buffers,
#               nothing sent (after a 2 s settle)
# plus the same CPU from the threads' schedstat (ns, finer than the 10 ms
# ticks of /proc/PID/stat) and the context switches of vhostd's threads over
# the window (its wake-ups). Each attached row also counts the ports whose
# handshake vhostd logged ("negotiated features"): it must be -n.
# Flood (target: 4 ports at full rate on 2 cores get within 25% of the
# mean): a fresh vhostd with -f ports (default 4), portload -mode flood sends
# SIZE-byte UDP frames (-S, default "64 1518") on every port for -d seconds
# (default 10), one goroutine per port. Per-port packets are vhostd's own
# counters (tx_posted, GET /status on the control socket, read while the
# front-ends are still attached) and portload's completed chains; each port's
# share is its packets as % of the mean over ports; max dev = max |share-100|.
# Nothing is pinned: vhostd and portload share the 2 CPUs as the scheduler
# sees fit.
# Polling (-p, default "0 50"): every measurement is made once per value,
# interleaved within each run: 0 is --poll-us 0 (off), "default" passes no
# --poll-us (vhostd's default, off), a number N passes --poll-us N.
# The machine is shared: every row records the 1-minute load and how busy the
# host's CPUs were over the window (all processes, /proc/stat). -q PCT waits
# (up to 90 s) before each measurement until the host was at most PCT % busy
# for a second (default 0: no wait). Compare within a run.
# -V VHOSTD: the binary to test (default bin/vhostd; built with go build into
# OUTDIR if missing). portload is always built from test/portload.
# Output: a Markdown table on stdout and in OUTDIR/table.md; raw rows in
# OUTDIR/results.txt; vhostd logs, portload outputs and /status JSON in OUTDIR.
# Cleans up what it starts (vhostd, portload) on any exit.
set -euo pipefail
BENCH_NAME=ports
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

RUNS=1 NIDLE=32 ISECS=10 NFLOOD=4 FSECS=10 SIZES="64 1518" POLLS="0 50" QUIET=0 OUT=""
VHOSTD_SRC="${VHOSTD:-$BENCH_ROOT/bin/vhostd}"
while getopts "r:n:i:f:d:S:p:q:V:O:h" opt; do
  case "$opt" in
    r) RUNS="$OPTARG" ;; n) NIDLE="$OPTARG" ;; i) ISECS="$OPTARG" ;; f) NFLOOD="$OPTARG" ;;
    d) FSECS="$OPTARG" ;; S) SIZES="$OPTARG" ;; p) POLLS="$OPTARG" ;; q) QUIET="$OPTARG" ;;
    V) VHOSTD_SRC="$OPTARG" ;; O) OUT="$OPTARG" ;; h) usage; exit 0 ;; *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "$#" -eq 0 ] || { usage >&2; exit 2; }
for v in "$RUNS" "$NIDLE" "$ISECS" "$FSECS"; do [[ "$v" =~ ^[1-9][0-9]*$ ]] || bdie "want a number >= 1, got $v"; done
[[ "$NFLOOD" =~ ^[0-9]+$ ]] || bdie "-f $NFLOOD: want a number (0: no flood runs)"
[[ "$QUIET" =~ ^[0-9]+$ ]] || bdie "-q $QUIET: want a busy percentage 0..100"
for p in $POLLS; do [[ "$p" =~ ^([0-9]+|default)$ ]] || bdie "-p: $p: want microseconds or 'default'"; done
for s in $SIZES; do
  { [[ "$s" =~ ^[0-9]+$ ]] && [ "$s" -ge 60 ] && [ "$s" -le 9000 ]; } || bdie "-S: size $s: want 60..9000"
done

OUT="${OUT:-/tmp/vhostd-bench-ports-$$}"
mkdir -p "$OUT/sock"
RES="$OUT/results.txt"; : > "$RES"
VHOSTD="$OUT/vhostd" PORTLOAD="$OUT/portload"
if [ -x "$VHOSTD_SRC" ]; then
  cp "$VHOSTD_SRC" "$VHOSTD"   # private copy: bin/ may be rebuilt meanwhile
else
  bsay "no vhostd at $VHOSTD_SRC: building it"
  (cd "$BENCH_ROOT" && go build -o "$VHOSTD" ./cmd/vhostd) || bdie "go build ./cmd/vhostd failed"
fi
(cd "$BENCH_ROOT" && go build -o "$PORTLOAD" ./test/portload) || bdie "go build ./test/portload failed"
CTL="$OUT/control.sock"
VPID="" LPID=""

teardown() {
  set +e
  stop_pid "$LPID" 50; stop_pid "$VPID" 50
  rm -f "$OUT"/sock/*.sock "$CTL"
  VPID="" LPID=""
  set -e
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  teardown
  rm -f "$VHOSTD" "$PORTLOAD"
  [ "$rc" = 0 ] || bsay "failed (rc=$rc); logs in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ctxsw PID: voluntary + involuntary context switches summed over the live
# threads of PID.
ctxsw() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }'
}

# run_ns PID: on-CPU nanoseconds summed over the live threads of PID
# (/proc/PID/task/*/schedstat): finer than the 10 ms ticks of /proc/PID/stat,
# but threads that exited meanwhile drop out.
run_ns() {
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'
}

# sample PID [PID2]: one line of key=value: time, ticks of PID (and of PID2),
# context switches of PID, host busy/total jiffies.
sample() {
  local l
  l="t=$(now_s) ticks=$(proc_ticks "$1") rns=$(run_ns "$1") ctx=$(ctxsw "$1") host=$(cpu_jiffies | tr ' ' :)"
  [ -z "${2:-}" ] || l+=" ticks2=$(proc_ticks "$2")"
  echo "$l"
}

# window B E: "secs=.. cpu_pct=.. sched_cpu_pct=.. ctxsw=.. ctxsw_per_s=.. host_busy_pct=.. [fe_cpu_pct=..]" between two samples.
window() {
  awk -v b="$1" -v e="$2" -v hz="$CLK_TCK" '
    function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
      if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return "" }
    BEGIN { secs = get(e, "t") - get(b, "t"); cpu = (get(e, "ticks") - get(b, "ticks")) / hz
      cs = get(e, "ctx") - get(b, "ctx")
      split(get(b, "host"), hb, ":"); split(get(e, "host"), he, ":")
      printf "secs=%.2f cpu_pct=%.2f sched_cpu_pct=%.3f ctxsw=%d ctxsw_per_s=%.0f host_busy_pct=%.0f", secs, 100 * cpu / secs,
        100 * (get(e, "rns") - get(b, "rns")) / 1e9 / secs, cs, cs / secs,
        (he[2] > hb[2] ? 100 * (he[1] - hb[1]) / (he[2] - hb[2]) : 0)
      if (get(b, "ticks2") != "") printf " fe_cpu_pct=%.2f", 100 * (get(e, "ticks2") - get(b, "ticks2")) / hz / secs }'
}

# start_vhostd POLL TAG N: vhostd with N null ports from a config file.
start_vhostd() {
  local poll="$1" tag="$2" n="$3" i pollarg=()
  [ "$poll" = default ] || pollarg=(--poll-us "$poll")
  : > "$OUT/$tag-ports.conf"
  for ((i = 0; i < n; i++)); do echo "name=p$i,socket=$OUT/sock/p$i.sock,null" >> "$OUT/$tag-ports.conf"; done
  "$VHOSTD" --config "$OUT/$tag-ports.conf" --admin-addr "" --control-socket "$CTL" \
    --capture-dir "$OUT/captures" "${pollarg[@]}" --log-level info > "$OUT/$tag-vhostd.log" 2>&1 &
  VPID=$!
  for ((i = 0; i < 100; i++)); do [ -S "$CTL" ] && [ -S "$OUT/sock/p$((n - 1)).sock" ] && break; sleep 0.05; done
  [ -S "$OUT/sock/p$((n - 1)).sock" ] || bdie "vhostd did not listen (see $OUT/$tag-vhostd.log)"
}

# wait_line FILE WORD SECS: wait until a line starting with WORD is in FILE.
wait_line() {
  local i
  for ((i = 0; i < $3 * 50; i++)); do
    grep -q "^$2" "$1" 2>/dev/null && return 0
    kill -0 "$LPID" 2>/dev/null || return 1
    sleep 0.02
  done
  return 1
}

socks() { local i; for ((i = 0; i < $1; i++)); do printf '%s ' "$OUT/sock/p$i.sock"; done; }

# idle_run POLL RUN
idle_run() {
  local poll="$1" run="$2" tag="idle-poll$1-r$2" b e
  start_vhostd "$poll" "$tag" "$NIDLE"
  sleep 1
  b="$(sample "$VPID")"; sleep "$ISECS"; e="$(sample "$VPID")"
  echo "IDLE poll=$poll run=$run phase=unattached ports=$NIDLE load1=$(loadavg) $(window "$b" "$e")" >> "$RES"
  tail -n1 "$RES" | sed 's/^/    /' >&2
  # shellcheck disable=SC2046
  "$PORTLOAD" -mode idle -d 0 $(socks "$NIDLE") > "$OUT/$tag-portload.txt" 2> "$OUT/$tag-portload.err" &
  LPID=$!
  wait_line "$OUT/$tag-portload.txt" READY 30 || bdie "portload idle did not get ready (see $OUT/$tag-portload.err)"
  sleep 2
  b="$(sample "$VPID" "$LPID")"; sleep "$ISECS"; e="$(sample "$VPID" "$LPID")"
  echo "IDLE poll=$poll run=$run phase=attached ports=$NIDLE negotiated=$(grep -ac 'msg="negotiated features"' "$OUT/$tag-vhostd.log") load1=$(loadavg) $(window "$b" "$e")" >> "$RES"
  tail -n1 "$RES" | sed 's/^/    /' >&2
  "$VHOSTD" status --control-socket "$CTL" --json > "$OUT/$tag-status.json" 2>&1 || true
  teardown
}

# flood_run POLL SIZE RUN
flood_run() {
  local poll="$1" size="$2" run="$3" tag="flood-poll$1-${2}B-r$3" b e vp fp res
  start_vhostd "$poll" "$tag" "$NFLOOD"
  # shellcheck disable=SC2046
  "$PORTLOAD" -mode flood -d "$FSECS" -s "$size" $(socks "$NFLOOD") > "$OUT/$tag-portload.txt" 2> "$OUT/$tag-portload.err" &
  LPID=$!
  wait_line "$OUT/$tag-portload.txt" READY 30 || bdie "portload flood did not get ready (see $OUT/$tag-portload.err)"
  b="$(sample "$VPID" "$LPID")"
  wait_line "$OUT/$tag-portload.txt" DONE $((FSECS + 30)) || bdie "portload flood did not finish (see $OUT/$tag-portload.err)"
  e="$(sample "$VPID" "$LPID")"
  "$VHOSTD" status --control-socket "$CTL" --json > "$OUT/$tag-status.json" || bdie "vhostd status failed"
  teardown
  # per port, in port order: vhostd's tx_posted, and its drops
  vp="$(jq -r '.ports | sort_by(.name | ltrimstr("p") | tonumber) | map([.queue_pairs[].counters.tx_posted] | add | tostring) | join(":")' "$OUT/$tag-status.json")"
  fp="$(awk '/^PORT / { for (i = 2; i <= NF; i++) if ($i ~ /^completed=/) { sub(/^completed=/, "", $i); s = s (s == "" ? "" : ":") $i } } END { print s }' "$OUT/$tag-portload.txt")"
  res="$(grep '^RESULT ' "$OUT/$tag-portload.txt")"
  awk -v poll="$poll" -v size="$size" -v run="$run" -v n="$NFLOOD" -v vp="$vp" -v fp="$fp" -v res="$res" -v w="$(window "$b" "$e")" -v load="$(loadavg)" '
    function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
      if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return "" }
    function dev(list,   a, k, i, m, d, x, sh) { k = split(list, a, ":"); m = 0; for (i = 1; i <= k; i++) m += a[i]; m /= k
      d = 0; sh = ""; for (i = 1; i <= k; i++) { x = (m > 0 ? 100 * a[i] / m : 0); sh = sh (i > 1 ? ":" : "") sprintf("%.1f", x)
        if (x - 100 > d) d = x - 100; if (100 - x > d) d = 100 - x }
      SH = sh; return d }
    BEGIN {
      secs = get(res, "secs"); split(vp, a, ":"); tot = 0; for (i in a) tot += a[i]
      dv = dev(vp); shv = SH; df = dev(fp)
      printf "FLOOD poll=%s size=%s run=%d ports=%d load1=%s flood_s=%s v_pkts=%s fe_pkts=%s v_share_pct=%s v_max_dev_pct=%.1f fe_max_dev_pct=%.1f total_mpps=%.3f %s\n",
        poll, size, run, n, load, secs, vp, fp, shv, dv, df, (secs > 0 ? tot / secs / 1e6 : 0), w }' >> "$RES"
  tail -n1 "$RES" | sed 's/^/    /' >&2
}

bsay "out=$OUT runs=$RUNS idle: $NIDLE ports x ${ISECS}s; flood: $NFLOOD ports x ${FSECS}s, sizes $SIZES; polls: $POLLS; load $(loadavg)"
T0=$(date +%s)
for r in $(seq "$RUNS"); do
  for p in $POLLS; do
    q="$(wait_quiet "$QUIET" 90)"
    bsay "run $r: idle, poll $p (load $(loadavg), host busy before: $q %)"
    idle_run "$p" "$r"
  done
  [ "$NFLOOD" -gt 0 ] || continue
  for s in $SIZES; do
    for p in $POLLS; do
      q="$(wait_quiet "$QUIET" 90)"
      bsay "run $r: flood $s B, poll $p (load $(loadavg), host busy before: $q %)"
      flood_run "$p" "$s" "$r"
    done
  done
done

table() {
  awk -v nidle="$NIDLE" -v isecs="$ISECS" -v nflood="$NFLOOD" -v fsecs="$FSECS" '
    function get(s, k,   n, a, i, p) { n = split(s, a, " "); for (i = 1; i <= n; i++) { p = index(a[i], "=")
      if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) } return "" }
    function add(key, v) { val[key, ++cnt[key]] = v }
    function med(key,   c, i, j, t, v) { c = cnt[key] + 0; if (c == 0) return "-"; for (i = 1; i <= c; i++) v[i] = val[key, i] + 0
      for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      return (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2 }
    function all(key, fmt,   c, i, s) { c = cnt[key] + 0; s = ""; for (i = 1; i <= c; i++) s = s (i > 1 ? ", " : "") sprintf(fmt, val[key, i]); return s }
    function lbl(p) { return p == "default" ? "default (50 us)" : (p == "0" ? "0 (off)" : p " us") }
    /^IDLE / { p = get($0, "poll"); if (!(p in seenp)) { seenp[p] = 1; po[++np] = p }
      k = p SUBSEP get($0, "phase"); add(k SUBSEP "cpu", get($0, "cpu_pct")); add(k SUBSEP "cs", get($0, "ctxsw_per_s")); add(k SUBSEP "ns", get($0, "sched_cpu_pct"))
      add(k SUBSEP "host", get($0, "host_busy_pct")); add(k SUBSEP "load", get($0, "load1")); add(k SUBSEP "fe", get($0, "fe_cpu_pct")) }
    /^FLOOD / { p = get($0, "poll"); s = get($0, "size"); if (!(p in seenp)) { seenp[p] = 1; po[++np] = p }
      if (!(s in seens)) { seens[s] = 1; so[++ns] = s }
      k = p SUBSEP s; add(k SUBSEP "dev", get($0, "v_max_dev_pct")); add(k SUBSEP "fdev", get($0, "fe_max_dev_pct"))
      add(k SUBSEP "mpps", get($0, "total_mpps")); add(k SUBSEP "cpu", get($0, "cpu_pct")); add(k SUBSEP "fe", get($0, "fe_cpu_pct"))
      add(k SUBSEP "host", get($0, "host_busy_pct")); add(k SUBSEP "load", get($0, "load1")); add(k SUBSEP "share", get($0, "v_share_pct")) }
    END {
      printf "Idle: %d null ports, vhostd CPU over %d s as %% of one core (target with front-ends attached: < 1%%); median (runs)\n\n", nidle, isecs
      print "| --poll-us | no front-end: CPU % | attached idle: CPU % (ticks) | attached idle: CPU % (schedstat ns) | attached: vhostd context switches/s | attached: portload CPU % | host busy % (all CPUs) | load1 |"
      print "| --- | --- | --- | --- | --- | ---: | --- | --- |"
      for (i = 1; i <= np; i++) { p = po[i]; u = p SUBSEP "unattached" SUBSEP; a = p SUBSEP "attached" SUBSEP
        if (cnt[a "cpu"] + 0 == 0) continue
        printf "| %s | %.2f (%s) | **%.2f** (%s) | %.3f (%s) | %.0f (%s) | %.2f | %s | %s |\n", lbl(p), med(u "cpu"), all(u "cpu", "%.2f"),
          med(a "cpu"), all(a "cpu", "%.2f"), med(a "ns"), all(a "ns", "%.3f"), med(a "cs"), all(a "cs", "%.0f"), med(a "fe"), all(a "host", "%.0f"), all(a "load", "%s") }
      if (ns == 0) exit
      printf "\nFairness: %d ports flooding for %d s, per-port packets from vhostd (tx_posted) as %% of the mean; max deviation (target: <= 25%%); median (runs)\n\n", nflood, fsecs
      print "| size (B) | --poll-us | max dev %, vhostd counters | max dev %, portload | per-port share % (last run) | total Mpps | vhostd CPU % | portload CPU % | host busy % | load1 |"
      print "| ---: | --- | --- | --- | --- | --- | ---: | ---: | --- | --- |"
      for (j = 1; j <= ns; j++) for (i = 1; i <= np; i++) { k = po[i] SUBSEP so[j] SUBSEP
        if (cnt[k "dev"] + 0 == 0) continue
        printf "| %s | %s | **%.1f** (%s) | %.1f | %s | %.2f (%s) | %.0f | %.0f | %s | %s |\n", so[j], lbl(po[i]), med(k "dev"), all(k "dev", "%.1f"),
          med(k "fdev"), val[k "share", cnt[k "share"]], med(k "mpps"), all(k "mpps", "%.2f"), med(k "cpu"), med(k "fe"), all(k "host", "%.0f"), all(k "load", "%s") }
    }' "$1"
}
{
  echo "ports.sh: $(date -u +%Y-%m-%dT%H:%MZ), $RUNS run(s), $(nproc) CPUs, polls: $POLLS, took $(( $(date +%s) - T0 ))s"
  echo
  table "$RES"
} | tee "$OUT/table.md"
