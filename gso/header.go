package gso

import (
	"encoding/binary"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Typed byte-slice views of protocol headers, in the style of gVisor's
// pkg/tcpip/header: a view is the header's own bytes, accessors read and
// write them in network byte order, and nothing is copied or allocated. A
// view does not check its length; the parser only builds views over byte
// ranges it has bounds-checked, and the segmenters only over headers they
// wrote themselves.

// EtherType values this package recognises (IEEE 802 numbers).
const (
	EtherTypeIPv4  = 0x0800
	EtherTypeIPv6  = 0x86dd
	EtherTypeVLAN  = 0x8100 // 802.1Q C-tag
	EtherTypeQinQ  = 0x88a8 // 802.1ad S-tag
	EthernetLen    = 14
	VLANTagLen     = 4
	IPv4MinLen     = 20
	IPv6Len        = 40
	IPv6FragLen    = 8
	TCPMinLen      = 20
	UDPLen         = 8
	ProtoTCP       = 6
	ProtoUDP       = 17
	ProtoHopByHop  = 0
	ProtoRouting   = 43
	ProtoFragment  = 44
	ProtoDestOpts  = 60
	maxVLANTags    = 8 // VLAN_MAX_DEPTH in include/linux/if_vlan.h
	udpMaxSegments = 128
)

// Ethernet is an Ethernet II header (14 bytes).
type Ethernet []byte

// Dst returns the destination MAC address bytes.
func (b Ethernet) Dst() []byte { return b[0:6] }

// Src returns the source MAC address bytes.
func (b Ethernet) Src() []byte { return b[6:12] }

// Type returns the EtherType (or the TPID of a first VLAN tag).
func (b Ethernet) Type() uint16 { return binary.BigEndian.Uint16(b[12:]) }

// SetType sets the EtherType.
func (b Ethernet) SetType(t uint16) { binary.BigEndian.PutUint16(b[12:], t) }

// VLAN is the 4 bytes that follow a VLAN TPID: the tag control information
// and the EtherType of what comes next.
type VLAN []byte

// TCI returns the tag control information (PCP, DEI and VLAN id).
func (b VLAN) TCI() uint16 { return binary.BigEndian.Uint16(b[0:]) }

// ID returns the 12-bit VLAN id.
func (b VLAN) ID() uint16 { return b.TCI() & 0x0fff }

// Type returns the EtherType that follows the tag.
func (b VLAN) Type() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// IPv4 is an IPv4 header, options included.
type IPv4 []byte

// IPv4 flags in the flags/fragment-offset word.
const (
	IPv4FlagDF     = 0x4000
	IPv4FlagMF     = 0x2000
	IPv4OffsetMask = 0x1fff
)

// Version returns the IP version nibble.
func (b IPv4) Version() uint8 { return b[0] >> 4 }

// IHL returns the header length field (in 32-bit words).
func (b IPv4) IHL() uint8 { return b[0] & 0x0f }

// HeaderLen returns the header length in bytes (IHL * 4).
func (b IPv4) HeaderLen() int { return int(b.IHL()) * 4 }

// TOS returns the DSCP/ECN byte.
func (b IPv4) TOS() uint8 { return b[1] }

// TotalLength returns tot_len.
func (b IPv4) TotalLength() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// SetTotalLength sets tot_len.
func (b IPv4) SetTotalLength(n uint16) { binary.BigEndian.PutUint16(b[2:], n) }

// ID returns the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[4:]) }

// SetID sets the identification field.
func (b IPv4) SetID(id uint16) { binary.BigEndian.PutUint16(b[4:], id) }

// FlagsFragOff returns the 16-bit flags and fragment offset word.
func (b IPv4) FlagsFragOff() uint16 { return binary.BigEndian.Uint16(b[6:]) }

// SetFlagsFragOff sets the flags and fragment offset word.
func (b IPv4) SetFlagsFragOff(v uint16) { binary.BigEndian.PutUint16(b[6:], v) }

// TTL returns the time to live.
func (b IPv4) TTL() uint8 { return b[8] }

// Protocol returns the transport protocol number.
func (b IPv4) Protocol() uint8 { return b[9] }

// Checksum returns the header checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[10:]) }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[10:], c) }

// Src returns the source address bytes.
func (b IPv4) Src() []byte { return b[12:16] }

// Dst returns the destination address bytes.
func (b IPv4) Dst() []byte { return b[16:20] }

// CalculateChecksum returns the header checksum for the header as it is,
// treating the checksum field as zero (RFC 791).
func (b IPv4) CalculateChecksum() uint16 {
	h := b[:b.HeaderLen()]
	s := vnet.Checksum(h[:10], 0)
	s = vnet.Checksum(h[12:], s)
	return ^s
}

// UpdateChecksum recomputes and stores the header checksum, as
// ip_send_check() does for every segment in inet_gso_segment().
func (b IPv4) UpdateChecksum() { b.SetChecksum(b.CalculateChecksum()) }

// IPv6 is the fixed 40-byte IPv6 header.
type IPv6 []byte

// Version returns the IP version nibble.
func (b IPv6) Version() uint8 { return b[0] >> 4 }

// TrafficClass returns the traffic class byte.
func (b IPv6) TrafficClass() uint8 { return b[0]<<4 | b[1]>>4 }

// PayloadLength returns payload_len (extension headers included).
func (b IPv6) PayloadLength() uint16 { return binary.BigEndian.Uint16(b[4:]) }

// SetPayloadLength sets payload_len.
func (b IPv6) SetPayloadLength(n uint16) { binary.BigEndian.PutUint16(b[4:], n) }

// NextHeader returns the protocol of the first extension or upper-layer header.
func (b IPv6) NextHeader() uint8 { return b[6] }

// SetNextHeader sets the next-header field.
func (b IPv6) SetNextHeader(p uint8) { b[6] = p }

// HopLimit returns the hop limit.
func (b IPv6) HopLimit() uint8 { return b[7] }

// Src returns the source address bytes.
func (b IPv6) Src() []byte { return b[8:24] }

// Dst returns the destination address bytes.
func (b IPv6) Dst() []byte { return b[24:40] }

// IPv6ExtHdr is a hop-by-hop, routing or destination-options extension header
// (RFC 8200 section 4: next header, then length in 8-octet units minus one).
type IPv6ExtHdr []byte

// NextHeader returns the protocol of the header that follows.
func (b IPv6ExtHdr) NextHeader() uint8 { return b[0] }

// Len returns the header length in bytes, ipv6_optlen() in the kernel.
func (b IPv6ExtHdr) Len() int { return (int(b[1]) + 1) * 8 }

// IPv6Frag is an IPv6 fragment header (8 bytes, RFC 8200 section 4.5).
type IPv6Frag []byte

// NextHeader returns the protocol of the fragmented payload.
func (b IPv6Frag) NextHeader() uint8 { return b[0] }

// Offset returns the fragment offset in bytes.
func (b IPv6Frag) Offset() int { return int(binary.BigEndian.Uint16(b[2:]) &^ 7) }

// More reports the M (more fragments) flag.
func (b IPv6Frag) More() bool { return b[3]&1 != 0 }

// ID returns the identification.
func (b IPv6Frag) ID() uint32 { return binary.BigEndian.Uint32(b[4:]) }

// Set writes the whole fragment header: offset in bytes (a multiple of 8).
func (b IPv6Frag) Set(next uint8, offset int, more bool, id uint32) {
	b[0] = next
	b[1] = 0
	v := uint16(offset) &^ 7
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], id)
}

