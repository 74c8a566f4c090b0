package vhostuser_test

import (
	"testing"

	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtqueue"
)

const (
	fRingPacked = 1 << 34
	fInOrder    = 1 << 35
)

// TestPackedRingsHandshakeAndVringBase runs both handshake orders with
// RING_PACKED (and IN_ORDER) acked over a ring size that is not a power of
// two: the session builds packed rings from SET_VRING_ADDR's descriptor
// ring and event areas, GET_VRING_BASE answers in the packed form (avail
// index and wrap in bits 0-15, used index and wrap in 16-31), and a
// virtio-user reconfiguration continues from it.
func TestPackedRingsHandshakeAndVringBase(t *testing.T) {
	for _, order := range []frontend.Order{frontend.OrderQEMU, frontend.OrderVirtioUser} {
		dev := vhostuser.NewFakeDevice(testDevice|fRingPacked|fInOrder, 2)
		dev.Drain = true
		h := newHarness(t, dev)
		fe := h.fe
		err := fe.Handshake(frontend.Options{Order: order, QueueSize: 100, Packed: true, InOrder: true})
		if err != nil {
			t.Fatal(err)
		}
		if fe.Acked&(fRingPacked|fInOrder) != fRingPacked|fInOrder {
			t.Fatalf("acked %#x lacks RING_PACKED|IN_ORDER", fe.Acked)
		}
		tx := fe.Queues[1]
		post(t, fe, tx, 3)
		reap(t, tx, 3)
		eventually(t, "drain", func() bool { return dev.Drained(1) == 3 })
		if r := h.ring(1); !r.Packed || r.Num != 100 || !r.Started {
			t.Errorf("ring state %+v", r)
		}
		// Reconfigure: GET_VRING_BASE (packed form), then SET_VRING_BASE
		// with it on the same connection.
		if order == frontend.OrderVirtioUser {
			if err := fe.Reconfigure(0); err != nil {
				t.Fatal(err)
			}
			want := virtqueue.PackedState{AvailIdx: 3, AvailWrap: true, UsedIdx: 3, UsedWrap: true}.Encode()
			if r := h.ring(1); r.Base != want {
				t.Errorf("base after reconfigure %#x, want %#x", r.Base, want)
			}
			post(t, fe, tx, 99) // across the wrap: 3 + 99 > 100
			reap(t, tx, 99)
			eventually(t, "drain", func() bool { return dev.Drained(1) == 102 })
		}
		bases, err := fe.Stop()
		if err != nil {
			t.Fatal(err)
		}
		n := uint16(dev.Drained(1))
		want := virtqueue.PackedState{AvailIdx: n % 100, AvailWrap: (n/100)%2 == 0, UsedIdx: n % 100, UsedWrap: (n/100)%2 == 0}
		if got := virtqueue.DecodePackedState(bases[1]); got != want {
			t.Errorf("GET_VRING_BASE %#x = %+v, want %+v", bases[1], got, want)
		}
		if bases[0] != virtqueue.InitialPackedState.Encode() {
			t.Errorf("RX ring never used: base %#x, want %#x", bases[0], virtqueue.InitialPackedState.Encode())
		}
		fe.Close()
		h.wait()
	}
}

// TestPackedVringNumAndBaseChecks: with RING_PACKED any size in 1..32768 is
// accepted, a base whose positions lie outside the ring is refused, and
// turning RING_PACKED off again brings the split ring's rules back.
func TestPackedVringNumAndBaseChecks(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice|fRingPacked, 2)
	h := newHarness(t, dev)
	fe := h.fe
	if err := fe.Setup(frontend.Options{Packed: true}); err != nil {
		t.Fatal(err)
	}
	fe.NeedReply = true
	p, err := fe.GetU64(vhostuser.ReqGetProtocolFeatures)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fe.SetU64(vhostuser.ReqSetProtocolFeatures, p))
	must(fe.SetU64(vhostuser.ReqSetFeatures, fVersion1|fRingPacked|vhostuser.FeatureProtocolFeatures))
	if r := h.ring(0); r.Base != virtqueue.InitialPackedState.Encode() {
		t.Errorf("packed ring's base before SET_VRING_BASE %#x, want the initial state", r.Base)
	}
	must(fe.SetVringState(vhostuser.ReqSetVringNum, 0, 3))
	must(fe.SetVringState(vhostuser.ReqSetVringNum, 0, 32768))
	must(fe.SetVringState(vhostuser.ReqSetVringNum, 0, 7))
	if err := fe.SetVringState(vhostuser.ReqSetVringNum, 0, 32769); err == nil {
		t.Error("size 32769 accepted")
	}
	must(fe.SetVringState(vhostuser.ReqSetVringBase, 0, 6|1<<15|5<<16|1<<31))
	if r := h.ring(0); r.Base != 6|1<<15|5<<16|1<<31 || r.LastAvail != 6|1<<15 {
		t.Errorf("ring state %+v", r)
	}
	if err := fe.SetVringState(vhostuser.ReqSetVringBase, 0, 7|1<<15); err == nil {
		t.Error("avail index 7 accepted for a ring of 7")
	}
	if err := fe.SetVringState(vhostuser.ReqSetVringBase, 0, 1|9<<16); err == nil {
		t.Error("used index 9 accepted for a ring of 7")
	}
	// Back to split: sizes must be powers of two and bases 16 bits.
	must(fe.SetU64(vhostuser.ReqSetFeatures, fVersion1|vhostuser.FeatureProtocolFeatures))
	if r := h.ring(0); r.Base != 0 || r.Packed {
		t.Errorf("split ring after RING_PACKED went away: %+v", r)
	}
	if err := fe.SetVringState(vhostuser.ReqSetVringNum, 0, 7); err == nil {
		t.Error("split ring of 7 accepted")
	}
	if err := fe.SetVringState(vhostuser.ReqSetVringBase, 0, 1<<16); err == nil {
		t.Error("split base above 16 bits accepted")
	}
}
