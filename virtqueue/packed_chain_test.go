package virtqueue

import (
	"errors"
	"math"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPackedChainWalk checks every shape of list and every chain error of
// the packed walk: each list under test is followed by a good one-element
// buffer (id 7), which must come out intact at the right ring position, so a
// malformed list never desynchronises the ring.
func TestPackedChainWalk(t *testing.T) {
	const size = 8
	const follow = 7 // id of the follow-up buffer
	type pd = PackedDesc
	var r *packedTestRing // set per subtest before the cases' funcs run
	d := func(off int) uint64 { return r.addr(off) }
	ind := func(k int) uint64 { return gaddr(r.ind + k*DescSize) }
	putInd := func(k int, e pd) { PutPackedDesc(r.mem[r.ind+k*DescSize:], e) }
	type wb struct {
		region int // 0: ring memory (offset from data), 1: adjacent region, 2: region ending at 2^64, 3: last 16 bytes of ring memory
		off    int
		len    int
		write  bool
	}
	cases := []struct {
		name     string
		indirect bool
		list     func() []pd
		id       uint16
		err      error
		bufs     []wb
	}{
		{name: "single readable", id: 3,
			list: func() []pd { return []pd{{Addr: d(0), Len: 64, ID: 3}} },
			bufs: []wb{{0, 0, 64, false}}},
		{name: "single writable", id: 0,
			list: func() []pd { return []pd{{Addr: d(0), Len: 64, Flags: DescFWrite}} },
			bufs: []wb{{0, 0, 64, true}}},
		{name: "id from the last descriptor", id: 5,
			list: func() []pd {
				return []pd{{Addr: d(0), Len: 12, ID: 0xffff, Flags: DescFNext},
					{Addr: d(0x100), Len: 1500, ID: 6, Flags: DescFNext},
					{Addr: d(0x800), Len: 100, ID: 5, Flags: DescFWrite}}
			},
			bufs: []wb{{0, 0, 12, false}, {0, 0x100, 1500, false}, {0, 0x800, 100, true}}},
		{name: "list of queue size minus one", id: 2,
			list: func() []pd {
				l := make([]pd, size-1)
				for i := range l {
					l[i] = pd{Addr: d(i * 0x10), Len: 8, Flags: DescFNext}
				}
				l[size-2] = pd{Addr: d((size - 2) * 0x10), Len: 8, ID: 2, Flags: DescFWrite}
				return l
			},
			bufs: []wb{{0, 0, 8, false}, {0, 0x10, 8, false}, {0, 0x20, 8, false}, {0, 0x30, 8, false},
				{0, 0x40, 8, false}, {0, 0x50, 8, false}, {0, 0x60, 8, true}}},
		{name: "buffer ends at end of region", id: 1,
			list: func() []pd { return []pd{{Addr: gaddr(len(r.mem) - 16), Len: 16, ID: 1}} },
			bufs: []wb{{3, 0, 16, false}}},
		{name: "buffer in second region", id: 1,
			list: func() []pd { return []pd{{Addr: region1Addr, Len: region1Size, ID: 1, Flags: DescFWrite}} },
			bufs: []wb{{1, 0, region1Size, true}}},
		{name: "buffer ends exactly at 2^64", id: 1,
			list: func() []pd { return []pd{{Addr: math.MaxUint64 - 15, Len: 16, ID: 1}} },
			bufs: []wb{{2, region2Size - 16, 16, false}}},
		{name: "indirect", indirect: true, id: 4,
			list: func() []pd {
				// WRITE on the descriptor naming the table is ignored, and so
				// are NEXT and the id of the table's entries.
				putInd(0, pd{Addr: d(0), Len: 10, ID: 99, Flags: DescFNext})
				putInd(1, pd{Addr: d(0x100), Len: 20, Flags: DescFNext | DescFAvail})
				putInd(2, pd{Addr: d(0x200), Len: 30, Flags: DescFWrite | DescFUsed})
				return []pd{{Addr: ind(0), Len: 3 * DescSize, ID: 4, Flags: DescFIndirect | DescFWrite}}
			},
			bufs: []wb{{0, 0, 10, false}, {0, 0x100, 20, false}, {0, 0x200, 30, true}}},
		{name: "indirect table of queue size", indirect: true, id: 4,
			list: func() []pd {
				for k := 0; k < size; k++ {
					putInd(k, pd{Addr: d(0), Len: 1})
				}
				return []pd{{Addr: ind(0), Len: size * DescSize, ID: 4, Flags: DescFIndirect}}
			},
			bufs: []wb{{0, 0, 1, false}, {0, 0, 1, false}, {0, 0, 1, false}, {0, 0, 1, false},
				{0, 0, 1, false}, {0, 0, 1, false}, {0, 0, 1, false}, {0, 0, 1, false}}},
		// Chain errors: consumed, reported, ring intact.
		{name: "indirect not negotiated", id: 4, err: ErrIndirectNotNegotiated,
			list: func() []pd {
				putInd(0, pd{Addr: d(0), Len: 1})
				return []pd{{Addr: ind(0), Len: DescSize, ID: 4, Flags: DescFIndirect}}
			}},
		{name: "indirect with next", indirect: true, id: 4, err: ErrIndirectNext,
			list: func() []pd {
				putInd(0, pd{Addr: d(0), Len: 1})
				return []pd{{Addr: ind(0), Len: DescSize, Flags: DescFIndirect | DescFNext}, {Addr: d(0), Len: 1, ID: 4}}
			}},
		{name: "indirect after a direct descriptor", indirect: true, id: 4, err: ErrIndirectNext,
			list: func() []pd {
				putInd(0, pd{Addr: d(0), Len: 1})
				return []pd{{Addr: d(0), Len: 1, Flags: DescFNext}, {Addr: ind(0), Len: DescSize, ID: 4, Flags: DescFIndirect}}
			}},
		{name: "indirect len not multiple of 16", indirect: true, id: 4, err: ErrIndirectLen,
			list: func() []pd { return []pd{{Addr: ind(0), Len: 24, ID: 4, Flags: DescFIndirect}} }},
		{name: "indirect len zero", indirect: true, id: 4, err: ErrIndirectLen,
			list: func() []pd { return []pd{{Addr: ind(0), Len: 0, ID: 4, Flags: DescFIndirect}} }},
		{name: "indirect table larger than queue", indirect: true, id: 4, err: ErrIndirectLen,
			list: func() []pd { return []pd{{Addr: ind(0), Len: (size + 1) * DescSize, ID: 4, Flags: DescFIndirect}} }},
		{name: "nested indirect", indirect: true, id: 4, err: ErrNestedIndirect,
			list: func() []pd {
				putInd(0, pd{Addr: d(0), Len: 1})
				putInd(1, pd{Addr: ind(4), Len: DescSize, Flags: DescFIndirect})
				putInd(4, pd{Addr: d(0), Len: 1})
				return []pd{{Addr: ind(0), Len: 2 * DescSize, ID: 4, Flags: DescFIndirect}}
			}},
		{name: "indirect table outside memory", indirect: true, id: 4, err: ErrDescAddress,
			list: func() []pd { return []pd{{Addr: 0x100, Len: DescSize, ID: 4, Flags: DescFIndirect}} }},
		{name: "indirect table straddles regions", indirect: true, id: 4, err: ErrDescAddress,
			list: func() []pd {
				return []pd{{Addr: region1Addr - DescSize, Len: 2 * DescSize, ID: 4, Flags: DescFIndirect}}
			}},
		{name: "indirect entry outside memory", indirect: true, id: 4, err: ErrDescAddress,
			list: func() []pd {
				putInd(0, pd{Addr: d(0), Len: 1})
				putInd(1, pd{Addr: 0x10, Len: 1, Flags: DescFWrite})
				return []pd{{Addr: ind(0), Len: 2 * DescSize, ID: 4, Flags: DescFIndirect}}
			}},
		{name: "zero length in indirect table", indirect: true, id: 4, err: ErrZeroLen,
			list: func() []pd {
				putInd(0, pd{Addr: d(0), Len: 0})
				return []pd{{Addr: ind(0), Len: DescSize, ID: 4, Flags: DescFIndirect}}
			}},
		{name: "write before read in indirect table", indirect: true, id: 4, err: ErrWriteBeforeRead,
			list: func() []pd {
				putInd(0, pd{Addr: d(0), Len: 8, Flags: DescFWrite})
				putInd(1, pd{Addr: d(0), Len: 8})
				return []pd{{Addr: ind(0), Len: 2 * DescSize, ID: 4, Flags: DescFIndirect}}
			}},
		{name: "address below memory", id: 2, err: ErrDescAddress,
			list: func() []pd { return []pd{{Addr: 0x100, Len: 16, ID: 2}} }},
		{name: "address between regions", id: 2, err: ErrDescAddress,
			list: func() []pd { return []pd{{Addr: region1Addr + region1Size + 0x1000, Len: 16, ID: 2}} }},
		{name: "length past region end", id: 2, err: ErrDescAddress,
			list: func() []pd { return []pd{{Addr: d(0), Len: math.MaxUint32, ID: 2}} }},
		{name: "straddles two adjacent regions", id: 2, err: ErrDescAddress,
			list: func() []pd { return []pd{{Addr: region1Addr - 8, Len: 16, ID: 2}} }},
		{name: "wraps past 2^64", id: 2, err: ErrDescAddress,
			list: func() []pd { return []pd{{Addr: math.MaxUint64 - 7, Len: 16, ID: 2}} }},
		{name: "later element outside memory, list goes on", id: 2, err: ErrDescAddress,
			list: func() []pd {
				return []pd{{Addr: d(0), Len: 8, Flags: DescFNext}, {Addr: 0, Len: 8, Flags: DescFNext | DescFWrite},
					{Addr: d(0), Len: 8, ID: 2, Flags: DescFWrite}}
			}},
		{name: "zero length", id: 2, err: ErrZeroLen,
			list: func() []pd { return []pd{{Addr: d(0), Len: 0, ID: 2}} }},
		{name: "zero length first of three", id: 2, err: ErrZeroLen,
			list: func() []pd {
				return []pd{{Addr: d(0), Len: 0, Flags: DescFNext}, {Addr: d(0), Len: 8, Flags: DescFNext},
					{Addr: d(0), Len: 8, ID: 2}}
			}},
		{name: "write before read", id: 2, err: ErrWriteBeforeRead,
			list: func() []pd {
				return []pd{{Addr: d(0), Len: 8, Flags: DescFWrite | DescFNext}, {Addr: d(0), Len: 8, ID: 2}}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r = newPackedTestRing(t, packedOpts{size: size, indirect: tc.indirect, indirectMax: size + 1})
			region1 := make([]byte, region1Size)
			region2 := make([]byte, region2Size)
			mem := RegionMemory{{Addr: testBase, B: r.mem}, {Addr: region1Addr, B: region1}, {Addr: region2Addr, B: region2}}
			cfg := r.drv.DeviceConfig()
			cfg.Indirect = tc.indirect
			dev, err := NewPacked(cfg, mem)
			if err != nil {
				t.Fatal(err)
			}
			list := tc.list()
			r.drv.PostRaw(list...)
			r.drv.PostRaw(pd{Addr: d(0x1000), Len: 32, ID: follow})
			chains := make([]Chain, 4)
			chains[0].Bufs = make([]Buffer, 1, 16) // stale content must be dropped
			n, err := dev.Pop(chains)
			if err != nil || n != 2 {
				t.Fatalf("Pop = %d, %v; want 2 buffers", n, err)
			}
			c := chains[0]
			if c.Head != tc.id {
				t.Errorf("Head = %d, want %d", c.Head, tc.id)
			}
			if !errors.Is(c.Err, tc.err) || (tc.err == nil) != (c.Err == nil) {
				t.Fatalf("Err = %v, want %v", c.Err, tc.err)
			}
			regions := [][]byte{r.mem[r.data:], region1, region2, r.mem[len(r.mem)-16:]}
			if len(c.Bufs) != len(tc.bufs) {
				t.Fatalf("got %d buffers, want %d", len(c.Bufs), len(tc.bufs))
			}
			var rl, wl uint32
			for i, w := range tc.bufs {
				b := c.Bufs[i]
				if len(b.B) != w.len || cap(b.B) != w.len || b.Write != w.write ||
					unsafe.SliceData(b.B) != &regions[w.region][w.off] {
					t.Errorf("element %d: len %d cap %d write %v, want region %d offset %#x len %d write %v",
						i, len(b.B), cap(b.B), b.Write, w.region, w.off, w.len, w.write)
				}
				if w.write {
					wl += uint32(w.len)
				} else {
					rl += uint32(w.len)
				}
			}
			if c.ReadLen != rl || c.WriteLen != wl {
				t.Errorf("ReadLen/WriteLen = %d/%d, want %d/%d", c.ReadLen, c.WriteLen, rl, wl)
			}
			f := chains[1]
			if f.Err != nil || f.Head != follow || len(f.Bufs) != 1 || f.ReadLen != 32 {
				t.Errorf("follow-up buffer: id %d err %v elements %d readLen %d", f.Head, f.Err, len(f.Bufs), f.ReadLen)
			}
			wantPos := uint16(len(list)+1) % size
			wantWrap := len(list)+1 < size
			if st := dev.State(); st.AvailIdx != wantPos || st.AvailWrap != wantWrap {
				t.Errorf("state after Pop %+v, want avail %d wrap %v", st, wantPos, wantWrap)
			}
			// Both come back; the used descriptors land where the lists began.
			dev.Push([]UsedElem{{ID: uint32(f.Head), Len: 0}, {ID: uint32(c.Head), Len: 0}})
			if u := r.drv.Desc(0); u.ID != follow || u.Flags&(DescFAvail|DescFUsed) != DescFAvail|DescFUsed {
				t.Errorf("first used descriptor %+v", u)
			}
			if st := dev.State(); st.UsedIdx != wantPos || st.UsedWrap != wantWrap {
				t.Errorf("state after Push %+v", st)
			}
		})
	}
}

// TestPackedRingFatal covers the lists the device cannot return because it
// cannot tell their id or their end: the ring breaks, the buffers before
// stay valid, and the error sticks.
func TestPackedRingFatal(t *testing.T) {
	const size = 6 // not a power of two
	type pd = PackedDesc
	good := func(r *packedTestRing, id uint16) pd { return pd{Addr: r.addr(0), Len: 8, ID: id} }
	cases := []struct {
		name   string
		setup  func(r *packedTestRing) // after one good buffer (id 5) at position 0
		err    error
		before int // good buffers popped before the fault, including id 5
	}{
		{name: "id equals queue size", err: ErrBufferID, before: 1,
			setup: func(r *packedTestRing) { r.drv.PostRaw(good(r, size)) }},
		{name: "id 0xffff after a long list", err: ErrBufferID, before: 1,
			setup: func(r *packedTestRing) {
				r.drv.PostRaw(pd{Addr: r.addr(0), Len: 8, ID: 1, Flags: DescFNext}, good(r, 0xffff))
			}},
		{name: "id reused while in flight in the same batch", err: ErrBufferIDInUse, before: 1,
			setup: func(r *packedTestRing) { r.drv.PostRaw(good(r, 5)) }},
		{name: "id reused while in flight, malformed list", err: ErrBufferIDInUse, before: 1,
			setup: func(r *packedTestRing) { r.drv.PostRaw(pd{Addr: 0, Len: 8, ID: 5}) }},
		{name: "NEXT into a descriptor not made available", err: ErrChainUnterminated, before: 1,
			setup: func(r *packedTestRing) {
				r.drv.SetDesc(2, pd{Addr: r.addr(0), Len: 8, ID: 1}) // flags 0: never available in lap 1
				r.drv.SetDesc(1, pd{Addr: r.addr(0), Len: 8, Flags: DescFNext | AvailBits(true)})
			}},
		{name: "NEXT into a descriptor with the previous lap's wrap", err: ErrChainUnterminated, before: 1,
			setup: func(r *packedTestRing) {
				r.drv.SetDesc(2, pd{Addr: r.addr(0), Len: 8, ID: 1, Flags: AvailBits(false)})
				r.drv.SetDesc(1, pd{Addr: r.addr(0), Len: 8, Flags: DescFNext | AvailBits(true)})
			}},
		{name: "NEXT into a descriptor marked used", err: ErrChainUnterminated, before: 1,
			setup: func(r *packedTestRing) {
				r.drv.SetDesc(2, pd{Addr: r.addr(0), Len: 8, ID: 1, Flags: DescFAvail | DescFUsed})
				r.drv.SetDesc(1, pd{Addr: r.addr(0), Len: 8, Flags: DescFNext | AvailBits(true)})
			}},
		{name: "malformed first element, then NEXT into nothing", err: ErrChainUnterminated, before: 1,
			setup: func(r *packedTestRing) {
				r.drv.SetDesc(1, pd{Addr: 0, Len: 0, Flags: DescFNext | AvailBits(true)})
			}},
		{name: "NEXT on every descriptor of the ring", err: ErrChainUnterminated, before: 0,
			setup: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newPackedTestRing(t, packedOpts{size: size})
			if tc.setup != nil {
				r.drv.PostRaw(good(r, 5))
				tc.setup(r)
			} else {
				l := make([]pd, size)
				for i := range l {
					l[i] = pd{Addr: r.addr(0), Len: 8, ID: 1, Flags: DescFNext}
				}
				r.drv.PostRaw(l...)
			}
			before := r.dev.State()
			if tc.before > 0 {
				before.AvailIdx = 1
			}
			if p, err := r.dev.Pending(); err != nil || p != tc.before+1 {
				t.Errorf("Pending = %d, %v; want %d (the broken list counts)", p, err, tc.before+1)
			}
			chains := make([]Chain, 4)
			n, err := r.dev.Pop(chains)
			if n != tc.before || err != tc.err {
				t.Fatalf("Pop = %d, %v; want %d, %v", n, err, tc.before, tc.err)
			}
			if n == 1 && (chains[0].Head != 5 || chains[0].Err != nil) {
				t.Errorf("buffer before the fault: id %d err %v", chains[0].Head, chains[0].Err)
			}
			if len(chains[n].Bufs) != 0 || chains[n].Err != nil {
				t.Errorf("the broken list left %d elements, err %v, in its Chain", len(chains[n].Bufs), chains[n].Err)
			}
			if st := r.dev.State(); st != before {
				t.Errorf("state %+v, want %+v (stops at the broken list)", st, before)
			}
			if n, err := r.dev.Pop(chains); n != 0 || err != tc.err {
				t.Errorf("second Pop = %d, %v; the error must be sticky", n, err)
			}
			if _, err := r.dev.Pending(); err != tc.err {
				t.Errorf("Pending err = %v", err)
			}
			if !r.dev.EnableNotify() {
				t.Error("EnableNotify on a broken ring must report more work")
			}
			// The buffer popped before the fault can still be returned.
			r.dev.Push(usedOf(chains[:n]))
			if u := r.drv.Desc(0); n == 1 && (u.ID != 5 || u.Flags != DescFAvail|DescFUsed) {
				t.Errorf("used descriptor for the buffer before the fault: %+v", u)
			}
		})
	}
}

