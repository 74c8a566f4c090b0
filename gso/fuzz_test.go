package gso

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Fuzz targets. Seeds live in testdata/fuzz/FuzzXxx/ (regenerate them with
// GSO_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./gso).

func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, frame []byte, flags, gsoType uint8, gsoSize, csumStart, csumOffset, headLen uint16) {
		h := vnet.Hdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset}
		m, r := Parse(frame, h)
		if r != m.Malformed && !(r == ReasonNone && m.Malformed == ReasonNone) {
			t.Fatalf("reason %v but Meta.Malformed %v", r, m.Malformed)
		}
		if r == ReasonHeadTooShort {
			t.Fatal("Parse of a whole frame asked for more head")
		}
		if r == ReasonNone && m.Kind != KindPlain {
			if !(m.L3Off >= EthernetLen && m.L3Off < m.L4Off && m.L4Off < m.HdrLen && m.HdrLen <= m.FrameLen) {
				t.Fatalf("offsets out of order: %+v", m)
			}
			if m.Segs < 2 || m.Segs*m.GSOSize < m.PayloadLen || (m.Segs-1)*m.GSOSize >= m.PayloadLen {
				t.Fatalf("segment count %d for payload %d mss %d", m.Segs, m.PayloadLen, m.GSOSize)
			}
		}
		// A head of any length either suffices or asks for more; it never
		// changes the verdict otherwise.
		n := min(int(headLen), len(frame))
		hm, hr := ParseHead(frame[:n], len(frame), h)
		if hr != ReasonHeadTooShort && (hr != r || hm != m) {
			t.Fatalf("head %d: %v %+v, whole frame: %v %+v", n, hr, hm, r, m)
		}
		_, _ = Decide(m, vnet.Offloads(flags), Limits{GSOMaxSize: uint32(csumOffset), GSOMaxSegs: uint32(headLen % 64), MTU: int(gsoSize)}, Policy(gsoType%3))
	})
}

func FuzzSegment(f *testing.F) {
	f.Fuzz(func(t *testing.T, frame []byte, flags, gsoType uint8, gsoSize, csumStart, csumOffset uint16,
		mtu uint16, feats uint8, cut1, cut2 uint16, maxSize uint16, maxSegs uint8) {
		h := vnet.Hdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset}
		m, r := Parse(frame, h)
		if r != ReasonNone || m.Kind == KindPlain || m.Segs > 512 {
			return
		}
		src := splitAt(frame, int(cut1), int(cut2))
		fe := vnet.Offloads(feats)
		l := Limits{MTU: int(mtu)}
		d, _ := Decide(m, fe, l, PolicySoftware)
		if d == DecisionDrop {
			return
		}
		dst := make([][]byte, m.Segs)
		for i := range dst {
			dst[i] = make([]byte, 0, m.MaxSegmentLen())
		}
		mm := m
		n, sr := Segment(dst, src, &mm, fe, 0)
		if sr != ReasonNone || n != m.Segs {
			t.Fatalf("Segment: %d of %d, %v", n, m.Segs, sr)
		}
		var data []byte
		for i, seg := range dst[:n] {
			if len(seg) > m.MaxSegmentLen() {
				t.Fatalf("segment %d: %d bytes > MaxSegmentLen %d", i, len(seg), m.MaxSegmentLen())
			}
			if mtu != 0 && len(seg)-m.L3Off > int(mtu) {
				t.Fatalf("segment %d: %d L3 bytes > MTU %d", i, len(seg)-m.L3Off, mtu)
			}
			if m.Kind == KindUFO {
				hl := m.L4Off
				if m.IPv6 {
					hl += IPv6FragLen
				}
				data = append(data, seg[hl:]...)
			} else {
				data = append(data, seg[m.HdrLen:]...)
			}
		}
		if m.Kind == KindUFO {
			// The datagram is unchanged but for the UDP checksum.
			orig := frame[m.L4Off:m.FrameLen]
			if !bytes.Equal(data[:6], orig[:6]) || !bytes.Equal(data[8:], orig[8:]) {
				t.Fatal("fragments do not reassemble to the datagram")
			}
		} else if !bytes.Equal(data, frame[m.HdrLen:m.FrameLen]) {
			t.Fatal("segment payloads do not add up to the original payload")
		}
		// The same packet in one piece gives the same bytes.
		one := make([][]byte, m.Segs)
		for i := range one {
			one[i] = make([]byte, 0, m.MaxSegmentLen())
		}
		m1 := m
		m1.IPv6FragID = mm.IPv6FragID
		Segment(one, [][]byte{frame}, &m1, fe, 0)
		for i := range one {
			if !bytes.Equal(one[i], dst[i]) {
				t.Fatalf("segment %d depends on how the frame is split", i)
			}
		}

		// Re-segmentation under limits from the input.
		lr := Limits{GSOMaxSize: uint32(maxSize), GSOMaxSegs: uint32(maxSegs)}
		if m.Kind == KindUFO || !m.NeedsCsum {
			return
		}
		cnt := ResegmentCount(&m, lr)
		if cnt == 0 || cnt > 512 {
			return
		}
		out := ResegmentOut{Pkts: make([][][]byte, cnt), Hdrs: make([][]byte, cnt), VnetHdrs: make([]vnet.Hdr, cnt), VnetHdrLen: 12}
		for i := range cnt {
			out.Pkts[i] = make([][]byte, 0, 1+len(src))
			out.Hdrs[i] = make([]byte, 12+m.HdrLen)
		}
		rn, rr := Resegment(&out, src, &m, lr, 0)
		if rr != ReasonNone || rn != cnt {
			t.Fatalf("Resegment: %d of %d, %v", rn, cnt, rr)
		}
		var payload []byte
		for i := range rn {
			o := bytes.Join(out.Pkts[i], nil)[12:]
			if ms := lr.maxSize(&m); ms != 0 && len(o) >= int(ms) {
				t.Fatalf("output %d: %d bytes >= gso_max_size %d", i, len(o), ms)
			}
			om, r := Parse(o, out.VnetHdrs[i])
			if r != ReasonNone {
				t.Fatalf("output %d does not parse: %v", i, r)
			}
			if lr.GSOMaxSegs != 0 && om.Segs > int(lr.GSOMaxSegs) {
				t.Fatalf("output %d: %d segments > %d", i, om.Segs, lr.GSOMaxSegs)
			}
			payload = append(payload, o[m.HdrLen:]...)
		}
		if !bytes.Equal(payload, frame[m.HdrLen:m.FrameLen]) {
			t.Fatal("re-segmented payloads do not add up to the original payload")
		}
	})
}

