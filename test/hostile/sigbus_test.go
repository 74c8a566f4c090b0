package hostile_test

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtqueue"
)

// A front-end can shrink (ftruncate) the memfd behind guest memory after
// vhostd mapped it. Touching a page past the new end of file raises SIGBUS,
// which by default kills the whole daemon. These tests shrink the file under
// running rings and expect the ring to be marked broken (and the fault
// counted), the error eventfd signalled, DEVICE_NEEDS_RESET reported, and
// everything else to keep working.
//
// The test process is the front-end too, so after the shrink it never
// touches the lost pages itself.

// region2FileOffset is where region 2 starts in the front-end's memfd:
// truncating the file there takes region 2 away and keeps the rings and the
// second queue pair's buffers (region 0) intact.
func (p *port) region2FileOffset() int64 { return int64(p.fe.Mem.Regions[2].FileOffset) }

func expectBroken(t *testing.T, p *port, rx bool) {
	t.Helper()
	st := p.stats(0)
	broken, ring := &st.TxBroken, victimTx
	if rx {
		broken, ring = &st.RxBroken, victimRx
	}
	if !eventually(broken.Load) {
		t.Fatal("ring not marked broken after a guest memory fault")
	}
	if st.Load(virtionet.CtrMemFaults) == 0 {
		t.Error("guest memory fault not counted")
	}
	if !waitEventfd(p.queue(ring).ErrFd, 5*time.Second) {
		t.Error("error eventfd not signalled")
	}
	status, err := p.fe.GetU64(vhostuser.ReqGetStatus)
	if err != nil {
		t.Fatal(err)
	}
	if status&statusNeedsReset == 0 {
		t.Errorf("GET_STATUS %#x lacks DEVICE_NEEDS_RESET", status)
	}
}

func TestSIGBUSOnTxBuffer(t *testing.T) {
	p := newPort(t, portConfig{})
	by := startBystander(t, p)
	r2 := p.fe.Mem.Regions[2].B
	copy(r2, testpkt.VnetHdr(0, 0, 0, 0, 0))
	copy(r2[64:], testpkt.UDP4(100, testpkt.CsumNone))
	if _, err := p.queue(victimTx).Driver.AddSegs([]virtqueue.Seg{{Addr: region2GPA, Len: 12}, {Addr: region2GPA + 64, Len: 100}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(p.fe.Mem.Fd(), p.region2FileOffset()); err != nil {
		t.Fatal(err)
	}
	p.publishKick(victimTx)
	expectBroken(t, p, false)
	by.finish(t)
}

func TestSIGBUSOnRxBuffer(t *testing.T) {
	p := newPort(t, portConfig{})
	by := startBystander(t, p)
	if _, err := p.queue(victimRx).Driver.AddSegs(nil, []virtqueue.Seg{{Addr: region2GPA, Len: 2048}}); err != nil {
		t.Fatal(err)
	}
	p.publishKick(victimRx)
	if err := unix.Ftruncate(p.fe.Mem.Fd(), p.region2FileOffset()); err != nil {
		t.Fatal(err)
	}
	if err := p.pipes[0].Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone))); err != nil {
		t.Fatal(err)
	}
	expectBroken(t, p, true)
	by.finish(t)
}

// TestSIGBUSOnRings takes the whole file away, rings included: both workers
// fault on the ring indices, restarting the ring faults in the session's own
// goroutine, and a second port keeps passing traffic throughout.
func TestSIGBUSOnRings(t *testing.T) {
	other := newPort(t, portConfig{})
	by := startBystander(t, other)
	mapsBefore := memfdMappings(t)
	p := newPort(t, portConfig{})
	// Start both victim rings with one packet each way.
	p.sendTx(victimTx, testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone))
	if _, err := p.reap(victimTx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := p.queue(victimRx).Driver.Add(nil, [][]byte{p.buf(victimRx, 2048)}); err != nil {
		t.Fatal(err)
	}
	p.publishKick(victimRx)
	if err := p.pipes[0].Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone))); err != nil {
		t.Fatal(err)
	}
	if _, err := p.reap(victimRx, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(p.fe.Mem.Fd(), 0); err != nil {
		t.Fatal(err)
	}
	// Kicks only: the front-end's own ring writes would fault here too.
	if err := p.queue(victimTx).Kick(); err != nil {
		t.Fatal(err)
	}
	expectBroken(t, p, false)
	if err := p.queue(victimRx).Kick(); err != nil {
		t.Fatal(err)
	}
	expectBroken(t, p, true)

	// Restart the TX ring on the shrunk memory: building it reads used.idx,
	// in the session goroutine.
	if _, err := p.fe.GetVringBase(victimTx); err != nil {
		t.Fatal(err)
	}
	if err := p.fe.SetVringFd(vhostuser.ReqSetVringKick, victimTx, p.queue(victimTx).KickFd); err != nil {
		t.Fatal(err)
	}
	if err := p.queue(victimTx).Kick(); err != nil {
		t.Fatal(err)
	}
	if !waitEventfd(p.queue(victimTx).ErrFd, 5*time.Second) {
		t.Error("restarting a ring on faulting memory did not signal the error eventfd")
	}
	if !eventually(func() bool { return p.sess.RingStates()[victimTx].Failed }) {
		t.Error("ring not marked failed")
	}
	if p.sess.RingStates()[victimTx].Started {
		t.Error("ring started on faulting memory")
	}
	// A new memory table over the shrunk file is refused.
	if err := p.fe.SetMemTable(); err == nil {
		t.Error("SET_MEM_TABLE over a file shorter than its regions was accepted")
	}
	if _, err := p.fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatalf("session stopped answering: %v", err)
	}
	by.finish(t)
	st := p.stats(0)
	if st.Load(virtionet.CtrMemFaults) < 2 {
		t.Errorf("faults counted %d, want >= 2", st.Load(virtionet.CtrMemFaults))
	}
	p.close()
	if got := memfdMappings(t); got != mapsBefore {
		t.Errorf("memfd mappings %d after the session ended, %d before it started", got, mapsBefore)
	}
}

