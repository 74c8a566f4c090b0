// Package testpkt builds the Ethernet frames and virtio_net_hdrs the tests send
// through the device and the backends, in the style of gVisor's header
// builders: one encoder per header, and frame builders that compose them
// with correct checksums (the production ones of virtionet/vnet). It is
// test support: only tests and test tools import it.
package testpkt

import (
	"encoding/binary"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Header sizes and numbers.
const (
	EthLen  = 14
	IPv4Len = 20
	IPv6Len = 40
	TCPLen  = 20
	UDPLen  = 8
	ICMPLen = 8
	ARPLen  = 28
	HdrLen  = 12 // virtio_net_hdr with num_buffers (VERSION_1)

	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeIPv6 = 0x86dd

	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17

	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
)

// Default addresses: the guest (source) and its peer (destination).
var (
	GuestMAC  = []byte{2, 0, 0, 0, 0, 1}
	PeerMAC   = []byte{2, 0, 0, 0, 0, 2}
	GuestIP4  = []byte{10, 0, 0, 1}
	PeerIP4   = []byte{10, 0, 0, 2}
	GuestIP6  = []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	PeerIP6   = []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}
	Broadcast = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

// Hdr encodes h as a 12-byte virtio_net_hdr.
func Hdr(h vnet.Hdr) []byte { return HdrN(HdrLen, h) }

// HdrN encodes h in n bytes (10 without num_buffers, 12 with).
func HdrN(n int, h vnet.Hdr) []byte {
	b := make([]byte, max(n, HdrLen))
	h.Encode(b)
	return b[:n]
}

// VnetHdr is Hdr from its fields.
func VnetHdr(flags, gsoType uint8, gsoSize, csumStart, csumOffset uint16) []byte {
	return Hdr(vnet.Hdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset})
}

// Ethernet is an Ethernet II header.
type Ethernet struct {
	Dst, Src []byte // nil: PeerMAC, GuestMAC
	Type     uint16
}

// Encode writes the header to b[:EthLen].
func (e Ethernet) Encode(b []byte) {
	copy(b[0:6], or(e.Dst, PeerMAC))
	copy(b[6:12], or(e.Src, GuestMAC))
	binary.BigEndian.PutUint16(b[12:], e.Type)
}

// IPv4 is an option-less IPv4 header; Encode fills in the header checksum.
type IPv4 struct {
	TOS      uint8
	TotalLen uint16
	ID       uint16
	DF       bool
	TTL      uint8 // 0: 64
	Proto    uint8
	Src, Dst []byte // nil: GuestIP4, PeerIP4
}

// Encode writes the header to b[:IPv4Len].
func (h IPv4) Encode(b []byte) {
	ip := b[:IPv4Len]
	clear(ip)
	ip[0], ip[1] = 0x45, h.TOS
	binary.BigEndian.PutUint16(ip[2:], h.TotalLen)
	binary.BigEndian.PutUint16(ip[4:], h.ID)
	if h.DF {
		ip[6] = 0x40
	}
	ip[8], ip[9] = h.TTL, h.Proto
	if ip[8] == 0 {
		ip[8] = 64
	}
	copy(ip[12:16], or(h.Src, GuestIP4))
	copy(ip[16:20], or(h.Dst, PeerIP4))
	FixIPv4(ip)
}

// FixIPv4 recomputes the checksum of the IPv4 header at the start of ip
// (its IHL says how long it is) after a test edited it.
func FixIPv4(ip []byte) {
	ihl := int(ip[0]&0xf) * 4
	if ihl < IPv4Len || ihl > len(ip) {
		return
	}
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip[:ihl], 0))
}

// IPv6 is an IPv6 header without extension headers.
type IPv6 struct {
	TrafficClass uint8
	FlowLabel    uint32
	PayloadLen   uint16
	NextHeader   uint8
	HopLimit     uint8  // 0: 64
	Src, Dst     []byte // nil: GuestIP6, PeerIP6
}

// Encode writes the header to b[:IPv6Len].
func (h IPv6) Encode(b []byte) {
	binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(h.TrafficClass)<<20|h.FlowLabel&0xfffff)
	binary.BigEndian.PutUint16(b[4:], h.PayloadLen)
	b[6], b[7] = h.NextHeader, h.HopLimit
	if b[7] == 0 {
		b[7] = 64
	}
	copy(b[8:24], or(h.Src, GuestIP6))
	copy(b[24:40], or(h.Dst, PeerIP6))
}

