package virtionet

import (
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/internal/counters"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Counters declares every per-queue-pair counter. Prometheus (metrics
// collector), GET /status, `vhostd stats` and the SIGUSR1 log line are all
// derived from these declarations, so adding a counter is one Add here and
// the line that increments it:
//
//	CtrRxFoo = Counters.Add(counters.Desc{Name: "rx_foo", Metric: "rx_foo_total",
//		Help: "What it counts."})
//	...
//	st.Add(CtrRxFoo, 1)
//
// The order below is the order of the JSON keys, the `vhostd stats` lines
// and the log keys. Outcomes follow tx_posted so that a snapshot, which loads
// the slots from the last to the first, never shows posted below their sum.
//
// The initializer names the label value lists the declarations use: Go
// initializes package variables in declaration order only among those whose
// dependencies are initialized, so without it a family whose values were
// not ready yet would be registered after the counters written below it.
var Counters = registryAfter(txPathNames[:], dropNames[:], pollOutcomeNames[:])

func registryAfter(...[]string) counters.Registry { return counters.Registry{} }

// Label names of the families, shared with the metrics package.
const (
	LabelPath      = "path"
	LabelReason    = "reason"
	LabelDirection = "direction"
	LabelErrno     = "errno"
	LabelOutcome   = "outcome"
)

// Help texts of the metric families declared once per direction.
const (
	helpPoll       = "Adaptive busy-poll outcomes of the queue workers (--poll-us), by direction: hit (polling found work before its window ran out, no kick or wake-up needed), miss (the window ran out empty), contended (left at once: another task wanted the CPU), sleep (the worker blocked for a kick or the backend)."
	helpPollWindow = "The current adaptive busy-poll window of the queue worker, by direction (0: polling off)."
)

// Counter IDs: the slot to add to (a family's value i is ID.At(i)).
var (
	CtrTxPosted  = Counters.Add(counters.Desc{Name: "tx_posted", Metric: "tx_posted_packets_total", Help: "Descriptor chains (packets) the guest posted on the transmitq. Once traffic stops it equals the sum of vhostd_tx_packets_total over all paths plus vhostd_drops_total{direction=\"tx\"}; while traffic runs it is never below that sum."})
	CtrTxPackets = Counters.Add(counters.Desc{
		Name: "tx_packets", Metric: "tx_packets_total",
		Help:  "Guest packets handed to the backend, by path: passthrough (GSO super-packet passed whole), resegmented (split into smaller super-packets), segmented (cut to MSS in vhostd), csum_completed (checksum finished in vhostd), plain (non-GSO, passed as is). A segmented packet counts once here; its output packets are in vhostd_tx_gso_segments_total.",
		Label: LabelPath, Values: txPathNames[:], Stat: "tx_%s_packets", Log: "tx_%s",
	})
	CtrTxBytes = Counters.Add(counters.Desc{
		Name: "tx_bytes", Metric: "tx_bytes_total",
		Help:  "Frame bytes (without virtio_net_hdr) of the guest packets in vhostd_tx_packets_total, by path.",
		Label: LabelPath, Values: txPathNames[:], Stat: "tx_%s_bytes",
		Omit: counters.Log, // the log line has their sum
	})
	CtrTxGSOPackets = Counters.Add(counters.Desc{Name: "tx_gso_packets", Metric: "tx_gso_packets_total", Log: "tx_gso", Help: "GSO super-packets the guest sent (gso_type != NONE), whatever path they took (virtio tx_gso_packets)."})
	CtrTxSegments   = Counters.Add(counters.Desc{Name: "tx_gso_segments", Metric: "tx_gso_segments_total", Log: "tx_segments", Help: "Packets written to the backend by re-segmentation or software segmentation (virtio tx_gso_segments)."})
	CtrTxGSONoseg   = Counters.Add(counters.Desc{Name: "tx_gso_packets_noseg", Metric: "tx_gso_packets_noseg_total", Omit: counters.Log, Help: "GSO packets whose payload fits in one segment, sent as plain packets (virtio tx_gso_packets_noseg); counted when the capability check runs, i.e. under the auto and software policies."})
	CtrTxDecisions  = Counters.Add(counters.Desc{
		Name: "tx_decisions", Metric: "tx_decisions_total", Omit: counters.Log,
		Help:  "GSO and checksum decisions on transmitted packets, by the reason the capability check (or the policy) gave; none = the packet passed whole with nothing in the way. Plain packets the backend takes as they are skip the check and are not counted.",
		Label: LabelReason, Values: gsoReasonNames(), Sparse: true, Stat: "tx_decision_%s",
		// Only the gso package's parsing helpers return these; Decide never does.
		Applies: func(i int) bool { r := gso.Reason(i); return r != gso.ReasonHeadTooShort && r != gso.ReasonShortBuffer },
	})
	CtrTxDrops = Counters.Add(counters.Desc{
		Name: "tx_drops", Metric: "drops_total", MetricLabel: [2]string{LabelDirection, "tx"},
		Help:  "Packets discarded, by direction (tx: guest to backend, rx: backend to guest) and reason. Every transmitted packet is either in vhostd_tx_packets_total or here, under exactly one reason.",
		Label: LabelReason, Values: dropNames[:], Sparse: true, Stat: "tx_drop_%s", Log: "tx_drop_%s",
		Applies: func(i int) bool { return Drop(i).Applies(false) },
	})
	CtrTxHdrErrors = Counters.Add(counters.Desc{
		Name: "tx_header_errors", Metric: "tx_header_errors_total", Omit: counters.Log,
		Help:  "Transmitted packets dropped because their virtio_net_hdr failed validation, by rule (the kernel's virtio_net_hdr_to_skb checks).",
		Label: LabelReason, Values: hdrReasonNames(), Sparse: true, Stat: "tx_header_error_%s",
		Applies: func(i int) bool { return vnet.HdrReason(i) != vnet.HdrOK },
	})
	CtrTxWriteErrno = Counters.Add(counters.Desc{
		Name: "tx_write_errors", Metric: "tx_write_errors_total", Omit: counters.Log,
		Help:  "Packets the backend refused on write, by errno (EINVAL: the kernel rejected the vnet header). errno=\"other\" counts failures that carried no errno.",
		Label: LabelErrno, Values: errnoNames(), Sparse: true, Stat: "tx_write_error_%s",
		// Errnos are sparse: only those seen are exported.
		Applies: func(int) bool { return false },
	})
	CtrTxKicks = Counters.Add(counters.Desc{Name: "tx_kicks", Metric: "tx_notifications_total", Help: "Kicks: guest notifications received on the transmitq kick eventfd (virtio tx_notifications)."})
	CtrTxCalls = Counters.Add(counters.Desc{Name: "tx_calls", Metric: "tx_interrupts_total", Help: "Calls: transmitq completions signalled to the guest through the call eventfd (virtio tx_interrupts)."})
	CtrTxPoll  = Counters.Add(counters.Desc{
		Name: "tx_poll", Metric: "poll_total", MetricLabel: [2]string{LabelDirection, "tx"},
		Help:  helpPoll,
		Label: LabelOutcome, Values: pollOutcomeNames[:], Stat: "tx_poll_%s", Log: "tx_poll_%s",
	})
	CtrTxPollWindow = Counters.Add(counters.Desc{Name: "tx_poll_window_us", Metric: "poll_window_seconds", MetricLabel: [2]string{LabelDirection, "tx"}, Kind: counters.Gauge, Scale: 1e-6, Omit: counters.Log, Help: helpPollWindow})
	CtrTxCallsSupp  = Counters.Add(counters.Desc{Name: "tx_calls_suppressed", Metric: "tx_interrupts_suppressed_total", Help: "Transmitq calls not sent because the guest asked for none (EVENT_IDX used_event or VRING_AVAIL_F_NO_INTERRUPT)."})

	CtrRxPackets    = Counters.Add(counters.Desc{Name: "rx_packets", Metric: "rx_packets_total", Help: "Packets delivered to the guest on the receiveq (virtio rx_packets)."})
	CtrRxBytes      = Counters.Add(counters.Desc{Name: "rx_bytes", Metric: "rx_bytes_total", Help: "Frame bytes (without virtio_net_hdr) delivered to the guest (virtio rx_bytes)."})
	CtrRxGSOPackets = Counters.Add(counters.Desc{Name: "rx_gso_packets", Metric: "rx_gso_packets_total", Log: "rx_gso", Help: "GSO super-packets delivered to the guest (virtio rx_gso_packets)."})
	CtrRxBuffers    = Counters.Add(counters.Desc{Name: "rx_buffers", Metric: "rx_buffers_total", Help: "Receive buffers (descriptor chains) used; with MRG_RXBUF a packet may span several, so rate(vhostd_rx_buffers_total) / rate(vhostd_rx_packets_total) is the merged buffers per packet."})
	CtrRxCsumDone   = Counters.Add(counters.Desc{Name: "rx_csum_completed", Metric: "rx_csum_completed_total", Omit: counters.Log, Help: "Received packets whose partial checksum vhostd completed because the guest did not negotiate GUEST_CSUM."})
	CtrRxKicks      = Counters.Add(counters.Desc{Name: "rx_kicks", Metric: "rx_notifications_total", Help: "Kicks on the receiveq: the guest posted buffers after vhostd had run out and asked to be told (virtio rx_notifications)."})
	CtrRxCalls      = Counters.Add(counters.Desc{Name: "rx_calls", Metric: "rx_interrupts_total", Help: "Receiveq calls signalled to the guest (virtio rx_interrupts)."})
	CtrRxCallsSupp  = Counters.Add(counters.Desc{Name: "rx_calls_suppressed", Metric: "rx_interrupts_suppressed_total", Omit: counters.Log, Help: "Receiveq calls not sent because the guest asked for none (EVENT_IDX or NO_INTERRUPT)."})
	CtrRxPoll       = Counters.Add(counters.Desc{
		Name: "rx_poll", Metric: "poll_total", MetricLabel: [2]string{LabelDirection, "rx"}, Help: helpPoll,
		Label: LabelOutcome, Values: pollOutcomeNames[:], Stat: "rx_poll_%s", Log: "rx_poll_%s",
	})
	CtrRxPollWindow     = Counters.Add(counters.Desc{Name: "rx_poll_window_us", Metric: "poll_window_seconds", MetricLabel: [2]string{LabelDirection, "rx"}, Kind: counters.Gauge, Scale: 1e-6, Omit: counters.Log, Help: helpPollWindow})
	CtrRxStalls         = Counters.Add(counters.Desc{Name: "rx_stalls", Metric: "rx_stalls_total", Help: "Times receive waited because the guest had posted no (or too few) buffers; packets wait in vhostd meanwhile rather than being dropped."})
	CtrRxCallsCoalesced = Counters.Add(counters.Desc{Name: "rx_calls_coalesced", Metric: "rx_interrupts_coalesced_total", Help: "Receiveq calls held back because the backend kept handing over packets: one call covered the next batch too (RX interrupt coalescing, at most 50 µs; --poll-us 0 turns it off)."})
	CtrRxReadErrors     = Counters.Add(counters.Desc{Name: "rx_read_errors", Metric: "rx_read_errors_total", Omit: counters.Log, Help: "Failed backend reads."})
	// Good RX buffers given back unused (len 0) because a malformed chain
	// followed them under IN_ORDER (see refill).
	CtrRxBuffersUnused = Counters.Add(counters.Desc{Name: "rx_buffers_unused", Metric: "rx_buffers_unused_total", Sparse: true, Omit: counters.Log, Help: "Good receive buffers given back unused (length 0) because a malformed chain followed them while VIRTIO_F_IN_ORDER is negotiated (buffers must go back in order)."})
	CtrRxDrops         = Counters.Add(counters.Desc{
		Name: "rx_drops", Metric: "drops_total", MetricLabel: [2]string{LabelDirection, "rx"},
		Help:  "Packets discarded, by direction (tx: guest to backend, rx: backend to guest) and reason. Every transmitted packet is either in vhostd_tx_packets_total or here, under exactly one reason.",
		Label: LabelReason, Values: dropNames[:], Sparse: true, Stat: "rx_drop_%s", Log: "rx_drop_%s",
		Applies: func(i int) bool { return Drop(i).Applies(true) },
	})
	// Super-packets segmented for a guest without that GUEST_TSO/USO (port
	// links), and the segments they made.
	CtrRxSegmented = Counters.Add(counters.Desc{Name: "rx_segmented", Omit: counters.All &^ counters.Log})
	CtrRxSegments  = Counters.Add(counters.Desc{Name: "rx_segments", Omit: counters.All})

	// Faults on guest memory (SIGBUS: the front-end shrank the file behind
	// a region after we mapped it) that broke a ring; the tests read it.
	CtrMemFaults = Counters.Add(counters.Desc{Name: "mem_faults", Omit: counters.All})

	// Backend queue steering (multiqueue taps and macvtaps): how often the
	// pair's backend queue was attached and detached as the guest enabled
	// and disabled the pair, and refused TUNSETQUEUE calls.
	CtrBackendAttaches = Counters.Add(counters.Desc{
		Name: "backend_attaches", Metric: "backend_queue_attach_changes_total", MetricLabel: [2]string{"change", "attach"},
		Help: "Times the queue pair's backend queue was attached or detached (change=attach|detach) as the guest enabled and disabled the pair.",
		Omit: counters.JSON | counters.Stats,
	})
	CtrBackendDetaches = Counters.Add(counters.Desc{
		Name: "backend_detaches", Metric: "backend_queue_attach_changes_total", MetricLabel: [2]string{"change", "detach"},
		Help: "Times the queue pair's backend queue was attached or detached (change=attach|detach) as the guest enabled and disabled the pair.",
		Omit: counters.JSON | counters.Stats,
	})
	CtrBackendAttachErrors = Counters.Add(counters.Desc{Name: "backend_attach_errors", Omit: counters.All})
)

// Applies says whether reason d can happen in the receive (rx) or transmit
// direction, so the exported series are those a user may see move. Reasons
// named rx_* are receive-only; descriptor-chain errors apply to both
// directions; the rest are transmit-only.
func (d Drop) Applies(rx bool) bool {
	if d == DropNone || d >= numDrops {
		return false
	}
	isRx := strings.HasPrefix(d.String(), "rx_")
	if rx {
		return isRx || d <= DropChainOther
	}
	return !isRx
}

func hdrReasonNames() []string {
	out := make([]string, vnet.NumHdrReasons)
	for r := range out {
		out[r] = vnet.HdrReason(r).String()
	}
	return out
}

func gsoReasonNames() []string {
	out := make([]string, gso.NumReasons)
	for r := range out {
		out[r] = gso.Reason(r).String()
	}
	return out
}

// maxErrno caps the errno counters; a larger errno counts as "other".
const maxErrno = 134

func errnoNames() []string {
	out := make([]string, maxErrno)
	for e := range out {
		out[e] = ErrnoLabel(e)
	}
	return out
}

// ErrnoLabel names errno e ("EINVAL"); 0 holds failures without an errno.
func ErrnoLabel(e int) string {
	if e == 0 {
		return "other"
	}
	if name := unix.ErrnoName(syscall.Errno(e)); name != "" {
		return name
	}
	return "errno_" + strconv.Itoa(e)
}
