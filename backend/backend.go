// Package backend is where vhostd sends the guest's packets and gets packets
// for the guest: a Linux tap, a null sink for benchmarks, an in-memory pipe for
// tests, and later macvtap and guest-to-guest ports. The Backend interface is
// shaped after wireguard-go's tun.Device: batched reads and writes of packets
// that carry a virtio_net_hdr in front of the Ethernet frame.
//
// This package must not import virtionet (virtionet imports it); guest
// feature bits arrive as a plain uint64 of virtio bit numbers.
package backend

import (
	"errors"
	"fmt"
	"strings"
	"time"
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

// Capabilities says what a backend takes whole on WritePackets and its limits
// (what gso.Decide needs to pick pass-whole, resegment or segment).
type Capabilities struct {
	Offloads   Offloads // packet kinds WritePackets accepts unsegmented
	GSOMaxSize uint32   // the link's gso_max_size: a super-packet must be smaller
	GSOMaxSegs uint32   // the link's gso_max_segs
	MTU        int      // the link MTU (L3 bytes)
	// LimitsFrom names what set GSOMaxSize, GSOMaxSegs and MTU, for status
	// and diagnoses: the egress device and how it was found ("eth1 (bridge
	// br0)", "none (local delivery)"), "--gso-max-size/--gso-max-segs", ...
	LimitsFrom string
}

// Offloads is a set of offload kinds a backend accepts on write: partial
// checksums and GSO super-packets by type. The gso package maps it to its own
// feature set.
type Offloads uint32

const (
	OffloadCSUM   Offloads = 1 << iota // NEEDS_CSUM packets (partial checksum)
	OffloadTSO4                        // GSO_TCPV4
	OffloadTSO6                        // GSO_TCPV6
	OffloadTSOECN                      // the GSO_ECN bit on TCP super-packets
	OffloadUSO                         // GSO_UDP_L4, IPv4 and IPv6
	OffloadUFO                         // GSO_UDP (UDP fragmentation offload)
)

var offloadNames = [...]string{"csum", "tso4", "tso6", "tso_ecn", "uso", "ufo"}

// String lists the offloads, e.g. "csum|tso4|tso6", or "none".
func (o Offloads) String() string {
	if o == 0 {
		return "none"
	}
	var parts []string
	for i, n := range offloadNames {
		if o&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	if rest := o &^ (1<<len(offloadNames) - 1); rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(parts, "|")
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

// Guest feature bits (virtio spec 5.1.3) that decide what a backend may hand
// to the guest; virtionet defines the same numbers as virtionet.Feature.
const (
	guestCSUM = 1 << 1
	guestTSO4 = 1 << 7
	guestTSO6 = 1 << 8
	guestECN  = 1 << 9
	guestUFO  = 1 << 10
	guestUSO4 = 1 << 54
	guestUSO6 = 1 << 55
)

// TUN_F_* flags for TUNSETOFFLOAD (include/uapi/linux/if_tun.h).
const (
	TunFCsum   = 0x01
	TunFTSO4   = 0x02
	TunFTSO6   = 0x04
	TunFTSOECN = 0x08
	TunFUFO    = 0x10
	TunFUSO4   = 0x20
	TunFUSO6   = 0x40
)

// TunOffloadFlags maps the guest's acked virtio features to the TUN_F_* flags
// a tap or macvtap will take: GUEST_CSUM->CSUM, GUEST_TSO4->TSO4,
// GUEST_TSO6->TSO6, GUEST_ECN->TSO_ECN, GUEST_UFO->UFO, and
// GUEST_USO4+GUEST_USO6->USO4|USO6 only together.
//
// The kernel's rules (tun.c set_offload, tap.c set_offload) decide the
// shape: every GSO flag is only taken together with TUN_F_CSUM (without it
// any other bit is EINVAL), TSO_ECN only beside TSO4 or TSO6, and USO only as
// the pair (one alone is an unknown bit). A guest may ack GUEST_TSO4 without
// GUEST_CSUM (QEMU's csum=off,guest_csum=off masks GUEST_CSUM only), so the
// flags follow the rules rather than the bits one by one: such a guest gets
// plain, fully checksummed frames, which it can always take. HOST_* bits do
// not matter here: they concern what the guest sends, which the tap accepts
// regardless (see Tap).
func TunOffloadFlags(guestFeatures uint64) uint32 {
	if guestFeatures&guestCSUM == 0 {
		return 0
	}
	f := uint32(TunFCsum)
	if guestFeatures&guestTSO4 != 0 {
		f |= TunFTSO4
	}
	if guestFeatures&guestTSO6 != 0 {
		f |= TunFTSO6
	}
	if guestFeatures&guestECN != 0 && f&(TunFTSO4|TunFTSO6) != 0 {
		f |= TunFTSOECN
	}
	if guestFeatures&guestUFO != 0 {
		f |= TunFUFO
	}
	if guestFeatures&(guestUSO4|guestUSO6) == guestUSO4|guestUSO6 {
		f |= TunFUSO4 | TunFUSO6
	}
	return f
}

// tunOffloadFallbacks are the flag sets SetOffload tries, in order, when the
// kernel refuses what the guest could take (EINVAL: an older kernel without
// USO, or a driver without UFO): each step gives up one more offload. The
// guest then gets the packets segmented or checksummed by the host kernel,
// which it can always take; nothing fails.
var tunOffloadFallbacks = [...]uint32{
	^uint32(TunFUSO4 | TunFUSO6),
	^uint32(TunFUSO4 | TunFUSO6 | TunFUFO),
	^uint32(TunFUSO4 | TunFUSO6 | TunFUFO | TunFTSOECN),
	TunFCsum,
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

func checkVnetHdrLen(n int) error {
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
