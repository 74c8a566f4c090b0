package virtionet

import (
	"sync/atomic"
	"time"

	"github.com/vhostd/vhostd/internal/counters"
)

// TxPath says how a transmitted packet reached the backend. The names are the
// metric label values (issue 5): passthrough = a GSO super-packet handed over
// whole, resegmented = split into smaller super-packets, segmented = split to
// MSS-sized packets in vhostd, csum_completed = a non-GSO packet whose partial
// checksum vhostd finished, plain = a non-GSO packet passed as it is.
type TxPath uint8

const (
	PathPassthrough TxPath = iota
	PathResegmented
	PathSegmented
	PathCsumCompleted
	PathPlain
	numTxPaths
)

var txPathNames = [numTxPaths]string{"passthrough", "resegmented", "segmented", "csum_completed", "plain"}

func (p TxPath) String() string {
	if p < numTxPaths {
		return txPathNames[p]
	}
	return "unknown"
}

// NumTxPaths is the number of TxPath values, for collectors that iterate them.
const NumTxPaths = int(numTxPaths)

// Drop is why a packet was discarded. Every packet the guest posts is either
// delivered or counted under exactly one Drop reason (the accounting invariant
// the e2e test checks: posted == written + dropped).
type Drop uint8

const (
	DropNone Drop = iota
	// Descriptor-chain problems (virtqueue sentinel errors).
	DropDescIndex
	DropChainTooLong
	DropDescAddress
	DropIndirectLen
	DropNestedIndirect
	DropIndirectNext
	DropIndirectNotNegotiated
	DropWriteBeforeRead
	DropZeroLen
	DropChainOther
	// TX chain shape.
	DropTxWritableBuffer // a device-writable descriptor on a TX chain
	DropTxTooLarge       // frame longer than any backend can take (64 KiB + headers)
	// Header validation (virtio_net_hdr_to_skb rules), see header.go.
	DropHdrInvalid
	// GSO parse/decision.
	DropGSOMalformed
	DropGSOUnsupported
	// Ring state.
	DropRingDisabled // started but disabled TX ring: drained and discarded (vhost-user.rst "Ring states")
	// Backend.
	DropBackendWrite // the backend refused the packet (errno counted separately)
	// RX side.
	DropRxReadableBuffer // a device-readable descriptor on an RX chain
	DropRxNoRoom         // the packet does not fit the whole RX ring
	DropRxBufferTooSmall // without MRG_RXBUF the chain is smaller than the packet
	DropRxGSONotAcked    // the backend handed a GSO type the guest did not negotiate
	DropRxDisabled       // RX ring disabled while a packet was held
	DropRxRingFull       // a peer port's packet found no free buffer within LinkWait
	numDrops
)

var dropNames = [numDrops]string{
	"none",
	"desc_index", "chain_too_long", "desc_address", "indirect_len", "nested_indirect",
	"indirect_next", "indirect_not_negotiated", "write_before_read", "zero_len", "chain_other",
	"tx_writable_buffer", "tx_too_large",
	"hdr_invalid",
	"gso_malformed", "gso_unsupported",
	"ring_disabled",
	"backend_write",
	"rx_readable_buffer", "rx_no_room", "rx_buffer_too_small", "rx_gso_not_acked", "rx_disabled",
	"rx_ring_full",
}

func (d Drop) String() string {
	if d < numDrops {
		return dropNames[d]
	}
	return "unknown"
}

// NumDrops is the number of Drop values, for collectors that iterate them.
const NumDrops = int(numDrops)

// latencyBucketsNs are the upper bounds of the TX completion latency histogram
// (avail seen -> used published), exponential from 1 µs to ~16 ms. TCP Small
// Queues (tcp_limit_output_bytes) throttles a guest flow once roughly 1 ms of
// its data waits for completion, so the interesting range is 10 µs .. 10 ms.
var latencyBucketsNs = [...]int64{
	1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000,
	512_000, 1_024_000, 2_048_000, 4_096_000, 8_192_000, 16_384_000,
}

