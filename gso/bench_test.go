package gso

import (
	"testing"
	"time"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Benchmarks for docs/benchmarks-gso.md. Run:
//
//	go test -run '^$' -bench . -benchmem -count 5 ./gso
//
// Every segmentation benchmark reports Gbit/s of output (headers included)
// per core; BenchmarkCopy is the baseline: copy() of the same number of
// bytes in the same run. A 64 KB super-packet is 45 full MSS-1448 segments
// (65,160 bytes of payload), held the way a Linux guest hands it over: the
// headers in one buffer, the payload in 4 KiB pages.

const benchMSS = 1448

func benchPacket(v6 bool) (src [][]byte, hdr vnet.Hdr, frameLen int) {
	s := pktSpec{payloadLen: 45 * benchMSS, mss: benchMSS, gsoType: vnet.GSOTCPv4, tcpOpts: tcpOptsTS}
	if v6 {
		s.ipv6, s.gsoType = true, vnet.GSOTCPv6
	}
	frame, h := s.build()
	hl := 66
	if v6 {
		hl = 86
	}
	src = append(src, frame[:hl])
	for off := hl; off < len(frame); off += 4096 {
		src = append(src, frame[off:min(off+4096, len(frame))])
	}
	return src, h, len(frame)
}

func reportGbps(b *testing.B, bytesPerOp int) {
	b.SetBytes(int64(bytesPerOp))
	b.ReportMetric(float64(bytesPerOp)*8*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gbit/s")
}

func BenchmarkSegment(b *testing.B) {
	for _, c := range []struct {
		name string
		v6   bool
		f    vnet.Offloads
	}{
		{"tcp4/full-csum", false, 0},
		{"tcp4/partial-csum", false, vnet.OffloadCSUM},
		{"tcp6/full-csum", true, 0},
		{"tcp6/partial-csum", true, vnet.OffloadCSUM},
	} {
		b.Run(c.name, func(b *testing.B) {
			src, h, n := benchPacket(c.v6)
			m, _ := ParseHead(src[0], n, h)
			dst := make([][]byte, m.Segs)
			for i := range dst {
				dst[i] = make([]byte, m.MaxSegmentLen())
			}
			out := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				m, _ := ParseHead(src[0], n, h)
				if d, _ := Decide(m, c.f, Limits{}, PolicyAuto); d != DecisionSegment {
					b.Fatal(d)
				}
				k, _ := Segment(dst, src, &m, c.f, 0)
				out = 0
				for _, s := range dst[:k] {
					out += len(s)
				}
			}
			reportGbps(b, out)
		})
	}
}

// BenchmarkResegment splits the 64 KB packet for gso_max_size 16384 (five
// super-packets); the payload is referenced, not copied. Output bytes are
// counted like Segment's: the frames handed to the backend.
func BenchmarkResegment(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		name := "tcp4/gso_max_size=16384"
		if v6 {
			name = "tcp6/gso_max_size=16384"
		}
		b.Run(name, func(b *testing.B) {
			src, h, n := benchPacket(v6)
			l := Limits{GSOMaxSize: 16384}
			f := vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6
			m, _ := ParseHead(src[0], n, h)
			cnt := ResegmentCount(&m, l)
			out := ResegmentOut{Pkts: make([][][]byte, cnt), Hdrs: make([][]byte, cnt), VnetHdrLen: vnet.HdrLenV1}
			for i := range cnt {
				out.Pkts[i] = make([][]byte, 0, 1+len(src))
				out.Hdrs[i] = make([]byte, vnet.HdrLenV1+m.HdrLen)
			}
			bytes := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				m, _ := ParseHead(src[0], n, h)
				if d, _ := Decide(m, f, l, PolicyAuto); d != DecisionResegment {
					b.Fatal(d)
				}
				k, _ := Resegment(&out, src, &m, l, 0)
				bytes = 0
				for _, p := range out.Pkts[:k] {
					for _, s := range p {
						bytes += len(s)
					}
				}
			}
			reportGbps(b, bytes)
		})
	}
}