// TestPackedListAcrossRingEnd checks a list that wraps from the last ring
// position to position 0 (where the driver's wrap counter flips), and a
// broken one whose NEXT points into the previous lap's used descriptor.
func TestPackedListAcrossRingEnd(t *testing.T) {
	for _, broken := range []bool{false, true} {
		r := newPackedTestRing(t, packedOpts{size: 5})
		// Move both sides to position 3.
		for i := 0; i < 3; i++ {
			if _, err := r.drv.Add([][]byte{r.buf(0, 4)}, nil); err != nil {
				t.Fatal(err)
			}
		}
		r.dev.Push(usedOf(r.pop(t, 3)))
		if n := r.drv.Reap(make([]UsedElem, 4)); n != 3 {
			t.Fatalf("reaped %d", n)
		}
		if broken {
			// Position 0 holds the device's used descriptor of lap 1; a list
			// from position 4 with NEXT runs into it.
			r.drv.PostRaw(PackedDesc{Addr: r.addr(0), Len: 4, ID: 1})
			r.drv.PostRaw(PackedDesc{Addr: r.addr(0), Len: 4, Flags: DescFNext})
			chains := make([]Chain, 4)
			if n, err := r.dev.Pop(chains); n != 1 || err != ErrChainUnterminated {
				t.Errorf("Pop = %d, %v; want 1, ErrChainUnterminated", n, err)
			}
			continue
		}
		id, err := r.drv.Add([][]byte{r.buf(0, 4), r.buf(8, 4)}, [][]byte{r.buf(16, 4), r.buf(32, 4)})
		if err != nil {
			t.Fatal(err)
		}
		c := r.pop(t, 1)[0]
		if c.Err != nil || c.Head != id || len(c.Bufs) != 4 || c.ReadLen != 8 || c.WriteLen != 8 {
			t.Fatalf("list across the ring end: %+v", c)
		}
		if st := r.dev.State(); st.AvailIdx != 2 || st.AvailWrap {
			t.Errorf("state %+v, want avail 2 in lap 2", st)
		}
		r.dev.Push([]UsedElem{{ID: uint32(id), Len: 8}})
		got := make([]UsedElem, 2)
		if n := r.drv.Reap(got); n != 1 || got[0] != (UsedElem{ID: uint32(id), Len: 8}) {
			t.Errorf("Reap = %d %+v", n, got[:n])
		}
		if pos, wrap := r.drv.NextUsed(); pos != 2 || wrap {
			t.Errorf("driver next used %d wrap %v", pos, wrap)
		}
	}
}

