package gso

import "github.com/vhostd/vhostd/virtionet/vnet"

// Kind is what a packet is for segmentation purposes.
type Kind uint8

const (
	// KindPlain is a packet that is not GSO: no gso_type, or a gso_type on a
	// payload that fits in one segment (Meta.SmallGSO). It may still carry a
	// partial checksum (Meta.NeedsCsum).
	KindPlain Kind = iota
	KindTCPv4      // VIRTIO_NET_HDR_GSO_TCPV4 (TSO over IPv4)
	KindTCPv6      // VIRTIO_NET_HDR_GSO_TCPV6
	KindUSO        // VIRTIO_NET_HDR_GSO_UDP_L4 over IPv4 or IPv6
	KindUFO        // VIRTIO_NET_HDR_GSO_UDP: one datagram, IP-fragmented
)

var kindNames = [...]string{"plain", "tcp4", "tcp6", "uso", "ufo"}

// String returns a short name such as "tcp4".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Meta is what Parse learned about one packet: the guest's virtio_net_hdr
// and, for GSO packets, the header layout read from the frame itself. The
// offsets are from the first byte of the Ethernet frame.
type Meta struct {
	Hdr      vnet.Hdr // the header as the guest wrote it
	FrameLen int      // bytes in the frame (virtio_net_hdr excluded)
	Kind     Kind
	// Malformed is the reason Parse rejected the packet (ReasonNone if it
	// did not). Decide returns DecisionDrop with it, so a caller may skip
	// checking Parse's result.
	Malformed Reason
	NeedsCsum bool // VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum is partial
	SmallGSO  bool // gso_type set but the payload fits in one segment
	ECN       bool // VIRTIO_NET_HDR_GSO_ECN (only for GSO kinds)
	IPv6      bool // network header is IPv6 (GSO kinds)
	IPv6Ext   bool // IPv6 extension headers present (GSO kinds)
	VLANTags  int  // 802.1Q/802.1ad tags before the network header
	L3Off     int  // network header offset (Ethernet + VLAN tags)
	L4Off     int  // transport header offset
	HdrLen    int  // L4Off + transport header length (TCP options included)
	GSOSize   int  // MSS (bytes of payload per segment; UFO: per fragment)
	// PayloadLen is the payload to divide: for TCP and USO what follows the
	// transport header, for UFO the whole datagram (UDP header included),
	// which is what the kernel fragments.
	PayloadLen int
	// Segs is the number of segments (fragments for UFO) full segmentation
	// produces: ceil(PayloadLen / GSOSize).
	Segs int
	// IPv6FragID is the identification Segment writes into the fragment
	// headers of IPv6 UFO output. Parse leaves it 0; Segment then takes one
	// from a package counter. The kernel picks it with
	// ipv6_proxy_select_ident(), a keyed hash no one else can reproduce.
	IPv6FragID uint32
}

// Parse checks a frame and its virtio_net_hdr the way the kernel does when
// the same packet is written to a tap (virtio_net_hdr_to_skb() in
// include/linux/virtio_net.h, then the header checks of inet_gso_segment /
// ipv6_gso_segment / tcp_gso_segment / __udp_gso_segment), and reads the
// header layout of GSO packets from the frame's own bytes; hdr.HdrLen is
// never used. A non-GSO packet is only checked as far as its csum_start and
// csum_offset go: its L3/L4 headers are not parsed.
//
// Malformed input returns a Malformed* reason (also stored in Meta.Malformed)
// and never panics. frame must be the whole frame; for a frame in several
// pieces use ParseHead.
func Parse(frame []byte, hdr vnet.Hdr) (Meta, Reason) {
	return ParseHead(frame, len(frame), hdr)
}

// ParseHead is Parse for a frame of frameLen bytes of which head holds the
// first len(head) contiguous bytes (typically the first guest buffer). If
// the headers do not end inside head, it returns ReasonHeadTooShort (not a
// drop): gather a longer prefix of the frame (256 bytes covers any header
// stack short of long IPv6 extension-header chains) into a scratch buffer
// and parse again. Nothing beyond the headers is read.
func ParseHead(head []byte, frameLen int, hdr vnet.Hdr) (Meta, Reason) {
	m := Meta{Hdr: hdr, FrameLen: frameLen}
	r := m.parse(head)
	if r != ReasonNone && r.Malformed() {
		m.Malformed = r
	}
	return m, r
}

