#!/usr/bin/env bash
# Issue 10: vhostd is correct under the virtio-net-pci configurations people
# really run. These are the QEMU device properties libvirt's
# <driver><host csum= tso4= tso6= ecn= ufo= mrg_rxbuf=/><guest csum= tso4= tso6=
# ecn= ufo=/></driver> and <driver event_idx= rx_queue_size= tx_queue_size=
# packed=> map to, plus indirect_desc and disable-modern (legacy virtio). QEMU
# 7.2 accepts all of them on a vhost-user NIC (qemu-system-x86_64 -device
# virtio-net-pci,help); vhostd does not offer GUEST_UFO, so QEMU masks
# guest_ufo out and it must simply not hurt. vhostd offers RING_PACKED (issue
# 13): with packed=on the guest must run packed rings, unless disable-modern=on
# (a legacy device has no packed ring; QEMU masks it then).
#
# For each configuration: vhostd on a tap in a fresh namespace, a guest with
# those properties (boot-guest.sh -O), then
#   - the guest pings the host side of the tap;
#   - iperf3 TCP both ways over IPv4, then over IPv6 (link-local fe80::1 and
#     fe80::2, so the tso6 properties are exercised too), a few seconds each;
#   - vhostd's accounting from its SIGUSR1 "port stats" line:
#     tx_posted == tx_written + tx_dropped, no drops (tx_dropped, rx_dropped
#     both 0, apart from the ring_disabled/rx_disabled reasons that a device
#     stop may legitimately count), and what vhostd wrote reaches the tap
#     (tx_written - split + segments == the tap's rx_packets, as datapath.sh)
#     and what vhostd read from the tap reached the guest (rx_packets +
#     rx_dropped == the tap's tx_packets);
#   - vhostd is still running after the guest left and exits 0 on SIGTERM.
# It runs every configuration, prints a summary table (also written to
# $OUT/matrix-summary.md) and exits 1 if any configuration failed.
#
# The covering set. 15 two-level factors (default / non-default):
#   csum guest_csum guest_tso4 guest_tso6 guest_ecn guest_ufo host_tso4
#   host_tso6 host_ecn mrg_rxbuf event_idx indirect_desc (all default on, the
#   other level is =off), queue sizes (rx_queue_size=tx_queue_size=256, QEMU
#   7.2's default, or 1024), packed (off by default, or on) and disable-modern
#   (off by default, or on).
# The full product is 2^15 = 32768 guests. A binary covering array of strength
# 2 with 7 rows exists for up to C(6,3) = 20 factors (Kleitman-Spencer); the
# one used here is: row p0 has every factor at its non-default level, and each
# factor is non-default in exactly one more row, the 15 factors taking the 15
# different 2-subsets of rows p1..p6. So every row p1..p6 sets 5 non-default
# properties, any two of p1..p6 share exactly one, and for any two factors A, B
# all four level pairs occur: (non, non) in p0, (default, default) in a row
# outside both 2-subsets, (non, default) and (default, non) in the rows that are
# in one subset only. That covers all 4 * C(15,2) = 420 level pairs in 7
# configurations; the script checks this before it starts (matrix_check).
# Which factor gets which 2-subset was chosen to keep the configurations
# meaningful: p1 turns all guest receive offloads off together (guest_csum,
# guest_tso4, guest_tso6, leaving guest_ecn on), p2 has guest_csum=off with
# guest TSO on, p5 has csum=off with host TSO off, p6 csum=off with host TSO on.
# Two configurations are added on top: d0, the defaults, and x1,
# csum=off,guest_csum=off (guest_tso4/6 at their defaults): libvirt's
# <host csum='off'/><guest csum='off'/>, the configuration of issue 10.
#
# Environment: MATRIX_ONLY="d0 p3" runs only those configurations;
# MATRIX_IPERF_SECS (default 3) and MATRIX_IPERF6_SECS (default 2) per direction.
E2E_NAME=matrix
. "$(dirname "$0")/lib.sh"
e2e_preflight

TAP=vtapmx HOST_IP=169.254.110.1 GUEST_IP=169.254.110.2
SECS=${MATRIX_IPERF_SECS:-3} SECS6=${MATRIX_IPERF6_SECS:-2}

FACTORS=(csum guest_csum guest_tso4 guest_tso6 guest_ecn guest_ufo host_tso4 host_tso6 host_ecn
         mrg_rxbuf event_idx indirect_desc queue_size packed disable_modern)