// LatencyBucketsSeconds returns the histogram bounds in seconds.
func LatencyBucketsSeconds() []float64 {
	out := make([]float64, len(latencyBucketsNs))
	for i, ns := range latencyBucketsNs {
		out[i] = float64(ns) / 1e9
	}
	return out
}

// batchBuckets are the upper bounds of the batch size histogram.
var batchBuckets = [...]int{1, 2, 4, 8, 16, 32, 64, 128, 256}

// BatchBuckets returns the batch histogram bounds.
func BatchBuckets() []float64 {
	out := make([]float64, len(batchBuckets))
	for i, b := range batchBuckets {
		out[i] = float64(b)
	}
	return out
}

// Histogram is a fixed-bucket histogram updated with atomics only, so the
// datapath never takes a lock and a scraper can read it at any time.
type Histogram struct {
	Buckets []atomic.Uint64 // len(bounds)+1; last is +Inf
	Sum     atomic.Uint64   // in the histogram's unit (ns or items)
	Count   atomic.Uint64
}

func newHistogram(n int) Histogram { return Histogram{Buckets: make([]atomic.Uint64, n+1)} }

func (h *Histogram) observeLatency(d time.Duration, times uint64) {
	ns := int64(d)
	i := 0
	for i < len(latencyBucketsNs) && ns > latencyBucketsNs[i] {
		i++
	}
	h.Buckets[i].Add(times)
	h.Sum.Add(uint64(ns) * times)
	h.Count.Add(times)
}

func (h *Histogram) observeBatch(n int) {
	i := 0
	for i < len(batchBuckets) && n > batchBuckets[i] {
		i++
	}
	h.Buckets[i].Add(1)
	h.Sum.Add(uint64(n))
	h.Count.Add(1)
}

// QueueStats are the counters of one queue pair: the registered counters
// (counters.go) in flat slots, plus the histograms and flags. Workers add to
// them once per batch; readers (metrics, status, tests) load them at any
// time.
type QueueStats struct {
	// C holds every counter declared in Counters, by ID.
	C counters.Values

	TxLatency Histogram // ns
	TxBatch   Histogram
	RxBatch   Histogram

	// Broken is set when the ring hit a device error (e.g. avail index jump).
	TxBroken atomic.Bool
	RxBroken atomic.Bool

	// BackendAttached: the pair's backend queue is attached (the host may
	// steer packets to it).
	BackendAttached atomic.Bool
}

func newQueueStats() *QueueStats {
	return &QueueStats{
		C:         Counters.NewValues(),
		TxLatency: newHistogram(len(latencyBucketsNs)),
		TxBatch:   newHistogram(len(batchBuckets)),
		RxBatch:   newHistogram(len(batchBuckets)),
	}
}

// Add adds n to counter id.
func (s *QueueStats) Add(id counters.ID, n uint64) { s.C.Add(id, n) }

// Load reads counter id (for a family, id.At(i)).
func (s *QueueStats) Load(id counters.ID) uint64 { return s.C.Load(id) }

// TxDropTotal sums the TX drop reasons.
func (s *QueueStats) TxDropTotal() uint64 { return s.C.Sum(CtrTxDrops, NumDrops) }

// RxDropTotal sums the RX drop reasons.
func (s *QueueStats) RxDropTotal() uint64 { return s.C.Sum(CtrRxDrops, NumDrops) }

// TxWritten sums packets handed to the backend over all paths (a segmented
// super-packet counts once here; its segments are in CtrTxSegments).
func (s *QueueStats) TxWritten() uint64 { return s.C.Sum(CtrTxPackets, NumTxPaths) }

// foldPoll adds a worker's poll events since the last fold to the
// direction's family (CtrTxPoll or CtrRxPoll) and sets its window gauge.
func (s *QueueStats) foldPoll(fam, window counters.ID, p *pollWindow) {
	h, m, c, sl := p.take()
	for i, n := range [numPollOutcomes]uint64{pollHit: h, pollMiss: m, pollContended: c, pollSleep: sl} {
		if n != 0 {
			s.C.Add(fam.At(i), n)
		}
	}
	s.C.Store(window, uint64(p.cur/time.Microsecond))
}
