package vhostuser_test

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
)

// A device that gives up on a ring (Queue.Fail) signals SET_VRING_ERR and
// makes GET_STATUS report DEVICE_NEEDS_RESET until the driver resets the
// device with SET_STATUS 0.
func TestQueueFailReportsNeedsReset(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{})
	tx := h.fe.Queues[1]
	if err := tx.Kick(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ring 1 started", func() bool { return dev.Queue(1) != nil })
	status := func() uint64 {
		t.Helper()
		st, err := h.fe.GetU64(vhostuser.ReqGetStatus)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := status(); st&vhostuser.StatusNeedsReset != 0 {
		t.Fatalf("status %#x before any failure", st)
	}
	dev.Queue(1).Fail()
	var b [8]byte
	if n, err := unix.Read(tx.ErrFd, b[:]); err != nil || n != 8 || binary.NativeEndian.Uint64(b[:]) != 1 {
		t.Errorf("error eventfd: read %d bytes, %v", n, err)
	}
	if st := status(); st&vhostuser.StatusNeedsReset == 0 {
		t.Errorf("status %#x after Fail lacks NEEDS_RESET", st)
	}
	if !h.ring(1).Failed || h.ring(0).Failed {
		t.Errorf("ring states %+v", h.s.RingStates())
	}
	if err := h.fe.SetU64(vhostuser.ReqSetStatus, 0); err != nil {
		t.Fatal(err)
	}
	if st := status(); st != 0 || h.ring(1).Failed {
		t.Errorf("status %#x, ring %+v after SET_STATUS 0", st, h.ring(1))
	}
}
