package hostile_test

import (
	"runtime"
	"testing"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtqueue"
)

// BenchmarkLinkDelivery sends one 100-byte packet per op from guest a to
// guest b over a portlink.Link (the path deliverBatch guards against a
// receiver's memory faults) and waits until b's RX ring has it. allocs/op
// counts every goroutine, so it covers the device's workers too.
func BenchmarkLinkDelivery(b *testing.B) {
	ea, eb := portlink.NewLink()
	pa := newPort(b, portConfig{victimPeer: ea})
	pb := newPort(b, portConfig{victimPeer: eb})
	tx, rx := pa.queue(victimTx).Driver, pb.queue(victimRx).Driver
	out := [][]byte{pa.copyIn(victimTx, testpkt.VnetHdr(0, 0, 0, 0, 0)), pa.copyIn(victimTx, testpkt.UDP4(100, testpkt.CsumNone))}
	in := [][]byte{pb.buf(victimRx, 2048)}
	for i := 0; i < 64; i++ {
		if _, err := rx.Add(nil, in); err != nil {
			b.Fatal(err)
		}
	}
	pb.publishKick(victimRx)
	if !eventually(func() bool { return pb.sess.RingStates()[victimRx].Started }) {
		b.Fatal("receiver's RX ring did not start")
	}
	used := make([]virtqueue.UsedElem, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tx.Add(out, nil); err != nil {
			b.Fatal(err)
		}
		if tx.Publish() {
			pa.queue(victimTx).Kick()
		}
		for rx.UsedIdx() == rx.LastUsed() {
			runtime.Gosched()
		}
		for n := rx.Reap(used); n > 0; n-- {
			rx.Add(nil, in)
		}
		rx.Publish()
		for tx.UsedIdx() == tx.LastUsed() {
			runtime.Gosched()
		}
		tx.Reap(used)
	}
	b.StopTimer()
	if pb.stats(0).Load(virtionet.CtrRxPackets) < uint64(b.N) {
		b.Fatalf("receiver got %d of %d packets", pb.stats(0).Load(virtionet.CtrRxPackets), b.N)
	}
}
