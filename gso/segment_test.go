package gso

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vhostd/vhostd/internal/testing/refcsum"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// segmentAll runs Segment over the whole packet with buffers of the right
// size, in batches of batch segments (0: all at once).
func segmentAll(t *testing.T, src [][]byte, m *Meta, f vnet.Offloads, batch int) [][]byte {
	t.Helper()
	var out [][]byte
	for from := 0; from < m.Segs; {
		n := m.Segs - from
		if batch > 0 {
			n = min(n, batch)
		}
		dst := make([][]byte, n)
		for i := range dst {
			dst[i] = make([]byte, 0, m.MaxSegmentLen())
		}
		got, r := Segment(dst, src, m, f, from)
		if r != ReasonNone || got != n {
			t.Fatalf("Segment from %d: n=%d reason %v", from, got, r)
		}
		out = append(out, dst[:got]...)
		from += got
	}
	return out
}

// verifyGopacket decodes frame with gopacket and fails on decode errors or
// checksum mismatches. It returns the packet.
func verifyGopacket(t *testing.T, what string, frame []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("%s: gopacket decode error: %v", what, el.Error())
	}
	// The transport checksum covers the pseudo-header of the network layer
	// gopacket decoded; it has to be told which one.
	if nl := p.NetworkLayer(); nl != nil {
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			_ = tcp.SetNetworkLayerForChecksum(nl)
		}
		if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
			_ = udp.SetNetworkLayerForChecksum(nl)
		}
	}
	err, mism := p.VerifyChecksums()
	if err != nil {
		t.Fatalf("%s: gopacket checksum verification: %v", what, err)
	}
	if len(mism) != 0 {
		t.Fatalf("%s: gopacket checksum mismatches: %+v\n%s", what, mism, p.Dump())
	}
	return p
}

// completeL4 finishes a partial transport checksum with the naive reference
// sum (the field holds the pseudo-header sum), as a NIC would.
func completeL4(seg []byte, l4off, csumOff int, udp bool) []byte {
	c := append([]byte(nil), seg...)
	sum := ^refcsum.Fold(refcsum.Sum(c[l4off:], 0))
	if udp && sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(c[l4off+csumOff:], sum)
	return c
}

