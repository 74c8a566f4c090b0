package metrics

import (
	"fmt"
	"strings"
	"time"

	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Status is the JSON document of GET /status.
type Status struct {
	Time  time.Time    `json:"time"`
	Ports []PortStatus `json:"ports"`
}

// PortStatus describes one port: what was negotiated, what the backend
// takes, the ring states, the policy, every counter and the diagnosis.
type PortStatus struct {
	Name        string `json:"name"`
	BackendKind string `json:"backend,omitempty"`
	BackendName string `json:"backend_name,omitempty"`
	// LimitsFromFlags: gso_max_size/gso_max_segs come from vhostd flags.
	LimitsFromFlags bool `json:"limits_from_flags,omitempty"`
	// Connected is absent when the port has no session source.
	Connected *bool  `json:"connected,omitempty"`
	Policy    string `json:"policy"`
	HdrLen    int    `json:"vnet_hdr_len"`
	// Offered are the virtio features the port offers, Negotiated those
	// the front-end acked (with PROTOCOL_FEATURES when negotiated).
	Offered          FeatureSet `json:"offered_features"`
	Negotiated       FeatureSet `json:"negotiated_features"`
	ProtocolFeatures string     `json:"protocol_features,omitempty"`
	// DeviceStatus lists the virtio status bits of the last SET_STATUS.
	DeviceStatus []string          `json:"device_status,omitempty"`
	Messages     map[string]uint64 `json:"vhost_user_messages,omitempty"`
	QueuePairs   []QueuePairStatus `json:"queue_pairs"`
	// MTU is what became of the front-end's VHOST_USER_NET_SET_MTU.
	MTU *virtionet.MTUState `json:"guest_mtu,omitempty"`
	// Migration: dirty logging and announces (absent before any).
	Migration *MigrationStatus `json:"migration,omitempty"`
	Diagnosis []Finding        `json:"diagnosis"`
}

// FeatureSet is a virtio feature mask with its bit names.
type FeatureSet struct {
	Bits  string   `json:"bits"` // hex
	Names []string `json:"names"`
}

func featureSet(f uint64) FeatureSet {
	fs := FeatureSet{Bits: fmt.Sprintf("%#x", f), Names: []string{}}
	if f != 0 {
		fs.Names = strings.Split(vnet.Feature(f).String(), "|")
	}
	return fs
}

// QueuePairStatus is one queue pair: its backend, its two rings and its
// counters.
type QueuePairStatus struct {
	Index    int           `json:"index"`
	Backend  BackendStatus `json:"backend"`
	Rings    []RingStatus  `json:"rings,omitempty"`
	Counters QueueCounters `json:"counters"`
}

// MigrationStatus is the live-migration side of a port.
type MigrationStatus struct {
	DirtyLogging bool   `json:"dirty_logging"`
	LogBytes     uint64 `json:"log_bytes"`
	PagesMarked  uint64 `json:"pages_marked"`
	LogOverflows uint64 `json:"log_overflows"`
	RARPsSent    uint64 `json:"rarps_sent"`
}

// BackendStatus is what the backend queue takes whole and its limits.
type BackendStatus struct {
	Offloads   []string `json:"offloads"`
	GSOMaxSize uint32   `json:"gso_max_size"`
	GSOMaxSegs uint32   `json:"gso_max_segs"`
	MTU        int      `json:"mtu"`
	// LimitsFrom names the device whose limits these are (for a tap: the
	// egress device and how it was found).
	LimitsFrom string `json:"limits_from,omitempty"`
	// Attached: the host may steer packets to this backend queue.
	Attached bool `json:"attached"`
}

// RingStatus is one vring as the vhost-user session sees it.
type RingStatus struct {
	Vring     int    `json:"vring"`
	Kind      string `json:"kind"` // "rx" (receiveq) or "tx" (transmitq)
	Started   bool   `json:"started"`
	Enabled   bool   `json:"enabled"`
	Size      uint16 `json:"size"`
	Layout    string `json:"layout"`     // "split" or "packed" (VIRTIO_F_RING_PACKED)
	LastAvail uint16 `json:"last_avail"` // next avail index it starts from (packed: avail wrap counter in bit 15)
	Broken    bool   `json:"broken"`
}

// Histogram is a snapshot of a fixed-bucket histogram.
type Histogram struct {
	Bounds []float64 `json:"bounds"` // bucket upper bounds; one more count follows for +Inf
	Counts []uint64  `json:"counts"` // per bucket, not cumulative; len(Bounds)+1
	Sum    float64   `json:"sum"`
	Count  uint64    `json:"count"`
}

func histogramOf(h *virtionet.Histogram, bounds []float64, scale float64) Histogram {
	out := Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds)+1)}
	for i := range h.Buckets {
		j := min(i, len(bounds))
		n := h.Buckets[i].Load()
		out.Counts[j] += n
		out.Count += n
	}
	out.Sum = float64(h.Sum.Load()) * scale
	return out
}

