package metrics_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/backend/backendtest"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/internal/testrig"
	"github.com/vhostd/vhostd/virtionet"
)

func TestCollectorIsPromlintClean(t *testing.T) {
	r := testrig.New(t, "lint", backend.NewNull(backend.NullConfig{Caps: testrig.CapsLow}), gso.PolicyAuto)
	pkts := []testrig.Packet{r.StagePacket(testrig.HdrTSO4, testrig.TSO4_30K), r.StagePacket(testrig.HdrBadGSO, testrig.TSO4_8K)}
	if err := r.Pump(10, pkts, func(i int) int { return i % 2 }); err != nil {
		t.Fatal(err)
	}
	// client_golang's testutil.CollectAndLint pulls a module this repo does
	// not vendor; promlint itself is what it runs.
	c := metrics.NewCollector(r.Port("null"))
	one := prometheus.NewPedanticRegistry()
	one.MustRegister(c)
	mfs, err := one.Gather()
	if err != nil {
		t.Fatalf("pedantic registry: %v", err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// The whole registry as the admin server builds it, two ports included.
	r2 := testrig.New(t, "lint2", backend.NewNull(backend.NullConfig{}), gso.PolicyDefer)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c, metrics.NewCollector(r2.Port("null")),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err = reg.Gather()
	if err != nil {
		t.Fatalf("pedantic registry refused the collectors: %v", err)
	}
	problems, err = promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint (registry): %s: %s", p.Metric, p.Text)
	}
}

// scrape fetches and parses /metrics.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// sumOf adds the values of family name whose labels include want.
func sumOf(mfs map[string]*dto.MetricFamily, name string, want map[string]string) uint64 {
	mf := mfs[name]
	if mf == nil {
		return 0
	}
	var total float64
	for _, m := range mf.Metric {
		if !hasLabels(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return uint64(total)
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, lp := range m.Label {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func lbl(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// txAccount is the TX accounting of one port in one scrape.
type txAccount struct {
	posted, written, dropped uint64
	paths                    map[string]uint64
}

func accountOf(mfs map[string]*dto.MetricFamily, port string) txAccount {
	a := txAccount{paths: map[string]uint64{}}
	a.posted = sumOf(mfs, "vhostd_tx_posted_packets_total", lbl("port", port))
	for p := 0; p < virtionet.NumTxPaths; p++ {
		name := virtionet.TxPath(p).String()
		a.paths[name] = sumOf(mfs, "vhostd_tx_packets_total", lbl("port", port, "path", name))
		a.written += a.paths[name]
	}
	a.dropped = sumOf(mfs, "vhostd_drops_total", lbl("port", port, "direction", "tx"))
	return a
}

// trafficMix is a list of staged packets and how often each is sent per
// round of the mix.
type trafficMix struct {
	pkts   []testrig.Packet
	weight []int
	order  []int // packet index per slot of one round
}

func newMix(pkts []testrig.Packet, weight []int) *trafficMix {
	m := &trafficMix{pkts: pkts, weight: weight}
	for i, w := range weight {
		for k := 0; k < w; k++ {
			m.order = append(m.order, i)
		}
	}
	return m
}

func (m *trafficMix) pick(i int) int { return m.order[i%len(m.order)] }

// sent returns how many of packet k go out in n packets.
func (m *trafficMix) sent(n, k int) uint64 {
	var c uint64
	for i := 0; i < n; i++ {
		if m.pick(i) == k {
			c++
		}
	}
	return c
}

func TestScrapeWhileTrafficRunsAccountsEveryPacket(t *testing.T) {
	const n = 20000
	// Port a: every offload but TSO_ECN, gso_max_size 16384.
	ra := testrig.New(t, "a", backend.NewNull(backend.NullConfig{Caps: testrig.CapsLow}), gso.PolicyAuto)
	const (
		aPass = iota
		aReseg
		aSegECN
		aPlain
		aPlainCsum
		aSmallGSO
		aBadHdr
	)
	mixA := newMix([]testrig.Packet{
		aPass:      ra.StagePacket(testrig.HdrTSO4, testrig.TSO4_8K),
		aReseg:     ra.StagePacket(testrig.HdrTSO4, testrig.TSO4_30K),
		aSegECN:    ra.StagePacket(testrig.HdrTSO4ECN, testrig.TSO4_8K),
		aPlain:     ra.StagePacket(testrig.HdrPlain, testrig.UDPSmall),
		aPlainCsum: ra.StagePacket(testrig.HdrUDPCsum, testrig.UDPPartial),
		aSmallGSO:  ra.StagePacket(testrig.HdrTSO4, testrig.SmallTSO4),
		aBadHdr:    ra.StagePacket(testrig.HdrBadGSO, testrig.TSO4_8K),
	}, []int{3, 2, 1, 5, 3, 1, 1})
	// Port b: no offloads at all.
	rb := testrig.New(t, "b", backend.NewNull(backend.NullConfig{Caps: testrig.CapsNone}), gso.PolicyAuto)
	const (
		bCsum = iota
		bSeg
		bPlain
		bSmallGSO
		bBadHdr
	)
	mixB := newMix([]testrig.Packet{
		bCsum:     rb.StagePacket(testrig.HdrUDPCsum, testrig.UDPPartial),
		bSeg:      rb.StagePacket(testrig.HdrTSO4, testrig.TSO4_8K),
		bPlain:    rb.StagePacket(testrig.HdrPlain, testrig.UDPSmall),
		bSmallGSO: rb.StagePacket(testrig.HdrTSO4, testrig.SmallTSO4),
		bBadHdr:   rb.StagePacket(testrig.HdrBadGSO, testrig.TSO4_8K),
	}, []int{3, 2, 4, 1, 1})

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(ra.Port("null")), metrics.NewCollector(rb.Port("null")))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	errs := make(chan error, 2)
	go func() { errs <- ra.Pump(n, mixA.pkts, mixA.pick) }()
	go func() { errs <- rb.Pump(n, mixB.pkts, mixB.pick) }()

	prev := map[string]txAccount{}
	scrapes, midTraffic := 0, 0
	running := 2
	for running > 0 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
			running--
			continue
		default:
		}
		mfs := scrape(t, srv.URL)
		scrapes++
		for _, port := range []string{"a", "b"} {
			a := accountOf(mfs, port)
			if a.written+a.dropped > a.posted {
				t.Errorf("scrape %d port %s: written %d + dropped %d > posted %d", scrapes, port, a.written, a.dropped, a.posted)
			}
			if p, ok := prev[port]; ok {
				if a.posted < p.posted || a.dropped < p.dropped {
					t.Errorf("port %s: counters went backwards: %+v then %+v", port, p, a)
				}
				for path, v := range a.paths {
					if v < p.paths[path] {
						t.Errorf("port %s path %s went backwards: %d then %d", port, path, p.paths[path], v)
					}
				}
			}
			if a.posted > 0 && a.posted < n {
				midTraffic++
			}
			prev[port] = a
		}
	}
	t.Logf("%d scrapes, %d of them (per port) while traffic ran", scrapes, midTraffic)
	if midTraffic == 0 {
		t.Error("no scrape saw the counters mid-traffic")
	}

	// Workers fold their counters at the end of each batch; the pump has
	// reaped every used entry, which is published after the fold... except
	// for the fold itself, which follows the Push. Wait for it.
	mfs := waitAccounted(t, srv.URL, n)
	a := accountOf(mfs, "a")
	wantA := map[string]uint64{
		"passthrough":    mixA.sent(n, aPass),
		"resegmented":    mixA.sent(n, aReseg),
		"segmented":      mixA.sent(n, aSegECN),
		"csum_completed": 0,
		"plain":          mixA.sent(n, aPlain) + mixA.sent(n, aPlainCsum) + mixA.sent(n, aSmallGSO),
	}
	for path, want := range wantA {
		if a.paths[path] != want {
			t.Errorf("port a path %s: %d, want %d", path, a.paths[path], want)
		}
	}
	if a.dropped != mixA.sent(n, aBadHdr) {
		t.Errorf("port a dropped %d, want %d", a.dropped, mixA.sent(n, aBadHdr))
	}
	if got := sumOf(mfs, "vhostd_drops_total", lbl("port", "a", "direction", "tx", "reason", "hdr_invalid")); got != a.dropped {
		t.Errorf("port a hdr_invalid drops %d, want %d", got, a.dropped)
	}
	if got := sumOf(mfs, "vhostd_tx_header_errors_total", lbl("port", "a", "reason", "gso_size_zero")); got != a.dropped {
		t.Errorf("port a gso_size_zero header errors %d, want %d", got, a.dropped)
	}
	// 30000 bytes of payload at MSS 1448 under gso_max_size 16384: 11
	// segments fit per super-packet, so 2 super-packets; 8000 bytes are 6 MSS
	// segments.
	wantSegs := 2*mixA.sent(n, aReseg) + 6*mixA.sent(n, aSegECN)
	checkEq(t, mfs, "vhostd_tx_gso_segments_total", lbl("port", "a"), wantSegs)
	checkEq(t, mfs, "vhostd_tx_gso_packets_total", lbl("port", "a"),
		mixA.sent(n, aPass)+mixA.sent(n, aReseg)+mixA.sent(n, aSegECN)+mixA.sent(n, aSmallGSO))
	checkEq(t, mfs, "vhostd_tx_gso_packets_noseg_total", lbl("port", "a"), mixA.sent(n, aSmallGSO))
	checkEq(t, mfs, "vhostd_tx_decisions_total", lbl("port", "a", "reason", "gso_max_size"), mixA.sent(n, aReseg))
	checkEq(t, mfs, "vhostd_tx_decisions_total", lbl("port", "a", "reason", "no_tso_ecn"), mixA.sent(n, aSegECN))
	checkEq(t, mfs, "vhostd_tx_decisions_total", lbl("port", "a", "reason", "none"), mixA.sent(n, aPass))
	checkEq(t, mfs, "vhostd_tx_bytes_total", lbl("port", "a", "path", "resegmented"), mixA.sent(n, aReseg)*uint64(len(testrig.TSO4_30K)))
	checkEq(t, mfs, "vhostd_tx_completion_latency_seconds", lbl("port", "a"), n)

	b := accountOf(mfs, "b")
	wantB := map[string]uint64{
		"passthrough":    0,
		"resegmented":    0,
		"segmented":      mixB.sent(n, bSeg),
		"csum_completed": mixB.sent(n, bCsum) + mixB.sent(n, bSmallGSO),
		"plain":          mixB.sent(n, bPlain),
	}
	for path, want := range wantB {
		if b.paths[path] != want {
			t.Errorf("port b path %s: %d, want %d", path, b.paths[path], want)
		}
	}
	if b.dropped != mixB.sent(n, bBadHdr) {
		t.Errorf("port b dropped %d, want %d", b.dropped, mixB.sent(n, bBadHdr))
	}
	// Without checksum offload a backend has no GSO either
	// (harmonize_features), and Decide reports the checksum first.
	checkEq(t, mfs, "vhostd_tx_decisions_total", lbl("port", "b", "reason", "no_csum"),
		mixB.sent(n, bCsum)+mixB.sent(n, bSmallGSO)+mixB.sent(n, bSeg))
	checkEq(t, mfs, "vhostd_vhost_user_connected", lbl("port", "b"), 1)
	checkEq(t, mfs, "vhostd_port_info", lbl("port", "a", "policy", "auto", "gso_max_size", "16384", "vnet_hdr_len", "12"), 1)
	checkEq(t, mfs, "vhostd_gso_policy", lbl("port", "b", "policy", "auto"), 1)
	checkEq(t, mfs, "vhostd_gso_policy", lbl("port", "b", "policy", "software"), 0)
	checkEq(t, mfs, "vhostd_backend_gso_max_size_bytes", lbl("port", "a", "queue", "0"), 16384)
}

func checkEq(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string, want uint64) {
	t.Helper()
	if got := sumOf(mfs, name, labels); got != want {
		t.Errorf("%s%v = %d, want %d", name, labels, got, want)
	}
}

// waitAccounted scrapes until both ports account for n packets (the
// worker folds its batch counters just after publishing the used entries).
func waitAccounted(t *testing.T, url string, n uint64) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mfs := scrape(t, url)
		done := true
		for _, port := range []string{"a", "b"} {
			a := accountOf(mfs, port)
			if a.posted != n || a.written+a.dropped != n {
				done = false
				if time.Now().After(deadline) {
					t.Fatalf("port %s: posted %d, written %d + dropped %d; want all %d accounted", port, a.posted, a.written, a.dropped, n)
				}
			}
		}
		if done {
			return mfs
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPolicySwitchMidRunLosesNothing(t *testing.T) {
	const n = 4000
	null := backend.NewNull(backend.NullConfig{})
	r := testrig.New(t, "p", null, gso.PolicyAuto)
	pkts := []testrig.Packet{r.StagePacket(testrig.HdrTSO4, testrig.TSO4_8K)}
	st := r.Dev.QueuePairs()[0].Stats()

	errc := make(chan error, 1)
	go func() { errc <- r.Pump(n, pkts, func(int) int { return 0 }) }()
	eventually(t, "a quarter of the traffic", func() bool { return st.Load(virtionet.CtrTxPosted) >= n/4 })
	r.Dev.SetPolicy(gso.PolicySoftware)
	switchedAt := st.Load(virtionet.CtrTxPosted)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if switchedAt >= n {
		t.Fatalf("traffic ended (%d packets) before the switch could happen mid-run", switchedAt)
	}
	eventually(t, "all packets accounted", func() bool { return st.TxWritten()+st.TxDropTotal() == n })

	c := metrics.SnapshotPort(r.Port("null")).QueuePairs[0].Counters
	pass, seg := c.Labelled(virtionet.CtrTxPackets)["passthrough"], c.Labelled(virtionet.CtrTxPackets)["segmented"]
	if pass == 0 || seg == 0 {
		t.Fatalf("passthrough %d, segmented %d: the switch did not move the path counters", pass, seg)
	}
	if pass+seg != n || c.TxDropped() != 0 || c.Get(virtionet.CtrTxPosted) != n {
		t.Errorf("posted %d: passthrough %d + segmented %d, %d dropped; want all %d delivered", c.Get(virtionet.CtrTxPosted), pass, seg, c.TxDropped(), n)
	}
	if pass < switchedAt-virtionetBatch || pass > switchedAt+virtionetBatch {
		t.Errorf("passthrough %d, but the switch came after %d posted packets", pass, switchedAt)
	}
	written, _ := null.Written()
	if written != pass+c.Get(virtionet.CtrTxSegments) || c.Get(virtionet.CtrTxSegments) != 6*seg {
		t.Errorf("backend got %d packets; passthrough %d + %d segments (6 per segmented packet: %d)", written, pass, c.Get(virtionet.CtrTxSegments), 6*seg)
	}
	if c.Labelled(virtionet.CtrTxDecisions)["policy"] != seg || c.Labelled(virtionet.CtrTxDecisions)["none"] != pass {
		t.Errorf("decisions %v: want policy=%d none=%d", c.Labelled(virtionet.CtrTxDecisions), seg, pass)
	}
}

// virtionetBatch is the default TX batch: a switch takes effect on the next
// packet, which may still be in the batch being processed.
const virtionetBatch = 64

func TestWriteErrorsCountedByErrno(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	pipe.SetWriteError(func(pkt []byte) error {
		if len(pkt) == 12+len(testrig.UDPPartial) {
			return syscall.EINVAL
		}
		return nil
	})
	r := testrig.New(t, "w", pipe, gso.PolicyAuto)
	pkts := []testrig.Packet{r.StagePacket(testrig.HdrPlain, testrig.UDPSmall), r.StagePacket(testrig.HdrUDPCsum, testrig.UDPPartial)}
	const n = 300
	if err := r.Pump(n, pkts, func(i int) int { return i % 3 / 2 }); err != nil { // 0,0,1,...
		t.Fatal(err)
	}
	st := r.Dev.QueuePairs()[0].Stats()
	eventually(t, "accounting", func() bool { return st.TxWritten()+st.TxDropTotal() == n })
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(r.Port("pipe")))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	checkEq(t, byName, "vhostd_tx_write_errors_total", lbl("errno", "EINVAL"), n/3)
	checkEq(t, byName, "vhostd_drops_total", lbl("direction", "tx", "reason", "backend_write"), n/3)
	checkEq(t, byName, "vhostd_tx_packets_total", lbl("path", "plain"), 2*n/3)
	if got := len(pipe.Written()); got != 2*n/3 {
		t.Errorf("pipe got %d packets", got)
	}
	var text strings.Builder
	if err := metrics.WriteStats(&text, metrics.Snapshot([]metrics.Port{r.Port("pipe")}), false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"w queue pair 0 statistics:\n",
		fmt.Sprintf("     tx_posted: %d\n", n),
		fmt.Sprintf("     tx_drop_backend_write: %d\n", n/3),
		fmt.Sprintf("     tx_write_error_einval: %d\n", n/3),
		fmt.Sprintf("     tx_plain_packets: %d\n", 2*n/3),
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("stats output lacks %q:\n%s", want, text.String())
		}
	}
	if strings.Contains(text.String(), "tx_drop_desc_index") {
		t.Error("zero drop reasons should be left out without --all")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}
