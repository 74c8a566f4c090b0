package gso

import (
	"encoding/binary"
	"testing"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

func TestParseLayouts(t *testing.T) {
	cases := []struct {
		name         string
		spec         pktSpec
		kind         Kind
		l3, l4, hlen int
		segs         int
		vlans        int
		ext          bool
	}{
		{"tcp4", pktSpec{payloadLen: 4000, mss: 1448, gsoType: vnet.GSOTCPv4, tcpOpts: tcpOptsTS}, KindTCPv4, 14, 34, 66, 3, 0, false},
		{"tcp4 ip options", pktSpec{payloadLen: 3000, mss: 1000, gsoType: vnet.GSOTCPv4, ipv4Opts: []byte{1, 1, 1, 0}}, KindTCPv4, 14, 38, 58, 3, 0, false},
		{"tcp6", pktSpec{ipv6: true, payloadLen: 2897, mss: 1448, gsoType: vnet.GSOTCPv6}, KindTCPv6, 14, 54, 74, 3, 0, false},
		{"tcp6 exthdrs", pktSpec{ipv6: true, payloadLen: 3000, mss: 1400, gsoType: vnet.GSOTCPv6,
			v6Ext: []v6ext{{ProtoHopByHop, 8}, {ProtoRouting, 8}, {ProtoDestOpts, 16}}}, KindTCPv6, 14, 86, 106, 3, 0, true},
		{"vlan tcp4", pktSpec{vlanTPIDs: []uint16{EtherTypeVLAN}, payloadLen: 3000, mss: 1448, gsoType: vnet.GSOTCPv4}, KindTCPv4, 18, 38, 58, 3, 1, false},
		{"qinq tcp6", pktSpec{vlanTPIDs: []uint16{EtherTypeQinQ, EtherTypeVLAN}, ipv6: true, payloadLen: 3000, mss: 1448, gsoType: vnet.GSOTCPv6}, KindTCPv6, 22, 62, 82, 3, 2, false},
		{"uso4", pktSpec{udp: true, payloadLen: 5000, mss: 1400, gsoType: vnet.GSOUDPL4}, KindUSO, 14, 34, 42, 4, 0, false},
		{"uso6", pktSpec{udp: true, ipv6: true, payloadLen: 5000, mss: 1400, gsoType: vnet.GSOUDPL4}, KindUSO, 14, 54, 62, 4, 0, false},
		{"ufo4", pktSpec{udp: true, payloadLen: 4000, mss: 1480, gsoType: vnet.GSOUDP}, KindUFO, 14, 34, 42, 3, 0, false},
		{"small gso", pktSpec{payloadLen: 1448, mss: 1448, gsoType: vnet.GSOTCPv4}, KindPlain, 14, 34, 54, 0, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			frame, h := c.spec.build()
			m, r := Parse(frame, h)
			if r != ReasonNone {
				t.Fatalf("reason %v", r)
			}
			if m.Kind != c.kind || m.L3Off != c.l3 || m.L4Off != c.l4 || m.HdrLen != c.hlen ||
				m.Segs != c.segs || m.VLANTags != c.vlans || m.IPv6Ext != c.ext {
				t.Fatalf("got kind %v l3 %d l4 %d hlen %d segs %d vlans %d ext %v", m.Kind, m.L3Off, m.L4Off, m.HdrLen, m.Segs, m.VLANTags, m.IPv6Ext)
			}
			if c.kind == KindPlain && !m.SmallGSO {
				t.Fatal("SmallGSO not set")
			}
		})
	}
}

func TestParseNonGSODoesNotNeedHeaders(t *testing.T) {
	// An ARP frame, no NEEDS_CSUM: nothing to check.
	frame := make([]byte, 42)
	binary.BigEndian.PutUint16(frame[12:], 0x0806)
	m, r := Parse(frame, vnet.Hdr{})
	if r != ReasonNone || m.Kind != KindPlain || m.NeedsCsum {
		t.Fatalf("arp: %v %+v", r, m)
	}
	// NEEDS_CSUM range past the end.
	_, r = Parse(frame, vnet.Hdr{Flags: vnet.FlagNeedsCsum, CsumStart: 40, CsumOffset: 1})
	if r != ReasonMalformedCsumRange {
		t.Fatalf("csum range: %v", r)
	}
	_, r = Parse(frame, vnet.Hdr{Flags: vnet.FlagNeedsCsum, CsumStart: 30, CsumOffset: 10})
	if r != ReasonNone {
		t.Fatalf("csum range at the very end: %v", r)
	}
}