// Mean returns Sum/Count, 0 when empty.
func (h Histogram) Mean() float64 {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / float64(h.Count)
}

// Quantile estimates the q-quantile (0..1) by linear interpolation within
// the bucket that holds it, as PromQL's histogram_quantile does; the lowest
// bucket starts at 0. In the +Inf bucket it returns the largest bound and
// above = true. It returns 0 for an empty histogram.
func (h Histogram) Quantile(q float64) (v float64, above bool) {
	if h.Count == 0 || len(h.Counts) == 0 {
		return 0, false
	}
	rank := q * float64(h.Count)
	var cum float64
	for i, n := range h.Counts {
		prev := cum
		cum += float64(n)
		if cum < rank || n == 0 {
			continue
		}
		if i >= len(h.Bounds) {
			if len(h.Bounds) == 0 {
				return 0, true
			}
			return h.Bounds[len(h.Bounds)-1], true
		}
		lo := 0.0
		if i > 0 {
			lo = h.Bounds[i-1]
		}
		return lo + (h.Bounds[i]-lo)*(rank-prev)/float64(n), false
	}
	if len(h.Bounds) == 0 {
		return 0, true
	}
	return h.Bounds[len(h.Bounds)-1], true
}

// CountAbove returns how many observations fell in buckets whose lower
// bound is >= limit (exact, no interpolation).
func (h Histogram) CountAbove(limit float64) uint64 {
	var n uint64
	for i, c := range h.Counts {
		lo := 0.0
		if i > 0 && len(h.Bounds) > 0 {
			// Buckets past the last bound (a malformed snapshot) count as
			// starting there.
			lo = h.Bounds[min(i-1, len(h.Bounds)-1)]
		}
		if lo >= limit {
			n += c
		}
	}
	return n
}

func (h Histogram) add(o Histogram) Histogram {
	if len(h.Counts) == 0 {
		return Histogram{Bounds: o.Bounds, Counts: append([]uint64(nil), o.Counts...), Sum: o.Sum, Count: o.Count}
	}
	out := Histogram{Bounds: h.Bounds, Counts: append([]uint64(nil), h.Counts...), Sum: h.Sum + o.Sum, Count: h.Count + o.Count}
	for i := range out.Counts {
		if i < len(o.Counts) {
			out.Counts[i] += o.Counts[i]
		}
	}
	return out
}

// sub returns h - o bucket by bucket; if any bucket went down (the daemon
// restarted between the samples), it returns h unchanged.
func (h Histogram) sub(o Histogram) Histogram {
	if len(o.Counts) != len(h.Counts) || o.Count > h.Count {
		return h
	}
	out := Histogram{Bounds: h.Bounds, Counts: make([]uint64, len(h.Counts)), Sum: h.Sum - o.Sum, Count: h.Count - o.Count}
	for i := range h.Counts {
		if o.Counts[i] > h.Counts[i] {
			return h
		}
		out.Counts[i] = h.Counts[i] - o.Counts[i]
	}
	return out
}

// Snapshot reads the state and counters of the given ports.
func Snapshot(ports []Port) Status {
	st := Status{Time: time.Now().UTC(), Ports: make([]PortStatus, 0, len(ports))}
	for _, p := range ports {
		st.Ports = append(st.Ports, SnapshotPort(p))
	}
	return st
}