# nondefault FACTOR: its non-default level as virtio-net-pci properties.
nondefault() {
  case "$1" in
    queue_size)     echo rx_queue_size=1024,tx_queue_size=1024 ;;
    packed)         echo packed=on ;;
    disable_modern) echo disable-modern=on ;;
    *)              echo "$1=off" ;;
  esac
}
# feature FACTOR: the virtio feature the guest must not have acked when FACTOR
# is at its non-default level (queue_size and packed are checked otherwise).
feature() {
  case "$1" in
    csum) echo CSUM ;; guest_csum) echo GUEST_CSUM ;; guest_tso4) echo GUEST_TSO4 ;;
    guest_tso6) echo GUEST_TSO6 ;; guest_ecn) echo GUEST_ECN ;; guest_ufo) echo GUEST_UFO ;;
    host_tso4) echo HOST_TSO4 ;; host_tso6) echo HOST_TSO6 ;; host_ecn) echo HOST_ECN ;;
    mrg_rxbuf) echo MRG_RXBUF ;; event_idx) echo EVENT_IDX ;; indirect_desc) echo INDIRECT_DESC ;;
    disable_modern) echo VERSION_1 ;;
  esac
}
# The covering array: one string per row, character i is 1 when FACTORS[i] is
# at its non-default level. Row pN (N >= 1) has a 1 for the factors whose
# 2-subset contains N:
#   csum 56  guest_csum 12  guest_tso4 13  guest_tso6 14  guest_ecn 34
#   guest_ufo 23  host_tso4 25  host_tso6 35  host_ecn 26  mrg_rxbuf 15
#   event_idx 16  indirect_desc 36  queue_size 45  packed 24  disable_modern 46
#        factor: 111111
#                0123456789012345
ROWS=(p0:111111111111111
      p1:011100000110000
      p2:010001101000010
      p3:001011010001000
      p4:000110000000111
      p5:100000110100100
      p6:100000001011001)