// BenchmarkCopy is the baseline: copy() of as many bytes as full
// segmentation of the 64 KB TCPv4 packet outputs (45 * (66 + 1448)), once
// as one copy and once as 45 copies of one segment each.
func BenchmarkCopy(b *testing.B) {
	const segLen = 66 + benchMSS
	const total = 45 * segLen
	src := make([]byte, total)
	b.Run("one-copy", func(b *testing.B) {
		dst := make([]byte, total)
		b.ResetTimer()
		for b.Loop() {
			copy(dst, src)
		}
		reportGbps(b, total)
	})
	b.Run("per-segment", func(b *testing.B) {
		dst := make([][]byte, 45)
		for i := range dst {
			dst[i] = make([]byte, segLen)
		}
		b.ResetTimer()
		for b.Loop() {
			for i := range dst {
				copy(dst[i], src[i*segLen:(i+1)*segLen])
			}
		}
		reportGbps(b, total)
	})
}

func BenchmarkParseDecide(b *testing.B) {
	src, h, n := benchPacket(true)
	f := vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6
	b.ReportAllocs()
	for b.Loop() {
		m, _ := ParseHead(src[0], n, h)
		if d, _ := Decide(m, f, Limits{GSOMaxSize: 65536, GSOMaxSegs: 65535}, PolicyAuto); d != DecisionPassWhole {
			b.Fatal(d)
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// BenchmarkInterleaved measures each operation against its baseline within
// the same loop iteration (baseline, then operation, each timed), so that
// load from other processes on a shared machine falls on both alike. It
// reports "x-copy": the operation's output rate as a fraction of copy()'s
// rate on the same number of bytes (1.0 = as fast as copying its output),
// and for re-segmentation also "x-segment": how many times faster than full
// segmentation of the same packet.
func BenchmarkInterleaved(b *testing.B) {
	type op struct {
		name  string
		v6    bool
		reseg bool
		run   func(src [][]byte, m *Meta, dst [][]byte, out *ResegmentOut) int // returns output bytes
	}
	segment := func(f vnet.Offloads) func([][]byte, *Meta, [][]byte, *ResegmentOut) int {
		return func(src [][]byte, m *Meta, dst [][]byte, _ *ResegmentOut) int {
			n, _ := Segment(dst, src, m, f, 0)
			t := 0
			for _, s := range dst[:n] {
				t += len(s)
			}
			return t
		}
	}
	l := Limits{GSOMaxSize: 16384}
	reseg := func(src [][]byte, m *Meta, _ [][]byte, out *ResegmentOut) int {
		n, _ := Resegment(out, src, m, l, 0)
		t := 0
		for _, p := range out.Pkts[:n] {
			for _, s := range p {
				t += len(s)
			}
		}
		return t
	}
	ops := []op{
		{"segment/tcp4/full-csum", false, false, segment(0)},
		{"segment/tcp4/partial-csum", false, false, segment(vnet.OffloadCSUM)},
		{"segment/tcp6/full-csum", true, false, segment(0)},
		{"segment/tcp6/partial-csum", true, false, segment(vnet.OffloadCSUM)},
		{"resegment/tcp4/gso_max_size=16384", false, true, reseg},
		{"resegment/tcp6/gso_max_size=16384", true, true, reseg},
	}
	for _, o := range ops {
		b.Run(o.name, func(b *testing.B) {
			src, h, n := benchPacket(o.v6)
			m, _ := ParseHead(src[0], n, h)
			dst := make([][]byte, m.Segs)
			for i := range dst {
				dst[i] = make([]byte, m.MaxSegmentLen())
			}
			cnt := ResegmentCount(&m, l)
			out := ResegmentOut{Pkts: make([][][]byte, cnt), Hdrs: make([][]byte, cnt), VnetHdrLen: vnet.HdrLenV1}
			for i := range cnt {
				out.Pkts[i] = make([][]byte, 0, 1+len(src))
				out.Hdrs[i] = make([]byte, vnet.HdrLenV1+m.HdrLen)
			}
			outBytes := o.run(src, &m, dst, &out)
			flatSrc := make([]byte, outBytes)
			flatDst := make([]byte, outBytes)
			full := segment(0)
			var tCopy, tOp, tSeg time.Duration
			var mm Meta
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				copy(flatDst, flatSrc)
				t1 := time.Now()
				mm, _ = ParseHead(src[0], n, h)
				o.run(src, &mm, dst, &out)
				t2 := time.Now()
				tCopy += t1.Sub(t0)
				tOp += t2.Sub(t1)
				if o.reseg {
					full(src, &mm, dst, nil)
					tSeg += time.Since(t2)
				}
			}
			b.ReportMetric(float64(tCopy)/float64(tOp), "x-copy")
			if tSeg > 0 {
				b.ReportMetric(float64(tSeg)/float64(tOp), "x-segment")
			}
		})
	}
}
