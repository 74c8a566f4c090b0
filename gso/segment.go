package gso

import (
	"math/rand/v2"
	"sync/atomic"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// ipv6FragIDs hands out IPv6 fragment identifications for UFO output when
// the caller did not set Meta.IPv6FragID. RFC 7739 asks for unpredictable
// ids; a randomly seeded counter is unpredictable across restarts and
// unique per datagram, which is what reassembly needs.
var ipv6FragIDs atomic.Uint32

func init() { ipv6FragIDs.Store(rand.Uint32()) }

// template holds the fields of the original super-packet that every output
// header is derived from.
type template struct {
	seq0   uint32 // TCP sequence number
	flags0 uint8  // TCP flags
	id0    uint16 // IPv4 identification
	// seed is the L4 checksum field's partial value for the whole packet:
	// the guest's own value when NEEDS_CSUM is set (the kernel trusts it and
	// adjusts it incrementally), else the pseudo-header sum the kernel
	// computes in tcp4_gso_segment()/tcp6_gso_segment().
	seed uint16
	// oldLen is what the kernel subtracts from seed: skb->len of the TCP
	// part (tcp_gso_segment: "oldlen = ~skb->len"), or the UDP length field
	// (__udp_gso_segment: "csum16_sub(uh->check, uh->len)").
	oldLen uint32
	// ipv4Base is the one's-complement sum of the IPv4 header without the
	// fields segmentation rewrites (tot_len, id, frag_off, check), so that
	// each output's header checksum is a full recomputation, as
	// ip_send_check() does, at the cost of two additions.
	ipv4Base uint16
}

// ipv4BaseSum returns the sum of the IPv4 header ip (as parsed: the length
// comes from the parser, not from the bytes) without tot_len, id, frag_off
// and check.
func ipv4BaseSum(ip IPv4) uint16 {
	s := vnet.Checksum(ip, 0)
	s = vnet.ChecksumSub(s, ip.TotalLength())
	s = vnet.ChecksumSub(s, ip.ID())
	s = vnet.ChecksumSub(s, ip.FlagsFragOff())
	return vnet.ChecksumSub(s, ip.Checksum())
}

// ipv4Checksum returns the header checksum for base plus the variable fields.
func ipv4Checksum(base, totLen, id, fragOff uint16) uint16 {
	return ^vnet.ChecksumAdd(vnet.ChecksumAdd(vnet.ChecksumAdd(base, totLen), id), fragOff)
}

// readTemplate reads the original header fields from t, which holds the
// frame's first m.HdrLen bytes.
func (m *Meta) readTemplate(t []byte) template {
	var tp template
	if !m.IPv6 {
		ip := IPv4(t[m.L3Off:m.L4Off])
		tp.id0 = ip.ID()
		tp.ipv4Base = ipv4BaseSum(ip)
	}
	l4 := t[m.L4Off:m.HdrLen]
	switch m.Kind {
	case KindTCPv4, KindTCPv6:
		th := TCP(l4)
		tp.seq0 = th.Seq()
		tp.flags0 = th.Flags()
		tp.oldLen = uint32(m.FrameLen - m.L4Off)
		if m.NeedsCsum {
			tp.seed = th.Checksum()
		} else {
			tp.seed = m.pseudoSum(t, ProtoTCP, tp.oldLen)
		}
	case KindUSO:
		uh := UDP(l4)
		tp.oldLen = uint32(uh.Length())
		tp.seed = uh.Checksum() // USO always has NEEDS_CSUM (Parse)
	}
	return tp
}

// pseudoSum returns the pseudo-header sum for the addresses in header t.
func (m *Meta) pseudoSum(t []byte, proto uint8, length uint32) uint16 {
	if m.IPv6 {
		ip := IPv6(t[m.L3Off:])
		return vnet.PseudoHeaderSum(proto, ip.Src(), ip.Dst(), length)
	}
	ip := IPv4(t[m.L3Off:])
	return vnet.PseudoHeaderSum(proto, ip.Src(), ip.Dst(), length)
}

// fixHeaders rewrites the copied headers h (frame offsets, m.HdrLen bytes)
// for an output that starts at MSS segment s0 and carries plen payload
// bytes; first and last say whether it holds the original's first and last
// segment. The L4 checksum field gets the partial (pseudo-header) value for
// the new length.
//
// Per-segment rules (wire-facts.md "Per-segment header rules"):
// inet_gso_segment: IPv4 tot_len per segment, id = id0 + segment index,
// header checksum recomputed (ip_send_check); ipv6_gso_segment:
// payload_len per segment; tcp_gso_segment: seq = seq0 + k*mss, FIN and PSH
// only on the last, CWR only on the first ("th->cwr &= ecn_cwr_mask", the
// mask being 0 without SKB_GSO_TCP_ACCECN, which virtio cannot express),
// check = ~csum_fold(check + htonl(~oldlen + newlen)); __udp_gso_segment:
// uh->len = 8 + payload, check = csum16_add(csum16_sub(check, uh->len), newlen).
func (m *Meta) fixHeaders(h []byte, tp *template, s0, plen int, first, last bool) {
	l3len := m.L4Off - m.L3Off + (m.HdrLen - m.L4Off) + plen
	if m.IPv6 {
		IPv6(h[m.L3Off:]).SetPayloadLength(uint16(l3len - IPv6Len))
	} else {
		ip := IPv4(h[m.L3Off:])
		id := tp.id0 + uint16(s0)
		ip.SetTotalLength(uint16(l3len))
		ip.SetID(id)
		ip.SetChecksum(ipv4Checksum(tp.ipv4Base, uint16(l3len), id, ip.FlagsFragOff()))
	}
	l4 := h[m.L4Off:m.HdrLen]
	l4len := uint32(m.HdrLen - m.L4Off + plen)
	switch m.Kind {
	case KindTCPv4, KindTCPv6:
		th := TCP(l4)
		th.SetSeq(tp.seq0 + uint32(s0)*uint32(m.GSOSize))
		fl := tp.flags0
		if !last {
			fl &^= TCPFlagFIN | TCPFlagPSH
		}
		if !first {
			fl &^= TCPFlagCWR
		}
		th.SetFlags(fl)
		th.SetChecksum(vnet.ChecksumAdd32(vnet.ChecksumSub32(tp.seed, tp.oldLen), l4len))
	case KindUSO:
		uh := UDP(l4)
		uh.SetLength(uint16(l4len))
		uh.SetChecksum(vnet.ChecksumAdd(vnet.ChecksumSub(tp.seed, uint16(tp.oldLen)), uint16(l4len)))
	}
}

// SegmentVnetHdr returns the virtio_net_hdr that goes with every segment
// Segment produces for m and f: NEEDS_CSUM with the transport checksum
// offsets when the checksums are left partial, all zero when they are
// complete (always for UFO fragments).
func (m *Meta) SegmentVnetHdr(f vnet.Offloads) vnet.Hdr {
	if m.Kind == KindUFO || m.Kind == KindPlain || csumOffloadReason(m, f) != ReasonNone {
		return vnet.Hdr{}
	}
	h := vnet.Hdr{Flags: vnet.FlagNeedsCsum, CsumStart: uint16(m.L4Off), CsumOffset: TCPChecksumOffset}
	if m.Kind == KindUSO {
		h.CsumOffset = UDPChecksumOffset
	}
	return h
}

// Segment cuts the GSO super-packet src (the frame as one or more byte
// slices; m from Parse/ParseHead of the same frame) into MSS-sized packets
// exactly as the kernel's software GSO does (skb_gso_segment() ->
// inet_gso_segment/ipv6_gso_segment -> tcp_gso_segment, __udp_gso_segment,
// udp4_ufo_fragment/udp6_ufo_fragment). It writes segments from..from+n-1
// into dst[0..n-1], reslicing each dst[i] to the segment's length; n is
// min(len(dst), m.Segs-from), so a caller with few buffers calls again with
// from += n until from == m.Segs. Every dst[i] needs capacity
// m.MaxSegmentLen(). Nothing is allocated.
//
// Checksums: if the backend can finish the packet's checksum (f has
// vnet.OffloadCSUM and csumOffloadReason allows it) the transport checksums are left
// partial (pseudo-header sum, as the kernel leaves CHECKSUM_PARTIAL
// segments for a device with NETIF_F_HW_CSUM) and the segments go out with
// m.SegmentVnetHdr(f); otherwise they are complete (gso_make_checksum()).
// IPv4 header checksums are always complete. UFO always carries a complete
// UDP checksum, computed once over the whole datagram as udp4_ufo_fragment()
// does.
//
// It returns ReasonShortBuffer if src is shorter than m.FrameLen or a dst
// buffer is too small, and ReasonUFOIPv6ExtHdr for IPv6 UFO with extension
// headers; for a plain (non-GSO) or malformed m it returns 0 and
// m.Malformed.
func Segment(dst [][]byte, src [][]byte, m *Meta, f vnet.Offloads, from int) (int, Reason) {
	if m.Malformed != ReasonNone || m.Kind == KindPlain {
		return 0, m.Malformed
	}
	if from < 0 || from >= m.Segs {
		return 0, ReasonNone
	}
	n := min(len(dst), m.Segs-from)
	need := m.MaxSegmentLen()
	for i := range n {
		if cap(dst[i]) < need {
			return 0, ReasonShortBuffer
		}
	}
	if iovLen(src) < m.FrameLen {
		return 0, ReasonShortBuffer
	}
	if m.Kind == KindUFO {
		return segmentUFO(dst[:n], src, m, from)
	}
	return segmentL4(dst[:n], src, m, csumOffloadReason(m, f) == ReasonNone, from), ReasonNone
}

// segmentL4 segments TCP and USO super-packets.
func segmentL4(dst [][]byte, src [][]byte, m *Meta, partial bool, from int) int {
	hl := m.HdrLen
	r := iovReader{src: src}
	// The original headers, kept aside (on the stack when they are short,
	// as they nearly always are) while each output's copy is rewritten.
	var stack [256]byte
	var t []byte
	if hl <= len(stack) {
		t = stack[:hl]
	} else {
		t = dst[0][:hl]
	}
	r.read(t)
	tp := m.readTemplate(t)
	if hl > len(stack) {
		for i := 1; i < len(dst); i++ {
			copy(dst[i][:hl], t)
		}
	}
	mss := m.GSOSize
	r.seek(hl + from*mss)
	for i := range dst {
		k := from + i
		plen := min(mss, m.PayloadLen-k*mss)
		seg := dst[i][:hl+plen]
		if hl <= len(stack) {
			copy(seg, t)
		}
		r.read(seg[hl:])
		m.fixHeaders(seg, &tp, k, plen, k == 0, k == m.Segs-1)
		if !partial {
			// gso_make_checksum(): the L4 bytes now hold the partial value
			// in their checksum field, so their sum is the full sum.
			c := ^vnet.Checksum(seg[m.L4Off:], 0)
			if m.Kind == KindUSO {
				if c == 0 {
					c = 0xffff // CSUM_MANGLED_0 (RFC 768: 0 means "none")
				}
				UDP(seg[m.L4Off:]).SetChecksum(c)
			} else {
				TCP(seg[m.L4Off:]).SetChecksum(c)
			}
		}
		dst[i] = seg
	}
	return len(dst)
}

// segmentUFO fragments a UFO datagram. The UDP checksum is completed over
// the whole datagram first (udp4_ufo_fragment/udp6_ufo_fragment: "HW cannot
// do checksum of UDP packets sent as multiple IP fragments"; pseudo-header
// length = skb->len, 0 sent as CSUM_MANGLED_0). Then the datagram, UDP
// header included, is cut into gso_size pieces behind copies of the
// Ethernet+IP header:
//
//   - IPv4 (inet_gso_segment, udpfrag): frag_off = offset>>3 | MF on all
//     but the last (DF and the reserved bit are overwritten), tot_len per
//     fragment, id unchanged, header checksum recomputed, IP options copied
//     into every fragment as skb_segment() does.
//   - IPv6 (udp6_ufo_fragment + ipv6_gso_segment): an 8-byte fragment header
//     is inserted after the IPv6 header, next header 44, offset/M set per
//     fragment, identification from m.IPv6FragID (the kernel's
//     ipv6_proxy_select_ident() value is a keyed hash we cannot reproduce).
func segmentUFO(dst [][]byte, src [][]byte, m *Meta, from int) (int, Reason) {
	if m.IPv6 && m.IPv6Ext {
		return 0, ReasonUFOIPv6ExtHdr
	}
	r := iovReader{src: src}
	l3, l4 := m.L3Off, m.L4Off
	hl := l4 // bytes of header before the datagram in each fragment
	if m.IPv6 {
		hl += IPv6FragLen
		if m.IPv6FragID == 0 {
			m.IPv6FragID = ipv6FragIDs.Add(1)
		}
	}
	t := dst[0][:l4]
	r.read(t)
	var ipv4Base uint16
	if !m.IPv6 {
		ipv4Base = ipv4BaseSum(IPv4(t[l3:l4]))
	}
	var udpCheck uint16
	dlen := m.PayloadLen
	if from == 0 {
		var uh [UDPLen]byte
		r.read(uh[:])
		orig := UDP(uh[:]).Checksum()
		s, _ := r.sum(dlen - UDPLen)
		s = vnet.Checksum(uh[:], s)
		s = vnet.ChecksumSub(s, orig) // the sum as if uh->check were 0
		c := ^vnet.ChecksumAdd(s, m.pseudoSum(t, ProtoUDP, uint32(dlen)))
		if c == 0 {
			c = 0xffff
		}
		udpCheck = c
	}
	for i := 1; i < len(dst); i++ {
		copy(dst[i][:l4], t)
	}
	mss := m.GSOSize
	r.seek(l4 + from*mss)
	for i := range dst {
		k := from + i
		off := k * mss
		plen := min(mss, dlen-off)
		more := k != m.Segs-1
		seg := dst[i][:hl+plen]
		r.read(seg[hl:])
		if m.IPv6 {
			ip := IPv6(seg[l3:])
			next := ip.NextHeader()
			ip.SetNextHeader(ProtoFragment)
			ip.SetPayloadLength(uint16(IPv6FragLen + plen))
			IPv6Frag(seg[l4:]).Set(next, off, more, m.IPv6FragID)
		} else {
			ip := IPv4(seg[l3:])
			v := uint16(off >> 3)
			if more {
				v |= IPv4FlagMF
			}
			ip.SetFlagsFragOff(v)
			ip.SetTotalLength(uint16(l4 - l3 + plen))
			ip.SetChecksum(ipv4Checksum(ipv4Base, uint16(l4-l3+plen), ip.ID(), v))
		}
		if k == 0 {
			UDP(seg[hl:]).SetChecksum(udpCheck)
		}
		dst[i] = seg
	}
	return len(dst), ReasonNone
}