// TestPackedWrapFlags: a descriptor is available only with AVAIL equal to
// the driver wrap counter and USED different from it.
func TestPackedWrapFlags(t *testing.T) {
	r := newPackedTestRing(t, packedOpts{size: 4})
	for _, flags := range []uint16{0, DescFUsed, DescFAvail | DescFUsed, DescFNext | DescFWrite} {
		r.drv.SetDesc(0, PackedDesc{Addr: r.addr(0), Len: 4, ID: 0, Flags: flags})
		if p, err := r.dev.Pending(); p != 0 || err != nil {
			t.Errorf("flags %#x: Pending = %d, %v", flags, p, err)
		}
		if n, err := r.dev.Pop(make([]Chain, 2)); n != 0 || err != nil {
			t.Errorf("flags %#x: Pop = %d, %v", flags, n, err)
		}
		if r.dev.EnableNotify() {
			t.Errorf("flags %#x: EnableNotify reports a buffer", flags)
		}
	}
	r.drv.SetDesc(0, PackedDesc{Addr: r.addr(0), Len: 4, ID: 0, Flags: DescFAvail})
	if p, _ := r.dev.Pending(); p != 1 {
		t.Errorf("available descriptor: Pending = %d", p)
	}
	if !r.dev.EnableNotify() {
		t.Error("EnableNotify misses an available descriptor")
	}
	c := r.pop(t, 1)[0]
	r.dev.Push([]UsedElem{{ID: uint32(c.Head), Len: 0}})
	// The used descriptor must not look available to the device again, in
	// this lap or the next.
	if n, _ := r.dev.Pop(make([]Chain, 2)); n != 0 {
		t.Error("device popped its own used descriptor")
	}
	if u := r.drv.Desc(0); u.Flags != DescFAvail|DescFUsed || u.ID != 0 || u.Len != 0 {
		t.Errorf("used descriptor %+v", u)
	}
}

