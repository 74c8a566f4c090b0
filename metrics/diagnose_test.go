package metrics_test

import (
	"math"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/internal/testrig"
	"github.com/vhostd/vhostd/virtionet"
)

// craftedPort is a tap port with gso_max_size 16384 and no traffic yet.
func craftedPort() metrics.PortStatus {
	yes := true
	return metrics.PortStatus{
		Name: "vm0", BackendKind: "tap", BackendName: "vm0", Connected: &yes, Policy: "auto", HdrLen: 12,
		Negotiated: metrics.FeatureSet{Bits: "0x1", Names: []string{"CSUM", "HOST_TSO4", "HOST_TSO6", "VERSION_1"}},
		QueuePairs: []metrics.QueuePairStatus{{
			Backend: metrics.BackendStatus{Offloads: []string{"csum", "tso4", "tso6", "tso_ecn", "ufo"}, GSOMaxSize: 16384, GSOMaxSegs: 65535, MTU: 1500},
			Counters: metrics.QueueCounters{
				TxLatency: latencyHist(nil),
			},
		}},
	}
}

// latencyHist builds a latency histogram with the datapath's bounds and
// counts[bound in seconds] observations in the bucket of that bound
// (math.Inf(1) for the last one).
func latencyHist(counts map[float64]uint64) metrics.Histogram {
	bounds := virtionet.LatencyBucketsSeconds()
	h := metrics.Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds)+1)}
	for b, n := range counts {
		i := len(bounds)
		for j, x := range bounds {
			if x >= b {
				i = j
				break
			}
		}
		h.Counts[i] += n
		h.Count += n
		if !math.IsInf(b, 1) {
			h.Sum += b * float64(n)
		}
	}
	return h
}

func findings(ps metrics.PortStatus, topic string) []metrics.Finding {
	var out []metrics.Finding
	for _, f := range metrics.Diagnose(ps) {
		if f.Topic == topic {
			out = append(out, f)
		}
	}
	return out
}

func wantFinding(t *testing.T, fs []metrics.Finding, sev string, parts ...string) {
	t.Helper()
	for _, f := range fs {
		if f.Severity != sev {
			continue
		}
		ok := true
		for _, p := range parts {
			if !strings.Contains(f.Message, p) {
				ok = false
			}
		}
		if ok {
			return
		}
	}
	t.Errorf("no %s finding containing %q in:\n%s", sev, parts, dump(fs))
}

func dump(fs []metrics.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  [" + f.Severity + "] " + f.Topic + ": " + f.Message + "\n")
	}
	return b.String()
}

func TestDiagnoseGSOMaxSizeOnTap(t *testing.T) {
	ps := craftedPort()
	c := &ps.QueuePairs[0].Counters
	c.Set(virtionet.CtrTxPosted, 1300)
	c.Set(virtionet.CtrTxGSOPackets, 1300)
	c.SetLabel(virtionet.CtrTxPackets, "passthrough", 66)
	c.SetLabel(virtionet.CtrTxPackets, "resegmented", 1234)
	c.SetLabel(virtionet.CtrTxBytes, "passthrough", 66*10000)
	c.SetLabel(virtionet.CtrTxBytes, "resegmented", 1234*65000)
	c.SetLabelled(virtionet.CtrTxDecisions, map[string]uint64{"none": 66, "gso_max_size": 1234})
	c.Set(virtionet.CtrTxSegments, 1234*5)
	fs := findings(ps, "segmentation")
	wantFinding(t, fs, metrics.SevWarning,
		"gso_max_size 16384 on tap vm0 is below the guest's 63 KB super-packets",
		"1234 of 1300 super-packets (95%) were split before reaching it",
		"1234 re-segmented into smaller super-packets, 0 cut to MSS",
		"ip link set dev vm0 gso_max_size 65536",
		"lower the guest's gso_max_size",
		"gso_max_size 16384) so it builds super-packets that fit")
	for _, f := range fs {
		if f.Severity == metrics.SevOK {
			t.Errorf("unexpected ok finding next to the warning: %s", f.Message)
		}
	}

	// The same limit forced with --gso-max-size: the advice names the flag.
	ps.LimitsFromFlags = true
	wantFinding(t, findings(ps, "segmentation"), metrics.SevWarning, "vhostd --gso-max-size 65536", "leave the flag out")
}

