package metrics

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/vhostd/vhostd/internal/counters"
	"github.com/vhostd/vhostd/virtionet"
)

// renderings are the four outputs of one queue pair's counters v.
type renderings struct {
	prom, json string
	stats      []Stat
	statsAll   []Stat
	log        []any
}

func render(t *testing.T, v []uint64) renderings {
	t.Helper()
	c := &Collector{counterDescs: counterMetrics(prometheus.Labels{LabelPort: "t"})}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collectorFunc(func(ch chan<- prometheus.Metric) { c.collectCounters(ch, v, "0") }))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var prom strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&prom, mf); err != nil {
			t.Fatal(err)
		}
	}
	qc := QueueCounters{V: v}
	js, err := json.Marshal(qc)
	if err != nil {
		t.Fatal(err)
	}
	var back QueueCounters
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	return renderings{
		prom: prom.String(), json: string(js),
		stats: StatLines(&back, false), statsAll: StatLines(&back, true),
		log: LogAttrs(&qc, false),
	}
}

// collectorFunc is an unchecked collector (no Describe) around a collect
// function.
type collectorFunc func(ch chan<- prometheus.Metric)

func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

func hasStat(lines []Stat, name string, v uint64) bool {
	return slices.Contains(lines, Stat{name, fmt.Sprint(v)})
}

func hasLog(attrs []any, key string, v uint64) bool {
	for i := 0; i+1 < len(attrs); i += 2 {
		if attrs[i] == key && attrs[i+1] == v {
			return true
		}
	}
	return false
}

// TestNewCounterReachesEveryRendering declares a counter and a family next
// to the real ones and finds them in the Prometheus text, the /status JSON,
// `vhostd stats` and the log line, with no code but the declarations.
func TestNewCounterReachesEveryRendering(t *testing.T) {
	reg := virtionet.Counters.Clone()
	widgets := reg.Add(counters.Desc{Name: "rx_widgets", Metric: "rx_widgets_total", Help: "Widgets received."})
	gadgets := reg.Add(counters.Desc{
		Name: "tx_gadgets", Metric: "tx_gadgets_total", Help: "Gadgets sent, by kind.",
		Label: "kind", Values: []string{"small", "large"}, Sparse: true,
	})
	saved := counterRegistry
	counterRegistry = reg
	t.Cleanup(func() { counterRegistry = saved })

	v := make([]uint64, reg.Slots())
	v[widgets] = 7
	v[gadgets.At(1)] = 3
	r := render(t, v)

	for _, want := range []string{
		`vhostd_rx_widgets_total{port="t",queue="0"} 7`,
		`vhostd_tx_gadgets_total{kind="large",port="t",queue="0"} 3`,
		`# HELP vhostd_tx_gadgets_total Gadgets sent, by kind.`,
	} {
		if !strings.Contains(r.prom, want) {
			t.Errorf("Prometheus text lacks %q:\n%s", want, r.prom)
		}
	}
	// Applies is nil: every value applies, so Prometheus has the zero one.
	if !strings.Contains(r.prom, `vhostd_tx_gadgets_total{kind="small",port="t",queue="0"} 0`) {
		t.Errorf("Prometheus text lacks the zero value that applies:\n%s", r.prom)
	}
	for _, want := range []string{`"rx_widgets":7`, `"tx_gadgets":{"large":3}`} {
		if !strings.Contains(r.json, want) {
			t.Errorf("JSON lacks %s: %s", want, r.json)
		}
	}
	if !hasStat(r.stats, "rx_widgets", 7) || !hasStat(r.stats, "tx_gadgets_large", 3) || hasStat(r.stats, "tx_gadgets_small", 0) {
		t.Errorf("stats lines: %v", r.stats)
	}
	if !hasStat(r.statsAll, "tx_gadgets_small", 0) {
		t.Errorf("stats --all lacks the zero value: %v", r.statsAll)
	}
	if !hasLog(r.log, "rx_widgets", 7) || !hasLog(r.log, "tx_gadgets_large", 3) {
		t.Errorf("log line: %v", r.log)
	}
}

