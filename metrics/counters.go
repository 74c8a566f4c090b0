package metrics

import (
	"encoding/json"
	"log/slog"
	"strconv"

	"github.com/vhostd/vhostd/internal/counters"
	"github.com/vhostd/vhostd/virtionet"
)

// This file derives the /status JSON, `vhostd stats` lines and the SIGUSR1
// log line from the counter declarations in virtionet.Counters; collector.go
// derives the Prometheus metrics. None of them names a counter except where
// a line is computed from several (totals, ratios, quantiles).

// QueueCounters are one queue pair's counters: the registered ones by ID,
// plus the histograms and ring flags. JSON: one key per declaration.
type QueueCounters struct {
	// V holds the values of the registry's slots (V[id], a family's value i
	// at V[id.At(i)]); shorter (an older daemon, a zero value) reads as 0.
	V []uint64

	TxLatency Histogram
	TxBatch   Histogram
	TxBroken  bool
	RxBatch   Histogram
	RxBroken  bool
}

// counterRegistry is what the renderers derive from; a test swaps it to
// show that a new declaration reaches every rendering with no other code.
var counterRegistry = &virtionet.Counters

// Get returns counter id (a family's value i: id.At(i)).
func (c *QueueCounters) Get(id counters.ID) uint64 {
	if int(id) < len(c.V) {
		return c.V[id]
	}
	return 0
}

// At returns value i of family id.
func (c *QueueCounters) At(id counters.ID, i int) uint64 { return c.Get(id.At(i)) }

// Set sets counter id (tests, and folding samples).
func (c *QueueCounters) Set(id counters.ID, v uint64) {
	if n := counterRegistry.Slots(); len(c.V) < n {
		c.V = append(c.V, make([]uint64, n-len(c.V))...)
	}
	c.V[id] = v
}

// SetLabelled sets the values of family id by label value; other values
// become 0 and unknown labels are ignored.
func (c *QueueCounters) SetLabelled(id counters.ID, m map[string]uint64) {
	d := descOf(id)
	for i, name := range d.Values {
		c.Set(id.At(i), m[name])
	}
}

// SetLabel sets the value of family id whose label is label.
func (c *QueueCounters) SetLabel(id counters.ID, label string, v uint64) {
	for i, name := range descOf(id).Values {
		if name == label {
			c.Set(id.At(i), v)
		}
	}
}

// Labelled returns the non-zero values of family id by label value.
func (c *QueueCounters) Labelled(id counters.ID) map[string]uint64 {
	d := descOf(id)
	m := map[string]uint64{}
	for i, name := range d.Values {
		if v := c.At(id, i); v != 0 {
			m[name] += v
		}
	}
	return m
}

func (c *QueueCounters) sum(id counters.ID) uint64 {
	var n uint64
	for i := range descOf(id).Values {
		n += c.At(id, i)
	}
	return n
}

// TxWritten is the sum of tx_packets over all paths.
func (c *QueueCounters) TxWritten() uint64 { return c.sum(virtionet.CtrTxPackets) }

// TxDropped is the sum of tx_drops.
func (c *QueueCounters) TxDropped() uint64 { return c.sum(virtionet.CtrTxDrops) }

// RxDropped is the sum of rx_drops.
func (c *QueueCounters) RxDropped() uint64 { return c.sum(virtionet.CtrRxDrops) }

// TxBytesTotal is the sum of tx_bytes over all paths.
func (c *QueueCounters) TxBytesTotal() uint64 { return c.sum(virtionet.CtrTxBytes) }

func descOf(id counters.ID) *counters.Desc {
	for i := 0; i < counterRegistry.Len(); i++ {
		if d, did := counterRegistry.Desc(i); did == id {
			return d
		}
	}
	panic("metrics: counter id " + strconv.Itoa(int(id)) + " is no declaration's first slot")
}

// eachDesc calls fn with the declarations shown in rendering r.
func eachDesc(r counters.Rendering, fn func(d *counters.Desc, id counters.ID)) {
	for i := 0; i < counterRegistry.Len(); i++ {
		if d, id := counterRegistry.Desc(i); d.In(r) {
			fn(d, id)
		}
	}
}

