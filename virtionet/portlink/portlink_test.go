package portlink_test

import (
	"sync"
	"testing"

	"github.com/vhostd/vhostd/virtionet/portlink"
)

// fakeReceiver is a test double for a device's receive side: it records
// the first frame byte of each delivered packet and refuses the batch when
// told its ring is not running.
type fakeReceiver struct {
	mu      sync.Mutex
	got     []byte // each packet's tag (frame byte 14)
	batches int
	stopped bool
}

func (f *fakeReceiver) Deliver(pkts [][][]byte) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return len(pkts)
	}
	f.batches++
	for _, p := range pkts {
		f.got = append(f.got, p[2][7])
	}
	return 0
}

var hdr = make([]byte, 12)

// frame is a 60-byte Ethernet frame from MAC 02:..:src to dst (0xff:
// broadcast), in two iovecs, tagged with dst in byte 14.
func frame(dst, src byte) [][]byte {
	f := make([]byte, 60)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, dst})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, src})
	if dst == 0xff {
		copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	f[14] = dst // tag for fakeReceiver
	return [][]byte{hdr, f[:7], f[7:]}
}

// TestLinkDeliversIntoReceiver: a Link needs no device, only Receivers;
// each end's Send reaches the other end's receiver as one batch, and what
// finds no receiver or a stopped ring is counted on the receiving end.
func TestLinkDeliversIntoReceiver(t *testing.T) {
	a, b := portlink.NewLink()
	var ra, rb fakeReceiver
	a.Send([][][]byte{frame(1, 2)})
	if b.Dropped.Load() != 1 || a.Dropped.Load() != 0 {
		t.Fatalf("unbound receiver: dropped a=%d b=%d, want 0 1", a.Dropped.Load(), b.Dropped.Load())
	}
	a.Bind(&ra)
	b.Bind(&rb)
	a.Send([][][]byte{frame(3, 1), frame(4, 1)})
	b.Send([][][]byte{frame(5, 2)})
	if string(rb.got) != "\x03\x04" || rb.batches != 1 || string(ra.got) != "\x05" {
		t.Fatalf("b got %v in %d batches, a got %v", rb.got, rb.batches, ra.got)
	}
	rb.stopped = true
	a.Send([][][]byte{frame(6, 1), frame(7, 1)})
	if b.Dropped.Load() != 3 {
		t.Errorf("refused by a stopped ring: b dropped %d, want 3", b.Dropped.Load())
	}
	b.Bind(nil)
	a.Send([][][]byte{frame(8, 1)})
	if b.Dropped.Load() != 4 || len(rb.got) != 2 {
		t.Errorf("after unbind: b dropped %d, want 4; got %v", b.Dropped.Load(), rb.got)
	}
}

// TestSwitchRoutesBetweenReceivers: learning, unicast, flooding and the
// hairpin filter, with test-double receivers.
func TestSwitchRoutesBetweenReceivers(t *testing.T) {
	sw := portlink.NewSwitch(3)
	rs := make([]*fakeReceiver, 3)
	for i := range rs {
		rs[i] = &fakeReceiver{}
		sw.Port(i).Bind(rs[i])
	}
	count := func() [3]int { return [3]int{len(rs[0].got), len(rs[1].got), len(rs[2].got)} }
	sw.Port(0).Send([][][]byte{frame(0xff, 2)}) // broadcast from ..:02 on port 0
	if c := count(); c != [3]int{0, 1, 1} {
		t.Fatalf("flood: %v", c)
	}
	sw.Port(1).Send([][][]byte{frame(2, 4)}) // ..:04 on port 1 answers ..:02
	if c := count(); c != [3]int{1, 1, 1} {
		t.Fatalf("unicast to a learned MAC: %v", c)
	}
	sw.Port(0).Send([][][]byte{frame(4, 2), frame(2, 2)}) // to ..:04; and to itself (hairpin)
	if c := count(); c != [3]int{1, 2, 1} {
		t.Fatalf("unicast back and hairpin: %v", c)
	}
	sw.Port(2).Send([][][]byte{frame(8, 6)}) // unknown unicast
	if c := count(); c != [3]int{2, 3, 1} {
		t.Fatalf("unknown unicast flooded: %v", c)
	}
	if sw.Floods.Load() != 2 {
		t.Errorf("floods %d, want 2", sw.Floods.Load())
	}
}

// TestSendDoesNotAllocate: Send is on every guest-to-guest packet's path.
func TestSendDoesNotAllocate(t *testing.T) {
	a, b := portlink.NewLink()
	b.Bind(nopReceiver{})
	sw := portlink.NewSwitch(3)
	for i := 0; i < 3; i++ {
		sw.Port(i).Bind(nopReceiver{})
	}
	batch := [][][]byte{frame(1, 2), frame(0xff, 2), frame(3, 2)}
	sw.Port(1).Send([][][]byte{frame(0xff, 1)}) // learn ..:01 on port 1
	if n := testing.AllocsPerRun(100, func() {
		a.Send(batch)
		sw.Port(0).Send(batch)
	}); n != 0 {
		t.Errorf("%v allocations per Send", n)
	}
}

type nopReceiver struct{}

func (nopReceiver) Deliver([][][]byte) int { return 0 }