// splitAt cuts b at two positions (taken modulo its length).
func splitAt(b []byte, c1, c2 int) [][]byte {
	if len(b) == 0 {
		return [][]byte{b}
	}
	c1 %= len(b) + 1
	c2 %= len(b) + 1
	if c1 > c2 {
		c1, c2 = c2, c1
	}
	return [][]byte{b[:c1], b[c1:c2], b[c2:]}
}

// fuzzSeedSpecs are the packets the seed corpora start from.
var fuzzSeedSpecs = []struct {
	name string
	spec pktSpec
}{
	{"tcp4", pktSpec{payloadLen: 300, mss: 96, gsoType: vnet.GSOTCPv4, tcpOpts: tcpOptsTS}},
	{"tcp4_opts", pktSpec{payloadLen: 200, mss: 56, gsoType: vnet.GSOTCPv4, ipv4Opts: []byte{1, 1, 1, 0}, tcpFlags: TCPFlagACK | TCPFlagFIN | TCPFlagPSH}},
	{"tcp4_ecn", pktSpec{payloadLen: 200, mss: 64, gsoType: vnet.GSOTCPv4 | vnet.GSOECN, tcpFlags: TCPFlagACK | TCPFlagCWR}},
	{"tcp4_nocsum", pktSpec{payloadLen: 200, mss: 64, gsoType: vnet.GSOTCPv4, noCsum: true}},
	{"tcp6", pktSpec{ipv6: true, payloadLen: 300, mss: 96, gsoType: vnet.GSOTCPv6}},
	{"tcp6_ext", pktSpec{ipv6: true, payloadLen: 200, mss: 88, gsoType: vnet.GSOTCPv6, v6Ext: []v6ext{{ProtoHopByHop, 8}, {ProtoRouting, 8}, {ProtoDestOpts, 8}}}},
	{"vlan_tcp4", pktSpec{vlanTPIDs: []uint16{EtherTypeVLAN}, payloadLen: 200, mss: 88, gsoType: vnet.GSOTCPv4}},
	{"qinq_tcp6", pktSpec{vlanTPIDs: []uint16{EtherTypeQinQ, EtherTypeVLAN}, ipv6: true, payloadLen: 200, mss: 88, gsoType: vnet.GSOTCPv6}},
	{"uso4", pktSpec{udp: true, payloadLen: 300, mss: 96, gsoType: vnet.GSOUDPL4}},
	{"uso6", pktSpec{udp: true, ipv6: true, payloadLen: 301, mss: 97, gsoType: vnet.GSOUDPL4}},
	{"ufo4", pktSpec{udp: true, payloadLen: 300, mss: 96, gsoType: vnet.GSOUDP}},
	{"ufo6", pktSpec{udp: true, ipv6: true, payloadLen: 300, mss: 80, gsoType: vnet.GSOUDP}},
	{"plain_csum", pktSpec{payloadLen: 50}},
	{"small_gso", pktSpec{payloadLen: 50, mss: 144, gsoType: vnet.GSOTCPv4}},
}

// TestWriteFuzzSeeds regenerates the committed seed corpora.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("GSO_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set GSO_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	for _, s := range fuzzSeedSpecs {
		frame, h := s.spec.build()
		q := strconv.Quote(string(frame))
		parse := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nbyte(%d)\nbyte(%d)\nuint16(%d)\nuint16(%d)\nuint16(%d)\nuint16(%d)\n",
			q, h.Flags, h.GSOType, h.GSOSize, h.CsumStart, h.CsumOffset, 60)
		seg := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nbyte(%d)\nbyte(%d)\nuint16(%d)\nuint16(%d)\nuint16(%d)\nuint16(%d)\nbyte(%d)\nuint16(%d)\nuint16(%d)\nuint16(%d)\nbyte(%d)\n",
			q, h.Flags, h.GSOType, h.GSOSize, h.CsumStart, h.CsumOffset, 1500, uint8(vnet.OffloadCSUM|vnet.OffloadTSO4), 70, 101, 400, 3)
		for dir, content := range map[string]string{"FuzzParse": parse, "FuzzSegment": seg} {
			p := filepath.Join("testdata", "fuzz", dir, "seed_"+s.name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