func TestParseMalformed(t *testing.T) {
	tcp4 := pktSpec{payloadLen: 3000, mss: 1448, gsoType: vnet.GSOTCPv4}
	tcp6 := pktSpec{ipv6: true, payloadLen: 3000, mss: 1448, gsoType: vnet.GSOTCPv6}
	uso := pktSpec{udp: true, payloadLen: 3000, mss: 1400, gsoType: vnet.GSOUDPL4}
	type mut func(b []byte, h *vnet.Hdr) []byte
	cases := []struct {
		name string
		spec pktSpec
		mut  mut
		want Reason
	}{
		{"gso type 2", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.GSOType = 2; return b }, ReasonMalformedGSOType},
		{"tunnel bit", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.GSOType |= 0x20; return b }, ReasonMalformedGSOType},
		{"uso ecn", uso, func(b []byte, h *vnet.Hdr) []byte { h.GSOType |= vnet.GSOECN; return b }, ReasonMalformedGSOType},
		{"gso size 0", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.GSOSize = 0; return b }, ReasonMalformedGSOSize},
		{"gso by frags", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.GSOSize = 0xffff; return b }, ReasonMalformedGSOSize},
		{"csum offset tcp", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.CsumOffset = 6; return b }, ReasonMalformedCsumOffset},
		{"csum start", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.CsumStart = 30; return b }, ReasonMalformedCsumStart},
		{"csum range", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.CsumStart = 0xfff0; return b }, ReasonMalformedCsumRange},
		{"uso no csum", uso, func(b []byte, h *vnet.Hdr) []byte { h.Flags = 0; return b }, ReasonMalformedUSONoCsum},
		{"uso csum offset", uso, func(b []byte, h *vnet.Hdr) []byte { h.CsumOffset = 16; return b }, ReasonMalformedCsumOffset},
		{"uso segs", pktSpec{udp: true, payloadLen: 129 * 100, mss: 100, gsoType: vnet.GSOUDPL4}, nil, ReasonMalformedUSOSegs},
		{"ufo size", pktSpec{udp: true, payloadLen: 3000, mss: 1001, gsoType: vnet.GSOUDP}, nil, ReasonMalformedUFOSize},
		{"short frame", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.Flags = 0; return b[:10] }, ReasonMalformedEthernet},
		{"arp with gso", tcp4, func(b []byte, h *vnet.Hdr) []byte { b[12], b[13] = 0x08, 0x06; return b }, ReasonMalformedEtherType},
		{"tcp4 on ipv6", tcp6, func(b []byte, h *vnet.Hdr) []byte { h.GSOType = vnet.GSOTCPv4; return b }, ReasonMalformedEtherType},
		// csum_start moved past an IPv6 header's worth, or the kernel's
		// nh_min_len rule (next case) refuses the header first.
		{"tcp6 on ipv4", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.GSOType = vnet.GSOTCPv6; h.CsumStart = 54; return b }, ReasonMalformedEtherType},
		{"tcp6 csum_start inside ipv6 minimum", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.GSOType = vnet.GSOTCPv6; return b }, ReasonMalformedCsumStart},
		{"plain csum_start inside ipv4 minimum", tcp4, func(b []byte, h *vnet.Hdr) []byte { h.GSOType, h.CsumStart = vnet.GSONone, 19; return b }, ReasonMalformedCsumStart},
		{"ipv4 version", tcp4, func(b []byte, h *vnet.Hdr) []byte { b[14] = 0x55; return b }, ReasonMalformedIPv4},
		{"ipv4 ihl 4", tcp4, func(b []byte, h *vnet.Hdr) []byte { b[14] = 0x44; return b }, ReasonMalformedIPv4},
		{"ipv4 tot_len", tcp4, func(b []byte, h *vnet.Hdr) []byte { b[17]++; return b }, ReasonMalformedIPv4Length},
		{"ipv4 MF", tcp4, func(b []byte, h *vnet.Hdr) []byte { b[20] |= 0x20; return b }, ReasonMalformedIPv4Fragment},
		{"ipv4 frag offset", tcp4, func(b []byte, h *vnet.Hdr) []byte { b[21] = 1; return b }, ReasonMalformedIPv4Fragment},
		{"ipv4 udp proto", tcp4, func(b []byte, h *vnet.Hdr) []byte { b[23] = ProtoUDP; return b }, ReasonMalformedL4Proto},
		{"ipv6 version", tcp6, func(b []byte, h *vnet.Hdr) []byte { b[14] = 0x40; return b }, ReasonMalformedIPv6},
		{"ipv6 payload_len", tcp6, func(b []byte, h *vnet.Hdr) []byte { b[19]--; return b }, ReasonMalformedIPv6Length},
		{"ipv6 fragment hdr", tcp6, func(b []byte, h *vnet.Hdr) []byte { b[20] = ProtoFragment; return b }, ReasonMalformedIPv6ExtHdr},
		{"ipv6 exthdr too long", pktSpec{ipv6: true, payloadLen: 1000, mss: 400, gsoType: vnet.GSOTCPv6, v6Ext: []v6ext{{ProtoDestOpts, 8}}},
			func(b []byte, h *vnet.Hdr) []byte { b[55] = 0xff; return b }, ReasonMalformedIPv6ExtHdr},
		{"tcp doff 4", tcp4, func(b []byte, h *vnet.Hdr) []byte { b[46] = 0x40; return b }, ReasonMalformedTCP},
		{"tcp doff past end", pktSpec{payloadLen: 10, mss: 4, gsoType: vnet.GSOTCPv4},
			func(b []byte, h *vnet.Hdr) []byte { b[46] = 0xf0; return b }, ReasonMalformedTCP},
		{"vlan truncated", pktSpec{vlanTPIDs: []uint16{EtherTypeVLAN}, payloadLen: 3000, mss: 1448, gsoType: vnet.GSOTCPv4},
			func(b []byte, h *vnet.Hdr) []byte { h.Flags = 0; return b[:16] }, ReasonMalformedVLAN},
		{"vlan too deep", pktSpec{vlanTPIDs: []uint16{0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100}, payloadLen: 3000, mss: 1448, gsoType: vnet.GSOTCPv4},
			nil, ReasonMalformedVLAN},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, h := c.spec.build()
			if c.mut != nil {
				b = c.mut(b, &h)
			}
			m, r := Parse(b, h)
			if r != c.want || m.Malformed != c.want {
				t.Fatalf("got %v (meta %v), want %v", r, m.Malformed, c.want)
			}
			if d, dr := Decide(m, ^vnet.Offloads(0), Limits{}, PolicyAuto); d != DecisionDrop || dr != c.want {
				t.Fatalf("Decide: %v %v", d, dr)
			}
		})
	}
}

