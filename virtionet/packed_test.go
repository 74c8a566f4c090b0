package virtionet_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/backend/backendtest"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vhostd/vhostd/virtqueue"
)

// ringModes are the ring layouts the datapath runs over: split and packed
// (VIRTIO_F_RING_PACKED), each with and without VIRTIO_F_IN_ORDER.
var ringModes = []struct {
	name            string
	packed, inOrder bool
}{
	{"split", false, false},
	{"split-inorder", false, true},
	{"packed", true, false},
	{"packed-inorder", true, true},
}

// checkNegotiated fails unless the session, the device and the front-end
// agree on the ring layout and IN_ORDER.
func checkNegotiated(t *testing.T, r *rig, packed, inOrder bool) {
	t.Helper()
	acked := vnet.Feature(r.dev.Acked())
	if acked.Has(vnet.FeatureRingPacked) != packed || acked.Has(vnet.FeatureInOrder) != inOrder {
		t.Fatalf("acked %v, want RING_PACKED=%t IN_ORDER=%t", acked, packed, inOrder)
	}
	fp, _, fi := r.fe.Layout()
	if fp != packed || fi != inOrder {
		t.Fatalf("front-end rings packed=%t in_order=%t", fp, fi)
	}
	for _, rs := range r.sess.RingStates() {
		if rs.Packed != packed {
			t.Fatalf("session ring %d packed=%t", rs.Index, rs.Packed)
		}
	}
}

// TestRingModesTx: plain packets, a GSO super-packet passed whole and a bad
// header, over every ring layout, with exact accounting.
func TestRingModesTx(t *testing.T) {
	for _, m := range ringModes {
		t.Run(m.name, func(t *testing.T) {
			pipe := backendtest.NewPipe(backend.Capabilities{})
			r := newRig(t, pipe, rigOpts{packed: m.packed, inOrder: m.inOrder})
			checkNegotiated(t, r, m.packed, m.inOrder)
			frames := [][]byte{testpkt.UDP4(60, testpkt.CsumNone), testpkt.UDP4(1514, testpkt.CsumNone), testpkt.UDP4(300, testpkt.CsumPartial)}
			for _, f := range frames {
				r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), f[:20], f[20:])
			}
			super := testpkt.TCP4Super(30000)
			r.sendTx(testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, 1448, 34, 16), super[:54], super[54:])
			r.sendTx(testpkt.VnetHdr(1, vnet.GSOTCPv4, 0, 34, 16), super) // gso_size 0: a counted drop
			used := r.reap(r.tx, 5)
			for _, u := range used {
				if u.Len != 0 {
					t.Errorf("used %+v: TX writes nothing", u)
				}
			}
			got, ok := pipe.WaitWritten(4, 5e9)
			if !ok {
				t.Fatalf("backend got %d packets, want 4", len(got))
			}
			for i, f := range frames {
				if !bytes.Equal(got[i][12:], f) {
					t.Errorf("packet %d corrupted", i)
				}
			}
			if len(got[3]) != 12+len(super) || got[3][1] != vnet.GSOTCPv4 {
				t.Errorf("super-packet not passed whole: %d bytes, gso_type %d", len(got[3]), got[3][1])
			}
			st := r.stats()
			eventually(t, "accounting", func() bool { return st.Load(virtionet.CtrTxPosted) == 5 && st.TxDropTotal() == 1 })
			if st.Load(virtionet.CtrTxPosted) != st.TxWritten()+st.TxDropTotal() {
				t.Errorf("tx_posted %d != written %d + dropped %d", st.Load(virtionet.CtrTxPosted), st.TxWritten(), st.TxDropTotal())
			}
			if st.Load(virtionet.CtrTxPackets.At(int(virtionet.PathPassthrough))) != 1 {
				t.Error("super-packet not counted as passthrough")
			}
		})
	}
}

