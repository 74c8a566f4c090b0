# Helpers for scripts/ab/run.sh. Source it; plain bash + awk (mawk is enough).

# ab_say MSG: progress on stderr.
ab_say() { printf '[ab] %s\n' "$*" >&2; }
# ab_die MSG: what went wrong and what to do; exits 1 (the EXIT trap cleans up).
ab_die() { printf '[ab] error: %s\n' "$*" >&2; exit 1; }

# ab_proc_ticks PID: utime+stime of the whole process (all threads, dead ones
# included) in clock ticks, from /proc/PID/stat fields 14 and 15. The comm
# field may hold spaces, so the fields are counted after the last ") ".
ab_proc_ticks() {
  local s
  s="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
  s="${s##*) }"
  awk '{ print $12 + $13 }' <<< "$s"
}

# ab_vcpu_ticks PID: utime+stime of QEMU's vCPU threads ("CPU n/TCG" or
# "CPU n/KVM"; QEMU names its threads only with -name ...,debug-threads=on).
ab_vcpu_ticks() {
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

# ab_host_jiffies: "busy total" jiffies of all CPUs from /proc/stat (idle and
# iowait are not busy). Others' work on the shared machine shows up here.
ab_host_jiffies() {
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# ab_load1: the 1-minute load average.
ab_load1() { cut -d' ' -f1 /proc/loadavg; }

# ab_wait_load MAX SECS: wait until the 1-minute load average is at most MAX,
# for at most SECS seconds. Prints the load it ended with.
ab_wait_load() {
  local max="$1" secs="$2" t0
  t0=$(date +%s)
  while awk -v l="$(ab_load1)" -v m="$max" 'BEGIN { exit !(l > m) }'; do
    [ $(( $(date +%s) - t0 )) -lt "$secs" ] || break
    sleep 5
  done
  ab_load1
}

# ab_wait_quiet PCT SECS: sample the whole host's busy % over one second until
# it is at most PCT, for at most SECS seconds (PCT 0: one sample, no wait).
# Prints "BUSY WAITED": the last busy % and the whole seconds spent waiting.
ab_wait_quiet() {
  local pct="$1" max="$2" t0 a b p
  t0=$(date +%s)
  while :; do
    a="$(ab_host_jiffies)"; sleep 1; b="$(ab_host_jiffies)"
    p="$(awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
      printf "%.0f", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }')"
    [ "$pct" -gt 0 ] && [ "$p" -gt "$pct" ] && [ $(( $(date +%s) - t0 )) -lt "$max" ] || break
  done
  echo "$p $(( $(date +%s) - t0 - 1 ))"
}

# ab_metrics_flat FILE: one "key value" line per vhostd counter (and
# process_cpu_seconds_total) in a Prometheus text scrape, summed over queues.
# The key is the metric name without the vhostd_ prefix and _total suffix,
# then the values of its labels other than port and queue, joined with "_":
#   vhostd_tx_packets_total{path="segmented",port="ab",queue="0"} 7
#   -> tx_packets_segmented 7
#   vhostd_drops_total{direction="tx",port="ab",queue="0",reason="hdr_invalid"} 1
#   -> drops_tx_hdr_invalid 1
# Gauges (port_info, gso_policy, backend limits, ring_broken, connection) and
# histogram buckets are left out: a delta of them means nothing here.
ab_metrics_flat() {
  awk '
    /^#/ || NF < 2 { next }
    {
      name = $1; labels = ""
      p = index(name, "{")
      if (p > 0) { labels = substr(name, p + 1); sub(/}$/, "", labels); name = substr(name, 1, p - 1) }
      if (name == "process_cpu_seconds_total") { key = "vhostd_process_cpu_seconds" }
      else if (name !~ /^vhostd_/) next
      else if (name ~ /_bucket$/ || name ~ /(port_info|gso_policy|ring_broken|connected|backend_gso_max_size_bytes|backend_gso_max_segments|backend_mtu_bytes)$/) next
      else {
        key = substr(name, 8); sub(/_total$/, "", key)
        n = split(labels, kv, ",")
        for (i = 1; i <= n; i++) {
          q = index(kv[i], "="); k = substr(kv[i], 1, q - 1); v = substr(kv[i], q + 1)
          gsub(/"/, "", v)
          if (k == "port" || k == "queue") continue
          key = key "_" v
        }
      }
      sum[key] += $2
      if (!(key in seen)) { seen[key] = 1; order[++cnt] = key }
    }
    END { for (i = 1; i <= cnt; i++) printf "%s %.9g\n", order[i], sum[order[i]] }
  ' "$1"
}

# ab_metrics_delta BEFORE AFTER: "key=delta" words (space separated) for every
# key whose value changed between two ab_metrics_flat outputs.
ab_metrics_delta() {
  awk 'NR == FNR { b[$1] = $2; next }
       { d = $2 - b[$1]; if (d != 0) { printf "%s%s=%.9g", sep, $1, d; sep = " " } }
       END { printf "\n" }' "$1" "$2"
}

# ab_iperf_summary FILE: "mbps=N retr=N loss_pct=N" from an iperf3 client's
# plain text output (-f m). Mbit/s is the receiver's figure; retransmits come
# from the TCP sender line (with -R iperf3 prints the server's count there),
# loss from the UDP receiver line "lost/total (P%)".
ab_iperf_summary() {
  tr -d '\r' < "$1" | awk '
    / receiver$/ { for (i = 1; i <= NF; i++) if ($i ~ /bits\/sec$/) { mbps = $(i - 1); u = $i }
                   if (u ~ /^G/) mbps *= 1000; else if (u ~ /^K/) mbps /= 1000; else if (u ~ /^bits/) mbps /= 1e6
                   for (i = 1; i <= NF; i++) if ($i ~ /^\([0-9.e+-]+%\)$/) { loss = $i; gsub(/[()%]/, "", loss) } }
    / sender$/   { if ($(NF - 1) ~ /^[0-9]+$/ && $(NF - 2) ~ /bits\/sec$/) retr = $(NF - 1) }
    END { printf "mbps=%s retr=%s loss_pct=%s\n", (mbps == "" ? 0 : mbps), (retr == "" ? "-" : retr), (loss == "" ? "-" : loss) }'
}