func (m *Meta) parse(head []byte) Reason {
	h := m.Hdr
	if m.FrameLen < 0 {
		return ReasonMalformedEthernet
	}
	if len(head) > m.FrameLen {
		head = head[:m.FrameLen]
	}
	m.NeedsCsum = h.Flags&vnet.FlagNeedsCsum != 0

	// The header-level rules of virtio_net_hdr_to_skb() (gso_type,
	// gso_size, csum_start/csum_offset, the 2024 strict TCP and UDP_L4
	// rules) live in vnet, written once. Policy: gso mirrors the kernel
	// (KernelRules), so a GSO header without NEEDS_CSUM passes here and
	// Decide segments it in software (ReasonGSONoNeedsCsum), as the kernel
	// would; the device's TX path is stricter and drops it first
	// (vnet.DeviceRules, spec 5.1.6.2).
	if r := h.Check(m.FrameLen, vnet.KernelRules); r != vnet.HdrOK {
		return hdrReasons[r]
	}
	if h.GSOType == vnet.GSONone {
		m.Kind = KindPlain
		return ReasonNone
	}
	var kind Kind
	switch h.GSOType &^ vnet.GSOECN {
	case vnet.GSOTCPv4:
		kind = KindTCPv4
	case vnet.GSOTCPv6:
		kind = KindTCPv6
	case vnet.GSOUDP:
		kind = KindUFO
	default: // vnet.GSOUDPL4: Check let no other type through
		kind = KindUSO
	}
	m.ECN = h.GSOType&vnet.GSOECN != 0
	m.GSOSize = int(h.GSOSize)

	if r := m.parseHeaders(head, kind); r != ReasonNone {
		return r
	}

	// tcp_gso_segment() and __udp_gso_segment() both insist that the
	// checksum starts at the transport header.
	if m.NeedsCsum && kind != KindUFO && int(h.CsumStart) != m.L4Off {
		return ReasonMalformedCsumStart
	}

	if kind == KindUFO {
		m.PayloadLen = m.FrameLen - m.L4Off
	} else {
		m.PayloadLen = m.FrameLen - m.HdrLen
	}
	// "Too small packets are not really GSO ones." The kernel measures from
	// the minimal transport header (20 bytes for TCP); we use the real
	// payload, so a TCP packet whose options push it over gso_size is plain
	// here rather than dropped later by tcp_gso_segment ("skb->len <= mss").
	if m.PayloadLen <= m.GSOSize {
		m.Kind = KindPlain
		m.SmallGSO = true
		m.ECN = false
		return ReasonNone
	}
	m.Kind = kind
	m.Segs = (m.PayloadLen + m.GSOSize - 1) / m.GSOSize
	// USO's "len - p_off > gso_size * UDP_MAX_SEGMENTS" is one of Check's
	// header rules: with csum_start at the transport header (checked above)
	// it is the same bound as Segs > 128.
	switch kind {
	case KindUFO:
		// Fragment offsets are in 8-byte units; the kernel would silently
		// emit wrong offsets (inet_gso_segment: offset >> 3) for any other
		// size. No sender produces it: ip_ufo_append_data() used
		// maxfraglen, a multiple of 8.
		if m.GSOSize%8 != 0 {
			return ReasonMalformedUFOSize
		}
	}
	return ReasonNone
}

// parseHeaders walks Ethernet, VLAN tags, IPv4/IPv6 (options, extension
// headers) and the TCP or UDP header of a GSO packet of the given kind.
func (m *Meta) parseHeaders(head []byte, kind Kind) Reason {
	// need reports whether n bytes are readable: a frame shorter than n is
	// malformed (bad), a head shorter than n needs linearising.
	need := func(n int, bad Reason) Reason {
		if n > m.FrameLen {
			return bad
		}
		if n > len(head) {
			return ReasonHeadTooShort
		}
		return ReasonNone
	}

	if r := need(EthernetLen, ReasonMalformedEthernet); r != ReasonNone {
		return r
	}
	off := EthernetLen
	etype := Ethernet(head).Type()
	// 802.1Q / 802.1ad tags, any mix (eth_type_vlan()).
	for etype == EtherTypeVLAN || etype == EtherTypeQinQ {
		if m.VLANTags == maxVLANTags {
			return ReasonMalformedVLAN
		}
		if r := need(off+VLANTagLen, ReasonMalformedVLAN); r != ReasonNone {
			return r
		}
		etype = VLAN(head[off:]).Type()
		off += VLANTagLen
		m.VLANTags++
	}
	m.L3Off = off

	var proto uint8
	switch etype {
	case EtherTypeIPv4:
		// virtio_net_hdr_match_proto(): TCPV4 needs IPv4; UDP either.
		if kind == KindTCPv6 {
			return ReasonMalformedEtherType
		}
		if r := need(off+IPv4MinLen, ReasonMalformedIPv4); r != ReasonNone {
			return r
		}
		ip := IPv4(head[off:])
		ihl := ip.HeaderLen()
		if ip.Version() != 4 || ihl < IPv4MinLen {
			return ReasonMalformedIPv4
		}
		if r := need(off+ihl, ReasonMalformedIPv4); r != ReasonNone {
			return r
		}
		if int(ip.TotalLength()) != m.FrameLen-off {
			return ReasonMalformedIPv4Length
		}
		if ip.FlagsFragOff()&(IPv4FlagMF|IPv4OffsetMask) != 0 {
			return ReasonMalformedIPv4Fragment
		}
		proto = ip.Protocol()
		off += ihl
	case EtherTypeIPv6:
		if kind == KindTCPv4 {
			return ReasonMalformedEtherType
		}
		if r := need(off+IPv6Len, ReasonMalformedIPv6); r != ReasonNone {
			return r
		}
		ip := IPv6(head[off:])
		if ip.Version() != 6 {
			return ReasonMalformedIPv6
		}
		// payload_len 0 would be a jumbogram (RFC 2675); virtio has none.
		if int(ip.PayloadLength()) != m.FrameLen-off-IPv6Len {
			return ReasonMalformedIPv6Length
		}
		m.IPv6 = true
		proto = ip.NextHeader()
		off += IPv6Len
		// ipv6_gso_pull_exthdrs(): hop-by-hop, routing and destination
		// options are skipped; anything else ends the walk. Each step
		// advances by at least 8 bytes, so the loop is bounded by the frame.
		for proto == ProtoHopByHop || proto == ProtoRouting || proto == ProtoDestOpts {
			if r := need(off+8, ReasonMalformedIPv6ExtHdr); r != ReasonNone {
				return r
			}
			ext := IPv6ExtHdr(head[off:])
			n := ext.Len()
			if r := need(off+n, ReasonMalformedIPv6ExtHdr); r != ReasonNone {
				return r
			}
			proto = ext.NextHeader()
			off += n
			m.IPv6Ext = true
		}
		if proto != ProtoTCP && proto != ProtoUDP {
			// A fragment, AH or ESP header (or anything else) cannot carry
			// a GSO payload: the kernel has no gso_segment for it.
			return ReasonMalformedIPv6ExtHdr
		}
	default:
		return ReasonMalformedEtherType
	}
	m.L4Off = off

	switch kind {
	case KindTCPv4, KindTCPv6:
		if proto != ProtoTCP {
			return ReasonMalformedL4Proto
		}
		if r := need(off+TCPMinLen, ReasonMalformedTCP); r != ReasonNone {
			return r
		}
		thlen := TCP(head[off:]).HeaderLen()
		if thlen < TCPMinLen {
			return ReasonMalformedTCP
		}
		if r := need(off+thlen, ReasonMalformedTCP); r != ReasonNone {
			return r
		}
		m.HdrLen = off + thlen
	default: // KindUSO, KindUFO
		if proto != ProtoUDP {
			return ReasonMalformedL4Proto
		}
		if r := need(off+UDPLen, ReasonMalformedUDP); r != ReasonNone {
			return r
		}
		m.HdrLen = off + UDPLen
	}
	return ReasonNone
}