// checkL4Segments verifies TCP/USO segments field by field against the
// original frame, and their checksums with gopacket.
func checkL4Segments(t *testing.T, frame []byte, m *Meta, segs [][]byte, partial bool) {
	t.Helper()
	if len(segs) != m.Segs {
		t.Fatalf("%d segments, want %d", len(segs), m.Segs)
	}
	udp := m.Kind == KindUSO
	csumOff := 16
	if udp {
		csumOff = 6
	}
	hl, l3, l4 := m.HdrLen, m.L3Off, m.L4Off
	origFlags := frame[l4+13]
	var payload []byte
	for k, seg := range segs {
		plen := min(m.GSOSize, m.PayloadLen-k*m.GSOSize)
		if len(seg) != hl+plen {
			t.Fatalf("seg %d: len %d want %d", k, len(seg), hl+plen)
		}
		if !bytes.Equal(seg[:l3], frame[:l3]) {
			t.Fatalf("seg %d: L2 header changed", k)
		}
		// Field checks with plain offsets.
		if m.IPv6 {
			if got := int(binary.BigEndian.Uint16(seg[l3+4:])); got != len(seg)-l3-40 {
				t.Fatalf("seg %d: payload_len %d", k, got)
			}
		} else {
			if got := int(binary.BigEndian.Uint16(seg[l3+2:])); got != len(seg)-l3 {
				t.Fatalf("seg %d: tot_len %d", k, got)
			}
			id0 := binary.BigEndian.Uint16(frame[l3+4:])
			if got := binary.BigEndian.Uint16(seg[l3+4:]); got != id0+uint16(k) {
				t.Fatalf("seg %d: id %d want %d", k, got, id0+uint16(k))
			}
		}
		if !udp {
			seq0 := binary.BigEndian.Uint32(frame[l4+4:])
			if got := binary.BigEndian.Uint32(seg[l4+4:]); got != seq0+uint32(k*m.GSOSize) {
				t.Fatalf("seg %d: seq %d", k, got)
			}
			want := origFlags
			if k != len(segs)-1 {
				want &^= TCPFlagFIN | TCPFlagPSH
			}
			if k != 0 {
				want &^= TCPFlagCWR
			}
			if seg[l4+13] != want {
				t.Fatalf("seg %d: flags %#x want %#x", k, seg[l4+13], want)
			}
		} else if got := int(binary.BigEndian.Uint16(seg[l4+4:])); got != 8+plen {
			t.Fatalf("seg %d: udp len %d", k, got)
		}
		// Everything else in the headers is copied.
		a := append([]byte(nil), seg[l3:hl]...)
		b := append([]byte(nil), frame[l3:hl]...)
		for _, z := range [][]byte{a, b} {
			if m.IPv6 {
				z[4], z[5] = 0, 0
			} else {
				copy(z[2:4], []byte{0, 0})
				copy(z[4:6], []byte{0, 0})
				copy(z[10:12], []byte{0, 0})
			}
			o := l4 - l3
			if udp {
				copy(z[o+4:o+8], []byte{0, 0, 0, 0})
			} else {
				copy(z[o+4:o+8], []byte{0, 0, 0, 0})
				z[o+13] = 0
				copy(z[o+16:o+18], []byte{0, 0})
			}
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("seg %d: other header bytes changed:\n%s", k, hexDiff(b, a))
		}
		payload = append(payload, seg[hl:]...)

		full := seg
		if partial {
			var src, dst []byte
			if m.IPv6 {
				src, dst = seg[l3+8:l3+24], seg[l3+24:l3+40]
			} else {
				src, dst = seg[l3+12:l3+16], seg[l3+16:l3+20]
			}
			proto := uint8(ProtoTCP)
			if udp {
				proto = ProtoUDP
			}
			wantSeed := refcsum.Fold(refcsum.Pseudo(src, dst, proto, len(seg)-l4))
			if got := binary.BigEndian.Uint16(seg[l4+csumOff:]); got != wantSeed {
				t.Fatalf("seg %d: partial checksum %#04x want pseudo-header sum %#04x", k, got, wantSeed)
			}
			full = completeL4(seg, l4, csumOff, udp)
		} else if udp && binary.BigEndian.Uint16(seg[l4+6:]) == 0 {
			t.Fatalf("seg %d: UDP checksum 0 must be sent as 0xffff", k)
		}
		p := verifyGopacket(t, "segment", full)
		if udp && p.Layer(layers.LayerTypeUDP) == nil || !udp && p.Layer(layers.LayerTypeTCP) == nil {
			t.Fatalf("seg %d: gopacket found no transport layer:\n%s", k, p.Dump())
		}
	}
	if !bytes.Equal(payload, frame[hl:]) {
		t.Fatal("concatenated segment payloads differ from the original payload")
	}
}

var segmentSpecs = []struct {
	name string
	spec pktSpec
}{
	{"tcp4", pktSpec{payloadLen: 65000, mss: 1448, gsoType: vnet.GSOTCPv4, tcpOpts: tcpOptsTS, ipID: 0xfffe, df: true, seq: 0xffffff00, tcpFlags: TCPFlagACK | TCPFlagPSH}},
	{"tcp4 short last", pktSpec{payloadLen: 4000, mss: 1448, gsoType: vnet.GSOTCPv4, tcpFlags: TCPFlagACK | TCPFlagPSH | TCPFlagFIN}},
	{"tcp4 odd mss", pktSpec{payloadLen: 5001, mss: 999, gsoType: vnet.GSOTCPv4, ipv4Opts: []byte{1, 1, 1, 0, 7, 3, 4, 0}}},
	{"tcp4 ecn cwr", pktSpec{payloadLen: 6000, mss: 1448, gsoType: vnet.GSOTCPv4 | vnet.GSOECN, tcpFlags: TCPFlagACK | TCPFlagCWR | TCPFlagECE, tos: 0x02}},
	{"tcp4 no needs_csum", pktSpec{payloadLen: 6000, mss: 1448, gsoType: vnet.GSOTCPv4, noCsum: true}},
	{"tcp6", pktSpec{ipv6: true, payloadLen: 65000, mss: 1428, gsoType: vnet.GSOTCPv6, tcpOpts: tcpOptsTS}},
	{"tcp6 exthdrs", pktSpec{ipv6: true, payloadLen: 9000, mss: 1400, gsoType: vnet.GSOTCPv6,
		v6Ext: []v6ext{{ProtoHopByHop, 8}, {ProtoDestOpts, 16}}, tcpFlags: TCPFlagACK | TCPFlagFIN}},
	{"vlan tcp4", pktSpec{vlanTPIDs: []uint16{EtherTypeVLAN}, payloadLen: 9000, mss: 1448, gsoType: vnet.GSOTCPv4}},
	{"qinq tcp6", pktSpec{vlanTPIDs: []uint16{EtherTypeQinQ, EtherTypeVLAN}, ipv6: true, payloadLen: 9000, mss: 1448, gsoType: vnet.GSOTCPv6}},
	{"uso4", pktSpec{udp: true, payloadLen: 20000, mss: 1472, gsoType: vnet.GSOUDPL4, ipID: 7}},
	{"uso6", pktSpec{udp: true, ipv6: true, payloadLen: 20001, mss: 1452, gsoType: vnet.GSOUDPL4}},
	{"uso6 exthdr", pktSpec{udp: true, ipv6: true, payloadLen: 5000, mss: 1000, gsoType: vnet.GSOUDPL4, v6Ext: []v6ext{{ProtoDestOpts, 8}}}},
}

