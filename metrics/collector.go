package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/internal/counters"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Namespace prefixes every metric name.
const Namespace = "vhostd"

// Label names.
const (
	LabelPort      = "port"
	LabelQueue     = "queue" // queue pair index
	LabelPath      = virtionet.LabelPath
	LabelReason    = virtionet.LabelReason
	LabelDirection = virtionet.LabelDirection
	LabelErrno     = virtionet.LabelErrno
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

	// counterDescs[i] is the metric of declaration i of the counter
	// registry (nil: not exported); declarations sharing a Metric share it.
	counterDescs []*prometheus.Desc

	txLatency, txBatch, rxBatch                      *prometheus.Desc
	ringBroken                                       *prometheus.Desc
	backendAttached                                  *prometheus.Desc
	backendGSOMaxSize, backendGSOMaxSegs, backendMTU *prometheus.Desc
	guestMTU, guestMTUApplied                        *prometheus.Desc
	dirtyLogging, dirtyPages, rarps                  *prometheus.Desc
	portInfo, policy, connected, messages            *prometheus.Desc
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

	c.counterDescs = counterMetrics(cl)
	c.txLatency = d("tx_completion_latency_seconds",
		"Time from seeing a transmitq chain to publishing its used entry, one observation per chain. The guest frees the packet (and TCP Small Queues lets its flow send more) only then.", q...)
	c.txBatch = d("tx_batch_size",
		"Chains handled per transmitq pass.", q...)

	c.rxBatch = d("rx_batch_size", "Packets per backend read.", q...)

	c.ringBroken = d("ring_broken",
		"1 when a ring hit a device error (e.g. the avail index jumped) and stopped until the front-end resets the device.", with(LabelDirection)...)

	c.backendGSOMaxSize = d("backend_gso_max_size_bytes",
		"The backend's gso_max_size: a super-packet whose frame is this long or longer is split before the backend gets it.", q...)
	c.backendGSOMaxSegs = d("backend_gso_max_segments",
		"The backend's gso_max_segs: a super-packet of more segments is split before the backend gets it.", q...)
	c.backendMTU = d("backend_mtu_bytes", "The MTU of the device the guest's packets leave the host through (0: none, local delivery).", q...)
	c.backendAttached = d("backend_queue_attached",
		"1 while the queue pair's backend queue is attached, so the host may steer packets to it; a multiqueue tap's queue is detached while the guest has the pair disabled.", q...)
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
	out := []*prometheus.Desc{
		c.txLatency, c.txBatch, c.rxBatch,
		c.ringBroken, c.backendGSOMaxSize, c.backendGSOMaxSegs, c.backendMTU,
		c.backendAttached, c.guestMTU, c.guestMTUApplied,
		c.dirtyLogging, c.dirtyPages, c.rarps,
		c.portInfo, c.policy, c.connected, c.messages,
	}
	seen := map[*prometheus.Desc]bool{}
	for _, d := range c.counterDescs {
		if d != nil && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// counterMetrics derives the Prometheus descriptors of the registered
// counters: labels queue, then the declaration's fixed label, then the
// family's label.
func counterMetrics(constLabels prometheus.Labels) []*prometheus.Desc {
	out := make([]*prometheus.Desc, counterRegistry.Len())
	byMetric := map[string]*prometheus.Desc{}
	for i := range out {
		d, _ := counterRegistry.Desc(i)
		if !d.In(counters.Prometheus) {
			continue
		}
		if pd, ok := byMetric[d.Metric]; ok {
			out[i] = pd
			continue
		}
		labels := []string{LabelQueue}
		if d.MetricLabel[0] != "" {
			labels = append(labels, d.MetricLabel[0])
		}
		if d.Family() {
			labels = append(labels, d.Label)
		}
		out[i] = prometheus.NewDesc(Namespace+"_"+d.Metric, d.Help, labels, constLabels)
		byMetric[d.Metric] = out[i]
	}
	return out
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

	c.collectCounters(ch, s.C.Snapshot(nil), q)
	ch <- constHistogram(c.txLatency, &s.TxLatency, c.latencyBounds, 1e-9, q)
	ch <- constHistogram(c.txBatch, &s.TxBatch, c.batchBounds, 1, q)

	ch <- constHistogram(c.rxBatch, &s.RxBatch, c.batchBounds, 1, q)

	gauge(ch, c.ringBroken, b2f(s.TxBroken.Load()), q, "tx")
	gauge(ch, c.ringBroken, b2f(s.RxBroken.Load()), q, "rx")

	caps := qp.Caps()
	gauge(ch, c.backendGSOMaxSize, float64(caps.GSOMaxSize), q)
	gauge(ch, c.backendGSOMaxSegs, float64(caps.GSOMaxSegs), q)
	gauge(ch, c.backendMTU, float64(caps.MTU), q)
	gauge(ch, c.backendAttached, b2f(s.BackendAttached.Load()), q)
}

// collectCounters exports the registered counters of one queue pair from
// a snapshot (see counters.Values.Snapshot for its read order); a family
// exports the values that apply, and any that is not zero.
func (c *Collector) collectCounters(ch chan<- prometheus.Metric, v []uint64, q string) {
	// One label buffer for the scrape: a const metric copies its labels.
	buf := make([]string, 0, 3)
	for i, pd := range c.counterDescs {
		if pd == nil {
			continue
		}
		d, id := counterRegistry.Desc(i)
		kind := prometheus.CounterValue
		if d.Kind == counters.Gauge {
			kind = prometheus.GaugeValue
		}
		labels := append(buf[:0], q)
		if d.MetricLabel[0] != "" {
			labels = append(labels, d.MetricLabel[1])
		}
		if !d.Family() {
			ch <- prometheus.MustNewConstMetric(pd, kind, d.MetricValue(v[id]), labels...)
			continue
		}
		for k, name := range d.Values {
			if n := v[id.At(k)]; d.Shown(k, n) {
				ch <- prometheus.MustNewConstMetric(pd, kind, d.MetricValue(n), append(labels, name)...)
			}
		}
	}
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