# matrix_check: every pair of factors takes all four level combinations.
matrix_check() {
  local i j r bits seen missing=0
  for ((i = 0; i < ${#FACTORS[@]}; i++)); do
    for ((j = i + 1; j < ${#FACTORS[@]}; j++)); do
      seen=""
      for r in "${ROWS[@]}"; do bits=${r#*:}; seen="$seen ${bits:i:1}${bits:j:1}"; done
      for want in 00 01 10 11; do
        case "$seen" in *" $want"*) ;; *) say "pair ${FACTORS[i]}/${FACTORS[j]} misses $want"; missing=1 ;; esac
      done
    done
  done
  return $missing
}
matrix_check || fail "the covering array does not cover every pair"

# Configurations, in run order: name and virtio-net-pci properties.
CONF_NAMES=(d0 x1) CONF_PROPS=("" "csum=off,guest_csum=off")
for r in "${ROWS[@]}"; do
  name=${r%%:*} bits=${r#*:} props=""
  for ((i = 0; i < ${#FACTORS[@]}; i++)); do
    [ "${bits:i:1}" = 1 ] && props="${props:+$props,}$(nondefault "${FACTORS[i]}")"
  done
  CONF_NAMES+=("$name"); CONF_PROPS+=("$props")
done
say "${#CONF_NAMES[@]} configurations: d0 (defaults), x1 (issue 10), p0..p6 (pairwise covering array of ${#FACTORS[@]} factors, all $((4 * ${#FACTORS[@]} * (${#FACTORS[@]} - 1) / 2)) level pairs)"

# The guest: ping, then iperf3 both ways over IPv4 and IPv6 (link-local), each
# result as a marker line "MX-IPERF NAME rc=N MBITS".
# shellcheck disable=SC2016
GCMD='H='$HOST_IP'; ip -6 addr add fe80::2/64 dev eth0 nodad
ethtool -g eth0 | awk "/^RX:/ {r=\$2} /^TX:/ {t=\$2} END {print \"MX-RING rx=\" r \" tx=\" t}"
if lab-retry 20 ping -c1 -W1 $H >/dev/null; then ping -c3 -W2 $H; echo MX-PING rc=$?; else echo MX-PING rc=1; exit 1; fi
t(){ n=$1; s=$2; shift 2; o=$(iperf3 --connect-timeout 5000 -f m -t $s "$@" 2>&1); r=$?; echo "$o"; echo "MX-IPERF $n rc=$r $(echo "$o" | awk "/receiver\$/ {print \$(NF-2)}")"; }
t up4 '$SECS' -c $H; t down4 '$SECS' -c $H -R; t up6 '$SECS6' -c fe80::1%eth0; t down6 '$SECS6' -c fe80::1%eth0 -R'

RESULTS="$OUT/matrix-results.tsv"
: >"$RESULTS"

# run_config NAME PROPS: one configuration, in a subshell; appends one TSV row
# (name props applied ping up4 down4 up6 down6 accounting result notes) to
# RESULTS.
run_config() (
  name=$1 props=$2
  E2E_PIDS=() E2E_NETNS=()
  trap e2e_cleanup EXIT
  NS=vhd-mx-$$-$name
  sock="$OUT/matrix-$name.sock" vlog="$OUT/matrix-$name-vhostd.log"
  glog="$OUT/matrix-$name-guest.log" qlog="$OUT/matrix-$name-qemu.log"
  rm -f "$sock"
  notes=() ok=1 ping=FAIL acct=FAIL applied=-
  row() { # row UP4 DOWN4 UP6 DOWN6
    local res=PASS n; [ "$ok" = 1 ] || res=FAIL
    n=$(printf '%s; ' "${notes[@]}"); n=${n%; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${props:-(defaults)}" "$applied" "$ping" \
      "$1" "$2" "$3" "$4" "$acct" "$res" "$n" >>"$RESULTS"
  }

  e2e_netns "$NS"
  ip netns exec "$NS" "$VHOSTD" --socket-path "$sock" --tap "$TAP" --log-level info --admin-addr "" \
    ${VHOSTD_EXTRA_ARGS:-} >"$vlog" 2>&1 &
  vpid=$!; E2E_PIDS+=("$vpid")
  if ! e2e_wait_tap "$NS" "$TAP" 5; then
    ok=0 notes+=("vhostd did not create $TAP"); row - - - -; exit 0
  fi
  ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
  ip -n "$NS" -6 addr add fe80::1/64 dev "$TAP" nodad
  ip -n "$NS" link set "$TAP" up
  # One server for both families (the namespace has only lo and the tap).
  ip netns exec "$NS" iperf3 -s >"$OUT/matrix-$name-iperf3.log" 2>&1 &
  E2E_PIDS+=("$!")

  t0=$(date +%s)
  grc=0
  e2e_boot "$glog" "$GCMD" -n vhost-user -s "$sock" -i "$GUEST_IP/24" -O "$props" -T 150 \
    >"$qlog" 2>&1 || grc=$?
  say "$name: guest done in $(( $(date +%s) - t0 ))s (rc=$grc)"
  tr -d '\r' <"$glog" >"$glog.txt"
  [ "$grc" != 124 ] || notes+=("guest timed out")

  # Did QEMU and the guest really take the properties? Each non-default factor's
  # feature must be missing from what the guest driver acked, and the rings
  # must have the asked-for size (ethtool -g).
  applied=ok
  feats=" $(sed -n 's/^LAB-VIRTIO-FEATURE-NAMES //p' "$glog.txt" | tail -n1) "
  ring=$(sed -n 's/^MX-RING //p' "$glog.txt" | tail -n1)
  if [ "$feats" = "  " ]; then
    applied=FAIL
  else
    for f in "${FACTORS[@]}"; do
      case ",$props," in *",$(nondefault "$f" | cut -d, -f1),"*) ;; *) continue ;; esac
      fn=$(feature "$f")
      if [ -n "$fn" ]; then
        case "$feats" in *" $fn "*) applied=FAIL notes+=("guest acked $fn despite $(nondefault "$f")") ;; esac
      fi
    done
    qs=256; case ",$props," in *,rx_queue_size=1024,*) qs=1024 ;; esac
    [ "$ring" = "rx=$qs tx=$qs" ] || { applied=FAIL; notes+=("rings ${ring:-?}, want $qs"); }
    case "$feats" in *" RING_PACKED "*) notes+=("packed ring negotiated") ;; esac
    case ",$props," in
      *,disable-modern=on,*) ;;
      *,packed=on,*) case "$feats" in *" RING_PACKED "*) ;; *) applied=FAIL notes+=("packed=on but the guest did not ack RING_PACKED") ;; esac ;;
    esac
  fi
  [ "$applied" = ok ] || ok=0
  say "$name: guest acked:${feats% }; rings $ring"

  if grep -q '^MX-PING rc=0' "$glog.txt" && grep -q ' 0% packet loss' "$glog.txt"; then
    ping=ok
  else
    ok=0
    notes+=("no ping")
  fi
  bw=()
  for t in up4 down4 up6 down6; do
    v=$(sed -n "s/^MX-IPERF $t rc=0 \([0-9.]\{1,\}\)\$/\1/p" "$glog.txt" | tail -n1)
    if [ -n "$v" ] && awk -v v="$v" 'BEGIN { exit !(v > 0) }'; then
      bw+=("$v")
    else
      bw+=("FAIL"); ok=0
    fi
  done
  case " ${bw[*]} " in *" FAIL "*) [ "$ping" = ok ] && notes+=("iperf3 failed") ;; esac

  # Accounting, after the guest has gone (QEMU exited, so nothing is in flight).
  if ! kill -0 "$vpid" 2>/dev/null; then
    ok=0 notes+=("vhostd died: $(tail -n1 "$vlog")")
    row "${bw[@]}"; exit 0
  fi
  tap_rx=$(ip netns exec "$NS" cat "/sys/class/net/$TAP/statistics/rx_packets")
  tap_tx=$(ip netns exec "$NS" cat "/sys/class/net/$TAP/statistics/tx_packets")
  if e2e_dump_stats "$vpid" "$vlog"; then
    st() { e2e_stat "$vlog" "$1"; }
    posted=$(st tx_posted) written=$(st tx_written) dropped=$(st tx_dropped)
    rxp=$(st rx_packets) rxd=$(st rx_dropped)
    split=$(( $(st tx_segmented) + $(st tx_resegmented) )) segs=$(st tx_segments)
    drops=$(e2e_drops "$vlog")
    # Drops a device stop may count (rings disabled while the guest shuts down).
    unexpected=$(echo "$drops" | tr ' ' '\n' | grep -Ev '^(tx_drop_ring_disabled|rx_drop_rx_disabled)=' | tr '\n' ' ' | sed 's/ $//' || true)
    say "$name: tx posted=$posted written=$written dropped=$dropped split=$split segments=$segs tap_rx=$tap_rx;" \
      "rx packets=$rxp dropped=$rxd tap_tx=$tap_tx; drops: ${drops:-none}"
    acct=ok
    if [ "$posted" != $((written + dropped)) ]; then
      acct=FAIL notes+=("tx_posted $posted != written $written + dropped $dropped")
    fi
    if [ -n "$unexpected" ]; then
      acct=FAIL notes+=("drops: $unexpected")
    fi
    if [ $((written - split + segs)) != "$tap_rx" ]; then
      acct=FAIL notes+=("written-split+segments $((written - split + segs)) != tap rx_packets $tap_rx")
    fi
    # RX: every packet vhostd read from the tap went to the guest or is counted.
    if [ $((rxp + rxd)) != "$tap_tx" ]; then
      acct=FAIL notes+=("rx_packets $rxp + rx_dropped $rxd != tap tx_packets $tap_tx")
    fi
    [ "$posted" -gt 0 ] || { acct=FAIL; notes+=("no TX at all"); }
  else
    notes+=("no port stats line")
  fi
  [ "$acct" = ok ] || ok=0

  kill -TERM "$vpid"
  vrc=0; wait "$vpid" || vrc=$?
  E2E_PIDS=("${E2E_PIDS[@]:1}")
  [ "$vrc" = 0 ] || { ok=0; notes+=("vhostd exit $vrc"); }
  # vhostd's first warning or error, if any (why a configuration failed, or
  # something odd in one that passed); an API listener that another vhostd on
  # this machine already holds is not about the datapath.
  warn=$(grep -aE 'level=(WARN|ERROR)' "$vlog" | grep -avE 'msg="(control socket|admin API|read-only admin)[^"]*not started' | head -n1 | sed -e 's/^time=[^ ]* level=//' -e 's/ socket=[^ ]*//' | cut -c1-300 || true)
  [ -z "$warn" ] || notes+=("vhostd $warn")
  row "${bw[@]}"
)