// TestEveryCounterInEveryRendering gives every slot of the real registry a
// value of its own and finds each declaration in every rendering it does
// not opt out of.
func TestEveryCounterInEveryRendering(t *testing.T) {
	reg := counterRegistry
	v := make([]uint64, reg.Slots())
	for i := range v {
		v[i] = uint64(1000 + i)
	}
	r := render(t, v)
	var js map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.json), &js); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < reg.Len(); k++ {
		d, id := reg.Desc(k)
		for i := 0; i < d.Width(); i++ {
			val := v[id.At(i)]
			if d.In(counters.Prometheus) {
				var labels []string
				if d.MetricLabel[0] != "" {
					labels = append(labels, d.MetricLabel[0]+`="`+d.MetricLabel[1]+`"`)
				}
				if d.Family() {
					labels = append(labels, d.Label+`="`+d.Values[i]+`"`)
				}
				line := fmt.Sprintf("vhostd_%s{", d.Metric)
				found := false
				for _, l := range strings.Split(r.prom, "\n") {
					want := fmt.Sprintf("} %d", val)
					if d.Scale != 0 {
						want = "} " + strconv.FormatFloat(d.MetricValue(val), 'g', -1, 64)
					}
					if strings.HasPrefix(l, line) && strings.HasSuffix(l, want) {
						ok := true
						for _, lb := range labels {
							ok = ok && strings.Contains(l, lb)
						}
						found = found || ok
					}
				}
				if !found {
					t.Errorf("%s[%d]: no Prometheus sample %s%v %d", d.Name, i, line, labels, val)
				}
			}
			if d.In(counters.JSON) {
				raw, ok := js[d.Name]
				if ok && d.Family() {
					var m map[string]uint64
					_ = json.Unmarshal(raw, &m)
					ok = m[d.Values[i]] == val
				} else if ok {
					ok = string(raw) == fmt.Sprint(val)
				}
				if !ok {
					t.Errorf("%s[%d]: JSON lacks %d", d.Name, i, val)
				}
			}
			if d.In(counters.Stats) && !hasStat(r.stats, d.StatName(i), val) {
				t.Errorf("%s[%d]: no stats line %s: %d", d.Name, i, d.StatName(i), val)
			}
			if d.In(counters.Log) && !hasLog(r.log, d.LogKey(i), val) {
				t.Errorf("%s[%d]: no log key %s=%d", d.Name, i, d.LogKey(i), val)
			}
		}
	}
}

// TestStatLinesOrder pins the order of `vhostd stats`, which follows the
// declaration order: a declaration Go registered late (see the comment on
// virtionet.Counters) would move its lines.
func TestStatLinesOrder(t *testing.T) {
	v := make([]uint64, counterRegistry.Slots())
	for i := range v {
		v[i] = 1
	}
	var got []string
	for _, s := range StatLines(&QueueCounters{V: v}, false) {
		got = append(got, s.Name)
	}
	want := []string{
		"tx_posted", "tx_packets", "tx_bytes", "tx_dropped",
		"tx_passthrough_packets", "tx_passthrough_bytes",
		"tx_resegmented_packets", "tx_resegmented_bytes",
		"tx_segmented_packets", "tx_segmented_bytes",
		"tx_csum_completed_packets", "tx_csum_completed_bytes",
		"tx_plain_packets", "tx_plain_bytes",
		"tx_gso_packets", "tx_gso_segments", "tx_gso_packets_noseg",
	}
	if !slices.Equal(got[:len(want)], want) {
		t.Errorf("stats start\n%v\nwant\n%v", got[:len(want)], want)
	}
	idx := func(name string) int { return slices.Index(got, name) }
	order := []string{"tx_gso_packets_noseg", "tx_decision_none", "tx_drop_desc_index", "tx_header_error_hdr_short",
		"tx_write_error_other", "tx_kicks", "tx_calls", "tx_calls_suppressed", "tx_completion_latency_p50_us",
		"tx_ring_broken", "rx_packets", "rx_bytes", "rx_dropped", "rx_gso_packets", "rx_buffers", "rx_buffers_per_packet",
		"rx_csum_completed", "rx_kicks", "rx_calls", "rx_calls_suppressed", "rx_stalls", "rx_read_errors",
		"rx_buffers_unused", "rx_drop_desc_index", "rx_batch_mean", "rx_ring_broken"}
	for i := 1; i < len(order); i++ {
		if a, b := idx(order[i-1]), idx(order[i]); a < 0 || b < 0 || a > b {
			t.Errorf("%s (line %d) should come before %s (line %d)", order[i-1], a, order[i], b)
		}
	}
	if last := got[len(got)-1]; last != "rx_ring_broken" {
		t.Errorf("last line %s, want rx_ring_broken", last)
	}
}
