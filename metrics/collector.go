package metrics

import (
	"strconv"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Namespace prefixes every metric name.
const Namespace = "vhostd"

// Label names.
const (
	LabelPort      = "port"
	LabelQueue     = "queue" // queue pair index
	LabelPath      = "path"
	LabelReason    = "reason"
	LabelDirection = "direction"
	LabelErrno     = "errno"
	LabelRequest   = "request"
	LabelPolicy    = "policy"
)

// Collector is a prometheus.Collector for one port. Collect loads the
// port's atomic counters; the datapath never calls into Prometheus.
//
// The port name is a constant label of every descriptor, so one registry
// can hold a Collector per port without descriptor clashes.
type Collector struct {
	port Port

	latencyBounds []float64 // seconds
	batchBounds   []float64

	txPosted, txPackets, txBytes                            *prometheus.Desc
	txGSOPackets, txGSOSegments, txGSONoseg                 *prometheus.Desc
	txDecisions, txHeaderErrors, txWriteErrors              *prometheus.Desc
	txNotifications, txInterrupts, txInterruptsSuppressed   *prometheus.Desc
	txLatency, txBatch                                      *prometheus.Desc
	rxPackets, rxBytes, rxGSOPackets, rxBuffers, rxCsumDone *prometheus.Desc
	rxNotifications, rxInterrupts, rxInterruptsSuppressed   *prometheus.Desc
	rxStalls, rxReadErrors, rxBatch                         *prometheus.Desc
	rxBuffersUnused                                         *prometheus.Desc
	drops, ringBroken                                       *prometheus.Desc
	backendGSOMaxSize, backendGSOMaxSegs, backendMTU        *prometheus.Desc
	backendAttached, backendAttachChanges                   *prometheus.Desc
	guestMTU, guestMTUApplied                               *prometheus.Desc
	dirtyLogging, dirtyPages, rarps                         *prometheus.Desc
	portInfo, policy, connected, messages                   *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns the collector of one port.
func NewCollector(p Port) *Collector {
	c := &Collector{
		port:          p,
		latencyBounds: virtionet.LatencyBucketsSeconds(),
		batchBounds:   virtionet.BatchBuckets(),
	}
	cl := prometheus.Labels{LabelPort: p.Name()}
	q := []string{LabelQueue}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_"+name, help, labels, cl)
	}
	with := func(extra ...string) []string { return append(append([]string(nil), q...), extra...) }

	c.txPosted = d("tx_posted_packets_total",
		"Descriptor chains (packets) the guest posted on the transmitq. Once traffic stops it equals the sum of vhostd_tx_packets_total over all paths plus vhostd_drops_total{direction=\"tx\"}; while traffic runs it is never below that sum.", q...)
	c.txPackets = d("tx_packets_total",
		"Guest packets handed to the backend, by path: passthrough (GSO super-packet passed whole), resegmented (split into smaller super-packets), segmented (cut to MSS in vhostd), csum_completed (checksum finished in vhostd), plain (non-GSO, passed as is). A segmented packet counts once here; its output packets are in vhostd_tx_gso_segments_total.", with(LabelPath)...)
	c.txBytes = d("tx_bytes_total",
		"Frame bytes (without virtio_net_hdr) of the guest packets in vhostd_tx_packets_total, by path.", with(LabelPath)...)
	c.txGSOPackets = d("tx_gso_packets_total",
		"GSO super-packets the guest sent (gso_type != NONE), whatever path they took (virtio tx_gso_packets).", q...)
	c.txGSOSegments = d("tx_gso_segments_total",
		"Packets written to the backend by re-segmentation or software segmentation (virtio tx_gso_segments).", q...)
	c.txGSONoseg = d("tx_gso_packets_noseg_total",
		"GSO packets whose payload fits in one segment, sent as plain packets (virtio tx_gso_packets_noseg); counted when the capability check runs, i.e. under the auto and software policies.", q...)
	c.txDecisions = d("tx_decisions_total",
		"GSO and checksum decisions on transmitted packets, by the reason the capability check (or the policy) gave; none = the packet passed whole with nothing in the way. Plain packets the backend takes as they are skip the check and are not counted.", with(LabelReason)...)
	c.txHeaderErrors = d("tx_header_errors_total",
		"Transmitted packets dropped because their virtio_net_hdr failed validation, by rule (the kernel's virtio_net_hdr_to_skb checks).", with(LabelReason)...)
	c.txWriteErrors = d("tx_write_errors_total",
		"Packets the backend refused on write, by errno (EINVAL: the kernel rejected the vnet header). errno=\"other\" counts failures that carried no errno.", with(LabelErrno)...)
	c.txNotifications = d("tx_notifications_total",
		"Kicks: guest notifications received on the transmitq kick eventfd (virtio tx_notifications).", q...)
	c.txInterrupts = d("tx_interrupts_total",
		"Calls: transmitq completions signalled to the guest through the call eventfd (virtio tx_interrupts).", q...)
	c.txInterruptsSuppressed = d("tx_interrupts_suppressed_total",
		"Transmitq calls not sent because the guest asked for none (EVENT_IDX used_event or VRING_AVAIL_F_NO_INTERRUPT).", q...)
	c.txLatency = d("tx_completion_latency_seconds",
		"Time from seeing a transmitq chain to publishing its used entry, one observation per chain. The guest frees the packet (and TCP Small Queues lets its flow send more) only then.", q...)
	c.txBatch = d("tx_batch_size",
		"Chains handled per transmitq pass.", q...)

	c.rxPackets = d("rx_packets_total", "Packets delivered to the guest on the receiveq (virtio rx_packets).", q...)
	c.rxBytes = d("rx_bytes_total", "Frame bytes (without virtio_net_hdr) delivered to the guest (virtio rx_bytes).", q...)
	c.rxGSOPackets = d("rx_gso_packets_total", "GSO super-packets delivered to the guest (virtio rx_gso_packets).", q...)
	c.rxBuffers = d("rx_buffers_total",
		"Receive buffers (descriptor chains) used; with MRG_RXBUF a packet may span several, so rate(vhostd_rx_buffers_total) / rate(vhostd_rx_packets_total) is the merged buffers per packet.", q...)
	c.rxCsumDone = d("rx_csum_completed_total",
		"Received packets whose partial checksum vhostd completed because the guest did not negotiate GUEST_CSUM.", q...)
	c.rxNotifications = d("rx_notifications_total",
		"Kicks on the receiveq: the guest posted buffers after vhostd had run out and asked to be told (virtio rx_notifications).", q...)
	c.rxInterrupts = d("rx_interrupts_total", "Receiveq calls signalled to the guest (virtio rx_interrupts).", q...)
	c.rxInterruptsSuppressed = d("rx_interrupts_suppressed_total",
		"Receiveq calls not sent because the guest asked for none (EVENT_IDX or NO_INTERRUPT).", q...)
	c.rxStalls = d("rx_stalls_total",
		"Times receive waited because the guest had posted no (or too few) buffers; packets wait in vhostd meanwhile rather than being dropped.", q...)
	c.rxReadErrors = d("rx_read_errors_total", "Failed backend reads.", q...)
	c.rxBuffersUnused = d("rx_buffers_unused_total",
		"Good receive buffers given back unused (length 0) because a malformed chain followed them while VIRTIO_F_IN_ORDER is negotiated (buffers must go back in order).", q...)
	c.rxBatch = d("rx_batch_size", "Packets per backend read.", q...)

	c.drops = d("drops_total",
		"Packets discarded, by direction (tx: guest to backend, rx: backend to guest) and reason. Every transmitted packet is either in vhostd_tx_packets_total or here, under exactly one reason.", with(LabelDirection, LabelReason)...)
	c.ringBroken = d("ring_broken",
		"1 when a ring hit a device error (e.g. the avail index jumped) and stopped until the front-end resets the device.", with(LabelDirection)...)

	c.backendGSOMaxSize = d("backend_gso_max_size_bytes",
		"The backend's gso_max_size: a super-packet whose frame is this long or longer is split before the backend gets it.", q...)
	c.backendGSOMaxSegs = d("backend_gso_max_segments",
		"The backend's gso_max_segs: a super-packet of more segments is split before the backend gets it.", q...)
	c.backendMTU = d("backend_mtu_bytes", "The MTU of the device the guest's packets leave the host through (0: none, local delivery).", q...)
	c.backendAttached = d("backend_queue_attached",
		"1 while the queue pair's backend queue is attached, so the host may steer packets to it; a multiqueue tap's queue is detached while the guest has the pair disabled.", q...)
	c.backendAttachChanges = d("backend_queue_attach_changes_total",
		"Times the queue pair's backend queue was attached or detached (change=attach|detach) as the guest enabled and disabled the pair.", with("change")...)
	c.dirtyLogging = d("dirty_logging", "1 while the front-end has dirty-page logging on (a live migration is copying guest memory).")
	c.dirtyPages = d("dirty_log_pages_marked_total", "Guest pages vhostd marked dirty in the front-end's log during live migrations of the current session.")
	c.rarps = d("rarp_announces_total", "RARP announces injected into the backend after live migrations (VHOST_USER_SEND_RARP).")
	c.guestMTU = d("guest_mtu_bytes", "The MTU the front-end asked for with VHOST_USER_NET_SET_MTU (0: never asked).")
	c.guestMTUApplied = d("guest_mtu_applied", "1 when the backend carries the guest's MTU, 0 when vhostd refused it (QEMU then reports \"MTU not supported by the backend\").")
	c.portInfo = d("port_info",
		"Constant 1; the labels carry the negotiated virtio features, the virtio_net_hdr length, the backend's offloads and limits (queue pair 0) and the GSO policy.",
		"features", "vnet_hdr_len", "backend", "offloads", "gso_max_size", "gso_max_segs", "mtu", LabelPolicy)
	c.policy = d("gso_policy",
		"1 for the port's current GSO policy (auto, defer or software), 0 for the others; switchable at run time with PUT /ports/{name}/policy.", LabelPolicy)
	c.connected = d("vhost_user_connected", "1 while a vhost-user front-end is connected to the port's socket.")
	c.messages = d("vhost_user_messages_total", "vhost-user messages handled, by request.", LabelRequest)
	return c
}

func (c *Collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{
		c.txPosted, c.txPackets, c.txBytes, c.txGSOPackets, c.txGSOSegments, c.txGSONoseg,
		c.txDecisions, c.txHeaderErrors, c.txWriteErrors,
		c.txNotifications, c.txInterrupts, c.txInterruptsSuppressed, c.txLatency, c.txBatch,
		c.rxPackets, c.rxBytes, c.rxGSOPackets, c.rxBuffers, c.rxCsumDone,
		c.rxNotifications, c.rxInterrupts, c.rxInterruptsSuppressed, c.rxStalls, c.rxReadErrors, c.rxBatch, c.rxBuffersUnused,
		c.drops, c.ringBroken, c.backendGSOMaxSize, c.backendGSOMaxSegs, c.backendMTU,
		c.backendAttached, c.backendAttachChanges, c.guestMTU, c.guestMTUApplied,
		c.dirtyLogging, c.dirtyPages, c.rarps,
		c.portInfo, c.policy, c.connected, c.messages,
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	dev := c.port.Device
	for _, qp := range dev.QueuePairs() {
		c.collectQueue(ch, qp)
	}
	c.collectPort(ch)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *Collector) collectQueue(ch chan<- prometheus.Metric, qp *virtionet.QueuePair) {
	s := qp.Stats()
	q := strconv.Itoa(qp.Index())

	// Read order: a TX worker adds to TxPosted when it pops a batch and to
	// the path and drop counters when the batch is done. Loading the
	// outcomes first and TxPosted last keeps posted >= outcomes within one
	// scrape even while traffic runs.
	var pathPkts, pathBytes [virtionet.NumTxPaths]uint64
	for p := range pathPkts {
		pathPkts[p] = s.TxPackets[p].Load()
		pathBytes[p] = s.TxBytes[p].Load()
	}
	var txDrops [virtionet.NumDrops]uint64
	for d := range txDrops {
		txDrops[d] = s.TxDrops[d].Load()
	}
	posted := s.TxPosted.Load()

	counter(ch, c.txPosted, posted, q)
	for p := range pathPkts {
		name := virtionet.TxPath(p).String()
		counter(ch, c.txPackets, pathPkts[p], q, name)
		counter(ch, c.txBytes, pathBytes[p], q, name)
	}
	for d, n := range txDrops {
		if dropApplies(virtionet.Drop(d), "tx") || n != 0 {
			counter(ch, c.drops, n, q, "tx", virtionet.Drop(d).String())
		}
	}
	for d := range s.RxDrops {
		n := s.RxDrops[d].Load()
		if dropApplies(virtionet.Drop(d), "rx") || n != 0 {
			counter(ch, c.drops, n, q, "rx", virtionet.Drop(d).String())
		}
	}

	counter(ch, c.txGSOPackets, s.TxGSOPkts.Load(), q)
	counter(ch, c.txGSOSegments, s.TxSegments.Load(), q)
	counter(ch, c.txGSONoseg, s.TxDecisions[gso.ReasonSmallGSO].Load(), q)
	for r := range s.TxDecisions {
		n := s.TxDecisions[r].Load()
		if decisionReasonApplies(gso.Reason(r)) || n != 0 {
			counter(ch, c.txDecisions, n, q, gso.Reason(r).String())
		}
	}
	for r := range s.HdrInvalid {
		n := s.HdrInvalid[r].Load()
		if vnet.HdrReason(r) != vnet.HdrOK || n != 0 {
			counter(ch, c.txHeaderErrors, n, q, vnet.HdrReason(r).String())
		}
	}
	// Errnos are sparse: only those seen are exported.
	for e := range s.TxWriteErrno {
		if n := s.TxWriteErrno[e].Load(); n != 0 {
			counter(ch, c.txWriteErrors, n, q, errnoLabel(e))
		}
	}
	counter(ch, c.txNotifications, s.TxKicks.Load(), q)
	counter(ch, c.txInterrupts, s.TxCalls.Load(), q)
	counter(ch, c.txInterruptsSuppressed, s.TxCallsSupp.Load(), q)
	ch <- constHistogram(c.txLatency, &s.TxLatency, c.latencyBounds, 1e-9, q)
	ch <- constHistogram(c.txBatch, &s.TxBatch, c.batchBounds, 1, q)

	counter(ch, c.rxPackets, s.RxPackets.Load(), q)
	counter(ch, c.rxBytes, s.RxBytes.Load(), q)
	counter(ch, c.rxGSOPackets, s.RxGSOPkts.Load(), q)
	counter(ch, c.rxBuffers, s.RxBuffers.Load(), q)
	counter(ch, c.rxCsumDone, s.RxCsumDone.Load(), q)
	counter(ch, c.rxNotifications, s.RxKicks.Load(), q)
	counter(ch, c.rxInterrupts, s.RxCalls.Load(), q)
	counter(ch, c.rxInterruptsSuppressed, s.RxCallsSupp.Load(), q)
	counter(ch, c.rxStalls, s.RxStalls.Load(), q)
	counter(ch, c.rxReadErrors, s.RxReadErrors.Load(), q)
	counter(ch, c.rxBuffersUnused, s.RxBuffersUnused.Load(), q)
	ch <- constHistogram(c.rxBatch, &s.RxBatch, c.batchBounds, 1, q)

	gauge(ch, c.ringBroken, b2f(s.TxBroken.Load()), q, "tx")
	gauge(ch, c.ringBroken, b2f(s.RxBroken.Load()), q, "rx")

	caps := qp.Caps()
	gauge(ch, c.backendGSOMaxSize, float64(caps.GSOMaxSize), q)
	gauge(ch, c.backendGSOMaxSegs, float64(caps.GSOMaxSegs), q)
	gauge(ch, c.backendMTU, float64(caps.MTU), q)
	gauge(ch, c.backendAttached, b2f(s.BackendAttached.Load()), q)
	counter(ch, c.backendAttachChanges, s.BackendAttaches.Load(), q, "attach")
	counter(ch, c.backendAttachChanges, s.BackendDetaches.Load(), q, "detach")
}

func (c *Collector) collectPort(ch chan<- prometheus.Metric) {
	dev := c.port.Device
	pol := dev.Policy()
	var caps struct {
		offloads               string
		gsoMaxSize, gsoMaxSegs string
		mtu                    string
	}
	if qps := dev.QueuePairs(); len(qps) > 0 {
		bc := qps[0].Caps()
		caps.offloads = bc.Offloads.String()
		caps.gsoMaxSize = strconv.FormatUint(uint64(bc.GSOMaxSize), 10)
		caps.gsoMaxSegs = strconv.FormatUint(uint64(bc.GSOMaxSegs), 10)
		caps.mtu = strconv.Itoa(bc.MTU)
	}
	acked := vnet.Feature(dev.Acked())
	features := ""
	if acked != 0 {
		features = acked.String()
	}
	gauge(ch, c.portInfo, 1,
		features, strconv.Itoa(dev.HdrLen()), c.port.BackendKind, caps.offloads, caps.gsoMaxSize, caps.gsoMaxSegs, caps.mtu, pol.String())
	for _, p := range []gso.Policy{gso.PolicyAuto, gso.PolicyDefer, gso.PolicySoftware} {
		gauge(ch, c.policy, b2f(p == pol), p.String())
	}
	if m := dev.MTU(); m.Requested != 0 {
		gauge(ch, c.guestMTU, float64(m.Requested))
		gauge(ch, c.guestMTUApplied, b2f(m.Applied))
	}
	counter(ch, c.rarps, dev.RARPsSent())
	if ls, ok := c.port.Session.(logStatser); ok {
		st, _ := ls.LogStats()
		gauge(ch, c.dirtyLogging, b2f(st.Active))
		counter(ch, c.dirtyPages, st.Pages)
	}
	if src := c.port.Session; src != nil {
		gauge(ch, c.connected, b2f(src.Connected()))
		src.MessageCounts(func(req string, n uint64) {
			counter(ch, c.messages, n, req)
		})
	}
}

// constHistogram converts an atomic histogram to a Prometheus one. The
// count is the sum of the buckets read, not the Count field, so the result
// is self-consistent even though the datapath may add between loads.
func constHistogram(d *prometheus.Desc, h *virtionet.Histogram, bounds []float64, scale float64, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(bounds))
	var cum uint64
	n := min(len(bounds), len(h.Buckets))
	for i := 0; i < n; i++ {
		cum += h.Buckets[i].Load()
		buckets[bounds[i]] = cum
	}
	for i := n; i < len(h.Buckets); i++ { // +Inf (and any bucket without a bound)
		cum += h.Buckets[i].Load()
	}
	return prometheus.MustNewConstHistogram(d, cum, float64(h.Sum.Load())*scale, buckets, labels...)
}

// errnoLabel names errno e ("EINVAL"); index 0 holds failures without an
// errno.
func errnoLabel(e int) string {
	if e == 0 {
		return "other"
	}
	if name := unix.ErrnoName(syscall.Errno(e)); name != "" {
		return name
	}
	return "errno_" + strconv.Itoa(e)
}

// dropApplies says whether reason d can happen in direction dir, so the
// exported series are those a user may see move (any non-zero counter is
// exported too). Reasons named rx_* are receive-only; descriptor-chain
// errors apply to both directions; the rest are transmit-only.
func dropApplies(d virtionet.Drop, dir string) bool {
	if d == virtionet.DropNone {
		return false
	}
	name := d.String()
	isRx := len(name) > 3 && name[:3] == "rx_"
	chain := d <= virtionet.DropChainOther
	if dir == "rx" {
		return isRx || chain
	}
	return !isRx
}

// decisionReasonApplies leaves out the reasons that only the gso package's
// parsing helpers return and Decide never reports.
func decisionReasonApplies(r gso.Reason) bool {
	return r != gso.ReasonHeadTooShort && r != gso.ReasonShortBuffer
}