// TestPackedChainOver4G checks the 2^32-byte limit on one buffer.
func TestPackedChainOver4G(t *testing.T) {
	const big = 3 << 30
	huge, err := unix.Mmap(-1, 0, big, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Skipf("cannot reserve 3 GiB of address space: %v", err)
	}
	defer unix.Munmap(huge)
	r := newPackedTestRing(t, packedOpts{size: 8})
	const hugeAddr = 1 << 40
	dev, err := NewPacked(r.drv.DeviceConfig(), RegionMemory{{Addr: testBase, B: r.mem}, {Addr: hugeAddr, B: huge}})
	if err != nil {
		t.Fatal(err)
	}
	r.drv.PostRaw(PackedDesc{Addr: hugeAddr, Len: big, Flags: DescFNext}, PackedDesc{Addr: hugeAddr, Len: big, ID: 1, Flags: DescFWrite})
	r.drv.PostRaw(PackedDesc{Addr: hugeAddr, Len: big, Flags: DescFWrite | DescFNext}, PackedDesc{Addr: hugeAddr, Len: math.MaxUint32 - big, ID: 2, Flags: DescFWrite})
	var chains [2]Chain
	if n, err := dev.Pop(chains[:]); n != 2 || err != nil {
		t.Fatalf("Pop = %d, %v", n, err)
	}
	if chains[0].Err != ErrChainTooLong || chains[0].Head != 1 {
		t.Errorf("6 GiB buffer: id %d Err = %v, want ErrChainTooLong", chains[0].Head, chains[0].Err)
	}
	if chains[1].Err != nil || chains[1].WriteLen != math.MaxUint32 {
		t.Errorf("4 GiB-1 buffer: Err = %v WriteLen = %d", chains[1].Err, chains[1].WriteLen)
	}
}
