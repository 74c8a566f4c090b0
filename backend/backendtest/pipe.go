// Package backendtest holds test doubles of backend.Backend (wireguard-go
// keeps its in the same way, in tuntest): only tests import it.
package backendtest

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vhostd/vhostd/backend"
)

// Pipe is an in-memory test double: it records every packet written (each
// flattened into one []byte: header then frame) and serves packets injected by
// the test to ReadPackets. All methods are safe to call concurrently.
type Pipe struct {
	caps   backend.Capabilities
	in     chan []byte
	waiter *backend.ReadWaiter

	mu       sync.Mutex
	written  [][]byte
	changed  chan struct{} // closed and replaced on every write, for WaitWritten
	writeErr func(pkt []byte) error

	vnetHdrLen    atomic.Int32
	guestFeatures atomic.Uint64
}

// PipeQueueLen is how many injected packets a Pipe holds before Inject blocks.
const PipeQueueLen = 1024

// NewPipe returns a Pipe reporting caps (zero: DefaultNullCaps).
func NewPipe(caps backend.Capabilities) *Pipe {
	if caps == (backend.Capabilities{}) {
		caps = backend.DefaultNullCaps
	}
	p := &Pipe{
		caps:    caps,
		in:      make(chan []byte, PipeQueueLen),
		waiter:  backend.NewReadWaiter(),
		changed: make(chan struct{}),
	}
	p.vnetHdrLen.Store(12)
	return p
}

// ErrPipeClosed is returned by Inject after Close.
var ErrPipeClosed = errors.New("pipe backend closed")

// Inject queues one packet (virtio_net_hdr followed by a frame) for
// ReadPackets. It copies pkt and blocks while PipeQueueLen packets wait.
func (p *Pipe) Inject(pkt []byte) error {
	if p.waiter.IsClosed() {
		return ErrPipeClosed
	}
	c := append([]byte(nil), pkt...)
	select {
	case p.in <- c:
		return nil
	case <-p.waiter.Closed():
		return ErrPipeClosed
	}
}

// ReadPackets implements backend.Backend: it blocks for the first injected packet and
// then takes whatever else is queued, up to len(bufs). A buffer shorter than
// the packet gets a truncated copy.
func (p *Pipe) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	pkt, err := p.waiter.Wait(p.in)
	if err != nil {
		return 0, err
	}
	sizes[0] = copy(bufs[0][offset:], pkt)
	n := 1
	for n < len(bufs) {
		select {
		case pkt = <-p.in:
			sizes[n] = copy(bufs[n][offset:], pkt)
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

// TryReadPackets implements backend.PollReader: ReadPackets without the wait.
func (p *Pipe) TryReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	if p.waiter.IsClosed() {
		return 0, os.ErrClosed
	}
	n := 0
	for n < len(bufs) {
		select {
		case pkt := <-p.in:
			sizes[n] = copy(bufs[n][offset:], pkt)
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

// SetWriteError installs fn, called for every packet written (flattened); a
// non-nil result fails that packet the way a tap's errno would. nil removes it.
func (p *Pipe) SetWriteError(fn func(pkt []byte) error) {
	p.mu.Lock()
	p.writeErr = fn
	p.mu.Unlock()
}

// WritePackets implements backend.Backend: it records a copy of each packet.
func (p *Pipe) WritePackets(pkts [][][]byte) (int, error) {
	if p.waiter.IsClosed() {
		return 0, &backend.PacketError{Index: 0, Err: os.ErrClosed}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	defer func() {
		close(p.changed)
		p.changed = make(chan struct{})
	}()
	for i, pkt := range pkts {
		flat := bytes.Join(pkt, nil)
		if p.writeErr != nil {
			if err := p.writeErr(flat); err != nil {
				return i, &backend.PacketError{Index: i, Err: err}
			}
		}
		p.written = append(p.written, flat)
	}
	return len(pkts), nil
}

// Written returns the packets written so far (shared slices: do not modify).
func (p *Pipe) Written() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.written...)
}

// TakeWritten returns the packets written so far and forgets them.
func (p *Pipe) TakeWritten() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.written
	p.written = nil
	return w
}

// WaitWritten waits until at least n packets are recorded or timeout passes,
// and returns the recorded packets.
func (p *Pipe) WaitWritten(n int, timeout time.Duration) ([][]byte, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		if len(p.written) >= n {
			w := append([][]byte(nil), p.written...)
			p.mu.Unlock()
			return w, true
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return p.Written(), false
		}
	}
}

// Caps implements backend.Backend.
func (p *Pipe) Caps() backend.Capabilities { return p.caps }

// SetOffload implements backend.Backend; it records the features.
func (p *Pipe) SetOffload(guestFeatures uint64) error {
	p.guestFeatures.Store(guestFeatures)
	return nil
}

// GuestFeatures returns what SetOffload last recorded.
func (p *Pipe) GuestFeatures() uint64 { return p.guestFeatures.Load() }

// SetVnetHdrLen implements backend.Backend; it records the length.
func (p *Pipe) SetVnetHdrLen(n int) error {
	if err := backend.CheckVnetHdrLen(n); err != nil {
		return err
	}
	p.vnetHdrLen.Store(int32(n))
	return nil
}

// VnetHdrLen returns the header length last set (12 initially).
func (p *Pipe) VnetHdrLen() int { return int(p.vnetHdrLen.Load()) }

// SetReadDeadline implements backend.Backend.
func (p *Pipe) SetReadDeadline(t time.Time) error {
	p.waiter.SetDeadline(t)
	return nil
}

// Close implements backend.Backend.
func (p *Pipe) Close() error {
	p.waiter.Close()
	return nil
}