// TCP is a TCP header, options included.
type TCP []byte

// TCP flag bits (the low byte of the data-offset/flags word).
const (
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
	TCPFlagURG = 0x20
	TCPFlagECE = 0x40
	TCPFlagCWR = 0x80
)

// SrcPort returns the source port.
func (b TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[0:]) }

// DstPort returns the destination port.
func (b TCP) DstPort() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// Seq returns the sequence number.
func (b TCP) Seq() uint32 { return binary.BigEndian.Uint32(b[4:]) }

// SetSeq sets the sequence number.
func (b TCP) SetSeq(s uint32) { binary.BigEndian.PutUint32(b[4:], s) }

// Ack returns the acknowledgement number.
func (b TCP) Ack() uint32 { return binary.BigEndian.Uint32(b[8:]) }

// HeaderLen returns the data offset in bytes (doff * 4).
func (b TCP) HeaderLen() int { return int(b[12]>>4) * 4 }

// Flags returns the eight flag bits (CWR..FIN).
func (b TCP) Flags() uint8 { return b[13] }

// SetFlags sets the eight flag bits.
func (b TCP) SetFlags(f uint8) { b[13] = f }

// Window returns the receive window.
func (b TCP) Window() uint16 { return binary.BigEndian.Uint16(b[14:]) }

// Checksum returns the checksum field.
func (b TCP) Checksum() uint16 { return binary.BigEndian.Uint16(b[16:]) }

// SetChecksum sets the checksum field.
func (b TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[16:], c) }

// TCPChecksumOffset is csum_offset for TCP (offsetof(struct tcphdr, check)).
const TCPChecksumOffset = 16

// UDP is a UDP header.
type UDP []byte

// SrcPort returns the source port.
func (b UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[0:]) }

// DstPort returns the destination port.
func (b UDP) DstPort() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// Length returns the UDP length field.
func (b UDP) Length() uint16 { return binary.BigEndian.Uint16(b[4:]) }

// SetLength sets the UDP length field.
func (b UDP) SetLength(n uint16) { binary.BigEndian.PutUint16(b[4:], n) }

// Checksum returns the checksum field.
func (b UDP) Checksum() uint16 { return binary.BigEndian.Uint16(b[6:]) }

// SetChecksum sets the checksum field.
func (b UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[6:], c) }

// UDPChecksumOffset is csum_offset for UDP (offsetof(struct udphdr, check)).
const UDPChecksumOffset = 6
