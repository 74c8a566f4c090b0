package virtionet_test

import (
	"testing"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/portlink"
)

// frameFromTo is a UDP frame with the given MACs.
func frameFromTo(dst, src byte, size int) []byte {
	f := testpkt.UDP4(size, testpkt.CsumNone)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, dst})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, src})
	if dst == 0xff {
		copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	return f
}

func TestSwitchLearnsAndFloods(t *testing.T) {
	sw := portlink.NewSwitch(3)
	rigs := make([]*rig, 3)
	bufs := make([][][]byte, 3)
	for i := range rigs {
		rigs[i] = newPeerRig(t, sw.Port(i), rigOpts{})
		bufs[i] = rigs[i].postRx(16, 2048)
		r := rigs[i]
		eventually(t, "rx ring start", func() bool { return ringStarted(r, 0) })
	}
	got := func(i int) uint64 { return rigs[i].stats().Load(virtionet.CtrRxPackets) }
	hdr := testpkt.VnetHdr(0, 0, 0, 0, 0)

	// A (MAC ..:01 on port 0) broadcasts: B and C get it.
	rigs[0].sendTx(hdr, frameFromTo(0xff, 1, 80))
	eventually(t, "flood", func() bool { return got(1) == 1 && got(2) == 1 })
	// B (..:02) answers A: only A gets it (A's MAC was learned).
	rigs[1].sendTx(hdr, frameFromTo(1, 2, 90))
	eventually(t, "unicast to A", func() bool { return got(0) == 1 })
	// A to B: only B (learned from B's answer).
	rigs[0].sendTx(hdr, frameFromTo(2, 1, 100))
	eventually(t, "unicast to B", func() bool { return got(1) == 2 })
	// A to an unknown MAC: flooded to B and C.
	rigs[0].sendTx(hdr, frameFromTo(9, 1, 110))
	eventually(t, "unknown flooded", func() bool { return got(1) == 3 && got(2) == 2 })
	for i := range rigs {
		rigs[i].reap(rigs[i].tx, 0)
	}
	if got(0) != 1 || got(2) != 2 {
		t.Errorf("rx counts %d %d %d", got(0), got(1), got(2))
	}
	if sw.Floods.Load() != 2 {
		t.Errorf("floods %d", sw.Floods.Load())
	}
}
