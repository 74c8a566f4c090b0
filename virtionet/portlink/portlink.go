// Package portlink joins ports guest to guest: a Link cross-connects two
// ports, a Switch is a small learning L2 switch across several. Neither is
// a backend. A port's device hands what its guest transmits to its Port
// (Send, from its TX worker), and names the Receiver where the link
// delivers what the port's peers transmit (Bind). The link only routes:
// copying into the receiving guest's RX ring, translating the header to
// what that guest negotiated, waiting for its buffers and counting are the
// receiving device's job (virtionet), because only it knows its ring, its
// features and its counters.
//
// Why a seam of its own: the link used to pose as the device's
// backend.Backend (stub reads, a type assertion to find it) and to write
// into another device's RX worker internals. With Receiver the link holds
// nothing of a device, can be tested without one, and the device is told
// explicitly that a queue pair is fed by peers (virtionet.Config.Peers).
package portlink

import (
	"sync/atomic"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Receiver is the receive side of a port joined to a Link or Switch.
//
// Deliver copies a batch into the port's RX ring; pkts[i] is the sender's
// virtio_net_hdr followed by the frame's iovecs, straight from the sender's
// TX buffers (the one copy a packet gets on its way). Super-packets arrive
// whole; the receiver translates the header to what its driver negotiated
// (segments, completes the checksum) and waits a bounded time for RX
// buffers, counting on itself what it drops. It is called from the
// sender's TX worker, possibly from several senders at once (a switch):
// the receiver serialises them, so its RX ring has one writer at a time.
// pkts and the memory it points to belong to the sender and are only valid
// during the call. Deliver must not allocate.
//
// It returns how many packets it refused outright because its RX ring is
// not running (stopped, disabled or broken): no ring worker exists to count
// those, so the link counts them (End.Dropped, SwitchPort.Dropped).
type Receiver interface {
	Deliver(pkts [][][]byte) (refused int)
}

// Port is one port's attachment to a Link or Switch, as its device sees it.
type Port interface {
	// Send hands the packets the port's guest transmitted to the link, from
	// the port's TX worker (one caller at a time). Each pkts[i] is the
	// sender's virtio_net_hdr then the frame's iovecs, valid only during
	// the call. Every packet is taken; what a receiver cannot place is
	// counted there.
	Send(pkts [][][]byte)
	// Bind names where the link delivers what peers send to this port. A
	// device binds once, when it is built; until then, packets toward the
	// port are counted as dropped.
	Bind(r Receiver)
}

// Caps is what a port on a link takes from its sender: every virtio offload
// and the largest super-packet. A guest on the other end takes whatever its
// driver negotiated and the receiving device translates the rest on
// delivery, so the sender never segments or checksums for the link.
var Caps = backend.Capabilities{
	Offloads:   vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6 | vnet.OffloadTSOECN | vnet.OffloadUSO | vnet.OffloadUFO,
	GSOMaxSize: 65536,
	GSOMaxSegs: 65535,
	MTU:        65535,
}

// inbox is the receive side of one port of a link or switch.
type inbox struct {
	// rcv is set once by Bind; an atomic pointer because a peer's TX worker
	// may already be sending when this port's device is built. A pointer to
	// a box so the load neither locks nor allocates.
	rcv atomic.Pointer[boundReceiver]

	// Dropped counts packets sent toward this port while it had no
	// receiver or its RX ring was not running.
	Dropped atomic.Uint64
}

type boundReceiver struct{ r Receiver }

// Bind implements Port.
func (b *inbox) Bind(r Receiver) {
	if r == nil {
		b.rcv.Store(nil)
		return
	}
	b.rcv.Store(&boundReceiver{r})
}

// deliver hands pkts to this port's receiver.
func (b *inbox) deliver(pkts [][][]byte) {
	br := b.rcv.Load()
	if br == nil {
		b.Dropped.Add(uint64(len(pkts)))
		return
	}
	if n := br.r.Deliver(pkts); n > 0 {
		b.Dropped.Add(uint64(n))
	}
}

// Link cross-connects two ports guest to guest: what one sends the other
// receives (the way a DPDK vhost port enqueues into another vring: no
// staging buffer, no extra goroutine hop).
type Link struct{ a, b End }

// End is one end of a Link.
type End struct {
	inbox
	peer *End
}

var _ Port = (*End)(nil)

// NewLink returns the two ends of a cross-connect.
func NewLink() (*End, *End) {
	l := &Link{}
	l.a.peer, l.b.peer = &l.b, &l.a
	return &l.a, &l.b
}

// Send implements Port: deliver into the peer's guest.
func (e *End) Send(pkts [][][]byte) { e.peer.deliver(pkts) }