// TCP is an option-less TCP header (checksum left 0).
type TCP struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16
}

// Encode writes the header to b[:TCPLen].
func (h TCP) Encode(b []byte) {
	binary.BigEndian.PutUint16(b[0:], h.SrcPort)
	binary.BigEndian.PutUint16(b[2:], h.DstPort)
	binary.BigEndian.PutUint32(b[4:], h.Seq)
	binary.BigEndian.PutUint32(b[8:], h.Ack)
	b[12], b[13] = 5<<4, h.Flags
	binary.BigEndian.PutUint16(b[14:], h.Window)
	binary.BigEndian.PutUint32(b[16:], 0)
}

// UDP is a UDP header (checksum left 0).
type UDP struct {
	SrcPort, DstPort uint16
	Length           uint16
}

// Encode writes the header to b[:UDPLen].
func (h UDP) Encode(b []byte) {
	binary.BigEndian.PutUint16(b[0:], h.SrcPort)
	binary.BigEndian.PutUint16(b[2:], h.DstPort)
	binary.BigEndian.PutUint16(b[4:], h.Length)
	binary.BigEndian.PutUint16(b[6:], 0)
}

// Csum says what a frame builder puts in the transport checksum field.
type Csum int

const (
	CsumNone    Csum = iota // 0 (UDP: no checksum; TCP: wrong)
	CsumPartial             // the pseudo-header sum, as a guest sends with NEEDS_CSUM
	CsumFull                // the complete checksum
)

// SetL4Csum fills the checksum field at csumOff of the transport segment
// l4 (carried by proto between src and dst) as c says.
func SetL4Csum(c Csum, proto uint8, src, dst, l4 []byte, csumOff int) {
	f := l4[csumOff : csumOff+2]
	f[0], f[1] = 0, 0
	switch c {
	case CsumPartial:
		binary.BigEndian.PutUint16(f, vnet.PseudoHeaderSum(proto, src, dst, uint32(len(l4))))
	case CsumFull:
		s := ^vnet.Checksum(l4, vnet.PseudoHeaderSum(proto, src, dst, uint32(len(l4))))
		if proto == ProtoUDP && s == 0 {
			s = 0xffff
		}
		binary.BigEndian.PutUint16(f, s)
	}
}

// Frame describes an Ethernet/IP frame for the builders below; the zero
// value is guest to peer over IPv4 with TTL 64, ID 0, no DF, no checksum
// and a zero payload.
type Frame struct {
	Eth  Ethernet // Type is set by the builder
	IPv4 IPv4     // TotalLen, Proto are set by the builder
	IPv6 *IPv6    // non-nil: an IPv6 frame (PayloadLen, NextHeader set by the builder)
	Csum Csum
	// Payload is the transport payload; when nil, Fill(off) gives the byte
	// at frame offset off (nil Fill: zeroes).
	Payload []byte
	Fill    func(off int) byte
}

// IndexFill is the payload pattern byte(off*k) of the frame offset.
func IndexFill(k int) func(off int) byte { return func(off int) byte { return byte(off * k) } }

// ipFrame lays out Ethernet and the IP header for l4len bytes of
// transport, fills the payload from l4Hdr on, and returns the frame, the
// transport segment and the source and destination addresses.
func (f Frame) ipFrame(proto uint8, l4Hdr, payloadLen int) (frame, l4, src, dst []byte) {
	l3 := IPv4Len
	if f.IPv6 != nil {
		l3 = IPv6Len
	}
	if f.Payload != nil {
		payloadLen = len(f.Payload)
	}
	l4off := EthLen + l3
	frame = make([]byte, l4off+l4Hdr+payloadLen)
	l4 = frame[l4off:]
	if f.IPv6 != nil {
		f.Eth.Type = EtherTypeIPv6
		h := *f.IPv6
		h.PayloadLen, h.NextHeader = uint16(len(l4)), proto
		h.Encode(frame[EthLen:])
		src, dst = frame[EthLen+8:EthLen+24], frame[EthLen+24:EthLen+40]
	} else {
		f.Eth.Type = EtherTypeIPv4
		h := f.IPv4
		h.TotalLen, h.Proto = uint16(l3+len(l4)), proto
		h.Encode(frame[EthLen:])
		src, dst = frame[EthLen+12:EthLen+16], frame[EthLen+16:EthLen+20]
	}
	f.Eth.Encode(frame)
	if f.Payload != nil {
		copy(l4[l4Hdr:], f.Payload)
	} else if f.Fill != nil {
		for i := l4off + l4Hdr; i < len(frame); i++ {
			frame[i] = f.Fill(i)
		}
	}
	return frame, l4, src, dst
}

