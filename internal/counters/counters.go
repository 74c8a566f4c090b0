// Package counters is the one place a datapath counter is declared. A
// declaration (Desc) names the counter for every rendering — the Prometheus
// metric, the /status JSON key, the `vhostd stats` line and the SIGUSR1 log
// key — so a renderer is a loop over the registry, not a list of fields kept
// in step by hand (issue 15: one counter used to take eleven edits in five
// files).
//
// Values live in flat slots of atomic uint64, one per counter and one per
// label value of a family, so the datapath adds to slots[id] — no map
// lookup, no lock, no allocation. The package knows nothing of Prometheus:
// virtionet declares its counters here and metrics derives the renderers.
package counters

import (
	"fmt"
	"sync/atomic"
)

// Kind is what Prometheus is told the value is.
type Kind uint8

const (
	Counter Kind = iota // only goes up (until the device is recreated)
	Gauge
)

// Rendering is a set of the places a counter is shown.
type Rendering uint8

const (
	Prometheus Rendering = 1 << iota
	JSON                 // GET /status
	Stats                // `vhostd stats`
	Log                  // the SIGUSR1 "port stats" line
	All        = Prometheus | JSON | Stats | Log
)

// ID is the slot of a single counter or the first slot of a family; value i
// of a family is in slot ID+i (ID.At(i)). IDs are only meaningful in the
// registry that issued them.
type ID int

// At is the slot of a family's value i.
func (id ID) At(i int) ID { return id + ID(i) }

// Desc declares one counter, or one family of counters told apart by a
// label (reason, path, errno).
type Desc struct {
	// Name is the /status JSON key; the `vhostd stats` line and the log key
	// unless Stat or Log say otherwise.
	Name string
	// Metric is the Prometheus name without the "vhostd_" namespace.
	// Declarations with the same Metric are one Prometheus family, told
	// apart by MetricLabel (drops_total{direction="tx"|"rx"}); the first
	// one's Help and Kind describe it.
	Metric string
	Help   string
	Kind   Kind
	// MetricLabel is a {name, value} label Prometheus adds with a fixed
	// value; empty name: none.
	MetricLabel [2]string

	// Label names a family's label; Values are its values, one slot each.
	// An empty Label declares a single counter.
	Label  string
	Values []string
	// Applies says which values of a family are exported (Prometheus,
	// `vhostd stats --all`) while zero, so the series are those a user can
	// see move; a non-zero value is always shown. nil: all values apply.
	Applies func(i int) bool
	// Sparse: the JSON object and the log line hold only non-zero values
	// (the key is left out when all are zero), `vhostd stats` only non-zero
	// ones unless --all. For a single counter: JSON omitempty.
	Sparse bool

	// Stat overrides the `vhostd stats` name; for a family it is a format
	// with one %s for the (lower-cased) label value, "tx_drop_%s".
	Stat string
	// Log overrides the log key, like Stat.
	Log string
	// Omit lists the renderings the counter is kept out of (all others
	// show it): counters kept for tests and the log only, and old outputs
	// that never carried a counter and are kept as they were.
	Omit Rendering
	// Scale converts the stored value to the Prometheus base unit (a
	// gauge kept in microseconds is exported in seconds with 1e-6); 0: 1.
	Scale float64
}

// MetricValue is value n as Prometheus shows it.
func (d *Desc) MetricValue(n uint64) float64 {
	if d.Scale != 0 {
		return float64(n) * d.Scale
	}
	return float64(n)
}

// Width is how many slots the declaration takes.
func (d *Desc) Width() int {
	if d.Label == "" {
		return 1
	}
	return len(d.Values)
}

// Family says whether d declares a labelled family.
func (d *Desc) Family() bool { return d.Label != "" }

// In says whether the counter is shown in rendering r.
func (d *Desc) In(r Rendering) bool { return d.Omit&r == 0 }

// Shown says whether a family's value i is listed at value v in a
// rendering that lists zero values only where they apply.
func (d *Desc) Shown(i int, v uint64) bool {
	return v != 0 || d.Applies == nil || d.Applies(i)
}

