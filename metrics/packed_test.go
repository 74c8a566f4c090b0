package metrics_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/internal/testrig"
	"github.com/vhostd/vhostd/virtionet"
)

// TestStatusShowsPackedRings: a port whose front-end negotiated packed rings
// and IN_ORDER shows them in status (the negotiated features, each ring's
// layout) and keeps exact TX accounting.
func TestStatusShowsPackedRings(t *testing.T) {
	r := testrig.NewWith(t, "packed", backend.NewNull(backend.NullConfig{Caps: testrig.CapsLow}), gso.PolicyAuto,
		testrig.Options{Packed: true, InOrder: true})
	pkts := []testrig.Packet{r.StagePacket(testrig.HdrTSO4, testrig.TSO4_30K), r.StagePacket(testrig.HdrBadGSO, testrig.TSO4_8K)}
	if err := r.Pump(300, pkts, func(i int) int { return i % 2 }); err != nil { // more than a ring of 256
		t.Fatal(err)
	}
	ps := metrics.SnapshotPort(r.Port("null"))
	neg := strings.Join(ps.Negotiated.Names, "|")
	if !strings.Contains(neg, "RING_PACKED") || !strings.Contains(neg, "IN_ORDER") {
		t.Errorf("negotiated %s lacks RING_PACKED|IN_ORDER", neg)
	}
	layouts := []string{}
	for _, qp := range ps.QueuePairs {
		for _, rs := range qp.Rings {
			layouts = append(layouts, rs.Layout)
		}
	}
	if len(layouts) == 0 || slices.ContainsFunc(layouts, func(l string) bool { return l != "packed" }) {
		t.Errorf("ring layouts %v, want packed", layouts)
	}
	c := ps.Total()
	if c.Get(virtionet.CtrTxPosted) != 300 || c.Get(virtionet.CtrTxPosted) != c.TxWritten()+c.TxDropped() || c.TxDropped() != 150 {
		t.Errorf("posted %d written %d dropped %d", c.Get(virtionet.CtrTxPosted), c.TxWritten(), c.TxDropped())
	}
	var b bytes.Buffer
	if err := metrics.WriteStatus(&b, metrics.Status{Ports: []metrics.PortStatus{ps}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), ", packed") {
		t.Errorf("status text does not say the rings are packed:\n%s", b.String())
	}
}
