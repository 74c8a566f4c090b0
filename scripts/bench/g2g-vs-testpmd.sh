#!/usr/bin/env bash
# Issue 7 benchmark: two guestlab guests (1 vCPU each) run iperf3 between
# themselves through (A) DPDK testpmd io-forwarding between two vhost-user
# ports (test/guestlab/run-testpmd.sh) and (B) vhostd with two ports
# cross-connected. Both directions (client -> server, then -R). Runs are
# interleaved A/B/A/B. Host CPU is the whole machine's busy time
# (/proc/stat) over each boot, per GB moved.
#   g2g-vs-testpmd.sh [-r ROUNDS] [-d SECS] [-o REPORT.md]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
GL="$ROOT/test/guestlab" VHOSTD="$ROOT/bin/vhostd" OUTDIR=/tmp/guestlab
ROUNDS=2 SECS=8 REPORT=""
while getopts "r:d:o:" o; do case $o in r) ROUNDS=$OPTARG;; d) SECS=$OPTARG;; o) REPORT=$OPTARG;; *) exit 2;; esac; done
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 1; }
[ -x "$VHOSTD" ] || make -C "$ROOT" -s build
bash "$GL/build-initramfs.sh" "$OUTDIR" >/dev/null
W=$(mktemp -d /tmp/g2g-bench.XXXXXX)
PIDS=() PMD=""
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$PMD" ] && bash "$GL/run-testpmd.sh" stop "$PMD" >/dev/null 2>&1 || true
}
trap cleanup EXIT

busy() { awk '/^cpu / { print $2+$3+$4+$7+$8 }' /proc/stat; }   # jiffies, user+nice+sys+irq+softirq
hz=$(getconf CLK_TCK)
RESULTS="$W/results.tsv"; : >"$RESULTS"

# run_pair LABEL SOCK1 SOCK2: boots both guests, returns after both power off.
run_pair() {
  local label=$1 s1=$2 s2=$3 r=$4
  local l1="$W/$label-$r-srv.log" l2="$W/$label-$r-cli.log" c0 c1
  c0=$(busy)
  bash "$GL/boot-guest.sh" -o "$OUTDIR" -n vhost-user -s "$s1" -i 169.254.101.2/24 -p 1 -T 300 \
    -c "iperf3 -s -1 -f m; iperf3 -s -1 -f m" -l "$l1" >/dev/null 2>&1 &
  local sp=$!
  bash "$GL/boot-guest.sh" -o "$OUTDIR" -n vhost-user -s "$s2" -i 169.254.101.3/24 -p 1 -T 300 \
    -c "lab-retry 60 ping -c1 -W1 169.254.101.2 >/dev/null; lab-retry 20 iperf3 -f m -c 169.254.101.2 -t $SECS; sleep 1; lab-retry 20 iperf3 -f m -c 169.254.101.2 -t $SECS -R" \
    -l "$l2" >/dev/null 2>&1 || true
  wait "$sp" || true
  c1=$(busy)
  # receiver lines: first = client->server, second = server->client (-R)
  local fwd rev
  fwd=$(tr -d '\r' <"$l2" | grep 'receiver$' | sed -n 1p | awk '{for(i=1;i<=NF;i++) if ($i=="Mbits/sec") print $(i-1)}')
  rev=$(tr -d '\r' <"$l2" | grep 'receiver$' | sed -n 2p | awk '{for(i=1;i<=NF;i++) if ($i=="Mbits/sec") print $(i-1)}')
  local cpu; cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN { printf "%.1f", (b-a)/hz }')
  printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$r" "${fwd:-0}" "${rev:-0}" "$cpu" | tee -a "$RESULTS"
}

for r in $(seq "$ROUNDS"); do
  # A: testpmd io forwarding between two vhost-user ports.
  PMD="$W/pmd"
  bash "$GL/run-testpmd.sh" start "$PMD" -p 2 -T 1 >/dev/null
  run_pair testpmd "$PMD/vhu0.sock" "$PMD/vhu1.sock" "$r"
  bash "$GL/run-testpmd.sh" stop "$PMD" >/dev/null; PMD=""
  # B: vhostd, two ports cross-connected.
  rm -f "$W/v1.sock" "$W/v2.sock"
  "$VHOSTD" --port "name=vm1,socket=$W/v1.sock" --port "name=vm2,socket=$W/v2.sock" --admin-addr "" >"$W/vhostd-$r.log" 2>&1 &
  vp=$!; PIDS=("$vp")
  run_pair vhostd "$W/v1.sock" "$W/v2.sock" "$r"
  kill -USR1 "$vp"; sleep 0.3; kill "$vp"; wait "$vp" 2>/dev/null || true; PIDS=()
  grep 'port stats' "$W/vhostd-$r.log" | tail -2 | tr ' ' '\n' | grep -E '^(port|tx_written|tx_bytes|tx_passthrough|rx_gso)=' | paste -sd' ' >> "$W/vhostd-counters.txt"
done

summary=$(awk -F'\t' -v secs="$SECS" '
  { n[$1]++; f[$1, n[$1]] = $3; rv[$1, n[$1]] = $4; c[$1, n[$1]] = $5 }
  function med(arr, k, m,   i, j, t, v) { for (i = 1; i <= m; i++) v[i] = arr[k, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2 }
  END {
    for (k in n) { F[k] = med(f, k, n[k]); R[k] = med(rv, k, n[k]); C[k] = med(c, k, n[k])
      gb = (F[k] + R[k]) * secs / 8 / 1000; G[k] = (gb > 0) ? C[k] / gb : 0 }
    printf "| backend | guest2->guest1 Mbit/s | guest1->guest2 Mbit/s | host CPU s per run | host CPU s/GB |\n|---|---|---|---|---|\n"
    for (k in n) printf "| %s | %.0f | %.0f | %.1f | %.1f |\n", k, F[k], R[k], C[k], G[k]
    if (F["testpmd"] > 0 && R["testpmd"] > 0)
      printf "\nvhostd / testpmd: %.2fx (guest2->guest1), %.2fx (guest1->guest2), CPU per GB %.2fx\n", F["vhostd"]/F["testpmd"], R["vhostd"]/R["testpmd"], (G["testpmd"] > 0 ? G["vhostd"]/G["testpmd"] : 0)
  }' "$RESULTS")
echo; echo "$summary"; echo; cat "$W/vhostd-counters.txt"
if [ -n "$REPORT" ]; then
  { echo "Runs (label, round, fwd Mbit/s, rev Mbit/s, host CPU s):"; echo '```'; cat "$RESULTS"; echo '```'
    echo; echo "$summary"; echo; echo "vhostd counters per run (vm2 is the iperf3 client):"; echo '```'; cat "$W/vhostd-counters.txt"; echo '```'; } > "$REPORT"
fi
