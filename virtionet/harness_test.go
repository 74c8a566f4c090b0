package virtionet_test

import (
	"testing"
	"time"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/internal/testing/devrig"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtqueue"
)

// rig is a virtionet.Device served over a real unix socketpair to the Go
// front-end (QEMU's role), with a test-double backend (internal/testing/devrig).
type rig struct {
	*devrig.Rig
	t      testing.TB
	dev    *virtionet.Device
	be     backend.Backend
	fe     *frontend.Frontend
	rx, tx *frontend.Queue
	sess   *vhostuser.Session
	used   []virtqueue.UsedElem
	area   *devrig.Area // the front-end's data area, a bump allocator
}

type rigOpts struct {
	features  uint64 // acked by the front-end (0: everything offered)
	queueSize uint16
	policy    string
	memSize   uint64
	order     frontend.Order
	packed    bool // ack RING_PACKED: packed rings
	inOrder   bool // ack IN_ORDER
	// peer joins the rig's one queue pair guest to guest (Config.Peers)
	// instead of a backend.
	peer    portlink.Port
	pollMax time.Duration
}

// newPeerRig is a rig whose queue pair is joined to a Link or Switch port.
func newPeerRig(t testing.TB, p portlink.Port, o rigOpts) *rig {
	t.Helper()
	o.peer = p
	return newRig(t, nil, o)
}

func newRig(t testing.TB, be backend.Backend, o rigOpts) *rig {
	t.Helper()
	cfg := devrig.Config("test")
	cfg.Backends, cfg.PollMax = []backend.Backend{be}, o.pollMax
	if o.peer != nil {
		cfg.Backends, cfg.Peers = nil, []portlink.Port{o.peer}
	}
	if o.policy != "" {
		p, err := parsePolicy(o.policy)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Policy = p
	}
	if o.memSize == 0 {
		o.memSize = 16 << 20
	}
	dr := devrig.New(t, cfg, devrig.Options{Frontend: frontend.Options{
		Order:     o.order,
		QueueSize: o.queueSize,
		Features:  o.features,
		Packed:    o.packed,
		InOrder:   o.inOrder,
		Regions:   []frontend.Region{{GPA: 0, Size: o.memSize}},
	}})
	return &rig{Rig: dr, t: t, dev: dr.Dev, be: be, fe: dr.FE, sess: dr.Sess,
		rx: dr.Queue(0), tx: dr.Queue(1), used: make([]virtqueue.UsedElem, 1024), area: dr.NewArea(0, 0)}
}

// buf allocates n bytes in guest memory (a bump allocator; tests are short).
func (r *rig) buf(n int) []byte { return r.area.Buf(n) }

// sendTx posts one TX packet: a header buffer and the frame in one or more
// buffers, then kicks.
func (r *rig) sendTx(hdr []byte, frameParts ...[]byte) uint16 {
	r.t.Helper()
	head, err := r.SendTx(r.tx, r.area, hdr, frameParts...)
	if err != nil {
		r.t.Fatal(err)
	}
	return head
}

func (r *rig) copyIn(b []byte) []byte { return r.area.CopyIn(b) }

func (r *rig) publishKick(q *frontend.Queue) {
	if err := r.PublishKick(q); err != nil {
		r.t.Fatal(err)
	}
}

// postRx posts n RX buffers of size bytes each.
func (r *rig) postRx(n, size int) [][]byte {
	r.t.Helper()
	bufs, err := r.PostRx(r.rx, r.area, n, size)
	if err != nil {
		r.t.Fatal(err)
	}
	return bufs
}

// reap waits until n used entries arrive on q and returns them.
func (r *rig) reap(q *frontend.Queue, n int) []virtqueue.UsedElem {
	r.t.Helper()
	got, err := devrig.Reap(q, n, 5*time.Second, time.Millisecond, r.used)
	if err != nil {
		r.t.Fatal(err)
	}
	return got
}

func (r *rig) stats() *virtionet.QueueStats { return r.Stats(0) }

// eventually polls cond for up to 5 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !devrig.Eventually(cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}
