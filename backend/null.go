package backend

import (
	"os"
	"sync/atomic"
	"time"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// NullConfig configures a Null backend.
type NullConfig struct {
	// Caps is what Caps reports. The zero value means every offload, the
	// legacy GSO limits (65536 bytes, 65535 segments) and MTU 1500, so that
	// benchmarks pass super-packets whole.
	Caps Capabilities
	// RXTemplate, if set, is one packet (virtio_net_hdr of the negotiated
	// length followed by a frame) that ReadPackets copies into every buffer
	// at full speed, as an RX traffic source for benchmarks. If nil,
	// ReadPackets blocks until the read deadline or Close.
	RXTemplate []byte
}

// DefaultNullCaps is what a Null backend reports when NullConfig.Caps is zero.
var DefaultNullCaps = Capabilities{
	Offloads:   vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6 | vnet.OffloadTSOECN | vnet.OffloadUSO | vnet.OffloadUFO,
	GSOMaxSize: 65536,
	GSOMaxSegs: 65535,
	MTU:        1500,
}

// Null is a sink backend for benchmarks: WritePackets counts and discards,
// ReadPackets blocks or serves a fixed template. All methods are safe to call
// concurrently.
type Null struct {
	caps     Capabilities
	template []byte
	waiter   *ReadWaiter

	writtenPackets atomic.Uint64
	writtenBytes   atomic.Uint64
	readPackets    atomic.Uint64
	vnetHdrLen     atomic.Int32
	guestFeatures  atomic.Uint64
}

// NewNull returns a Null backend.
func NewNull(cfg NullConfig) *Null {
	n := &Null{caps: cfg.Caps, waiter: NewReadWaiter()}
	if n.caps == (Capabilities{}) {
		n.caps = DefaultNullCaps
	}
	if cfg.RXTemplate != nil {
		n.template = append([]byte(nil), cfg.RXTemplate...)
	}
	n.vnetHdrLen.Store(12)
	return n
}

// ReadPackets implements Backend. With a template it fills all of bufs
// (a buffer shorter than the template gets a truncated copy) and never blocks.
func (n *Null) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	if n.template == nil {
		_, err := n.waiter.Wait(nil)
		return 0, err
	}
	if n.waiter.IsClosed() {
		return 0, os.ErrClosed
	}
	if n.waiter.Expired() {
		return 0, os.ErrDeadlineExceeded
	}
	for i := range bufs {
		sizes[i] = copy(bufs[i][offset:], n.template)
	}
	n.readPackets.Add(uint64(len(bufs)))
	return len(bufs), nil
}

// TryReadPackets implements PollReader: with a template it is ReadPackets
// (which never waits); without one there is never anything to read.
func (n *Null) TryReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	if n.template == nil {
		if n.waiter.IsClosed() {
			return 0, os.ErrClosed
		}
		return 0, nil
	}
	return n.ReadPackets(bufs, sizes, offset)
}

// WritePackets implements Backend: it counts packets and bytes.
func (n *Null) WritePackets(pkts [][][]byte) (int, error) {
	if n.waiter.IsClosed() {
		return 0, &PacketError{Index: 0, Err: os.ErrClosed}
	}
	total := 0
	for _, p := range pkts {
		total += packetLen(p)
	}
	n.writtenPackets.Add(uint64(len(pkts)))
	n.writtenBytes.Add(uint64(total))
	return len(pkts), nil
}

// Written returns the packets and bytes (headers included) written so far.
func (n *Null) Written() (packets, bytes uint64) {
	return n.writtenPackets.Load(), n.writtenBytes.Load()
}

// ReadCount returns the packets ReadPackets has served from the template.
func (n *Null) ReadCount() uint64 { return n.readPackets.Load() }

// Caps implements Backend.
func (n *Null) Caps() Capabilities { return n.caps }

// SetOffload implements Backend; it records the features.
func (n *Null) SetOffload(guestFeatures uint64) error {
	n.guestFeatures.Store(guestFeatures)
	return nil
}

// GuestFeatures returns what SetOffload last recorded.
func (n *Null) GuestFeatures() uint64 { return n.guestFeatures.Load() }

// SetVnetHdrLen implements Backend; it records the length.
func (n *Null) SetVnetHdrLen(l int) error {
	if err := CheckVnetHdrLen(l); err != nil {
		return err
	}
	n.vnetHdrLen.Store(int32(l))
	return nil
}

// VnetHdrLen returns the header length last set (12 initially).
func (n *Null) VnetHdrLen() int { return int(n.vnetHdrLen.Load()) }

// SetReadDeadline implements Backend.
func (n *Null) SetReadDeadline(t time.Time) error {
	n.waiter.SetDeadline(t)
	return nil
}

// Close implements Backend.
func (n *Null) Close() error {
	n.waiter.Close()
	return nil
}