// TestTxInOrderOneUsedEntryPerBatch: with IN_ORDER a TX batch goes back as
// a single used entry (split) or used descriptor (packed), carrying the id
// of the batch's last buffer; the driver expands it to every buffer.
func TestTxInOrderOneUsedEntryPerBatch(t *testing.T) {
	for _, m := range ringModes {
		if !m.inOrder {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			pipe := backendtest.NewPipe(backend.Capabilities{})
			r := newRig(t, pipe, rigOpts{packed: m.packed, inOrder: true})
			checkNegotiated(t, r, m.packed, true)
			const n = 8
			hdr := r.copyIn(testpkt.VnetHdr(0, 0, 0, 0, 0))
			var ids []uint16
			for i := 0; i < n; i++ {
				id, err := r.tx.Ring.Add([][]byte{hdr, r.copyIn(testpkt.UDP4(100+i, testpkt.CsumNone))}, nil)
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			r.publishKick(r.tx) // one publish: the worker pops all n at once
			if _, ok := pipe.WaitWritten(n, 5e9); !ok {
				t.Fatal("packets not written")
			}
			eventually(t, "used", func() bool {
				if m.packed {
					_, flags := r.tx.Packed.Desc(0).ID, r.tx.Packed.Desc(0).Flags
					return flags&virtqueue.DescFUsed != 0
				}
				return r.tx.Driver.UsedIdx() == n
			})
			if m.packed {
				// One used descriptor at the batch's first position, with
				// the last buffer's id; the others still show the driver's
				// available descriptors.
				d := r.tx.Packed.Desc(0)
				if d.ID != ids[n-1] || d.Flags&(virtqueue.DescFAvail|virtqueue.DescFUsed) != virtqueue.UsedBits(true) {
					t.Errorf("used descriptor %+v, want id %d used under wrap 1", d, ids[n-1])
				}
				for pos := uint16(2); pos < 2*n; pos += 2 {
					if d := r.tx.Packed.Desc(pos); d.Flags&virtqueue.DescFUsed != 0 {
						t.Errorf("descriptor %d was written as used (%+v): the batch took more than one used descriptor", pos, d)
					}
				}
			} else {
				_, _, usedAddr := r.tx.Ring.RingAddrs()
				ring := r.fe.Mem.Regions[0].B[usedAddr:]
				if id := binary.LittleEndian.Uint32(ring[4:]); id != uint32(ids[n-1]) {
					t.Errorf("used.ring[0].id = %d, want the last head %d", id, ids[n-1])
				}
			}
			used := r.reap(r.tx, n)
			for i, u := range used {
				if u.ID != uint32(ids[i]) || u.Len != 0 {
					t.Errorf("reaped %d: %+v, want id %d len 0", i, u, ids[i])
				}
			}
			if st := r.stats(); st.Load(virtionet.CtrTxPosted) != n || st.TxWritten() != n {
				t.Errorf("posted %d written %d", st.Load(virtionet.CtrTxPosted), st.TxWritten())
			}
		})
	}
}

// TestRingModesRx: a packet spread over mergeable buffers, then
// backpressure while the guest has no buffers, over every ring layout.
func TestRingModesRx(t *testing.T) {
	for _, m := range ringModes {
		t.Run(m.name, func(t *testing.T) {
			pipe := backendtest.NewPipe(backend.Capabilities{})
			r := newRig(t, pipe, rigOpts{packed: m.packed, inOrder: m.inOrder})
			bufs := r.postRx(4, 1024)
			frame := testpkt.UDP4(3000, testpkt.CsumNone)
			if err := pipe.Inject(append(make([]byte, 12), frame...)); err != nil {
				t.Fatal(err)
			}
			used := r.reap(r.rx, 3)
			var got []byte
			for i, u := range used {
				got = append(got, bufs[u.ID][:u.Len]...)
				if u.ID != uint32(i) {
					t.Errorf("buffer %d: id %d, want them in order", i, u.ID)
				}
			}
			if n := binary.LittleEndian.Uint16(got[10:12]); n != 3 || !bytes.Equal(got[12:], frame) {
				t.Errorf("num_buffers %d, frame intact %t", n, bytes.Equal(got[12:], frame))
			}
			// One buffer left: the next two packets wait (no drop).
			for i := 0; i < 3; i++ {
				pipe.Inject(append(make([]byte, 12), testpkt.UDP4(500+i, testpkt.CsumNone)...))
			}
			r.reap(r.rx, 1)
			st := r.stats()
			eventually(t, "stall", func() bool { return st.Load(virtionet.CtrRxStalls) >= 1 })
			more := r.postRx(4, 1024)
			for i, u := range r.reap(r.rx, 2) {
				if int(u.Len) != 12+501+i {
					t.Errorf("held packet %d: len %d", i, u.Len)
				}
			}
			_ = more
			if st.RxDropTotal() != 0 {
				t.Errorf("%d RX drops", st.RxDropTotal())
			}
		})
	}
}