func TestSegmentTCPAndUSO(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range segmentSpecs {
		t.Run(c.name, func(t *testing.T) {
			frame, h := c.spec.build()
			m, r := Parse(frame, h)
			if r != ReasonNone {
				t.Fatalf("parse: %v", r)
			}
			src := [][]byte{frame}
			full := segmentAll(t, src, &m, 0, 0)
			checkL4Segments(t, frame, &m, full, false)
			if !c.spec.noCsum {
				partial := segmentAll(t, src, &m, vnet.OffloadCSUM, 0)
				checkL4Segments(t, frame, &m, partial, true)
				vh := m.SegmentVnetHdr(vnet.OffloadCSUM)
				if vh.Flags != vnet.FlagNeedsCsum || int(vh.CsumStart) != m.L4Off {
					t.Fatalf("segment vnet hdr %+v", vh)
				}
			}
			if vh := m.SegmentVnetHdr(0); vh != (vnet.Hdr{}) {
				t.Fatalf("full-checksum segments need a zero header, got %+v", vh)
			}
			// Scattered input and small batches give the same bytes.
			for trial := 0; trial < 5; trial++ {
				split := segmentAll(t, randomSplit(rng, frame), &m, 0, 1+rng.IntN(5))
				for k := range full {
					if !bytes.Equal(split[k], full[k]) {
						t.Fatalf("trial %d seg %d differs:\n%s", trial, k, hexDiff(full[k], split[k]))
					}
				}
			}
		})
	}
}

// A guest that put a wrong value in the partial checksum field gets
// segments whose checksums are wrong by the same amount: the kernel adjusts
// the guest's value incrementally and never recomputes it, and so do we.
func TestSegmentKeepsGuestSeed(t *testing.T) {
	s := pktSpec{payloadLen: 3000, mss: 1000, gsoType: vnet.GSOTCPv4}
	frame, h := s.build()
	good, _ := Parse(frame, h)
	want := segmentAll(t, [][]byte{frame}, &good, vnet.OffloadCSUM, 0)
	bad := append([]byte(nil), frame...)
	binary.BigEndian.PutUint16(bad[good.L4Off+16:], binary.BigEndian.Uint16(frame[good.L4Off+16:])+1)
	mb, _ := Parse(bad, h)
	got := segmentAll(t, [][]byte{bad}, &mb, vnet.OffloadCSUM, 0)
	for k := range got {
		w := binary.BigEndian.Uint16(want[k][good.L4Off+16:])
		g := binary.BigEndian.Uint16(got[k][good.L4Off+16:])
		if g != vnet.ChecksumAdd(w, 1) {
			t.Fatalf("seg %d: %#04x, want %#04x+1", k, g, w)
		}
	}
}

