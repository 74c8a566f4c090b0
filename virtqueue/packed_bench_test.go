package virtqueue

import (
	"testing"
)

// Packed vs split, measured side by side: BenchmarkRingPopPush/<shape>/split
// and .../packed run the same work on a 256-entry ring, so their ns/op
// ratio comes from one run. One op is one chain: the driver posts it, the
// device pops and pushes it (and asks NeedNotify once per batch), the
// driver reaps it. BenchmarkRingDevice times the device side alone.

type ringBenchShape struct {
	name     string
	batch    int
	bufs     int // readable elements per chain
	indirect bool
	eventIdx bool
	inOrder  bool
}

var ringBenchShapes = []ringBenchShape{
	{name: "1desc/batch1", batch: 1, bufs: 1},
	{name: "1desc/batch32", batch: 32, bufs: 1},
	{name: "1desc-eventidx/batch32", batch: 32, bufs: 1, eventIdx: true},
	{name: "2desc/batch32", batch: 32, bufs: 2},
	{name: "indirect-2desc/batch32", batch: 32, bufs: 2, indirect: true},
	{name: "1desc-inorder/batch32", batch: 32, bufs: 1, inOrder: true},
}

func BenchmarkRingPopPush(b *testing.B) {
	for _, s := range ringBenchShapes {
		b.Run(s.name+"/split", func(b *testing.B) { benchSplitPopPush(b, s) })
		b.Run(s.name+"/packed", func(b *testing.B) { benchPackedPopPush(b, s) })
	}
}

// benchOut is the TX shape of BenchmarkPopPush: a 12-byte header and a
// 1500-byte frame, or both in one element.
func benchOut(mem []byte, data, bufs int) [][]byte {
	if bufs == 2 {
		return [][]byte{mem[data : data+12], mem[data+64 : data+64+1500]}
	}
	return [][]byte{mem[data : data+1512]}
}

func benchSplitPopPush(b *testing.B, s ringBenchShape) {
	r := newTestRing(b, ringOpts{size: 256, eventIdx: s.eventIdx, indirect: s.indirect, indirectMax: 4})
	if s.inOrder {
		cfg := r.drv.DeviceConfig()
		cfg.Indirect, cfg.InOrder = s.indirect, true
		dev, err := NewSplit(cfg, r.drv.Memory())
		if err != nil {
			b.Fatal(err)
		}
		r.dev = dev
	}
	out := benchOut(r.mem, dataArea, s.bufs)
	chains := make([]Chain, s.batch)
	used := make([]UsedElem, s.batch)
	reaped := make([]UsedElem, 256)
	var notes int
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += s.batch {
		for i := 0; i < s.batch; i++ {
			var err error
			if s.indirect {
				_, err = r.drv.AddIndirect(out, nil)
			} else {
				_, err = r.drv.Add(out, nil)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if r.drv.Publish() {
			notes++
		}
		n, err := r.dev.Pop(chains)
		if err != nil || n != s.batch {
			b.Fatalf("Pop = %d, %v", n, err)
		}
		for i := range chains[:n] {
			if chains[i].Err != nil {
				b.Fatal(chains[i].Err)
			}
			used[i] = UsedElem{ID: uint32(chains[i].Head)}
		}
		if s.inOrder {
			r.dev.PushInOrder(used[:n])
		} else {
			r.dev.Push(used[:n])
		}
		if r.dev.NeedNotify() {
			notes++
		}
		var m int
		if s.inOrder {
			m = r.drv.ReapInOrder(reaped)
		} else {
			m = r.drv.Reap(reaped)
		}
		if m != n {
			b.Fatalf("reaped %d of %d", m, n)
		}
	}
	reportMpps(b)
	_ = notes
}

func benchPackedPopPush(b *testing.B, s ringBenchShape) {
	r := newPackedTestRing(b, packedOpts{size: 256, eventIdx: s.eventIdx, indirect: s.indirect, inOrder: s.inOrder})
	out := benchOut(r.mem, r.data, s.bufs)
	chains := make([]Chain, s.batch)
	used := make([]UsedElem, s.batch)
	reaped := make([]UsedElem, 256)
	var notes int
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += s.batch {
		for i := 0; i < s.batch; i++ {
			var err error
			if s.indirect {
				_, err = r.drv.AddIndirect(out, nil)
			} else {
				_, err = r.drv.Add(out, nil)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if r.drv.Publish() {
			notes++
		}
		n, err := r.dev.Pop(chains)
		if err != nil || n != s.batch {
			b.Fatalf("Pop = %d, %v", n, err)
		}
		for i := range chains[:n] {
			if chains[i].Err != nil {
				b.Fatal(chains[i].Err)
			}
			used[i] = UsedElem{ID: uint32(chains[i].Head)}
		}
		if s.inOrder {
			r.dev.PushInOrder(used[:n])
		} else {
			r.dev.Push(used[:n])
		}
		if r.dev.NeedNotify() {
			notes++
		}
		if m := r.drv.Reap(reaped); m != n {
			b.Fatalf("reaped %d of %d", m, n)
		}
	}
	reportMpps(b)
	_ = notes
}

// BenchmarkRingDevice measures the device side alone: Pop and Push of a
// batch of one-element chains the driver posted once, replayed. The split
// replay rewinds the avail index; the packed one also copies the batch's
// descriptors back over the used ones (16 bytes per chain, which the
// driver would have written anyway).
func BenchmarkRingDevice(b *testing.B) {
	for _, batch := range []int{1, 32} {
		name := map[int]string{1: "batch1", 32: "batch32"}[batch]
		b.Run(name+"/split", func(b *testing.B) {
			r := newTestRing(b, ringOpts{size: 256})
			out := benchOut(r.mem, dataArea, 1)
			for i := 0; i < batch; i++ {
				if _, err := r.drv.Add(out, nil); err != nil {
					b.Fatal(err)
				}
			}
			r.drv.Publish()
			chains := make([]Chain, batch)
			used := make([]UsedElem, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				r.dev.lastAvail = 0
				n, err := r.dev.Pop(chains)
				if err != nil || n != batch {
					b.Fatalf("Pop = %d, %v", n, err)
				}
				for i := range chains[:n] {
					used[i] = UsedElem{ID: uint32(chains[i].Head)}
				}
				r.dev.Push(used[:n])
			}
			reportMpps(b)
		})
		b.Run(name+"/packed", func(b *testing.B) {
			r := newPackedTestRing(b, packedOpts{size: 256})
			out := benchOut(r.mem, r.data, 1)
			for i := 0; i < batch; i++ {
				if _, err := r.drv.Add(out, nil); err != nil {
					b.Fatal(err)
				}
			}
			r.drv.Publish()
			snap := append([]byte(nil), r.drv.desc[:batch*DescSize]...)
			chains := make([]Chain, batch)
			used := make([]UsedElem, batch)
			q := r.dev
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				copy(r.drv.desc, snap)
				q.availIdx, q.availWrap, q.usedIdx, q.usedWrap = 0, true, 0, true
				n, err := q.Pop(chains)
				if err != nil || n != batch {
					b.Fatalf("Pop = %d, %v", n, err)
				}
				for i := range chains[:n] {
					used[i] = UsedElem{ID: uint32(chains[i].Head)}
				}
				q.Push(used[:n])
			}
			reportMpps(b)
		})
	}
}