// TestPackedOddSizeManyLapsWithRestarts runs a packed ring of 7 entries
// (not a power of two) through many laps of both wrap counters, with a
// memory table change and a virtio-user style reconfiguration (GET/SET
// VRING_BASE in packed form) in between: the state crosses every restart.
func TestPackedOddSizeManyLapsWithRestarts(t *testing.T) {
	for _, inOrder := range []bool{false, true} {
		name := "packed"
		if inOrder {
			name = "packed-inorder"
		}
		t.Run(name, func(t *testing.T) {
			pipe := backendtest.NewPipe(backend.Capabilities{})
			r := newRig(t, pipe, rigOpts{packed: true, inOrder: inOrder, queueSize: 7, order: frontend.OrderVirtioUser})
			checkNegotiated(t, r, true, inOrder)
			sent := 0
			round := func(k int) {
				t.Helper()
				for i := 0; i < k; i++ {
					r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(64+sent%50, testpkt.CsumNone)) // 2 descriptors each
					r.reap(r.tx, 1)
					sent++
				}
				got, ok := pipe.WaitWritten(sent, 5e9)
				if !ok {
					t.Fatalf("backend has %d of %d packets", len(got), sent)
				}
				// RX too: one buffer, one packet.
				bufs := r.postRx(1, 256)
				pipe.Inject(append(make([]byte, 12), testpkt.UDP4(70, testpkt.CsumNone)...))
				u := r.reap(r.rx, 1)[0]
				if u.Len != 82 || !bytes.Equal(bufs[0][12:82], testpkt.UDP4(70, testpkt.CsumNone)) {
					t.Fatalf("rx after %d packets: %+v", sent, u)
				}
			}
			round(10)
			if err := r.fe.SetMemTable(); err != nil { // rebuilds the running rings
				t.Fatal(err)
			}
			round(9)
			if err := r.fe.Reconfigure(0); err != nil { // GET_VRING_BASE, same features, SET_VRING_BASE
				t.Fatal(err)
			}
			round(12)
			bases, err := r.fe.Stop()
			if err != nil {
				t.Fatal(err)
			}
			// TX: 31 packets of 2 descriptors = 62 = 8 laps of 7 and 6.
			tx := virtqueue.DecodePackedState(bases[1])
			txWant := virtqueue.PackedState{AvailIdx: 62 % 7, AvailWrap: (62/7)%2 == 0, UsedIdx: 62 % 7, UsedWrap: (62/7)%2 == 0}
			if tx != txWant {
				t.Errorf("TX base %#x = %+v, want %+v", bases[1], tx, txWant)
			}
			rx := virtqueue.DecodePackedState(bases[0])
			rxWant := virtqueue.PackedState{AvailIdx: 3 % 7, AvailWrap: true, UsedIdx: 3, UsedWrap: true}
			if rx != rxWant {
				t.Errorf("RX base %#x = %+v, want %+v", bases[0], rx, rxWant)
			}
			if st := r.stats(); st.Load(virtionet.CtrTxPosted) != 31 || st.TxDropTotal() != 0 || st.Load(virtionet.CtrRxPackets) != 3 {
				t.Errorf("posted %d dropped %d rx %d", st.Load(virtionet.CtrTxPosted), st.TxDropTotal(), st.Load(virtionet.CtrRxPackets))
			}
		})
	}
}

// TestRxInOrderMalformedChainKeepsOrder: with IN_ORDER, a malformed RX
// chain cannot go back ahead of the good chains popped before it; those go
// back first, unused (len 0, counted), and the packet lands in the next
// good buffer. The driver sees every buffer in the order it posted them.
func TestRxInOrderMalformedChainKeepsOrder(t *testing.T) {
	for _, m := range ringModes {
		if !m.inOrder {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			pipe := backendtest.NewPipe(backend.Capabilities{})
			r := newRig(t, pipe, rigOpts{packed: m.packed, inOrder: true})
			var ids []uint16
			add := func(out, in [][]byte) {
				id, err := r.rx.Ring.Add(out, in)
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			var bufs [][]byte
			for i := 0; i < 5; i++ {
				bufs = append(bufs, r.buf(2048))
			}
			add(nil, [][]byte{bufs[0]})
			add(nil, [][]byte{bufs[1]})
			add([][]byte{bufs[2]}, nil) // device-readable: malformed for RX
			add(nil, [][]byte{bufs[3]})
			add(nil, [][]byte{bufs[4]})
			r.publishKick(r.rx)
			frame := testpkt.UDP4(400, testpkt.CsumNone)
			pipe.Inject(append(make([]byte, 12), frame...))
			used := r.reap(r.rx, 4)
			for i, u := range used {
				if u.ID != uint32(ids[i]) {
					t.Fatalf("used %d: id %d, want %d (posting order)", i, u.ID, ids[i])
				}
				if i < 3 && u.Len != 0 {
					t.Errorf("used %d: len %d, want 0 (given back unused)", i, u.Len)
				}
			}
			if u := used[3]; u.Len != 412 || !bytes.Equal(bufs[3][12:412], frame) {
				t.Errorf("packet in buffer 3: %+v", u)
			}
			st := r.stats()
			if st.Load(virtionet.CtrRxBuffersUnused) != 2 || st.Load(virtionet.CtrRxDrops.At(int(virtionet.DropRxReadableBuffer))) != 1 || st.Load(virtionet.CtrRxPackets) != 1 {
				t.Errorf("unused %d, rx_readable_buffer drops %d, packets %d", st.Load(virtionet.CtrRxBuffersUnused),
					st.Load(virtionet.CtrRxDrops.At(int(virtionet.DropRxReadableBuffer))), st.Load(virtionet.CtrRxPackets))
			}
		})
	}
}