// MarshalJSON writes one key per declaration shown in JSON, in declaration
// order: a number for a counter, an object by label value for a family
// (sparse ones: only non-zero values, the key left out when none).
func (c QueueCounters) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	key := func(k string) {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, k)
		b = append(b, ':')
	}
	eachDesc(counters.JSON, func(d *counters.Desc, id counters.ID) {
		if !d.Family() {
			if v := c.Get(id); v != 0 || !d.Sparse {
				key(d.Name)
				b = strconv.AppendUint(b, v, 10)
			}
			return
		}
		m := map[string]uint64{}
		for i, name := range d.Values {
			if v := c.At(id, i); v != 0 || !d.Sparse {
				m[name] += v
			}
		}
		if len(m) == 0 && d.Sparse {
			return
		}
		key(d.Name)
		mb, _ := json.Marshal(m)
		b = append(b, mb...)
	})
	for _, h := range []struct {
		name string
		h    *Histogram
	}{{"tx_completion_latency_seconds", &c.TxLatency}, {"tx_batch_size", &c.TxBatch}, {"rx_batch_size", &c.RxBatch}} {
		key(h.name)
		hb, err := json.Marshal(h.h)
		if err != nil {
			return nil, err
		}
		b = append(b, hb...)
	}
	if c.TxBroken {
		key("tx_broken")
		b = append(b, "true"...)
	}
	if c.RxBroken {
		key("rx_broken")
		b = append(b, "true"...)
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON wrote; unknown keys and label values
// (a daemon of another version) are ignored.
func (c *QueueCounters) UnmarshalJSON(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*c = QueueCounters{V: make([]uint64, counterRegistry.Slots())}
	var err error
	eachDesc(counters.JSON, func(d *counters.Desc, id counters.ID) {
		r, ok := raw[d.Name]
		if !ok || err != nil {
			return
		}
		if !d.Family() {
			err = json.Unmarshal(r, &c.V[id])
			return
		}
		var m map[string]uint64
		if err = json.Unmarshal(r, &m); err == nil {
			c.SetLabelled(id, m)
		}
	})
	for k, dst := range map[string]any{
		"tx_completion_latency_seconds": &c.TxLatency, "tx_batch_size": &c.TxBatch, "rx_batch_size": &c.RxBatch,
		"tx_broken": &c.TxBroken, "rx_broken": &c.RxBroken,
	} {
		if r, ok := raw[k]; ok && err == nil {
			err = json.Unmarshal(r, dst)
		}
	}
	return err
}

// countersOf loads one queue pair's counters (outcomes before tx_posted:
// see counters.Values.Snapshot).
func countersOf(s *virtionet.QueueStats, latBounds, batchBounds []float64) QueueCounters {
	return QueueCounters{
		V:         s.C.Snapshot(nil),
		TxLatency: histogramOf(&s.TxLatency, latBounds, 1e-9),
		TxBatch:   histogramOf(&s.TxBatch, batchBounds, 1),
		TxBroken:  s.TxBroken.Load(),
		RxBatch:   histogramOf(&s.RxBatch, batchBounds, 1),
		RxBroken:  s.RxBroken.Load(),
	}
}

func (c QueueCounters) add(o *QueueCounters) QueueCounters {
	out := QueueCounters{
		V:         make([]uint64, max(len(c.V), len(o.V))),
		TxLatency: c.TxLatency.add(o.TxLatency),
		TxBatch:   c.TxBatch.add(o.TxBatch),
		TxBroken:  c.TxBroken || o.TxBroken,
		RxBatch:   c.RxBatch.add(o.RxBatch),
		RxBroken:  c.RxBroken || o.RxBroken,
	}
	for i := range out.V {
		out.V[i] = c.Get(counters.ID(i)) + o.Get(counters.ID(i))
	}
	return out
}

// Since returns the counters accumulated between an earlier sample and c;
// a counter that went down (the daemon restarted) keeps c's value.
func (c QueueCounters) Since(before *QueueCounters) QueueCounters {
	out := QueueCounters{
		V:         make([]uint64, len(c.V)),
		TxLatency: c.TxLatency.sub(before.TxLatency),
		TxBatch:   c.TxBatch.sub(before.TxBatch),
		TxBroken:  c.TxBroken,
		RxBatch:   c.RxBatch.sub(before.RxBatch),
		RxBroken:  c.RxBroken,
	}
	for i, v := range c.V {
		out.V[i] = sub(v, before.Get(counters.ID(i)))
	}
	// A gauge is a level, not a count: the later sample is its value.
	for i := 0; i < counterRegistry.Len(); i++ {
		if d, id := counterRegistry.Desc(i); d.Kind == counters.Gauge {
			for j := 0; j < d.Width() && int(id.At(j)) < len(c.V); j++ {
				out.V[id.At(j)] = c.V[id.At(j)]
			}
		}
	}
	return out
}

func sub(a, b uint64) uint64 {
	if b > a {
		return a
	}
	return a - b
}

// counterLines appends the `vhostd stats` lines of the declarations, and
// after each the derived lines extra names for it. Adjacent dense families
// over the same label values are printed value by value, as ethtool -S does
// (tx_passthrough_packets, tx_passthrough_bytes, tx_resegmented_packets...).
func counterLines(c *QueueCounters, all bool, extra map[string]func() []Stat) []Stat {
	var out []Stat
	var descs []*counters.Desc
	var ids []counters.ID
	eachDesc(counters.Stats, func(d *counters.Desc, id counters.ID) { descs = append(descs, d); ids = append(ids, id) })
	for k := 0; k < len(descs); k++ {
		d, id := descs[k], ids[k]
		if !d.Family() {
			out = append(out, Stat{d.StatName(0), strconv.FormatUint(c.Get(id), 10)})
		} else {
			group := 1 // the dense families printed together with d
			for k+group < len(descs) && !d.Sparse && sameValues(d, descs[k+group]) {
				group++
			}
			for i := range d.Values {
				for g := 0; g < group; g++ {
					gd := descs[k+g]
					v := c.At(ids[k+g], i)
					if !gd.Sparse || v != 0 || (all && gd.Shown(i, v)) {
						out = append(out, Stat{gd.StatName(i), strconv.FormatUint(v, 10)})
					}
				}
			}
			k += group - 1
			d = descs[k]
		}
		if fn := extra[d.Name]; fn != nil {
			out = append(out, fn()...)
		}
	}
	return out
}

func sameValues(a, b *counters.Desc) bool {
	if !b.Family() || b.Sparse || a.Label != b.Label || len(a.Values) != len(b.Values) {
		return false
	}
	for i := range a.Values {
		if a.Values[i] != b.Values[i] {
			return false
		}
	}
	return true
}

// LogStats logs one "port stats" line per queue pair of dev, in key=value
// form so scripts can read it (scripts/e2e).
func LogStats(log *slog.Logger, dev *virtionet.Device) {
	for _, qp := range dev.QueuePairs() {
		s := qp.Stats()
		c := countersOf(s, nil, nil)
		attrs := append([]any{"port", dev.Name(), "queue_pair", qp.Index()}, LogAttrs(&c, s.BackendAttached.Load())...)
		log.Info("port stats", attrs...)
	}
}

// LogAttrs are the key/value pairs of a "port stats" line: every counter
// declared for the log (sparse families only where non-zero), with the
// totals the scripts check the accounting with (posted == written +
// dropped) and the steering state after the counters they belong with.
func LogAttrs(c *QueueCounters, attached bool) []any {
	extra := map[string][]any{
		descOf(virtionet.CtrTxPosted).Name:    {"tx_written", c.TxWritten(), "tx_dropped", c.TxDropped(), "tx_bytes", c.TxBytesTotal()},
		descOf(virtionet.CtrRxBuffers).Name:   {"rx_dropped", c.RxDropped()},
		descOf(virtionet.CtrRxSegmented).Name: {"backend_attached", b2i(attached)},
	}
	var attrs []any
	eachDesc(counters.Log, func(d *counters.Desc, id counters.ID) {
		for i := 0; i < d.Width(); i++ {
			if v := c.Get(id.At(i)); v != 0 || !d.Sparse {
				attrs = append(attrs, d.LogKey(i), v)
			}
		}
		attrs = append(attrs, extra[d.Name]...)
	})
	return attrs
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