// L3Len returns the network header length (IPv4 options and IPv6 extension
// headers included).
func (m *Meta) L3Len() int { return m.L4Off - m.L3Off }

// L4HdrLen returns the transport header length.
func (m *Meta) L4HdrLen() int { return m.HdrLen - m.L4Off }

// MaxSegmentLen returns the length of the largest frame Segment produces
// for m: the headers plus one MSS of payload (plus the inserted fragment
// header for IPv6 UFO). Size each Segment output buffer to at least this.
func (m *Meta) MaxSegmentLen() int {
	switch m.Kind {
	case KindPlain:
		return m.FrameLen
	case KindUFO:
		n := m.L4Off + min(m.GSOSize, m.PayloadLen)
		if m.IPv6 {
			n += IPv6FragLen
		}
		return n
	}
	return m.HdrLen + min(m.GSOSize, m.PayloadLen)
}

// PlainVnetHdr is the header for DecisionPassPlain: the guest's header with
// the GSO fields cleared, keeping NEEDS_CSUM and its offsets.
func (m *Meta) PlainVnetHdr() vnet.Hdr {
	h := m.Hdr
	h.GSOType = vnet.GSONone
	h.GSOSize = 0
	h.Flags &= vnet.FlagNeedsCsum
	h.NumBuffers = 0
	return h
}

// hdrReasons maps vnet's header reasons to gso's (the metric labels of the
// gso decision counters, which stay as they were). Only what KernelRules
// can return needs an entry; the rest fall back to ReasonMalformedGSOType,
// which no caller reaches.
var hdrReasons = [vnet.NumHdrReasons]Reason{
	vnet.HdrOK:                ReasonNone,
	vnet.HdrShort:             ReasonMalformedEthernet,
	vnet.HdrFrameShort:        ReasonMalformedEthernet,
	vnet.HdrGSOUnknownType:    ReasonMalformedGSOType,
	vnet.HdrGSOSizeZero:       ReasonMalformedGSOSize,
	vnet.HdrGSOSizeByFrags:    ReasonMalformedGSOSize,
	vnet.HdrGSONoCsum:         ReasonMalformedUSONoCsum, // KernelRules: UDP_L4 only
	vnet.HdrGSOECNNotTCP:      ReasonMalformedGSOType,   // KernelRules: UDP_L4 only
	vnet.HdrCsumOutOfFrame:    ReasonMalformedCsumRange,
	vnet.HdrCsumStartTooSmall: ReasonMalformedCsumStart,
	vnet.HdrCsumOffsetBad:     ReasonMalformedCsumOffset,
	vnet.HdrUSOTooManySegs:    ReasonMalformedUSOSegs,
}

// HdrReasonOf returns the gso reason Parse gives for a header vnet's Check
// refused with r.
func HdrReasonOf(r vnet.HdrReason) Reason {
	if int(r) < len(hdrReasons) {
		return hdrReasons[r]
	}
	return ReasonMalformedGSOType
}