// TestLinkPackedAndSplitKeepSuperPacketsWhole links a packed guest and a
// split guest (and, for good measure, two packed in-order guests): a TCP
// super-packet crosses whole both ways, GSO metadata intact.
func TestLinkPackedAndSplitKeepSuperPacketsWhole(t *testing.T) {
	pairs := []struct {
		name string
		a, b rigOpts
	}{
		{"packed-to-split", rigOpts{packed: true}, rigOpts{}},
		{"split-to-packed", rigOpts{}, rigOpts{packed: true}},
		{"packed-inorder-to-packed-inorder", rigOpts{packed: true, inOrder: true}, rigOpts{packed: true, inOrder: true}},
		{"split-inorder-to-packed", rigOpts{inOrder: true}, rigOpts{packed: true}},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			ea, eb := portlink.NewLink()
			a := newPeerRig(t, ea, p.a)
			b := newPeerRig(t, eb, p.b)
			checkNegotiated(t, a, p.a.packed, p.a.inOrder)
			checkNegotiated(t, b, p.b.packed, p.b.inOrder)
			for dir, pr := range [][2]*rig{{a, b}, {b, a}} {
				src, dst := pr[0], pr[1]
				bufs := dst.postRx(32, 4096)
				eventually(t, "rx ring start", func() bool { return ringStarted(dst, 0) })
				frame := testpkt.TCP4Super(40000 + dir)
				src.sendTx(testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, 1448, 34, 16), frame[:54], frame[54:20000], frame[20000:])
				src.reap(src.tx, 1)
				eventually(t, "delivery", func() bool { return dst.stats().Load(virtionet.CtrRxPackets) == 1 })
				pkts := receivedPackets(dst, bufs, int(dst.stats().Load(virtionet.CtrRxBuffers)))
				if len(pkts) != 1 {
					t.Fatalf("direction %d: %d packets, want the super-packet whole", dir, len(pkts))
				}
				got := pkts[0]
				if got[1] != vnet.GSOTCPv4 || binary.LittleEndian.Uint16(got[4:6]) != 1448 || !bytes.Equal(got[12:], frame) {
					t.Errorf("direction %d: header % x, frame intact %t", dir, got[:12], bytes.Equal(got[12:], frame))
				}
				if src.stats().Load(virtionet.CtrTxPackets.At(int(virtionet.PathPassthrough))) != 1 || dst.stats().Load(virtionet.CtrRxGSOPackets) != 1 || dst.stats().Load(virtionet.CtrRxSegmented) != 0 {
					t.Errorf("direction %d: counters do not show a super-packet crossing whole", dir)
				}
			}
		})
	}
}

// TestPackedRingSizeNotPowerOfTwo: SET_VRING_NUM takes any size up to 32768
// once RING_PACKED is acked (test/hostile checks a split ring still refuses
// one).
func TestPackedRingSizeNotPowerOfTwo(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	r := newRig(t, pipe, rigOpts{packed: true, queueSize: 1000})
	bufs := r.postRx(1, 2048)
	pipe.Inject(append(make([]byte, 12), testpkt.UDP4(200, testpkt.CsumNone)...))
	if u := r.reap(r.rx, 1)[0]; u.Len != 212 || len(bufs) != 1 {
		t.Errorf("used %+v", u)
	}
	if rs := r.sess.RingStates()[0]; rs.Num != 1000 || !rs.Packed {
		t.Errorf("ring state %+v", rs)
	}
}
