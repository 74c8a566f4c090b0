package gso

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// resegmentAll runs Resegment with fresh buffers and returns each output
// flattened to [vnet header][frame] plus its decoded header.
func resegmentAll(t *testing.T, src [][]byte, m *Meta, l Limits, vl, batch int) ([][]byte, []vnet.Hdr) {
	t.Helper()
	total := ResegmentCount(m, l)
	var frames [][]byte
	var hdrs []vnet.Hdr
	for from := 0; from < total; {
		n := total - from
		if batch > 0 {
			n = min(n, batch)
		}
		out := ResegmentOut{
			Pkts:       make([][][]byte, n),
			Hdrs:       make([][]byte, n),
			VnetHdrs:   make([]vnet.Hdr, n),
			VnetHdrLen: vl,
		}
		for i := range n {
			out.Pkts[i] = make([][]byte, 0, 1+len(src))
			out.Hdrs[i] = make([]byte, vl+m.HdrLen)
		}
		got, r := Resegment(&out, src, m, l, from)
		if r != ReasonNone || got != n {
			t.Fatalf("Resegment from %d: %d %v", from, got, r)
		}
		for i := range got {
			frames = append(frames, bytes.Join(out.Pkts[i], nil))
			hdrs = append(hdrs, out.VnetHdrs[i])
		}
		from += got
	}
	return frames, hdrs
}

// Re-segmenting and then letting the backend segment each output (here our
// own Segment standing in for the kernel; TestKernelResegment uses the real
// one) gives exactly the segments of segmenting the original in one go.
func TestResegmentThenSegmentEqualsSegment(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	limits := []Limits{
		{GSOMaxSize: 16384},
		{GSOMaxSize: 16384, GSOMaxSegs: 5},
		{GSOMaxSegs: 2},
		{GSOMaxSize: 65536, GSOMaxSegs: 44},
		{GSOMaxSize: 8000, GSOIPv4MaxSize: 4000},
	}
	for _, c := range segmentSpecs {
		if c.spec.noCsum {
			continue
		}
		for _, l := range limits {
			frame, h := c.spec.build()
			m, _ := Parse(frame, h)
			want := segmentAll(t, [][]byte{frame}, &m, 0, 0)
			k := segsPerChunk(&m, l)
			if k < 1 {
				continue
			}
			vl := []int{0, 10, 12}[rng.IntN(3)]
			outs, vhs := resegmentAll(t, randomSplit(rng, frame), &m, l, vl, 1+rng.IntN(4))
			if len(outs) != (m.Segs+k-1)/k {
				t.Fatalf("%s %+v: %d outputs for %d segs at %d per chunk", c.name, l, len(outs), m.Segs, k)
			}
			var got [][]byte
			for j, o := range outs {
				if vl != 0 {
					dh := vnet.DecodeHdr(o[:vl])
					if dh != vhs[j] {
						t.Fatalf("%s: encoded header %+v, reported %+v", c.name, dh, vhs[j])
					}
				}
				f := o[vl:]
				vh := vhs[j]
				// Each output fits the limits.
				if ms := l.maxSize(&m); ms != 0 && uint32(len(f)) >= ms {
					t.Fatalf("%s %+v: output %d is %d bytes", c.name, l, j, len(f))
				}
				om, r := Parse(f, vh)
				if r != ReasonNone {
					t.Fatalf("%s: output %d does not parse: %v (%+v)", c.name, j, r, vh)
				}
				if om.Kind == KindPlain {
					if vh.GSOType != vnet.GSONone || !om.NeedsCsum {
						t.Fatalf("%s: single-segment output %d header %+v", c.name, j, vh)
					}
					full := completeL4(f, int(vh.CsumStart), int(vh.CsumOffset), m.Kind == KindUSO)
					got = append(got, full)
					continue
				}
				if l.GSOMaxSegs != 0 && om.Segs > int(l.GSOMaxSegs) {
					t.Fatalf("%s %+v: output %d has %d segments", c.name, l, j, om.Segs)
				}
				if j > 0 && vh.GSOType&vnet.GSOECN != 0 {
					t.Fatalf("%s: ECN bit on output %d", c.name, j)
				}
				got = append(got, segmentAll(t, [][]byte{f}, &om, 0, 0)...)
			}
			if len(got) != len(want) {
				t.Fatalf("%s %+v: %d segments, want %d", c.name, l, len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("%s %+v: segment %d differs:\n%s", c.name, l, i, hexDiff(want[i], got[i]))
				}
			}
		}
	}
}

func TestResegmentAllocs(t *testing.T) {
	s := pktSpec{payloadLen: 65000, mss: 1448, gsoType: vnet.GSOTCPv4, tcpOpts: tcpOptsTS}
	frame, h := s.build()
	src := [][]byte{frame[:66], frame[66:30000], frame[30000:]}
	l := Limits{GSOMaxSize: 16384}
	m, _ := Parse(frame, h)
	n := ResegmentCount(&m, l)
	out := ResegmentOut{Pkts: make([][][]byte, n), Hdrs: make([][]byte, n), VnetHdrLen: 12}
	for i := range n {
		out.Pkts[i] = make([][]byte, 0, 1+len(src))
		out.Hdrs[i] = make([]byte, 12+m.HdrLen)
	}
	allocs := testing.AllocsPerRun(20, func() {
		mm, _ := ParseHead(src[0], len(frame), h)
		if d, r := Decide(mm, vnet.OffloadCSUM|vnet.OffloadTSO4, l, PolicyAuto); d != DecisionResegment || r != ReasonGSOMaxSize {
			t.Fatal(d, r)
		}
		Resegment(&out, src, &mm, l, 0)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per packet", allocs)
	}
}

func TestResegmentShortBuffers(t *testing.T) {
	s := pktSpec{payloadLen: 65000, mss: 1448, gsoType: vnet.GSOTCPv4}
	frame, h := s.build()
	m, _ := Parse(frame, h)
	l := Limits{GSOMaxSize: 16384}
	out := ResegmentOut{Pkts: make([][][]byte, 1), Hdrs: [][]byte{make([]byte, m.HdrLen-1)}}
	out.Pkts[0] = make([][]byte, 0, 2)
	if n, r := Resegment(&out, [][]byte{frame}, &m, l, 0); n != 0 || r != ReasonShortBuffer {
		t.Fatalf("small header buffer: %d %v", n, r)
	}
	out.Hdrs[0] = make([]byte, m.HdrLen)
	out.Pkts[0] = make([][]byte, 0, 1)
	if n, r := Resegment(&out, [][]byte{frame}, &m, l, 0); n != 0 || r != ReasonShortBuffer {
		t.Fatalf("small iovec list: %d %v", n, r)
	}
	if n, r := Resegment(&out, [][]byte{frame}, &m, Limits{GSOMaxSize: 50}, 0); n != 0 || r != ReasonGSOMaxSize {
		t.Fatalf("headers alone too big: %d %v", n, r)
	}
}
