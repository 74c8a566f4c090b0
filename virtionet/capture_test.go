package virtionet_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/backend/backendtest"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

func TestCaptureRecordsVerdictsAndNeverBlocks(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{Offloads: vnet.OffloadCSUM, GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500})
	r := newRig(t, pipe, rigOpts{})
	// Two slots only: the third and later packets are skipped, not waited for.
	c := virtionet.NewCapture(virtionet.CaptureBoth, 0, 128, 2)
	r.dev.StartCapture(c)
	frame := testpkt.TCP4Super(3000)
	r.sendTx(testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, 1448, 34, 16), frame)
	r.sendTx(testpkt.VnetHdr(1, vnet.GSOTCPv4, 0, 34, 16), frame) // gso_size 0: dropped
	for i := 0; i < 5; i++ {
		r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(64, testpkt.CsumNone))
	}
	r.reap(r.tx, 7)
	var got []*virtionet.CapturedPacket
	timeout := time.After(5 * time.Second)
	for len(got) < 2 {
		select {
		case p := <-c.Packets():
			got = append(got, p)
		case <-timeout:
			t.Fatalf("captured %d packets", len(got))
		}
	}
	p := got[0]
	if p.Dir != virtionet.CaptureTX || p.Path != virtionet.PathSegmented || p.Reason != gso.ReasonNoTSO4 || p.Decision != gso.DecisionSegment {
		t.Errorf("first packet: dir %v path %v decision %v reason %v", p.Dir, p.Path, p.Decision, p.Reason)
	}
	if p.OrigLen != len(frame) || len(p.Data) != 128 || !bytes.Equal(p.Data, frame[:128]) {
		t.Errorf("orig %d data %d", p.OrigLen, len(p.Data))
	}
	if got[1].Dropped != virtionet.DropHdrInvalid {
		t.Errorf("second packet dropped=%v", got[1].Dropped)
	}
	eventually(t, "skips", func() bool { return c.Skipped.Load() == 5 })
	r.dev.StopCapture()
	select {
	case <-c.Done():
	default:
		t.Error("StopCapture did not end the capture")
	}
}