// StatName is the `vhostd stats` name of value i (a single counter: i is
// ignored).
func (d *Desc) StatName(i int) string { return d.nameFor(d.Stat, i) }

// LogKey is the log key of value i.
func (d *Desc) LogKey(i int) string { return d.nameFor(d.Log, i) }

func (d *Desc) nameFor(override string, i int) string {
	if override == "" {
		override = d.Name
		if d.Family() {
			override += "_%s"
		}
	}
	if !d.Family() {
		return override
	}
	return fmt.Sprintf(override, lower(d.Values[i]))
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Registry is an ordered list of declarations. The order is the order of
// the /status JSON keys, the `vhostd stats` lines and the log keys.
type Registry struct {
	descs []Desc
	ids   []ID
	slots int
	names map[string]bool
}

// Add declares a counter and returns its ID. It panics on a declaration a
// renderer could not show (it runs from package init: a bad one fails every
// test at once).
func (r *Registry) Add(d Desc) ID {
	if r.names == nil {
		r.names = map[string]bool{}
	}
	switch {
	case d.Name == "" || r.names[d.Name]:
		panic(fmt.Sprintf("counters: name %q empty or declared twice", d.Name))
	case d.In(Prometheus) && (d.Metric == "" || d.Help == ""):
		panic(fmt.Sprintf("counters: %s: a Prometheus counter needs Metric and Help", d.Name))
	case d.Family() && len(d.Values) == 0:
		panic(fmt.Sprintf("counters: %s: family without values", d.Name))
	}
	r.names[d.Name] = true
	id := ID(r.slots)
	r.descs = append(r.descs, d)
	r.ids = append(r.ids, id)
	r.slots += d.Width()
	return id
}

// Clone returns a copy that can take more declarations without touching r
// (tests declare a counter next to the real ones).
func (r *Registry) Clone() *Registry {
	c := &Registry{descs: append([]Desc(nil), r.descs...), ids: append([]ID(nil), r.ids...), slots: r.slots, names: map[string]bool{}}
	for n := range r.names {
		c.names[n] = true
	}
	return c
}

// Slots is how many values the registry's counters take.
func (r *Registry) Slots() int { return r.slots }

// Len is the number of declarations.
func (r *Registry) Len() int { return len(r.descs) }

// Desc returns declaration i (in declaration order) and its ID.
func (r *Registry) Desc(i int) (*Desc, ID) { return &r.descs[i], r.ids[i] }

// Lookup finds a declaration by Name.
func (r *Registry) Lookup(name string) (*Desc, ID, bool) {
	for i := range r.descs {
		if r.descs[i].Name == name {
			return &r.descs[i], r.ids[i], true
		}
	}
	return nil, 0, false
}

// NewValues returns zeroed live values for the registry.
func (r *Registry) NewValues() Values { return make(Values, r.slots) }

// Values are the live counters of one registry for one owner (a queue
// pair). Workers add, readers load, both at any time.
type Values []atomic.Uint64

// Add adds n to slot id.
func (v Values) Add(id ID, n uint64) { v[id].Add(n) }

// Load reads slot id.
func (v Values) Store(id ID, n uint64) { v[id].Store(n) }

// Load returns slot id.
func (v Values) Load(id ID) uint64 { return v[id].Load() }

// Ptr returns slot id, for code that is handed one counter to bump.
func (v Values) Ptr(id ID) *atomic.Uint64 { return &v[id] }

// Sum adds up the n slots from id (a family's values).
func (v Values) Sum(id ID, n int) uint64 {
	var s uint64
	for i := 0; i < n; i++ {
		s += v[int(id)+i].Load()
	}
	return s
}

// Snapshot loads every slot into dst (grown as needed) from the last to
// the first: declare outcome counters after the counter that must not fall
// below their sum (tx_posted before the paths and drops), and a snapshot
// taken mid-traffic keeps posted >= outcomes, since a worker adds to posted
// before it adds the outcomes.
func (v Values) Snapshot(dst []uint64) []uint64 {
	if cap(dst) < len(v) {
		dst = make([]uint64, len(v))
	}
	dst = dst[:len(v)]
	for i := len(v) - 1; i >= 0; i-- {
		dst[i] = v[i].Load()
	}
	return dst
}