func TestSegmentUFO(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		s := pktSpec{udp: true, ipv6: v6, payloadLen: 8000, mss: 1480, gsoType: vnet.GSOUDP, ipID: 0x1234, df: true}
		frame, h := s.build()
		m, r := Parse(frame, h)
		if r != ReasonNone || m.Kind != KindUFO {
			t.Fatalf("parse: %v %v", r, m.Kind)
		}
		m.IPv6FragID = 0xabcdef01
		frags := segmentAll(t, [][]byte{frame}, &m, vnet.OffloadCSUM, 2)
		var data []byte
		for k, f := range frags {
			p := verifyGopacket(t, "fragment", f)
			off, more := 0, false
			hl := m.L4Off
			if v6 {
				fl := p.Layer(layers.LayerTypeIPv6Fragment)
				if fl == nil {
					t.Fatalf("frag %d: no fragment header:\n%s", k, p.Dump())
				}
				fh := fl.(*layers.IPv6Fragment)
				if fh.Identification != 0xabcdef01 || fh.NextHeader != layers.IPProtocolUDP {
					t.Fatalf("frag %d: %+v", k, fh)
				}
				off, more = int(fh.FragmentOffset)*8, fh.MoreFragments
				hl += 8
				if plen := int(binary.BigEndian.Uint16(f[m.L3Off+4:])); plen != len(f)-m.L3Off-40 {
					t.Fatalf("frag %d: payload_len %d", k, plen)
				}
			} else {
				ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
				if ip.Id != 0x1234 || ip.Flags&layers.IPv4DontFragment != 0 {
					t.Fatalf("frag %d: id %#x flags %v", k, ip.Id, ip.Flags)
				}
				off, more = int(ip.FragOffset)*8, ip.Flags&layers.IPv4MoreFragments != 0
				if int(ip.Length) != len(f)-m.L3Off {
					t.Fatalf("frag %d: tot_len %d", k, ip.Length)
				}
			}
			if off != len(data) || more != (k != len(frags)-1) {
				t.Fatalf("frag %d: offset %d more %v (have %d bytes)", k, off, more, len(data))
			}
			if len(f) > m.MaxSegmentLen() {
				t.Fatalf("frag %d too long: %d", k, len(f))
			}
			data = append(data, f[hl:]...)
		}
		// Reassemble: the original frame with the UDP checksum from the
		// first fragment must verify, and the data must be unchanged.
		if !bytes.Equal(data[8:], frame[m.L4Off+8:]) || !bytes.Equal(data[:6], frame[m.L4Off:m.L4Off+6]) {
			t.Fatal("reassembled datagram differs")
		}
		whole := append([]byte(nil), frame...)
		copy(whole[m.L4Off+6:], data[6:8])
		verifyGopacket(t, "reassembled", whole)
	}
}

func TestSegmentShortBuffers(t *testing.T) {
	s := pktSpec{payloadLen: 5000, mss: 1000, gsoType: vnet.GSOTCPv4}
	frame, h := s.build()
	m, _ := Parse(frame, h)
	dst := [][]byte{make([]byte, m.MaxSegmentLen()-1)}
	if n, r := Segment(dst, [][]byte{frame}, &m, 0, 0); n != 0 || r != ReasonShortBuffer {
		t.Fatalf("small dst: %d %v", n, r)
	}
	dst[0] = make([]byte, m.MaxSegmentLen())
	if n, r := Segment(dst, [][]byte{frame[:len(frame)-1]}, &m, 0, 0); n != 0 || r != ReasonShortBuffer {
		t.Fatalf("short src: %d %v", n, r)
	}
	if n, r := Segment(dst, [][]byte{frame}, &m, 0, m.Segs); n != 0 || r != ReasonNone {
		t.Fatalf("from past the end: %d %v", n, r)
	}
}

func TestSegmentAllocs(t *testing.T) {
	s := pktSpec{payloadLen: 65000, mss: 1448, gsoType: vnet.GSOTCPv4, tcpOpts: tcpOptsTS}
	frame, h := s.build()
	m, _ := Parse(frame, h)
	dst := make([][]byte, m.Segs)
	for i := range dst {
		dst[i] = make([]byte, m.MaxSegmentLen())
	}
	src := [][]byte{frame[:100], frame[100:]}
	allocs := testing.AllocsPerRun(20, func() {
		mm, _ := ParseHead(src[0], len(frame), h)
		if d, _ := Decide(mm, 0, Limits{}, PolicyAuto); d != DecisionSegment {
			t.Fatal(d)
		}
		Segment(dst, src, &mm, 0, 0)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per packet", allocs)
	}
}

// Segment and Resegment trust the Meta, not the bytes: handing them other
// bytes than were parsed (a caller bug, or a guest rewriting its buffer
// between Parse and Segment) gives garbage output but never a panic.
func TestSegmentOtherBytesThanParsed(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range segmentSpecs {
		frame, h := c.spec.build()
		m, _ := Parse(frame, h)
		for trial := 0; trial < 20; trial++ {
			junk := make([]byte, len(frame))
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			mm := m
			segmentAll(t, randomSplit(rng, junk), &mm, vnet.Offloads(rng.Uint32()), 3)
			if m.Kind != KindUFO && m.NeedsCsum {
				resegmentAll(t, [][]byte{junk}, &mm, Limits{GSOMaxSegs: 3}, 12, 2)
			}
		}
	}
}