// SnapshotPort reads one port, diagnosis included.
func SnapshotPort(p Port) PortStatus {
	dev := p.Device
	ps := PortStatus{
		Name:            dev.Name(),
		BackendKind:     p.BackendKind,
		BackendName:     p.BackendName,
		LimitsFromFlags: p.LimitsFromFlags,
		Policy:          dev.Policy().String(),
		HdrLen:          dev.HdrLen(),
		Offered:         featureSet(dev.DeviceFeatures()),
		Negotiated:      featureSet(dev.Acked()),
	}
	if m := dev.MTU(); m.Requested != 0 {
		ps.MTU = &m
	}
	var ms MigrationStatus
	if ls, ok := p.Session.(logStatser); ok {
		if st, ok := ls.LogStats(); ok {
			ms = MigrationStatus{DirtyLogging: st.Active, LogBytes: st.Size, PagesMarked: st.Pages, LogOverflows: st.Overflows}
		}
	}
	ms.RARPsSent = dev.RARPsSent()
	if ms != (MigrationStatus{}) {
		ps.Migration = &ms
	}
	var rings []ringStateView
	if p.Session != nil {
		c := p.Session.Connected()
		ps.Connected = &c
		p.Session.MessageCounts(func(req string, n uint64) {
			if ps.Messages == nil {
				ps.Messages = map[string]uint64{}
			}
			ps.Messages[req] = n
		})
		if d, ok := p.Session.(SessionDetails); ok {
			if f, proto, status, ok := d.Negotiated(); ok {
				ps.Negotiated = featureSet(f)
				ps.ProtocolFeatures = proto.String()
				ps.DeviceStatus = deviceStatusNames(status)
			}
			for _, r := range d.Rings() {
				rings = append(rings, ringStateView{r.Index, r.Started, r.Enabled, r.Packed, r.Num, r.LastAvail})
			}
		}
	}
	latBounds := virtionet.LatencyBucketsSeconds()
	batchBounds := virtionet.BatchBuckets()
	for _, qp := range dev.QueuePairs() {
		caps := qp.Caps()
		qs := QueuePairStatus{
			Index: qp.Index(),
			Backend: BackendStatus{
				Offloads:   strings.Split(caps.Offloads.String(), "|"),
				GSOMaxSize: caps.GSOMaxSize, GSOMaxSegs: caps.GSOMaxSegs, MTU: caps.MTU,
				LimitsFrom: caps.LimitsFrom, Attached: qp.Stats().BackendAttached.Load(),
			},
			Counters: countersOf(qp.Stats(), latBounds, batchBounds),
		}
		if caps.Offloads == 0 {
			qs.Backend.Offloads = []string{}
		}
		// Vring 2k is receiveq(k), 2k+1 is transmitq(k) (virtio 5.1.2).
		for _, r := range rings {
			if r.index/2 != qp.Index() {
				continue
			}
			rs := RingStatus{Vring: r.index, Kind: "rx", Started: r.started, Enabled: r.enabled, Size: r.num, Layout: "split", LastAvail: r.lastAvail}
			if r.packed {
				rs.Layout = "packed"
			}
			if r.index%2 == 1 {
				rs.Kind = "tx"
				rs.Broken = qs.Counters.TxBroken
			} else {
				rs.Broken = qs.Counters.RxBroken
			}
			qs.Rings = append(qs.Rings, rs)
		}
		ps.QueuePairs = append(ps.QueuePairs, qs)
	}
	ps.Diagnosis = Diagnose(ps)
	return ps
}

type ringStateView struct {
	index            int
	started, enabled bool
	packed           bool
	num, lastAvail   uint16
}

// Virtio device status bits (virtio 1.x section 2.1).
var deviceStatusBits = []struct {
	bit  uint8
	name string
}{
	{1, "ACKNOWLEDGE"}, {2, "DRIVER"}, {4, "DRIVER_OK"}, {8, "FEATURES_OK"},
	{64, "DEVICE_NEEDS_RESET"}, {128, "FAILED"},
}

func deviceStatusNames(s uint8) []string {
	var out []string
	for _, b := range deviceStatusBits {
		if s&b.bit != 0 {
			out = append(out, b.name)
			s &^= b.bit
		}
	}
	if s != 0 {
		out = append(out, fmt.Sprintf("%#x", s))
	}
	return out
}

// Total sums the counters of all queue pairs of a port.
func (ps *PortStatus) Total() QueueCounters {
	var t QueueCounters
	for i := range ps.QueuePairs {
		t = t.add(&ps.QueuePairs[i].Counters)
	}
	return t
}

// Since returns the port as of ps with counters accumulated since before
// (matched by queue pair index) and the diagnosis redone over that interval,
// for `vhostd status --interval`.
func (ps PortStatus) Since(before *PortStatus) PortStatus {
	out := ps
	out.QueuePairs = make([]QueuePairStatus, len(ps.QueuePairs))
	for i, qp := range ps.QueuePairs {
		out.QueuePairs[i] = qp
		for _, b := range before.QueuePairs {
			if b.Index == qp.Index {
				out.QueuePairs[i].Counters = qp.Counters.Since(&b.Counters)
			}
		}
	}
	out.Diagnosis = Diagnose(out)
	return out
}