start=$(date +%s)
for ((c = 0; c < ${#CONF_NAMES[@]}; c++)); do
  name=${CONF_NAMES[c]} props=${CONF_PROPS[c]}
  case " ${MATRIX_ONLY:-$name} " in *" $name "*) ;; *) continue ;; esac
  say "=== $name: ${props:-(defaults)}"
  run_config "$name" "$props" || true
  grep -q "^$name	" "$RESULTS" || \
    printf '%s\t%s\t-\t-\t-\t-\t-\t-\t-\tFAIL\tscript error (see %s)\n' "$name" "${props:-(defaults)}" "$OUT" >>"$RESULTS"
done
elapsed=$(( $(date +%s) - start ))

summary="$OUT/matrix-summary.md"
{
  echo "| config | virtio-net-pci properties | applied | ping | TCPv4 up | TCPv4 down | TCPv6 up | TCPv6 down | accounting | result |"
  echo "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |"
  awk -F'\t' '{ printf "| %s | `%s` | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' "$RESULTS"
  echo
  echo "Throughput in Mbit/s at the receiver (up: guest to host). ${elapsed} s for $(wc -l <"$RESULTS") configurations."
  awk -F'\t' '$11 != "" { printf "- %s: %s\n", $1, $11 }' "$RESULTS"
} >"$summary"
cat "$summary" >&2
nfail=$(awk -F'\t' '$10 != "PASS"' "$RESULTS" | wc -l)
[ "$nfail" = 0 ] || fail "$nfail of $(wc -l <"$RESULTS") configurations failed: $(awk -F'\t' '$10 != "PASS" { printf "%s ", $1 }' "$RESULTS")(logs in $OUT/matrix-*)"
pass "all $(wc -l <"$RESULTS") configurations pass"