// Every prefix of a valid frame, with the header claiming the full length
// or the prefix length, parses without panicking; with ParseHead a head
// that ends inside the headers asks for more.
func TestParseTruncations(t *testing.T) {
	specs := []pktSpec{
		{payloadLen: 3000, mss: 1448, gsoType: vnet.GSOTCPv4, tcpOpts: tcpOptsTS, ipv4Opts: []byte{1, 1, 1, 0}},
		{ipv6: true, payloadLen: 3000, mss: 1448, gsoType: vnet.GSOTCPv6, vlanTPIDs: []uint16{EtherTypeQinQ, EtherTypeVLAN},
			v6Ext: []v6ext{{ProtoHopByHop, 8}, {ProtoDestOpts, 24}}},
		{udp: true, ipv6: true, payloadLen: 3000, mss: 1000, gsoType: vnet.GSOUDPL4},
	}
	for _, s := range specs {
		frame, h := s.build()
		full, r := Parse(frame, h)
		if r != ReasonNone {
			t.Fatalf("full frame: %v", r)
		}
		for n := 0; n < full.HdrLen+10; n++ {
			_, _ = Parse(frame[:n], h)
			_, r := ParseHead(frame[:n], len(frame), h)
			if n < full.HdrLen && r != ReasonHeadTooShort {
				t.Fatalf("head %d of %d: %v", n, full.HdrLen, r)
			}
			if n >= full.HdrLen && r != ReasonNone {
				t.Fatalf("head %d: %v", n, r)
			}
		}
	}
}