// UDP builds a UDP frame with payloadLen bytes of payload (len(f.Payload)
// if set).
func (f Frame) UDP(h UDP, payloadLen int) []byte {
	frame, l4, src, dst := f.ipFrame(ProtoUDP, UDPLen, payloadLen)
	h.Length = uint16(len(l4))
	h.Encode(l4)
	SetL4Csum(f.Csum, ProtoUDP, src, dst, l4, 6)
	return frame
}

// TCP builds a TCP frame (a super-packet when the payload exceeds the MSS)
// with payloadLen bytes of payload (len(f.Payload) if set).
func (f Frame) TCP(h TCP, payloadLen int) []byte {
	frame, l4, src, dst := f.ipFrame(ProtoTCP, TCPLen, payloadLen)
	h.Encode(l4)
	SetL4Csum(f.Csum, ProtoTCP, src, dst, l4, 16)
	return frame
}

// ICMPEcho builds an ICMPv4 echo request (type 8) with its checksum; the
// payload is f.Payload.
func (f Frame) ICMPEcho(id, seq uint16) []byte {
	frame, l4, _, _ := f.ipFrame(ProtoICMP, ICMPLen, 0)
	l4[0] = 8
	binary.BigEndian.PutUint16(l4[4:], id)
	binary.BigEndian.PutUint16(l4[6:], seq)
	binary.BigEndian.PutUint16(l4[2:], ^vnet.Checksum(l4, 0))
	return frame
}

// ARPRequest is a broadcast ARP request from srcMAC/srcIP for targetIP.
func ARPRequest(srcMAC, srcIP, targetIP []byte) []byte {
	f := make([]byte, EthLen+ARPLen)
	Ethernet{Dst: Broadcast, Src: srcMAC, Type: EtherTypeARP}.Encode(f)
	a := f[EthLen:]
	binary.BigEndian.PutUint16(a[0:], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:], EtherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1) // request
	copy(a[8:14], srcMAC)
	copy(a[14:18], srcIP)
	copy(a[24:28], targetIP)
	return f
}

func or(b, def []byte) []byte {
	if b == nil {
		return def
	}
	return b
}

// The guest's usual flows: UDP 1234 → 5678, TCP 40000 → 5201 (iperf3).
var (
	GuestUDP = UDP{SrcPort: 1234, DstPort: 5678}
	GuestTCP = TCP{SrcPort: 40000, DstPort: 5201, Seq: 1000, Ack: 1, Flags: TCPFlagPSH | TCPFlagACK, Window: 65535}
)

// UDP4 is a guest UDP/IPv4 frame of size bytes, payload byte(offset),
// with the checksum field as c says. A size below 42 cuts the frame inside
// the UDP header (no checksum), the lengths still saying size.
func UDP4(size int, c Csum) []byte {
	const hdrs = EthLen + IPv4Len + UDPLen
	if size >= hdrs {
		return Frame{Csum: c, Fill: IndexFill(1)}.UDP(GuestUDP, size-hdrs)
	}
	f := Frame{}.UDP(GuestUDP, 0)
	binary.BigEndian.PutUint16(f[EthLen+2:], uint16(size-EthLen))
	FixIPv4(f[EthLen:])
	binary.BigEndian.PutUint16(f[EthLen+IPv4Len+4:], uint16(size-EthLen-IPv4Len))
	return f[:size]
}

// TCP4Super is a guest TCP/IPv4 super-packet with payload bytes of payload
// (byte(offset*7)), DF, and the pseudo-header sum in the checksum field:
// what a guest sends with NEEDS_CSUM + GSO_TCPV4 (see TSO4Hdr).
func TCP4Super(payload int) []byte {
	return Frame{IPv4: IPv4{ID: 0x1000, DF: true}, Csum: CsumPartial, Fill: IndexFill(7)}.TCP(GuestTCP, payload)
}

// TSO4Hdr is the virtio_net_hdr a guest sends with TCP4Super: NEEDS_CSUM,
// GSO_TCPV4 with gso_size mss, checksum from offset 34, field at 16.
func TSO4Hdr(mss uint16) []byte {
	return VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, mss, EthLen+IPv4Len, 16)
}