// TestSIGBUSOnLinkedReceiver: two guests cross-connected with a
// portlink.Link. The sender's TX worker copies straight into the
// receiver's RX buffers, so when the receiver shrinks its memory file the
// fault happens in the sender's goroutine. It must break the receiver's RX
// ring only: the sender's TX ring keeps working.
func TestSIGBUSOnLinkedReceiver(t *testing.T) {
	ea, eb := portlink.NewLink()
	a := newPort(t, portConfig{victimPeer: ea})
	b := newPort(t, portConfig{victimPeer: eb})
	by := startBystander(t, a)
	// Two RX buffers for b in region 2: one for a packet before the
	// shrink, one that is gone after it.
	for i := uint64(0); i < 2; i++ {
		if _, err := b.queue(victimRx).Driver.AddSegs(nil, []virtqueue.Seg{{Addr: region2GPA + i*4096, Len: 2048}}); err != nil {
			t.Fatal(err)
		}
	}
	b.publishKick(victimRx)
	if !eventually(func() bool { return b.sess.RingStates()[victimRx].Started }) {
		t.Fatal("receiver's RX ring did not start")
	}
	send := func() {
		t.Helper()
		a.sendTx(victimTx, testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone))
		if _, err := a.reap(victimTx, 1); err != nil {
			t.Fatalf("sender's TX ring: %v", err)
		}
	}
	send()
	if !eventually(func() bool { return b.stats(0).Load(virtionet.CtrRxPackets) == 1 }) {
		t.Fatal("link did not deliver before the shrink")
	}
	if err := unix.Ftruncate(b.fe.Mem.Fd(), b.region2FileOffset()); err != nil {
		t.Fatal(err)
	}
	send()
	expectBroken(t, b, true)
	sa := a.stats(0)
	if sa.TxBroken.Load() || sa.Load(virtionet.CtrMemFaults) != 0 {
		t.Fatalf("the receiver's fault broke the sender: tx broken %v, faults %d", sa.TxBroken.Load(), sa.Load(virtionet.CtrMemFaults))
	}
	// The sender goes on; what it sends toward the dead ring is counted.
	for i := 0; i < 3; i++ {
		send()
	}
	if sa.TxBroken.Load() {
		t.Fatal("sender's TX ring broke")
	}
	if !eventually(func() bool { return eb.Dropped.Load() >= 3 }) {
		t.Errorf("packets toward the broken ring not counted: %d", eb.Dropped.Load())
	}
	by.finish(t)
}

// TestSIGBUSOnLinkedReceiverStop: a linked receiver's ring is stopped by
// the session goroutine (GET_VRING_BASE), which hands back the buffers it
// popped ahead of need, writing the used ring. If the receiver shrank its
// memory file meanwhile, that write faults in the session goroutine.
func TestSIGBUSOnLinkedReceiverStop(t *testing.T) {
	ea, eb := portlink.NewLink()
	a := newPort(t, portConfig{victimPeer: ea})
	b := newPort(t, portConfig{victimPeer: eb})
	// A good buffer, a malformed chain, another good buffer: delivering one
	// packet pops all three and leaves the second good one cached behind a
	// returned chain (the cache is not the tail of what was popped).
	d := b.queue(victimRx).Driver
	buf := func() uint64 { return b.gpa(b.buf(victimRx, 2048)) }
	d.SetDesc(10, virtqueue.Desc{Addr: buf(), Len: 2048, Flags: fWrite})
	d.SetDesc(11, virtqueue.Desc{Addr: holeGPA, Len: 2048, Flags: fWrite})
	d.SetDesc(12, virtqueue.Desc{Addr: buf(), Len: 2048, Flags: fWrite})
	for _, h := range []uint16{10, 11, 12} {
		d.PostRaw(h)
	}
	b.publishKick(victimRx)
	if !eventually(func() bool { return b.sess.RingStates()[victimRx].Started }) {
		t.Fatal("receiver's RX ring did not start")
	}
	a.sendTx(victimTx, testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone))
	if !eventually(func() bool { return b.stats(0).Load(virtionet.CtrRxPackets) == 1 }) {
		t.Fatal("link did not deliver")
	}
	if err := unix.Ftruncate(b.fe.Mem.Fd(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.fe.GetVringBase(victimRx); err != nil {
		t.Fatalf("GET_VRING_BASE: %v", err)
	}
	if _, err := b.fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatalf("receiver's session stopped answering: %v", err)
	}
	if b.stats(0).Load(virtionet.CtrMemFaults) == 0 {
		t.Error("fault not counted")
	}
	// The sender is not affected.
	a.sendTx(victimTx, testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone))
	if _, err := a.reap(victimTx, 2); err != nil {
		t.Fatal(err)
	}
}
