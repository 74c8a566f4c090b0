# Shared helpers for vhostd end-to-end scripts. Source it; needs root.
# Everything a script creates (namespaces, taps, daemons, guests) is removed by
# e2e_cleanup, which the scripts install as an EXIT trap.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
GUESTLAB="$ROOT/test/guestlab"
VHOSTD="${VHOSTD:-$ROOT/bin/vhostd}"
OUT="${E2E_OUT:-/tmp/vhostd-e2e}"
GUESTLAB_OUT="${GUESTLAB_OUT:-/tmp/guestlab}"
mkdir -p "$OUT"

E2E_PIDS=() E2E_NETNS=()
say()  { printf '[e2e %s] %s\n' "${E2E_NAME:-?}" "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
pass() { say "ok: $*"; }

e2e_preflight() {
  [ "$(id -u)" = 0 ] || { say "needs root"; [ -n "${CI:-}" ] && exit 1; exit 77; }
  command -v qemu-system-x86_64 >/dev/null || {
    say "qemu-system-x86_64 missing: apt-get install qemu-system-x86"; [ -n "${CI:-}" ] && exit 1; exit 77; }
  [ -x "$VHOSTD" ] || fail "no $VHOSTD: run make build"
  bash "$GUESTLAB/build-initramfs.sh" "$GUESTLAB_OUT" >/dev/null
}

e2e_cleanup() {
  local p ns
  for p in "${E2E_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${E2E_PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  for ns in "${E2E_NETNS[@]:-}"; do [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true; done
}

# e2e_netns NAME: a fresh namespace with lo up.
e2e_netns() {
  ip netns del "$1" 2>/dev/null || true
  ip netns add "$1"; E2E_NETNS+=("$1")
  ip -n "$1" link set lo up
}

# e2e_boot LOG CMD [boot-guest.sh options...]: boots a guest (foreground).
e2e_boot() {
  local log="$1" cmd="$2"; shift 2
  # no_timer_check: a TCG guest on a loaded host can otherwise panic early
  # with "IO-APIC + timer doesn't work".
  bash "$GUESTLAB/boot-guest.sh" -o "$GUESTLAB_OUT" -l "$log" -c "$cmd" -K no_timer_check "$@"
}

# e2e_stat LOG KEY: last value of KEY=N in vhostd's "port stats" lines.
e2e_stat() {
  grep -a 'msg="port stats"' "$1" | tail -n1 | tr ' ' '\n' | sed -n "s/^$2=//p" | tail -n1
}

# e2e_wait_log FILE PATTERN SECONDS
e2e_wait_log() {
  local i=0
  while ! grep -aq -- "$2" "$1" 2>/dev/null; do
    [ "$i" -lt $(($3 * 10)) ] || return 1
    sleep 0.1; i=$((i + 1))
  done
}

# --- helpers added for matrix.sh and mq-attach.sh (issue 10) ---

# e2e_wait_tap NS TAP SECONDS: wait for TAP to appear in namespace NS.
e2e_wait_tap() {
  local i=0
  while ! ip -n "$1" link show "$2" >/dev/null 2>&1; do
    [ "$i" -lt $(($3 * 10)) ] || return 1
    sleep 0.1; i=$((i + 1))
  done
}

# e2e_dump_stats PID LOG [LINES]: SIGUSR1 the daemon and wait (up to 5 s) until
# LINES more "port stats" lines (default 1, one per queue pair) are in LOG.
e2e_dump_stats() {
  local before want i=0
  before=$(grep -ac 'msg="port stats"' "$2" 2>/dev/null || true)
  want=$(( ${before:-0} + ${3:-1} ))
  kill -USR1 "$1" 2>/dev/null || return 1
  while [ "$(grep -ac 'msg="port stats"' "$2" 2>/dev/null || true)" -lt "$want" ]; do
    [ "$i" -lt 50 ] || return 1
    sleep 0.1; i=$((i + 1))
  done
}

# e2e_stat_qp LOG QP KEY: last value of KEY=N in the "port stats" lines of queue
# pair QP (empty when the key is absent).
e2e_stat_qp() {
  grep -a 'msg="port stats"' "$1" | grep -a " queue_pair=$2 " | tail -n1 | tr ' ' '\n' \
    | sed -n "s/^$3=//p" | tail -n1
}

# e2e_drops LOG [QP]: the non-zero tx_drop_*/rx_drop_* keys of the last
# "port stats" line (of queue pair QP if given), space separated.
e2e_drops() {
  grep -a 'msg="port stats"' "$1" | { if [ -n "${2:-}" ]; then grep -a " queue_pair=$2 "; else cat; fi; } \
    | tail -n1 | tr ' ' '\n' | { grep -E '^(tx|rx)_drop_' || true; } | tr '\n' ' ' | sed 's/ $//'
}
