package virtionet_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// linkedRigs cross-connects two ports; b acks featuresB (0: all offered).
func linkedRigs(t *testing.T, featuresB uint64) (a, b *rig) {
	ea, eb := portlink.NewLink()
	a = newPeerRig(t, ea, rigOpts{})
	b = newPeerRig(t, eb, rigOpts{features: featuresB})
	return a, b
}

// received reassembles the packets b got from its used entries.
func receivedPackets(r *rig, bufs [][]byte, n int) [][]byte {
	r.t.Helper()
	used := r.reap(r.rx, n)
	var out [][]byte
	for i := 0; i < len(used); {
		first := bufs[used[i].ID][:used[i].Len]
		nb := int(binary.LittleEndian.Uint16(first[10:12]))
		pkt := append([]byte(nil), first...)
		for j := 1; j < nb; j++ {
			u := used[i+j]
			pkt = append(pkt, bufs[u.ID][:u.Len]...)
		}
		out = append(out, pkt)
		i += nb
	}
	return out
}

func TestLinkSuperPacketCrossesWhole(t *testing.T) {
	a, b := linkedRigs(t, 0)
	bufs := b.postRx(64, 4096)
	eventually(t, "rx ring start", func() bool { return ringStarted(b, 0) })
	frame := testpkt.TCP4Super(20000)
	hdr := testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, 1448, 34, 16)
	a.sendTx(hdr, frame[:54], frame[54:])
	a.reap(a.tx, 1)
	eventually(t, "delivery", func() bool { return b.stats().Load(virtionet.CtrRxPackets) == 1 })
	nb := int(b.stats().Load(virtionet.CtrRxBuffers))
	pkts := receivedPackets(b, bufs, nb)
	if len(pkts) != 1 {
		t.Fatalf("got %d packets", len(pkts))
	}
	got := pkts[0]
	if got[1] != vnet.GSOTCPv4 || binary.LittleEndian.Uint16(got[4:6]) != 1448 || got[0]&vnet.FlagNeedsCsum == 0 {
		t.Errorf("header % x lost the GSO metadata", got[:12])
	}
	if !bytes.Equal(got[12:], frame) {
		t.Error("frame changed on the way")
	}
	if a.stats().Load(virtionet.CtrTxPackets.At(int(virtionet.PathPassthrough))) != 1 || b.stats().Load(virtionet.CtrRxGSOPackets) != 1 {
		t.Error("counters do not show a super-packet crossing whole")
	}
}

func TestLinkSegmentsForReceiverWithoutTSO(t *testing.T) {
	offer, _ := virtionet.Offer(virtionet.BackendOffloads{TxUSO: true}, virtionet.Toggles{})
	a, b := linkedRigs(t, uint64(offer&^(vnet.NetGuestTSO4|vnet.NetGuestTSO6|vnet.NetGuestECN)))
	bufs := b.postRx(64, 2048)
	eventually(t, "rx ring start", func() bool { return ringStarted(b, 0) })
	payload := 5*1448 + 10
	frame := testpkt.TCP4Super(payload)
	a.sendTx(testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, 1448, 34, 16), frame)
	deadline := time.Now().Add(3 * time.Second)
	for b.stats().Load(virtionet.CtrRxPackets) != 6 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := b.stats().Load(virtionet.CtrRxPackets); n != 6 {
		for d := virtionet.Drop(0); int(d) < virtionet.NumDrops; d++ {
			if c := b.stats().Load(virtionet.CtrRxDrops.At(int(d))); c != 0 {
				t.Logf("rx drop %v: %d", d, c)
			}
		}
		t.Fatalf("receiver got %d packets, want 6 segments (acked %v)", n, vnet.Feature(b.dev.Acked()))
	}
	pkts := receivedPackets(b, bufs, 6)
	total := 0
	for i, p := range pkts {
		if p[1] != vnet.GSONone {
			t.Errorf("segment %d still has gso_type %d", i, p[1])
		}
		pk := gopacket.NewPacket(p[12:], layers.LayerTypeEthernet, gopacket.Default)
		tcp, _ := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil {
			t.Fatalf("segment %d does not decode", i)
		}
		total += len(tcp.Payload)
	}
	if total != payload {
		t.Errorf("segments carry %d bytes, want %d", total, payload)
	}
	if b.stats().Load(virtionet.CtrRxSegmented) != 1 || b.stats().Load(virtionet.CtrRxSegments) != 6 {
		t.Errorf("rx_segmented %d segments %d", b.stats().Load(virtionet.CtrRxSegmented), b.stats().Load(virtionet.CtrRxSegments))
	}
}

func TestLinkDropsAfterWaitWhenReceiverHasNoBuffers(t *testing.T) {
	old := virtionet.LinkWait
	virtionet.LinkWait = 20 * time.Millisecond
	defer func() { virtionet.LinkWait = old }()
	a, b := linkedRigs(t, 0)
	b.rx.Kick() // start the RX ring with no buffers posted (QEMU's kick fd starts signalled)
	eventually(t, "rx ring start", func() bool { return ringStarted(b, 0) })
	a.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone))
	a.reap(a.tx, 1)
	eventually(t, "drop", func() bool { return b.stats().Load(virtionet.CtrRxDrops.At(int(virtionet.DropRxRingFull))) == 1 })
	// Buffers posted during the wait are used: post, then send.
	bufs := b.postRx(2, 2048)
	a.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(120, testpkt.CsumNone))
	pkts := receivedPackets(b, bufs, 1)
	if len(pkts[0]) != 12+120 {
		t.Errorf("got %d bytes", len(pkts[0]))
	}
}

func ringStarted(r *rig, i int) bool {
	for _, rs := range r.sess.RingStates() {
		if rs.Index == i {
			return rs.Started
		}
	}
	return false
}

func TestLinkWaitIsPerBatchNotPerPacket(t *testing.T) {
	old := virtionet.LinkWait
	virtionet.LinkWait = 50 * time.Millisecond
	defer func() { virtionet.LinkWait = old }()
	a, b := linkedRigs(t, 0)
	b.rx.Kick()
	eventually(t, "rx ring start", func() bool { return ringStarted(b, 0) })
	// 20 packets in one batch toward a guest with no buffers: one wait, not 20.
	for i := 0; i < 20; i++ {
		hdr, frame := a.copyIn(testpkt.VnetHdr(0, 0, 0, 0, 0)), a.copyIn(testpkt.UDP4(100, testpkt.CsumNone))
		if _, err := a.tx.Ring.Add([][]byte{hdr, frame}, nil); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	a.publishKick(a.tx)
	a.reap(a.tx, 20)
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("20 packets toward a full ring took %v: the wait is not bounded per batch", el)
	}
	eventually(t, "drops", func() bool { return b.stats().Load(virtionet.CtrRxDrops.At(int(virtionet.DropRxRingFull))) == 20 })
}