// TestDiagnoseNamesEgressDevice: a tap's limits come from the device the
// guest's packets leave through; the diagnosis names it and says how it was
// found, and the advice changes that device, not the tap.
func TestDiagnoseNamesEgressDevice(t *testing.T) {
	ps := craftedPort()
	ps.QueuePairs[0].Backend.LimitsFrom = "eth1 (bridge br0)"
	c := &ps.QueuePairs[0].Counters
	c.Set(virtionet.CtrTxPosted, 100)
	c.Set(virtionet.CtrTxGSOPackets, 100)
	c.SetLabel(virtionet.CtrTxPackets, "resegmented", 100)
	c.SetLabel(virtionet.CtrTxBytes, "resegmented", 100*65000)
	c.SetLabelled(virtionet.CtrTxDecisions, map[string]uint64{"gso_max_size": 100})
	wantFinding(t, findings(ps, "segmentation"), metrics.SevWarning,
		"gso_max_size 16384 on egress device eth1 (bridge br0) of tap vm0",
		"Raise it on eth1 (ip link set dev eth1 gso_max_size 65536; vhostd follows the change within seconds)",
		"--egress-dev")
	var b strings.Builder
	ps.QueuePairs = append(ps.QueuePairs, ps.QueuePairs[0])
	ps.QueuePairs[1].Index, ps.QueuePairs[1].Backend.Attached = 1, false
	ps.QueuePairs[0].Backend.Attached = true
	ps.MTU = &virtionet.MTUState{Requested: 9000, Detail: "MTU 9000 not supported by the backend: tap vm0: set MTU 9000: operation not permitted"}
	metrics.WriteStatus(&b, metrics.Status{Ports: []metrics.PortStatus{ps}})
	for _, want := range []string{
		"Limits from:       eth1 (bridge br0)",
		"Backend queue:     attached",
		"Backend queue:     detached (the guest has this pair disabled",
		`Guest MTU:           9000 REFUSED (QEMU reports "MTU not supported by the backend")`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestDiagnoseGSOMaxSegsAndMissingOffloads(t *testing.T) {
	ps := craftedPort()
	ps.BackendKind, ps.BackendName = "null", ""
	ps.QueuePairs[0].Backend.GSOMaxSegs = 16
	ps.QueuePairs[0].Backend.Offloads = []string{"csum", "tso4"}
	c := &ps.QueuePairs[0].Counters
	c.Set(virtionet.CtrTxPosted, 200)
	c.Set(virtionet.CtrTxGSOPackets, 200)
	c.SetLabel(virtionet.CtrTxPackets, "resegmented", 100)
	c.SetLabel(virtionet.CtrTxPackets, "segmented", 100)
	c.SetLabelled(virtionet.CtrTxDecisions, map[string]uint64{"gso_max_segs": 100, "no_tso6": 100})
	fs := findings(ps, "segmentation")
	wantFinding(t, fs, metrics.SevWarning, "gso_max_segs 16 on the null backend", "100 of 200 super-packets (50%)", "vhostd --gso-max-segs 65535", "gso_max_segs 16)")
	wantFinding(t, fs, metrics.SevWarning, "The null backend does not take TCP/IPv6 super-packets (offloads: csum|tso4, no tso6)", "100 of 200 super-packets (50%) were cut to MSS in vhostd", "ethtool -K <guest NIC> tso off")
}

func TestDiagnosePolicies(t *testing.T) {
	ps := craftedPort()
	ps.Policy = "software"
	c := &ps.QueuePairs[0].Counters
	c.Set(virtionet.CtrTxPosted, 50)
	c.Set(virtionet.CtrTxGSOPackets, 50)
	c.SetLabel(virtionet.CtrTxPackets, "segmented", 50)
	c.SetLabelled(virtionet.CtrTxDecisions, map[string]uint64{"policy": 50})
	wantFinding(t, findings(ps, "segmentation"), metrics.SevInfo, "Policy software", "50 of 50 super-packets", "vhostd policy --port vm0 auto")

	ps.Policy = "defer"
	c.SetLabel(virtionet.CtrTxPackets, "segmented", 0)
	c.SetLabel(virtionet.CtrTxPackets, "passthrough", 50)
	wantFinding(t, findings(ps, "segmentation"), metrics.SevInfo, "Policy defer", "the kernel segments what tap vm0 cannot take")
	wantFinding(t, findings(ps, "segmentation"), metrics.SevOK, "No super-packet was split before the backend: 50 of 50 passed whole")
}

func TestDiagnoseNoSuperPackets(t *testing.T) {
	ps := craftedPort()
	ps.Negotiated.Names = []string{"VERSION_1", "CSUM"}
	c := &ps.QueuePairs[0].Counters
	c.Set(virtionet.CtrTxPosted, 5000)
	c.SetLabel(virtionet.CtrTxPackets, "plain", 5000)
	wantFinding(t, findings(ps, "segmentation"), metrics.SevInfo, "no GSO super-packets (5000 packets)", "HOST_TSO4, HOST_TSO6 not negotiated")
}

func TestDiagnoseTxLatency(t *testing.T) {
	ps := craftedPort()
	c := &ps.QueuePairs[0].Counters
	// 96% fast, 4% beyond 2 ms: TSQ territory.
	c.TxLatency = latencyHist(map[float64]uint64{16e-6: 960, 4.096e-3: 40})
	fs := findings(ps, "tx_latency")
	wantFinding(t, fs, metrics.SevWarning,
		"high enough to throttle guest TCP", "p99 3.", "4.0% of 1000 packets waited more than 1.02 ms",
		"TCP Small Queues", "net.ipv4.tcp_limit_output_bytes", "pin it")

	c.TxLatency = latencyHist(map[float64]uint64{16e-6: 995, 2.048e-3: 5}) // 0.5% slow: fine
	wantFinding(t, findings(ps, "tx_latency"), metrics.SevOK, "below the ~1 ms at which TCP Small Queues throttles guest TCP")

	c.TxLatency = latencyHist(map[float64]uint64{16e-6: 10, math.Inf(1): 90})
	wantFinding(t, findings(ps, "tx_latency"), metrics.SevWarning, "p99 above 16.38 ms")

	c.TxLatency = latencyHist(map[float64]uint64{4.096e-3: 50}) // too few samples to judge
	if fs := findings(ps, "tx_latency"); len(fs) != 0 {
		t.Errorf("judged latency from 50 samples: %s", dump(fs))
	}
}

func TestDiagnoseDropsRingsAndConnection(t *testing.T) {
	ps := craftedPort()
	no := false
	ps.Connected = &no
	c := &ps.QueuePairs[0].Counters
	c.Set(virtionet.CtrTxPosted, 100)
	c.SetLabel(virtionet.CtrTxPackets, "plain", 90)
	c.SetLabelled(virtionet.CtrTxDrops, map[string]uint64{"hdr_invalid": 6, "backend_write": 4})
	c.SetLabelled(virtionet.CtrTxHdrErrors, map[string]uint64{"gso_size_zero": 6})
	c.SetLabelled(virtionet.CtrTxWriteErrno, map[string]uint64{"EINVAL": 4})
	c.Set(virtionet.CtrRxPackets, 10)
	c.SetLabelled(virtionet.CtrRxDrops, map[string]uint64{"rx_buffer_too_small": 3})
	c.RxBroken = true
	fs := metrics.Diagnose(ps)
	wantFinding(t, fs, metrics.SevWarning, "10 of 100 transmitted packets were dropped (10%): hdr_invalid 6, backend_write 4", "gso_size_zero 6", "EINVAL 4")
	wantFinding(t, fs, metrics.SevWarning, "3 received packets were dropped", "MRG_RXBUF")
	wantFinding(t, fs, metrics.SevError, "receive ring of queue pair 0 is broken")
	wantFinding(t, fs, metrics.SevInfo, "No vhost-user front-end is connected to port vm0")
	if fs[0].Severity != metrics.SevError {
		t.Errorf("findings not sorted by severity:\n%s", dump(fs))
	}
}

func TestDiagnoseIntervalSince(t *testing.T) {
	before := craftedPort()
	c := &before.QueuePairs[0].Counters
	c.Set(virtionet.CtrTxPosted, 1234)
	c.Set(virtionet.CtrTxGSOPackets, 1234)
	c.SetLabel(virtionet.CtrTxPackets, "resegmented", 1234)
	c.SetLabelled(virtionet.CtrTxDecisions, map[string]uint64{"gso_max_size": 1234})
	c.TxLatency = latencyHist(map[float64]uint64{4.096e-3: 500})

	after := craftedPort()
	a := &after.QueuePairs[0].Counters
	a.Set(virtionet.CtrTxPosted, 2234)
	a.Set(virtionet.CtrTxGSOPackets, 2234)
	a.SetLabel(virtionet.CtrTxPackets, "resegmented", 1234)
	a.SetLabel(virtionet.CtrTxPackets, "passthrough", 1000)
	a.SetLabelled(virtionet.CtrTxDecisions, map[string]uint64{"gso_max_size": 1234, "none": 1000})
	a.TxLatency = latencyHist(map[float64]uint64{4.096e-3: 500, 8e-6: 1000})

	if fs := findings(after, "segmentation"); len(fs) == 0 || fs[0].Severity != metrics.SevWarning {
		t.Errorf("cumulative counters should still warn:\n%s", dump(fs))
	}
	iv := after.Since(&before)
	got := iv.QueuePairs[0].Counters
	if got.Get(virtionet.CtrTxPosted) != 1000 || got.Labelled(virtionet.CtrTxPackets)["resegmented"] != 0 || got.Labelled(virtionet.CtrTxDecisions)["gso_max_size"] != 0 || got.TxLatency.Count != 1000 {
		t.Fatalf("interval counters wrong: %+v", got)
	}
	wantFinding(t, iv.Diagnosis, metrics.SevOK, "No super-packet was split before the backend: 1000 of 1000 passed whole")
	wantFinding(t, iv.Diagnosis, metrics.SevOK, "TX completion latency p99 8 µs")
}

func TestHistogramQuantile(t *testing.T) {
	h := metrics.Histogram{Bounds: []float64{1, 2, 4}, Counts: []uint64{0, 10, 0, 0}, Count: 10}
	if q, above := h.Quantile(0.5); q != 1.5 || above {
		t.Errorf("median of 10 in (1,2] = %v %v, want 1.5", q, above)
	}
	h = metrics.Histogram{Bounds: []float64{1, 2, 4}, Counts: []uint64{5, 0, 0, 5}, Count: 10}
	if q, above := h.Quantile(0.99); q != 4 || !above {
		t.Errorf("p99 in +Inf = %v %v, want 4 above", q, above)
	}
	if q, _ := (metrics.Histogram{}).Quantile(0.5); q != 0 {
		t.Errorf("empty histogram quantile %v", q)
	}
	if n := h.CountAbove(2); n != 5 {
		t.Errorf("CountAbove(2) = %d, want 5", n)
	}
}

// TestDiagnoseFromRealTraffic runs the gso_max_size failure mode through
// the datapath: a backend with gso_max_size 16384 and 30 KB super-packets.
func TestDiagnoseFromRealTraffic(t *testing.T) {
	r := testrig.New(t, "vm0", backend.NewNull(backend.NullConfig{Caps: testrig.CapsLow}), gso.PolicyAuto)
	pkts := []testrig.Packet{r.StagePacket(testrig.HdrTSO4, testrig.TSO4_30K), r.StagePacket(testrig.HdrTSO4, testrig.TSO4_8K)}
	if err := r.Pump(1000, pkts, func(i int) int { return min(i%4, 1) ^ 1 }); err != nil { // 1 of 4 small
		t.Fatal(err)
	}
	st := r.Dev.QueuePairs()[0].Stats()
	eventually(t, "accounting", func() bool { return st.TxWritten() == 1000 })
	p := r.Port("null")
	ps := metrics.SnapshotPort(p)
	wantFinding(t, ps.Diagnosis, metrics.SevWarning,
		"gso_max_size 16384 on the null backend is below the guest's 29 KB super-packets",
		"750 of 1000 super-packets (75%) were split", "750 re-segmented", "vhostd --gso-max-size 65536")
	var text strings.Builder
	if err := metrics.WriteStatus(&text, metrics.Status{Ports: []metrics.PortStatus{ps}}); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, want := range []string{
		"Port vm0 (null)\n",
		"  Front-end:           connected\n",
		"  GSO policy:          auto\n",
		"    Backend:           offloads csum|tso4|tso6|uso, gso_max_size 16384, gso_max_segs 65535, mtu 1500\n",
		"    TX ring:           vring 1, started, enabled, size 256",
		"    TX:                1000 posted: 250 passthrough, 750 resegmented, 0 segmented, 0 csum_completed, 0 plain, 0 dropped\n",
		"    TX reasons:        gso_max_size 750, none 250\n",
		"  Diagnosis\n    [warning] gso_max_size 16384 on the null backend",
		"HOST_TSO4",
		"    Polling:           TX window ",
		"calls coalesced\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status text lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if len([]rune(line)) > 100 && strings.HasPrefix(strings.TrimSpace(line), "[") {
			t.Errorf("diagnosis line longer than 100 columns: %q", line)
		}
	}
}
