package virtqueue

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// One benchmark op is one chain: the driver posts it, the device pops it
// and pushes it back, the driver reaps it. Batches of 32 as a queue worker
// would do. Compare ns/op with the baselines below, measured in the same run.

const benchBatch = 32

func reportMpps(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mpps")
}

func BenchmarkPopPush(b *testing.B) {
	for _, bc := range []struct {
		name     string
		indirect bool
		eventIdx bool
		bufs     int // readable buffers per chain
	}{
		{"direct-1desc", false, false, 1},
		{"direct-1desc-eventidx", false, true, 1},
		{"direct-2desc", false, false, 2},
		{"indirect-2desc", true, false, 2},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := newTestRing(b, ringOpts{size: 256, eventIdx: bc.eventIdx, indirect: bc.indirect, indirectMax: 4})
			// Virtio-net TX shape: a 12-byte header and a 1500-byte frame,
			// or both in one buffer.
			hdr := r.mem[dataArea : dataArea+12]
			frame := r.mem[dataArea+64 : dataArea+64+1500]
			whole := r.mem[dataArea : dataArea+1512]
			out := [][]byte{whole}
			if bc.bufs == 2 {
				out = [][]byte{hdr, frame}
			}
			chains := make([]Chain, benchBatch)
			used := make([]UsedElem, benchBatch)
			reaped := make([]UsedElem, benchBatch)
			var kicks, calls int
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += benchBatch {
				for i := 0; i < benchBatch; i++ {
					var err error
					if bc.indirect {
						_, err = r.drv.AddIndirect(out, nil)
					} else {
						_, err = r.drv.Add(out, nil)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				if r.drv.Publish() {
					kicks++
				}
				n, err := r.dev.Pop(chains)
				if err != nil || n != benchBatch {
					b.Fatalf("Pop = %d, %v", n, err)
				}
				for i := range chains[:n] {
					c := &chains[i]
					if c.Err != nil {
						b.Fatal(c.Err)
					}
					used[i] = UsedElem{ID: uint32(c.Head)}
				}
				r.dev.Push(used[:n])
				if r.dev.NeedNotify() {
					calls++
				}
				if r.drv.Reap(reaped) != n {
					b.Fatal("short reap")
				}
			}
			reportMpps(b)
			_ = kicks + calls
		})
	}
}

// BenchmarkPopOnly measures the device side alone: Pop+Push of a batch the
// driver posted once, replayed by rewinding the ring indices.
func BenchmarkPopOnly(b *testing.B) {
	r := newTestRing(b, ringOpts{size: 256})
	out := [][]byte{r.mem[dataArea : dataArea+1512]}
	for i := 0; i < benchBatch; i++ {
		if _, err := r.drv.Add(out, nil); err != nil {
			b.Fatal(err)
		}
	}
	r.drv.Publish()
	chains := make([]Chain, benchBatch)
	used := make([]UsedElem, benchBatch)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += benchBatch {
		r.dev.lastAvail = 0 // replay the same batch
		n, err := r.dev.Pop(chains)
		if err != nil || n != benchBatch {
			b.Fatalf("Pop = %d, %v", n, err)
		}
		for i := range chains[:n] {
			used[i] = UsedElem{ID: uint32(chains[i].Head)}
		}
		r.dev.Push(used[:n])
	}
	reportMpps(b)
}

// BenchmarkBaselineRingTouch is the floor for BenchmarkPopPush: per chain
// it writes and reads back the same ring bytes (a 16-byte descriptor, a
// 2-byte avail entry, an 8-byte used entry) with plain little-endian
// accesses, no validation, no address translation and no atomics.
func BenchmarkBaselineRingTouch(b *testing.B) {
	const size = 256
	mem := make([]byte, 64<<10)
	l := LayoutRings(0, size)
	desc, avail, used := mem[l.Desc:l.Avail], mem[l.Avail:l.Used], mem[l.Used:l.End]
	var sink uint64
	var idx uint16
	b.ResetTimer()
	for done := 0; done < b.N; done += benchBatch {
		for i := 0; i < benchBatch; i++ {
			s := int((idx + uint16(i)) % size)
			d := desc[s*16 : s*16+16]
			binary.LittleEndian.PutUint64(d, uint64(dataArea))
			binary.LittleEndian.PutUint32(d[8:], 1512)
			binary.LittleEndian.PutUint32(d[12:], 0)
			binary.LittleEndian.PutUint16(avail[4+2*s:], uint16(s))
		}
		for i := 0; i < benchBatch; i++ {
			s := int((idx + uint16(i)) % size)
			h := binary.LittleEndian.Uint16(avail[4+2*s:])
			d := desc[int(h)*16 : int(h)*16+16]
			sink += binary.LittleEndian.Uint64(d) + uint64(binary.LittleEndian.Uint32(d[8:]))
			binary.LittleEndian.PutUint32(used[4+8*s:], uint32(h))
			binary.LittleEndian.PutUint32(used[8+8*s:], 0)
		}
		for i := 0; i < benchBatch; i++ {
			s := int((idx + uint16(i)) % size)
			sink += uint64(binary.LittleEndian.Uint32(used[4+8*s:]))
		}
		idx += benchBatch
	}
	reportMpps(b)
	if sink == 42 {
		fmt.Println(sink)
	}
}

// BenchmarkBaselineCopy16 copies one descriptor's worth of bytes per op.
func BenchmarkBaselineCopy16(b *testing.B) {
	src := make([]byte, 4096)
	dst := make([]byte, 4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := (i * 16) & 4095
		copy(dst[o:o+16], src[o:o+16])
	}
	reportMpps(b)
}
