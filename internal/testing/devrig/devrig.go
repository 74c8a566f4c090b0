// Package devrig runs a virtionet.Device behind a real vhost-user session on
// a unix socketpair, driven by the Go front-end (vhostuser/frontend) in
// QEMU's place: the one device rig of the virtionet, metrics and hostile
// tests. It is test support: only tests import it.
package devrig

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vhostd/vhostd/internal/unixpair"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtqueue"
)

// DiscardLogger drops every log line.
func DiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Config is the device configuration the rigs start from: name, every
// offload a backend with USO offers, and a discarding logger; the caller
// adds Backends or Peers and a Policy.
func Config(name string) virtionet.Config {
	offer, _ := virtionet.Offer(virtionet.BackendOffloads{TxUSO: true}, virtionet.Toggles{})
	return virtionet.Config{Name: name, Offer: uint64(offer), Logger: DiscardLogger()}
}

// Options choose how the front-end connects.
type Options struct {
	// Frontend is what the front-end negotiates and maps; zero Regions:
	// one region of 16 MiB at GPA 0.
	Frontend frontend.Options
	// NoHandshake sets the front-end up but leaves it silent.
	NoHandshake bool
	// AlwaysKick kicks after every Publish, even when the device asked not
	// to be kicked, as a hostile guest may.
	AlwaysKick bool
}

// Rig is one device, its session and the front-end driving it.
type Rig struct {
	T    testing.TB // set by New; Open leaves it nil
	Dev  *virtionet.Device
	Sess *vhostuser.Session
	FE   *frontend.Frontend

	alwaysKick bool
	connected  atomic.Bool
	done       chan error
	cancel     context.CancelFunc
	closed     bool
}

// New opens a rig for t and closes it when the test ends; any error fails t.
func New(t testing.TB, cfg virtionet.Config, o Options) *Rig {
	t.Helper()
	r, err := Open(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	r.T = t
	t.Cleanup(r.Close)
	return r
}

// Open builds the device from cfg, serves it over a socketpair and
// connects the front-end; the caller closes the rig.
func Open(cfg virtionet.Config, o Options) (*Rig, error) {
	if cfg.Logger == nil {
		cfg.Logger = DiscardLogger()
	}
	dev, err := virtionet.New(cfg)
	if err != nil {
		return nil, err
	}
	a, b, err := unixpair.New()
	if err != nil {
		return nil, err
	}
	sess, err := vhostuser.NewSession(a, dev, cfg.Logger)
	if err != nil {
		a.Close()
		b.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Rig{Dev: dev, Sess: sess, done: make(chan error, 1), cancel: cancel, alwaysKick: o.AlwaysKick}
	r.connected.Store(true)
	go func() {
		err := sess.Serve(ctx)
		r.connected.Store(false)
		r.done <- err
	}()
	r.FE = frontend.New(b)
	fo := o.Frontend
	if len(fo.Regions) == 0 {
		fo.Regions = []frontend.Region{{GPA: 0, Size: 16 << 20}}
	}
	if o.NoHandshake {
		err = r.FE.Setup(fo)
	} else {
		err = r.FE.Handshake(fo)
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Connected reports whether the session is still serving.
func (r *Rig) Connected() bool { return r.connected.Load() }

// Close closes the front-end and waits up to 5 s for the session to end.
// It may be called more than once.
func (r *Rig) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.FE.Close()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		if r.T != nil {
			r.T.Error("session did not end after the front-end closed")
		}
	}
	r.cancel()
}

// Queue is vring i of the front-end.
func (r *Rig) Queue(i int) *frontend.Queue { return r.FE.Queues[i] }

// Stats are the counters of queue pair pair.
func (r *Rig) Stats(pair int) *virtionet.QueueStats { return r.Dev.QueuePairs()[pair].Stats() }

// PublishKick publishes q's new available buffers and kicks if the device
// wants it (always, with Options.AlwaysKick).
func (r *Rig) PublishKick(q *frontend.Queue) error {
	if q.Ring.Publish() || r.alwaysKick {
		return q.Kick()
	}
	return nil
}

// Area is a bump allocator over part of the front-end's data area (offsets
// past DataOffset), safe for concurrent use.
type Area struct {
	fe        *frontend.Frontend
	off, size uint64 // size 0: unbounded
	mu        sync.Mutex
	next      uint64
}

// NewArea allocates from size bytes at offset off of the data area; it
// wraps to the start when full (size 0: never).
func (r *Rig) NewArea(off, size uint64) *Area { return &Area{fe: r.FE, off: off, size: size} }

// Buf returns n bytes of the area, 64-byte aligned.
func (a *Area) Buf(n int) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.size != 0 && a.next+uint64(n) > a.size {
		a.next = 0
	}
	off := a.off + a.next
	a.next += uint64(n+63) &^ 63
	return a.fe.Buffer(off, uint64(n))
}

// CopyIn returns a copy of b in the area.
func (a *Area) CopyIn(b []byte) []byte {
	g := a.Buf(len(b))
	copy(g, b)
	return g
}

// Next is the data area offset of the next allocation.
func (a *Area) Next() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.off + a.next
}

// Skip moves the next allocation n bytes further.
func (a *Area) Skip(n uint64) {
	a.mu.Lock()
	a.next += n
	a.mu.Unlock()
}

// SendTx posts one chain on q, hdr and each part copied into a in its own
// device-readable buffer, publishes and kicks; it returns the head.
func (r *Rig) SendTx(q *frontend.Queue, a *Area, hdr []byte, parts ...[]byte) (uint16, error) {
	out := [][]byte{a.CopyIn(hdr)}
	for _, p := range parts {
		out = append(out, a.CopyIn(p))
	}
	head, err := q.Ring.Add(out, nil)
	if err != nil {
		return 0, err
	}
	return head, r.PublishKick(q)
}

// PostRx posts n device-writable buffers of size bytes from a on q and
// publishes them.
func (r *Rig) PostRx(q *frontend.Queue, a *Area, n, size int) ([][]byte, error) {
	bufs := make([][]byte, 0, n)
	for range n {
		b := a.Buf(size)
		if _, err := q.Ring.Add(nil, [][]byte{b}); err != nil {
			return bufs, err
		}
		bufs = append(bufs, b)
	}
	return bufs, r.PublishKick(q)
}

// Reap waits up to timeout for n used entries on q, looking every poll,
// reaping into scratch (nil: a buffer of its own), and returns them.
func Reap(q *frontend.Queue, n int, timeout, poll time.Duration, scratch []virtqueue.UsedElem) ([]virtqueue.UsedElem, error) {
	if scratch == nil {
		scratch = make([]virtqueue.UsedElem, 256)
	}
	var got []virtqueue.UsedElem
	deadline := time.Now().Add(timeout)
	for len(got) < n {
		k := q.Ring.Reap(scratch)
		got = append(got, scratch[:k]...)
		if k == 0 {
			if time.Now().After(deadline) {
				return got, fmt.Errorf("queue %d: %d of %d used entries after %v", q.Index, len(got), n, timeout)
			}
			time.Sleep(poll)
		}
	}
	return got, nil
}

// Eventually polls cond for up to 5 s and reports whether it came true.
func Eventually(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Microsecond)
	}
	return true
}
