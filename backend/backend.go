// Package backend is where vhostd sends the guest's packets and gets packets
// for the guest: a Linux tap, a null sink for benchmarks, an in-memory pipe for
// tests, and later macvtap and guest-to-guest ports. The Backend interface is
// shaped after wireguard-go's tun.Device: batched reads and writes of packets
// that carry a virtio_net_hdr in front of the Ethernet frame.
//
// This package must not import virtionet (virtionet imports it); guest
// feature bits arrive as a plain uint64 of virtio bit numbers, read with
// virtionet/vnet, which also owns the offload set (vnet.Offloads) and the
// guest-feature -> TUN_F_* mapping (vnet.TunOffloads).
package backend

import (
	"errors"
	"fmt"
	"time"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Backend moves packets between vhostd and the host side. Each packet is a
// virtio_net_hdr (VnetHdrLen bytes, 10 or 12) followed by an Ethernet frame.
//
// One goroutine may call ReadPackets while another calls WritePackets; two
// concurrent calls of the same method are not allowed. The control methods
// (SetOffload, SetVnetHdrLen, Caps) may run concurrently with I/O.
type Backend interface {
	// ReadPackets reads up to len(bufs) packets; bufs[i][offset:] receives the
	// virtio_net_hdr (VnetHdrLen bytes) followed by the frame; sizes[i] = bytes
	// read after offset. Blocks (through the Go poller) until at least one
	// packet, the read deadline (os.ErrDeadlineExceeded) or Close
	// (os.ErrClosed). len(sizes) must be >= len(bufs).
	ReadPackets(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// WritePackets writes packets given as iovec lists: pkts[i] is the
	// virtio_net_hdr followed by the frame, possibly pointing into guest
	// memory; the backend does not keep the slices after it returns. It
	// returns the number n of packets written. If err != nil, pkts[n] failed
	// (err is a *PacketError whose Index is n and which unwraps to the errno,
	// e.g. EINVAL when the kernel rejected the vnet header) and pkts[n+1:]
	// were not tried: the caller counts pkts[n] as dropped and calls again
	// with pkts[n+1:].
	WritePackets(pkts [][][]byte) (n int, err error)
	// Caps reports what the backend accepts and its limits.
	Caps() Capabilities
	// SetOffload programs the offloads the backend may hand us on read from
	// the guest's acked GUEST_* virtio bits (TUNSETOFFLOAD for a tap), so that
	// every packet read can go to the guest unchanged.
	SetOffload(guestFeatures uint64) error
	// SetVnetHdrLen sets the header length used in both directions
	// (TUNSETVNETHDRSZ for a tap): 10 or 12.
	SetVnetHdrLen(n int) error
	// SetReadDeadline makes a blocked or future ReadPackets return
	// os.ErrDeadlineExceeded at t; the zero time clears it.
	SetReadDeadline(t time.Time) error
	// Close releases the backend; a blocked ReadPackets returns.
	Close() error
}

// PollReader is implemented by backends a worker can poll without blocking
// (tap, macvtap): the adaptive busy-poll loop looks at the backend this way
// before it goes to sleep in ReadPackets.
type PollReader interface {
	// TryReadPackets is ReadPackets that returns (0, nil) at once when no
	// packet is queued, instead of waiting.
	TryReadPackets(bufs [][]byte, sizes []int, offset int) (n int, err error)
}

// Capabilities says what a backend takes whole on WritePackets and its limits
// (what gso.Decide needs to pick pass-whole, resegment or segment).
type Capabilities struct {
	Offloads   vnet.Offloads // packet kinds WritePackets accepts unsegmented
	GSOMaxSize uint32        // the link's gso_max_size: a super-packet must be smaller
	GSOMaxSegs uint32        // the link's gso_max_segs
	MTU        int           // the link MTU (L3 bytes)
	// LimitsFrom names what set GSOMaxSize, GSOMaxSegs and MTU, for status
	// and diagnoses: the egress device and how it was found ("eth1 (bridge
	// br0)", "none (local delivery)"), "--gso-max-size/--gso-max-segs", ...
	LimitsFrom string
}

// PacketError is the error WritePackets returns for the packet it could not
// write. It unwraps to the cause (a syscall.Errno for a tap), so callers can
// count by errno with errors.As.
type PacketError struct {
	Index int   // index into the pkts argument of the failed call
	Err   error // the cause
}

func (e *PacketError) Error() string {
	return fmt.Sprintf("write packet %d: %v", e.Index, e.Err)
}

func (e *PacketError) Unwrap() error { return e.Err }

// ErrTooManySegments: a packet has more iovecs than one writev takes
// (UIO_MAXIOV, 1024); the caller must linearise it.
var ErrTooManySegments = errors.New("packet has more than 1024 segments: linearise it before writing")

// ErrVnetHdrLen: SetVnetHdrLen was given a length other than 10 or 12.
var ErrVnetHdrLen = errors.New("vnet header length must be 10 or 12")

// tunOffloadFallbacks are the flag sets SetOffload tries, in order, when the
// kernel refuses what the guest could take (EINVAL: an older kernel without
// USO, or a driver without UFO): each step gives up one more offload. The
// guest then gets the packets segmented or checksummed by the host kernel,
// which it can always take; nothing fails.
var tunOffloadFallbacks = [...]uint32{
	^uint32(vnet.TunFUSO4 | vnet.TunFUSO6),
	^uint32(vnet.TunFUSO4 | vnet.TunFUSO6 | vnet.TunFUFO),
	^uint32(vnet.TunFUSO4 | vnet.TunFUSO6 | vnet.TunFUFO | vnet.TunFTSOECN),
	vnet.TunFCsum,
	0,
}

// QueueAttacher is implemented by backends whose queues the host can steer
// packets to only while they are attached: a multiqueue tap or macvtap
// (TUNSETQUEUE with IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE). The kernel spreads
// flows it has no steering entry for over every attached queue
// (tun_automq_select_queue), so a queue whose guest ring is disabled must be
// detached or its packets are never read.
type QueueAttacher interface {
	// SetQueueAttached attaches (true) or detaches (false) this queue. It is
	// idempotent. A single-queue device is always attached: it returns nil
	// and changes nothing.
	SetQueueAttached(on bool) error
	// QueueAttached reports whether the queue is attached now.
	QueueAttached() bool
}

// MTUSetter is implemented by backends whose link MTU vhostd may change: a
// tap or a macvtap. The front-end's VHOST_USER_NET_SET_MTU (libvirt
// <mtu size='N'/>) asks for it; a backend that cannot carry the guest's
// MTU must refuse, so QEMU stops with "MTU not supported by the backend"
// instead of the guest sending frames the host drops.
type MTUSetter interface {
	// SetLinkMTU sets the link's MTU (L3 bytes); it returns a clear error
	// when the kernel or the missing privilege refuses it.
	SetLinkMTU(mtu int) error
}

// CheckVnetHdrLen accepts the virtio_net_hdr lengths a backend can
// take: 10 and 12 bytes (ErrVnetHdrLen otherwise).
func CheckVnetHdrLen(n int) error {
	if n != 10 && n != 12 {
		return fmt.Errorf("%w (got %d)", ErrVnetHdrLen, n)
	}
	return nil
}

// packetLen is the total byte length of an iovec list.
func packetLen(pkt [][]byte) int {
	n := 0
	for _, b := range pkt {
		n += len(b)
	}
	return n
}
