package virtqueue

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestPackedStateEncoding(t *testing.T) {
	for _, tc := range []struct {
		s PackedState
		v uint32
	}{
		{InitialPackedState, 0x80008000},
		{PackedState{AvailIdx: 5, AvailWrap: false, UsedIdx: 3, UsedWrap: true}, 0x80030005},
		{PackedState{AvailIdx: 0x7fff, AvailWrap: true, UsedIdx: 0x7ffe, UsedWrap: false}, 0x7ffeffff},
		{PackedState{AvailIdx: 1, UsedIdx: 1}, 0x00010001},
	} {
		if got := tc.s.Encode(); got != tc.v {
			t.Errorf("%+v.Encode() = %#x, want %#x", tc.s, got, tc.v)
		}
		if got := DecodePackedState(tc.v); got != tc.s {
			t.Errorf("DecodePackedState(%#x) = %+v, want %+v", tc.v, got, tc.s)
		}
	}
	// Round trip of every avail half with a used half.
	for v := uint32(0); v < 1<<16; v += 7 {
		s := DecodePackedState(v | 0x12340000)
		if s.Encode() != v|0x12340000 {
			t.Fatalf("round trip of %#x: %+v", v|0x12340000, s)
		}
	}
	// Front-ends that send only the avail half (DPDK virtio-user: 0x8000
	// for a fresh ring): the used position follows the avail one.
	if got := DecodePackedState(0x8000); got != InitialPackedState {
		t.Errorf("DecodePackedState(0x8000) = %+v, want the initial state", got)
	}
	if got := DecodePackedState(0x0005); got != (PackedState{AvailIdx: 5, UsedIdx: 5}) {
		t.Errorf("DecodePackedState(5) = %+v", got)
	}
}

func TestNewPackedRejectsBadConfig(t *testing.T) {
	mem := make([]byte, 4096) // 8-aligned by the Go allocator
	good := func() PackedConfig {
		return PackedConfig{Size: 6, Desc: mem[0:96], Driver: mem[96:100], Device: mem[100:104], State: InitialPackedState}
	}
	if _, err := NewPacked(good(), RegionMemory{}); err != nil {
		t.Fatalf("good config rejected: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(c *PackedConfig)
		mem  Memory
	}{
		{"size 0", func(c *PackedConfig) { c.Size = 0 }, RegionMemory{}},
		{"size 32769", func(c *PackedConfig) { c.Size = MaxSize + 1 }, RegionMemory{}},
		{"nil memory", func(c *PackedConfig) {}, nil},
		{"short desc", func(c *PackedConfig) { c.Desc = c.Desc[:95] }, RegionMemory{}},
		{"short driver area", func(c *PackedConfig) { c.Driver = c.Driver[:3] }, RegionMemory{}},
		{"nil device area", func(c *PackedConfig) { c.Device = nil }, RegionMemory{}},
		{"desc 2-aligned", func(c *PackedConfig) { c.Desc = mem[2:98] }, RegionMemory{}},
		{"driver area 2-aligned", func(c *PackedConfig) { c.Driver = mem[98:102] }, RegionMemory{}},
		{"device area odd", func(c *PackedConfig) { c.Device = mem[101:105] }, RegionMemory{}},
		{"avail index past size", func(c *PackedConfig) { c.State.AvailIdx = 6 }, RegionMemory{}},
		{"used index past size", func(c *PackedConfig) { c.State.UsedIdx = 0x7fff }, RegionMemory{}},
	} {
		c := good()
		tc.mod(&c)
		if _, err := NewPacked(c, tc.mem); err == nil {
			t.Errorf("%s: NewPacked accepted it", tc.name)
		}
	}
	// Any size up to 32768 is fine, including odd ones.
	big := make([]byte, PackedRingSize(MaxSize)+8)
	for _, s := range []uint16{1, 3, 1000, MaxSize} {
		c := PackedConfig{Size: s, Desc: big[:PackedRingSize(s)], Driver: big[len(big)-8 : len(big)-4], Device: big[len(big)-4:], State: PackedState{AvailIdx: s - 1, UsedIdx: s - 1}}
		if _, err := NewPacked(c, RegionMemory{}); err != nil {
			t.Errorf("size %d: %v", s, err)
		}
	}
}

func TestNewPackedDriverRejectsBadConfig(t *testing.T) {
	mem := make([]byte, 4096)
	good := func() PackedDriverConfig {
		return PackedDriverConfig{Size: 10, Mem: mem, Base: 0x1000, Rings: LayoutPacked(0, 10), IndirectOff: 1024, IndirectMax: 4}
	}
	if _, err := NewPackedDriver(good()); err != nil {
		t.Fatalf("good config rejected: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(c *PackedDriverConfig)
	}{
		{"size 0", func(c *PackedDriverConfig) { c.Size = 0 }},
		{"size too large", func(c *PackedDriverConfig) { c.Size = MaxSize + 1 }},
		{"empty memory", func(c *PackedDriverConfig) { c.Mem = nil }},
		{"memory wraps 2^64", func(c *PackedDriverConfig) { c.Base = math.MaxUint64 - 100 }},
		{"desc misaligned", func(c *PackedDriverConfig) { c.Rings.Desc = 8 }},
		{"driver area misaligned", func(c *PackedDriverConfig) { c.Rings.Driver += 2 }},
		{"device area outside memory", func(c *PackedDriverConfig) { c.Rings.Device = 4094 }},
		{"offset overflow", func(c *PackedDriverConfig) { c.Rings.Device = math.MaxUint64 - 3 }},
		{"areas overlap", func(c *PackedDriverConfig) { c.Rings.Device = c.Rings.Driver }},
		{"event area inside the ring", func(c *PackedDriverConfig) { c.Rings.Driver = 16 }},
		{"indirect area outside memory", func(c *PackedDriverConfig) { c.IndirectOff = 4000 }},
		{"indirect area misaligned", func(c *PackedDriverConfig) { c.IndirectOff = 1032 }},
	} {
		c := good()
		tc.mod(&c)
		if _, err := NewPackedDriver(c); err == nil {
			t.Errorf("%s: NewPackedDriver accepted it", tc.name)
		}
	}
	if l := LayoutPacked(3, 10); l.Desc != 16 || l.Driver != 176 || l.Device != 180 || l.End != 184 {
		t.Errorf("LayoutPacked(3, 10) = %+v", l)
	}
	if d, a, u := RingAreaSizes(256, true); d != 4096 || a != 4 || u != 4 {
		t.Errorf("packed area sizes %d %d %d", d, a, u)
	}
	if d, a, u := RingAreaSizes(256, false); d != 4096 || a != 518 || u != 2054 {
		t.Errorf("split area sizes %d %d %d", d, a, u)
	}
}

func TestPackedDescEncoding(t *testing.T) {
	b := make([]byte, 16)
	d := PackedDesc{Addr: 0x0102030405060708, Len: 0x11223344, ID: 0x5566, Flags: DescFAvail | DescFNext}
	PutPackedDesc(b, d)
	want := []byte{8, 7, 6, 5, 4, 3, 2, 1, 0x44, 0x33, 0x22, 0x11, 0x66, 0x55, 0x81, 0x00}
	if !slices.Equal(b, want) || ReadPackedDesc(b) != d {
		t.Errorf("PutPackedDesc = % x", b)
	}
}

// TestPackedOutOfOrder returns buffers in another order than they came and
// checks each used descriptor lands at the next used position and the
// driver skips the right number of descriptors.
func TestPackedOutOfOrder(t *testing.T) {
	r := newPackedTestRing(t, packedOpts{size: 7})
	a, _ := r.drv.Add([][]byte{r.buf(0, 4)}, [][]byte{r.buf(16, 8)}) // 2 descriptors
	b, _ := r.drv.Add([][]byte{r.buf(32, 4)}, nil)                   // 1
	c, err := r.drv.Add([][]byte{r.buf(48, 4), r.buf(64, 4)}, [][]byte{r.buf(80, 4)})
	if err != nil {
		t.Fatal(err)
	}
	if r.drv.NumFree() != 1 {
		t.Fatalf("NumFree = %d", r.drv.NumFree())
	}
	chains := r.pop(t, 3)
	if chains[0].Head != a || chains[1].Head != b || chains[2].Head != c {
		t.Fatalf("popped ids %d %d %d", chains[0].Head, chains[1].Head, chains[2].Head)
	}
	r.dev.Push([]UsedElem{{ID: uint32(c), Len: 4}, {ID: uint32(a), Len: 8}})
	// Used descriptors at positions 0 (c, skip 3) and 3 (a, skip 2).
	if u := r.drv.Desc(0); u.ID != c || u.Len != 4 || u.Flags != DescFAvail|DescFUsed|DescFWrite {
		t.Errorf("position 0: %+v", u)
	}
	if u := r.drv.Desc(3); u.ID != a || u.Len != 8 {
		t.Errorf("position 3: %+v", u)
	}
	got := make([]UsedElem, 4)
	if n := r.drv.Reap(got); n != 2 || got[0] != (UsedElem{uint32(c), 4}) || got[1] != (UsedElem{uint32(a), 8}) {
		t.Fatalf("Reap = %d %+v", n, got[:n])
	}
	if r.drv.NumFree() != 6 {
		t.Errorf("NumFree = %d after reaping 5 descriptors", r.drv.NumFree())
	}
	// The driver refills from position 6, across the end of the ring,
	// while b is still in flight at position 2.
	d, _ := r.drv.Add([][]byte{r.buf(96, 4)}, nil)
	e, err := r.drv.Add([][]byte{r.buf(100, 4), r.buf(104, 4)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	chains = r.pop(t, 2)
	if chains[0].Head != d || chains[1].Head != e || len(chains[1].Bufs) != 2 {
		t.Fatalf("second lap: %+v", chains)
	}
	r.dev.Push([]UsedElem{{ID: uint32(e)}, {ID: uint32(b)}, {ID: uint32(d)}})
	if n := r.drv.Reap(got); n != 3 || got[0].ID != uint32(e) || got[1].ID != uint32(b) || got[2].ID != uint32(d) {
		t.Fatalf("Reap = %d %+v", n, got[:n])
	}
	if r.drv.NumFree() != 7 || r.drv.NumFreeIDs() != 7 || r.drv.Err() != nil {
		t.Errorf("NumFree %d ids %d err %v", r.drv.NumFree(), r.drv.NumFreeIDs(), r.drv.Err())
	}
	if st := r.dev.State(); st != (PackedState{AvailIdx: 2, AvailWrap: false, UsedIdx: 2, UsedWrap: false}) {
		t.Errorf("device state %+v", st)
	}
}

func TestPackedPushUnknownID(t *testing.T) {
	r := newPackedTestRing(t, packedOpts{size: 4, inOrder: true})
	id, _ := r.drv.Add([][]byte{r.buf(0, 4)}, nil)
	r.pop(t, 1)
	before := r.dev.State()
	for _, push := range []func([]UsedElem){r.dev.Push, r.dev.PushInOrder} {
		push([]UsedElem{{ID: 4}, {ID: 0xffffffff}, {ID: uint32(id) + 1}})
		if r.dev.State() != before || r.dev.NeedNotify() {
			t.Errorf("unknown ids changed the ring: %+v", r.dev.State())
		}
	}
	if r.drv.Desc(0).Flags&DescFUsed != 0 {
		t.Error("unknown id written to the ring")
	}
	r.dev.Push([]UsedElem{{ID: uint32(id)}, {ID: uint32(id)}}) // the second is no longer in flight
	if st := r.dev.State(); st.UsedIdx != 1 {
		t.Errorf("id pushed twice moved the used position to %d", st.UsedIdx)
	}
}

func TestPackedPending(t *testing.T) {
	r := newPackedTestRing(t, packedOpts{size: 5})
	if p, err := r.dev.Pending(); p != 0 || err != nil {
		t.Fatalf("empty ring: Pending = %d, %v", p, err)
	}
	r.drv.Add([][]byte{r.buf(0, 4)}, [][]byte{r.buf(8, 4)})
	r.drv.Add([][]byte{r.buf(0, 4)}, nil)
	r.drv.Add([][]byte{r.buf(0, 4)}, [][]byte{r.buf(8, 4)})
	if p, err := r.dev.Pending(); p != 0 || err != nil {
		t.Fatalf("Pending before Publish = %d, %v", p, err)
	}
	r.drv.Publish()
	if p, err := r.dev.Pending(); p != 3 || err != nil {
		t.Fatalf("Pending = %d, %v; want 3 buffers in 5 descriptors", p, err)
	}
	chains := r.pop(t, 3)
	r.dev.Push(usedOf(chains[1:2]))
	r.drv.Reap(make([]UsedElem, 4))
	r.drv.Add([][]byte{r.buf(0, 4)}, nil) // position 0 of lap 2
	r.drv.Publish()
	if p, err := r.dev.Pending(); p != 1 || err != nil {
		t.Errorf("Pending across the wrap = %d, %v", p, err)
	}
}

// TestInOrderPacked checks PushInOrder on a packed ring: one used
// descriptor per run of completely used buffers, and the driver's IN_ORDER
// reaping expands it.
func TestInOrderPacked(t *testing.T) {
	r := newPackedTestRing(t, packedOpts{size: 12, inOrder: true, indirect: true})
	ids := make([]uint16, 0, 6)
	add := func(out, in [][]byte, indirect bool) {
		var id uint16
		var err error
		if indirect {
			id, err = r.drv.AddIndirect(out, in)
		} else {
			id, err = r.drv.Add(out, in)
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Ring positions: 0 | 1 2 | 3 | 4 | 5 6 | 7 8 | 9 (raw, id 9) | 10.
	add([][]byte{r.buf(0, 4)}, nil, false)                      // ids[0]: device-readable
	add([][]byte{r.buf(0, 4), r.buf(8, 4)}, nil, false)         // ids[1]: device-readable, 2 descriptors
	add(nil, [][]byte{r.buf(16, 100), r.buf(200, 50)}, true)    // ids[2]: indirect, 150 writable
	add(nil, [][]byte{r.buf(300, 100)}, false)                  // ids[3]: 100 writable
	add(nil, [][]byte{r.buf(400, 60), r.buf(500, 40)}, false)   // ids[4]: 100 writable, 2 descriptors
	add([][]byte{r.buf(0, 4)}, [][]byte{r.buf(600, 10)}, false) // ids[5]: 10 writable
	r.drv.PostRaw(PackedDesc{Addr: 0, Len: 4, ID: 9})           // malformed, unknown to the driver
	add([][]byte{r.buf(0, 4)}, nil, false)                      // ids[6]
	chains := r.pop(t, 8)
	if chains[6].Err != ErrDescAddress || chains[6].Head != 9 {
		t.Fatalf("raw buffer: id %d %v", chains[6].Head, chains[6].Err)
	}
	// Runs: ids[0..3], ended by the partially written ids[3], and ids[4..5],
	// ended by the end of the call.
	used := []UsedElem{
		{ID: uint32(ids[0])},
		{ID: uint32(ids[1])},
		{ID: uint32(ids[2]), Len: 150},
		{ID: uint32(ids[3]), Len: 60}, // partial: ends the run
		{ID: uint32(ids[4]), Len: 100},
		{ID: uint32(ids[5]), Len: 10},
	}
	r.dev.PushInOrder(used)
	// Two used descriptors: at position 0 (ids[3], len 60) and, past the
	// run's 5 descriptors, at position 5 (ids[5], len 10).
	if u := r.drv.Desc(0); u.ID != ids[3] || u.Len != 60 || u.Flags&DescFUsed == 0 {
		t.Errorf("first run's used descriptor: %+v", u)
	}
	if u := r.drv.Desc(5); u.ID != ids[5] || u.Len != 10 || u.Flags&DescFUsed == 0 {
		t.Errorf("second run's used descriptor: %+v", u)
	}
	for _, p := range []uint16{1, 2, 3, 4, 6, 7, 8} {
		if r.drv.Desc(p).Flags&DescFUsed != 0 {
			t.Errorf("position %d was written although skipped", p)
		}
	}
	got := make([]UsedElem, 10)
	n := r.drv.Reap(got)
	want := []UsedElem{{uint32(ids[0]), 0}, {uint32(ids[1]), 0}, {uint32(ids[2]), 150}, {uint32(ids[3]), 60}, {uint32(ids[4]), 100}, {uint32(ids[5]), 10}}
	if !slices.Equal(got[:n], want) {
		t.Errorf("Reap = %+v, want %+v", got[:n], want)
	}
	// A malformed buffer is never skipped over, whatever its Len.
	r.dev.PushInOrder([]UsedElem{{ID: 9}, {ID: uint32(ids[6])}})
	if u := r.drv.Desc(9); u.ID != 9 || u.Flags&DescFUsed == 0 {
		t.Errorf("malformed buffer's used descriptor: %+v", u)
	}
	if u := r.drv.Desc(10); u.ID != ids[6] || u.Flags&DescFUsed == 0 {
		t.Errorf("last buffer's used descriptor: %+v", u)
	}
	if st := r.dev.State(); st.UsedIdx != 11 {
		t.Errorf("state %+v", st)
	}
	// A batch bigger than the Reap buffer is finished by the next Reap.
	r2 := newPackedTestRing(t, packedOpts{size: 6, inOrder: true})
	for i := 0; i < 5; i++ {
		r2.drv.Add([][]byte{r2.buf(0, 4)}, nil)
	}
	r2.dev.PushInOrder(usedOf(r2.pop(t, 5)))
	var all []UsedElem
	for k := 0; k < 5; k++ {
		small := make([]UsedElem, 2)
		m := r2.drv.Reap(small)
		all = append(all, small[:m]...)
		if r2.drv.NumFree() != 1 && len(all) < 5 {
			t.Errorf("descriptors freed before the batch was reaped whole: NumFree %d", r2.drv.NumFree())
		}
	}
	if len(all) != 5 || r2.drv.NumFree() != 6 || r2.drv.NumFreeIDs() != 6 {
		t.Errorf("reaped %d in pieces, NumFree %d", len(all), r2.drv.NumFree())
	}
	// Without IN_ORDER, PushInOrder is Push.
	r3 := newPackedTestRing(t, packedOpts{size: 4})
	r3.drv.Add([][]byte{r3.buf(0, 4)}, nil)
	r3.drv.Add([][]byte{r3.buf(0, 4)}, nil)
	r3.dev.PushInOrder(usedOf(r3.pop(t, 2)))
	if r3.drv.Desc(0).Flags&DescFUsed == 0 || r3.drv.Desc(1).Flags&DescFUsed == 0 {
		t.Error("PushInOrder without IN_ORDER must write every used descriptor")
	}
}

// TestInOrderSplit checks Split.PushInOrder: one used ring entry per run,
// used.idx advanced by the run's length.
func TestInOrderSplit(t *testing.T) {
	r := newTestRing(t, ringOpts{size: 8, indirect: true})
	cfg := r.drv.DeviceConfig()
	cfg.Indirect, cfg.InOrder = true, true
	dev, err := NewSplit(cfg, r.drv.Memory())
	if err != nil {
		t.Fatal(err)
	}
	var heads []uint16
	add := func(out, in [][]byte, indirect bool) {
		var h uint16
		var err error
		if indirect {
			h, err = r.drv.AddIndirect(out, in)
		} else {
			h, err = r.drv.Add(out, in)
		}
		if err != nil {
			t.Fatal(err)
		}
		heads = append(heads, h)
	}
	b := func(off, n int) []byte { return r.mem[dataArea+off : dataArea+off+n] }
	add([][]byte{b(0, 4)}, nil, false)
	add([][]byte{b(0, 4)}, [][]byte{b(16, 100)}, false)
	add(nil, [][]byte{b(200, 30), b(300, 20)}, true)
	add(nil, [][]byte{b(400, 100)}, false)
	r.drv.Publish()
	popAll(t, dev, 4)
	dev.PushInOrder([]UsedElem{{ID: uint32(heads[0])}, {ID: uint32(heads[1]), Len: 100}, {ID: uint32(heads[2]), Len: 10}, {ID: uint32(heads[3]), Len: 100}})
	// Runs: {0, 1, 2 (partial)} and {3}.
	if r.drv.UsedIdx() != 4 || dev.UsedIdx() != 4 {
		t.Fatalf("used.idx = %d, want 4", r.drv.UsedIdx())
	}
	e0 := UsedElem{ID: binary.LittleEndian.Uint32(r.drv.used[4:]), Len: binary.LittleEndian.Uint32(r.drv.used[8:])}
	e3 := UsedElem{ID: binary.LittleEndian.Uint32(r.drv.used[4+8*3:]), Len: binary.LittleEndian.Uint32(r.drv.used[8+8*3:])}
	if e0 != (UsedElem{uint32(heads[2]), 10}) || e3 != (UsedElem{uint32(heads[3]), 100}) {
		t.Errorf("used entries %+v %+v", e0, e3)
	}
	got := make([]UsedElem, 8)
	n := r.drv.ReapInOrder(got)
	want := []UsedElem{{uint32(heads[0]), 0}, {uint32(heads[1]), 100}, {uint32(heads[2]), 10}, {uint32(heads[3]), 100}}
	if !slices.Equal(got[:n], want) || r.drv.NumFree() != 8 {
		t.Errorf("ReapInOrder = %+v (NumFree %d), want %+v", got[:n], r.drv.NumFree(), want)
	}
	// A malformed chain ends a run; a batch that does not fit waits.
	h1 := postOne(t, r, dataArea, 4)
	r.drv.SetDesc(h1, Desc{Addr: 1, Len: 4}) // outside memory
	h2 := postOne(t, r, dataArea, 4)
	h3 := postOne(t, r, dataArea, 4)
	r.drv.Publish()
	chains := popAll(t, dev, 3)
	if chains[0].Err != ErrDescAddress {
		t.Fatalf("malformed chain: %v", chains[0].Err)
	}
	dev.PushInOrder([]UsedElem{{ID: uint32(h1)}, {ID: uint32(h2)}, {ID: uint32(h3)}})
	if r.drv.UsedIdx() != 7 {
		t.Fatalf("used.idx = %d", r.drv.UsedIdx())
	}
	if n := r.drv.ReapInOrder(got[:1]); n != 1 || got[0].ID != uint32(h1) {
		t.Errorf("first batch: %d %+v", n, got[:n])
	}
	if n := r.drv.ReapInOrder(got[:1]); n != 0 {
		t.Errorf("batch of two reaped into room for one: %d", n)
	}
	if n := r.drv.ReapInOrder(got); n != 2 || got[0].ID != uint32(h2) || got[1].ID != uint32(h3) {
		t.Errorf("second batch: %d %+v", n, got[:n])
	}
	// Without InOrder, PushInOrder is Push.
	r2 := newTestRing(t, ringOpts{size: 4})
	h := postOne(t, r2, dataArea, 4)
	h4 := postOne(t, r2, dataArea, 4)
	r2.drv.Publish()
	r2.dev.PushInOrder(usedOf(popAll(t, r2.dev, 2)))
	if n := r2.drv.Reap(got); n != 2 || got[0].ID != uint32(h) || got[1].ID != uint32(h4) {
		t.Errorf("PushInOrder without InOrder: %d %+v", n, got[:n])
	}
}

// TestEventPassed cross-checks the packed event arithmetic against the
// definition: notify iff the event's (offset, wrap) is one of the since
// positions used just before pos.
func TestEventPassed(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200000; i++ {
		size := 1 + rng.IntN(40)
		if i%100 == 0 {
			size = MaxSize - rng.IntN(3)
		}
		pos := rng.IntN(size)
		wrap := rng.IntN(2) == 1
		since := rng.IntN(size + 1)
		off := rng.IntN(size)
		if size > 40 {
			off = (pos - rng.IntN(60) + size) % size
		}
		ew := rng.IntN(2) == 1
		offWrap := uint16(off)
		if ew {
			offWrap |= RingEventWrap
		}
		want := false
		p, w := pos, wrap
		for k := 0; k < since; k++ {
			if p == 0 {
				p, w = size, !w
			}
			p--
			if p == off && w == ew {
				want = true
			}
		}
		if got := eventPassed(offWrap, pos, wrap, since, size); got != want {
			t.Fatalf("size %d pos %d wrap %v since %d event (%d, %v): got %v, want %v", size, pos, wrap, since, off, ew, got, want)
		}
	}
	// More than a lap since the last check: any event in the current lap
	// behind pos, or in the previous lap, has been passed.
	if !eventPassed(3|RingEventWrap, 5, true, 12, 10) || !eventPassed(7, 5, true, 12, 10) || eventPassed(6|RingEventWrap, 5, true, 12, 10) {
		t.Error("more than a lap")
	}
}

func TestPackedNeedNotify(t *testing.T) {
	r := newPackedTestRing(t, packedOpts{size: 5})
	cycle := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, err := r.drv.Add([][]byte{r.buf(0, 4)}, nil); err != nil {
				t.Fatal(err)
			}
		}
		r.dev.Push(usedOf(r.pop(t, n)))
		if m := r.drv.Reap(make([]UsedElem, 8)); m != n {
			t.Fatalf("reaped %d of %d", m, n)
		}
	}
	if r.dev.NeedNotify() {
		t.Error("NeedNotify with nothing pushed")
	}
	cycle(1)
	if !r.dev.NeedNotify() {
		t.Error("ENABLE (zeroed area): no notification")
	}
	if r.dev.NeedNotify() {
		t.Error("second NeedNotify without a new Push")
	}
	r.drv.DisableInterrupts()
	if _, fl := r.drv.DriverEvent(); fl != RingEventFlagsDisable {
		t.Errorf("DisableInterrupts wrote flags %d", fl)
	}
	cycle(2)
	if r.dev.NeedNotify() {
		t.Error("DISABLE: notification")
	}
	if r.drv.EnableInterrupts() {
		t.Error("EnableInterrupts with nothing to reap: more")
	}
	cycle(1)
	if !r.dev.NeedNotify() {
		t.Error("ENABLE after EnableInterrupts: no notification")
	}
	r.drv.SetDriverEvent(2, RingEventFlagsDesc) // DESC without EVENT_IDX: treated as ENABLE
	cycle(1)
	if !r.dev.NeedNotify() {
		t.Error("DESC without EVENT_IDX must notify")
	}
	r.drv.SetDriverEvent(0, 3) // reserved value
	cycle(1)
	if !r.dev.NeedNotify() {
		t.Error("reserved flags must notify")
	}
}

func TestPackedNeedNotifyEventIdx(t *testing.T) {
	r := newPackedTestRing(t, packedOpts{size: 5, eventIdx: true})
	cycle := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, err := r.drv.Add([][]byte{r.buf(0, 4)}, nil); err != nil {
				t.Fatal(err)
			}
		}
		r.dev.Push(usedOf(r.pop(t, n)))
		if m := r.drv.Reap(make([]UsedElem, 8)); m != n {
			t.Fatalf("reaped %d of %d", m, n)
		}
	}
	// The driver wants a call when position 3 of lap 1 is used.
	r.drv.SetDriverEvent(3|RingEventWrap, RingEventFlagsDesc)
	cycle(1) // position 0: a fresh device notifies once regardless
	if !r.dev.NeedNotify() {
		t.Error("first NeedNotify of a fresh device")
	}
	cycle(2) // positions 1, 2
	if r.dev.NeedNotify() {
		t.Error("notified before the event position")
	}
	cycle(2) // positions 3, 4
	if !r.dev.NeedNotify() {
		t.Error("not notified for the batch containing the event")
	}
	cycle(1) // position 0 of lap 2: the lap-1 event lies behind
	if r.dev.NeedNotify() {
		t.Error("notified after passing the event")
	}
	// EnableInterrupts puts the event at the next used position (1 of lap 2).
	if r.drv.EnableInterrupts() {
		t.Error("more after reaping everything")
	}
	if ow, fl := r.drv.DriverEvent(); ow != 1 || fl != RingEventFlagsDesc {
		t.Errorf("driver event %#x flags %d, want 1 (wrap 0), DESC", ow, fl)
	}
	cycle(3) // positions 1, 2, 3
	if !r.dev.NeedNotify() {
		t.Error("event at position 1 of lap 2 missed")
	}
	// An event in the previous lap's last slot, reached right at the wrap.
	r.drv.SetDriverEvent(4, RingEventFlagsDesc) // position 4, wrap 0 (lap 2)
	cycle(1)                                    // position 4 of lap 2
	if !r.dev.NeedNotify() {
		t.Error("event at the last position before the wrap missed")
	}
	// DISABLE wins even with EVENT_IDX.
	r.drv.SetDriverEvent(0|RingEventWrap, RingEventFlagsDisable)
	cycle(2)
	if r.dev.NeedNotify() {
		t.Error("DISABLE with EVENT_IDX notified")
	}
}

func TestPackedAvailNotify(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		t.Run(fmt.Sprintf("eventIdx=%v", eventIdx), func(t *testing.T) {
			r := newPackedTestRing(t, packedOpts{size: 3, eventIdx: eventIdx})
			add := func() {
				t.Helper()
				if _, err := r.drv.Add([][]byte{r.buf(0, 4)}, nil); err != nil {
					t.Fatal(err)
				}
			}
			drain := func() {
				t.Helper()
				chains := make([]Chain, 4)
				n, err := r.dev.Pop(chains)
				if err != nil {
					t.Fatal(err)
				}
				r.dev.Push(usedOf(chains[:n]))
				r.drv.Reap(make([]UsedElem, 4))
			}
			add()
			if !r.drv.Publish() {
				t.Error("zeroed device area (ENABLE): no kick")
			}
			if r.drv.Publish() {
				t.Error("kick with nothing new")
			}
			r.dev.DisableNotify()
			if _, fl := r.drv.DeviceEvent(); fl != RingEventFlagsDisable {
				t.Errorf("DisableNotify wrote flags %d", fl)
			}
			add()
			if r.drv.Publish() {
				t.Error("kick despite DISABLE")
			}
			if !r.dev.EnableNotify() {
				t.Error("EnableNotify with two buffers pending: want more")
			}
			drain()
			if r.dev.EnableNotify() {
				t.Error("EnableNotify on an empty ring: want no more")
			}
			ow, fl := r.drv.DeviceEvent()
			if eventIdx && (fl != RingEventFlagsDesc || ow != 2|RingEventWrap) {
				t.Errorf("device event %#x flags %d, want position 2 wrap 1, DESC", ow, fl)
			}
			if !eventIdx && fl != RingEventFlagsEnable {
				t.Errorf("device flags %d, want ENABLE", fl)
			}
			add() // position 2: the event
			if !r.drv.Publish() {
				t.Error("no kick for the event descriptor")
			}
			add() // position 0 of lap 2
			if got := r.drv.Publish(); got == eventIdx {
				t.Errorf("kick after the event = %v", got)
			}
			drain()
			r.dev.DisableNotify()
			r.dev.EnableNotify() // event at position 1 of lap 2
			add()
			add() // positions 1 and 2 in one Publish
			if !r.drv.Publish() {
				t.Error("no kick for a batch covering the event")
			}
		})
	}
}

// TestPackedUnpop gives back popped buffers, also across the end of the
// ring, and checks the re-pop and the ring state.
func TestPackedUnpop(t *testing.T) {
	r := newPackedTestRing(t, packedOpts{size: 5})
	// Move to position 3.
	for i := 0; i < 3; i++ {
		r.drv.Add([][]byte{r.buf(0, 4)}, nil)
	}
	r.dev.Push(usedOf(r.pop(t, 3)))
	r.drv.Reap(make([]UsedElem, 4))
	a, _ := r.drv.Add([][]byte{r.buf(0, 4)}, nil)                   // position 3
	b, _ := r.drv.Add([][]byte{r.buf(0, 4)}, [][]byte{r.buf(8, 4)}) // 4, 0
	c, err := r.drv.Add([][]byte{r.buf(0, 4), r.buf(16, 4)}, nil)   // 1, 2
	if err != nil {
		t.Fatal(err)
	}
	r.dev.Unpop(1) // nothing popped and unpushed: no-op
	chains := r.pop(t, 3)
	afterPop := r.dev.State()
	r.dev.Unpop(4) // more than popped: no-op
	if r.dev.State() != afterPop {
		t.Fatal("Unpop(4) with 3 unpushed changed the state")
	}
	r.dev.Unpop(2) // b and c: back to position 4 of lap 1
	if st := r.dev.State(); st.AvailIdx != 4 || !st.AvailWrap || r.dev.VringBase() != (PackedState{4, true, 3, true}).Encode() {
		t.Fatalf("state after Unpop(2) %+v", st)
	}
	again := r.pop(t, 2)
	if again[0].Head != b || again[1].Head != c || len(again[0].Bufs) != 2 || len(again[1].Bufs) != 2 {
		t.Fatalf("re-popped %d %d", again[0].Head, again[1].Head)
	}
	if r.dev.State() != afterPop {
		t.Errorf("state after the re-pop %+v, want %+v", r.dev.State(), afterPop)
	}
	r.dev.Unpop(3) // all three: back to position 3 of lap 1
	if st := r.dev.State(); st.AvailIdx != 3 || !st.AvailWrap {
		t.Errorf("state after Unpop(3) %+v", st)
	}
	again = r.pop(t, 3)
	if again[0].Head != a || again[1].Head != b || again[2].Head != c {
		t.Errorf("re-popped %d %d %d, want %d %d %d", again[0].Head, again[1].Head, again[2].Head, a, b, c)
	}
	_ = chains
	// The last popped was pushed: no Unpop reaches past it.
	r.dev.Push([]UsedElem{{ID: uint32(c)}})
	r.dev.Unpop(1)
	r.dev.Unpop(2)
	if r.dev.State() != (PackedState{AvailIdx: 3, AvailWrap: false, UsedIdx: 0, UsedWrap: false}) {
		t.Errorf("Unpop over a pushed buffer changed the state: %+v", r.dev.State())
	}
	r.dev.Push([]UsedElem{{ID: uint32(a)}, {ID: uint32(b)}})
	got := make([]UsedElem, 4)
	if n := r.drv.Reap(got); n != 3 || got[0].ID != uint32(c) || got[1].ID != uint32(a) || got[2].ID != uint32(b) || r.drv.NumFree() != 5 {
		t.Errorf("Reap %d %+v NumFree %d", n, got[:n], r.drv.NumFree())
	}
	if st := r.dev.State(); st != (PackedState{AvailIdx: 3, AvailWrap: false, UsedIdx: 3, UsedWrap: false}) {
		t.Errorf("final state %+v", st)
	}
}

// TestPackedRestart rebuilds the device mid-stream from its VringBase, as
// vhost-user does after GET_VRING_BASE / SET_VRING_BASE.
func TestPackedRestart(t *testing.T) {
	r := newPackedTestRing(t, packedOpts{size: 7, eventIdx: true})
	round := func(k int) {
		t.Helper()
		for i := 0; i < k; i++ {
			if _, err := r.drv.Add([][]byte{r.buf(0, 4)}, [][]byte{r.buf(8, 4)}); err != nil {
				t.Fatal(err)
			}
		}
		r.dev.Push(usedOf(r.pop(t, k)))
		if n := r.drv.Reap(make([]UsedElem, 8)); n != k {
			t.Fatalf("reaped %d of %d", n, k)
		}
	}
	for i := 0; i < 5; i++ {
		round(3)
		base := r.dev.VringBase()
		cfg := r.drv.DeviceConfig()
		cfg.State = DecodePackedState(base)
		dev, err := NewPacked(cfg, r.drv.Memory())
		if err != nil {
			t.Fatal(err)
		}
		if dev.VringBase() != base {
			t.Fatalf("restarted device base %#x, want %#x", dev.VringBase(), base)
		}
		r.dev = dev
	}
	pos, wrap := r.drv.NextAvail()
	if st := r.dev.State(); st.AvailIdx != pos || st.AvailWrap != wrap || st.UsedIdx != pos || st.UsedWrap != wrap {
		t.Errorf("device %+v, driver at %d wrap %v", st, pos, wrap)
	}
}

// TestPackedWrapAround runs many laps through rings of sizes that are and
// are not powers of two, with lists of several descriptors, indirect
// buffers, random batch sizes, random completion order (or in order), and
// Unpop, and checks every buffer's id, bytes and length.
func TestPackedWrapAround(t *testing.T) {
	for _, o := range []packedOpts{
		{size: 1},
		{size: 2, eventIdx: true},
		{size: 3, indirect: true},
		{size: 5, inOrder: true},
		{size: 7, indirect: true, inOrder: true, eventIdx: true},
		{size: 8},
		{size: 100, indirect: true, eventIdx: true},
		{size: 255, inOrder: true},
		{size: 257, indirect: true},
		{size: 1000, inOrder: true, indirect: true},
		{size: MaxSize, eventIdx: true},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			total := 30000
			if testing.Short() {
				total /= 5
			}
			if o.size == MaxSize {
				total = 80000 // a few laps
			}
			runPackedStream(t, o, total, uint64(o.size))
		})
	}
}

type streamBuf struct {
	seq  uint32
	off  int    // data offset of its 16-byte slot
	wlen uint32 // writable bytes
	got  uint32 // length the device reports
}

func runPackedStream(t *testing.T, o packedOpts, total int, seed uint64) {
	r := newPackedTestRing(t, o)
	rng := rand.New(rand.NewPCG(seed, 7))
	size := int(o.size)
	chains := make([]Chain, size)
	reaped := make([]UsedElem, size)
	inflight := make(map[uint16]*streamBuf)
	var held []Chain // popped, not pushed, in pop order
	var pushOrder []uint16
	var seq uint32
	var next int  // buffers reaped
	var descs int // ring descriptors made available
	// One 16-byte data slot per buffer in flight.
	freeSlots := make([]int, size+1)
	for i := range freeSlots {
		freeSlots[i] = i * 16
	}
	for stalls := 0; next < total; stalls++ {
		if stalls > 1000 {
			t.Fatalf("no progress: %d of %d buffers reaped, %d held, device %+v, driver err %v", next, total, len(held), r.dev.State(), r.drv.Err())
		}
		// Driver: a random number of buffers of random shapes.
		for k := 1 + rng.IntN(size); k > 0 && int(seq) < total; k-- {
			off := freeSlots[len(freeSlots)-1]
			binary.LittleEndian.PutUint32(r.buf(off, 4), seq)
			nIn := rng.IntN(3)
			in := [][]byte{r.buf(off+4, 4), r.buf(off+8, 8)}[:nIn]
			out := [][]byte{r.buf(off, 4)}
			nd := 1 + nIn
			freeBefore := r.drv.NumFree()
			var id uint16
			var err error
			switch {
			case o.indirect && rng.IntN(2) == 0:
				if r.drv.NumFree() < 1 || r.drv.NumFreeIDs() == 0 {
					k = 0
					continue
				}
				id, err = r.drv.AddIndirect(out, in)
			case nd > size:
				continue
			default:
				if r.drv.NumFree() < nd || r.drv.NumFreeIDs() == 0 {
					k = 0
					continue
				}
				id, err = r.drv.Add(out, in)
			}
			if err != nil {
				t.Fatal(err)
			}
			descs += freeBefore - r.drv.NumFree()
			var wl uint32
			for _, b := range in {
				wl += uint32(len(b))
			}
			if _, dup := inflight[id]; dup {
				t.Fatalf("driver reused id %d in flight", id)
			}
			freeSlots = freeSlots[:len(freeSlots)-1]
			inflight[id] = &streamBuf{seq: seq, off: off, wlen: wl}
			seq++
		}
		r.drv.Publish()
		// Device: pops in random batches, sometimes gives a few back.
		for {
			m := 1 + rng.IntN(size)
			n, err := r.dev.Pop(chains[:m])
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			for i := range chains[:n] {
				c := chains[i]
				if c.Err != nil {
					t.Fatalf("buffer %d: %v", c.Head, c.Err)
				}
				sb := inflight[c.Head]
				if sb == nil {
					t.Fatalf("popped id %d that is not in flight", c.Head)
				}
				if got := binary.LittleEndian.Uint32(c.Bufs[0].B); got != sb.seq || c.ReadLen != 4 || c.WriteLen != sb.wlen {
					t.Fatalf("id %d carries seq %d (read %d write %d), want seq %d", c.Head, got, c.ReadLen, c.WriteLen, sb.seq)
				}
				held = append(held, Chain{Head: c.Head, Bufs: slices.Clone(c.Bufs), WriteLen: c.WriteLen})
			}
			if u := rng.IntN(4); u > 0 && u <= n && rng.IntN(3) == 0 {
				r.dev.Unpop(u)
				held = held[:len(held)-u]
			}
		}
		// Device completes some of what it holds: a prefix in order, or a
		// random subset in random order.
		if len(held) > 0 {
			k := 1 + rng.IntN(len(held))
			var done []Chain
			if o.inOrder {
				done, held = held[:k], held[k:]
			} else {
				rng.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
				done, held = held[:k], held[k:]
			}
			used := make([]UsedElem, len(done))
			for i, c := range done {
				sb := inflight[c.Head]
				// Fill the writable elements, all or part of them.
				w := c.WriteLen
				if w > 0 && rng.IntN(3) == 0 {
					w = uint32(rng.IntN(int(w)))
				}
				for _, b := range c.Bufs {
					if b.Write {
						for j := range b.B {
							b.B[j] = byte(sb.seq) ^ 0x5a
						}
					}
				}
				sb.got = w
				used[i] = UsedElem{ID: uint32(c.Head), Len: w}
				pushOrder = append(pushOrder, c.Head)
			}
			if o.inOrder {
				r.dev.PushInOrder(used)
			} else if rng.IntN(2) == 0 {
				r.dev.Push(used)
			} else {
				for _, u := range used {
					r.dev.Push([]UsedElem{u})
				}
			}
			r.dev.NeedNotify()
		}
		// Driver reaps: in the order the device pushed.
		for {
			n := r.drv.Reap(reaped)
			if r.drv.Err() != nil {
				t.Fatal(r.drv.Err())
			}
			if n == 0 {
				break
			}
			for _, e := range reaped[:n] {
				sb := inflight[uint16(e.ID)]
				if sb == nil {
					t.Fatalf("reaped unknown id %d", e.ID)
				}
				if len(pushOrder) == 0 || uint32(pushOrder[0]) != e.ID {
					t.Fatalf("reaped id %d, device pushed %v first", e.ID, pushOrder[:min(3, len(pushOrder))])
				}
				pushOrder = pushOrder[1:]
				if e.Len != sb.got {
					t.Fatalf("id %d seq %d: length %d, device reported %d", e.ID, sb.seq, e.Len, sb.got)
				}
				if sb.wlen > 0 && r.buf(sb.off+4, 1)[0] != byte(sb.seq)^0x5a {
					t.Fatalf("seq %d: device answer missing", sb.seq)
				}
				delete(inflight, uint16(e.ID))
				freeSlots = append(freeSlots, sb.off)
				next++
				stalls = 0
			}
		}
	}
	t.Logf("%d buffers, %d descriptors, %d laps", total, descs, descs/size)
	if laps := descs / size; laps < 2 {
		t.Errorf("only %d laps", laps)
	}
	if r.drv.NumFree() != size || r.drv.NumFreeIDs() != size || len(held) != 0 {
		t.Errorf("leak: %d descriptors, %d ids free of %d; %d held", r.drv.NumFree(), r.drv.NumFreeIDs(), size, len(held))
	}
	ds := r.dev.State()
	pos, wrap := r.drv.NextAvail()
	upos, uwrap := r.drv.NextUsed()
	if ds != (PackedState{pos, wrap, upos, uwrap}) || pos != upos || wrap != uwrap {
		t.Errorf("device %+v, driver avail %d/%v used %d/%v", ds, pos, wrap, upos, uwrap)
	}
}

// TestRingInterface drives both ring kinds through the Ring interface the
// way a queue worker does.
func TestRingInterface(t *testing.T) {
	type ringCase struct {
		name    string
		ring    Ring
		post    func(b []byte) error
		publish func() bool
		reap    func([]UsedElem) int
		mem     []byte
	}
	sr := newTestRing(t, ringOpts{size: 8, eventIdx: true})
	pr := newPackedTestRing(t, packedOpts{size: 6, eventIdx: true})
	for _, rc := range []ringCase{
		{"split", sr.dev, func(b []byte) error { _, err := sr.drv.Add(nil, [][]byte{b}); return err }, sr.drv.Publish, sr.drv.Reap, sr.mem[dataArea:]},
		{"packed", pr.dev, func(b []byte) error { _, err := pr.drv.Add(nil, [][]byte{b}); return err }, pr.drv.Publish, pr.drv.Reap, pr.mem[pr.data:]},
	} {
		t.Run(rc.name, func(t *testing.T) {
			q := rc.ring
			chains := make([]Chain, 4)
			used := make([]UsedElem, 0, 4)
			got := make([]UsedElem, 8)
			for round := 0; round < 20; round++ {
				q.DisableNotify()
				for i := 0; i < 3; i++ {
					if err := rc.post(rc.mem[64*i : 64*i+64]); err != nil {
						t.Fatal(err)
					}
				}
				rc.publish()
				if p, err := q.Pending(); p != 3 || err != nil {
					t.Fatalf("Pending = %d, %v", p, err)
				}
				n, err := q.Pop(chains)
				if n != 3 || err != nil {
					t.Fatalf("Pop = %d, %v", n, err)
				}
				q.Unpop(1)
				if m, _ := q.Pop(chains[n-1:]); m != 1 {
					t.Fatal("re-pop after Unpop")
				}
				used = used[:0]
				for _, c := range chains[:n] {
					copy(c.Bufs[0].B, "hello")
					used = append(used, UsedElem{ID: uint32(c.Head), Len: 5})
				}
				q.PushInOrder(used[:1])
				q.Push(used[1:])
				q.NeedNotify()
				if m := rc.reap(got); m != 3 {
					t.Fatalf("reaped %d", m)
				}
				if q.EnableNotify() {
					t.Fatal("more after draining")
				}
			}
			if q.Size() == 0 || q.VringBase()&0xffff != uint32(q.LastAvail()) {
				t.Errorf("Size %d VringBase %#x LastAvail %#x", q.Size(), q.VringBase(), q.LastAvail())
			}
		})
	}
}

// TestInOrderSplitStream runs more than 2^16 chains through split rings
// with IN_ORDER, completing random prefixes with random lengths, so that
// batched used entries straddle the ring end and the 16-bit index wrap.
func TestInOrderSplitStream(t *testing.T) {
	for _, o := range []ringOpts{{size: 8}, {size: 16, eventIdx: true, indirect: true}, {size: 2, availOdd: true}} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			r := newTestRing(t, o)
			cfg := r.drv.DeviceConfig()
			cfg.Indirect, cfg.InOrder = o.indirect, true
			dev, err := NewSplit(cfg, r.drv.Memory())
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(5, uint64(o.size)))
			type want struct {
				seq       uint32
				head      uint16
				wlen, got uint32
			}
			var posted, held []want
			chains := make([]Chain, o.size)
			reaped := make([]UsedElem, o.size)
			var seq uint32
			reapedN := 0
			for reapedN < 70000 {
				for r.drv.NumFree() >= 2 && rng.IntN(4) != 0 {
					b := r.mem[dataArea+16*int(seq%64) : dataArea+16*int(seq%64)+16]
					binary.LittleEndian.PutUint32(b, seq)
					var h uint16
					if o.indirect && seq%2 == 0 {
						h, err = r.drv.AddIndirect([][]byte{b[:4]}, [][]byte{b[4:16]})
					} else {
						h, err = r.drv.Add([][]byte{b[:4]}, [][]byte{b[4:16]})
					}
					if err != nil {
						t.Fatal(err)
					}
					posted = append(posted, want{seq: seq, head: h, wlen: 12})
					seq++
				}
				r.drv.Publish()
				n, err := dev.Pop(chains)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range chains[:n] {
					w := posted[0]
					posted = posted[1:]
					if c.Head != w.head || c.WriteLen != 12 || binary.LittleEndian.Uint32(c.Bufs[0].B) != w.seq {
						t.Fatalf("popped head %d, want %d (seq %d)", c.Head, w.head, w.seq)
					}
					held = append(held, w)
				}
				if len(held) == 0 {
					continue
				}
				k := 1 + rng.IntN(len(held))
				used := make([]UsedElem, k)
				for i := range used {
					held[i].got = 12
					if rng.IntN(4) == 0 {
						held[i].got = uint32(rng.IntN(12))
					}
					used[i] = UsedElem{ID: uint32(held[i].head), Len: held[i].got}
				}
				dev.PushInOrder(used)
				done := held[:k]
				m := r.drv.ReapInOrder(reaped)
				if m != k {
					t.Fatalf("reaped %d of %d", m, k)
				}
				for i, e := range reaped[:m] {
					if e.ID != uint32(done[i].head) || e.Len != done[i].got {
						t.Fatalf("reaped %+v, want head %d len %d", e, done[i].head, done[i].got)
					}
				}
				held = append([]want(nil), held[k:]...)
				reapedN += m
				dev.NeedNotify()
			}
			if dev.UsedIdx() != r.drv.UsedIdx() || r.drv.LastUsed() != r.drv.UsedIdx() {
				t.Errorf("used idx %d/%d, last used %d", dev.UsedIdx(), r.drv.UsedIdx(), r.drv.LastUsed())
			}
		})
	}
}

// markLog records the host ranges a ring reports as written.
type markLog struct{ ranges [][2]uintptr }

func (l *markLog) MarkHost(b []byte) {
	l.ranges = append(l.ranges, [2]uintptr{addrOf(b), addrOf(b) + uintptr(len(b))})
}

// covers reports whether b lies inside one marked range.
func (l *markLog) covers(b []byte) bool {
	for _, r := range l.ranges {
		if addrOf(b) >= r[0] && addrOf(b)+uintptr(len(b)) <= r[1] {
			return true
		}
	}
	return false
}

// TestPackedDirtyLog checks that every device write to the ring is marked:
// used descriptors (out of order, and in-order runs) and the device event
// suppression area.
func TestPackedDirtyLog(t *testing.T) {
	for _, inOrder := range []bool{false, true} {
		r := newPackedTestRing(t, packedOpts{size: 7, inOrder: inOrder, eventIdx: true})
		var l markLog
		cfg := r.drv.DeviceConfig()
		cfg.Log = &l
		dev, err := NewPacked(cfg, r.drv.Memory())
		if err != nil {
			t.Fatal(err)
		}
		r.dev = dev
		if len(l.ranges) != 0 {
			t.Fatal("NewPacked marked something: it writes nothing")
		}
		r.dev.DisableNotify()
		if !l.covers(cfg.Device) {
			t.Error("DisableNotify's write not marked")
		}
		for lap := 0; lap < 4; lap++ {
			for i := 0; i < 3; i++ {
				r.drv.Add([][]byte{r.buf(0, 4)}, [][]byte{r.buf(16, 4)})
			}
			chains := r.pop(t, 3)
			used := usedOf(chains)
			used[0].Len, used[1].Len = 4, 4 // whole: an in-order run of three
			if !inOrder {
				used[0], used[2] = used[2], used[0]
			}
			before := append([]byte(nil), r.drv.desc...)
			l.ranges = nil
			r.dev.PushInOrder(used)
			changed := 0
			for p := 0; p < 7; p++ {
				d := r.drv.desc[p*DescSize : p*DescSize+DescSize]
				if string(d) == string(before[p*DescSize:p*DescSize+DescSize]) {
					continue
				}
				changed++
				if !l.covers(d) {
					t.Errorf("in order %v, lap %d: used descriptor at %d written but not marked", inOrder, lap, p)
				}
			}
			if want := map[bool]int{false: 3, true: 1}[inOrder]; changed != want {
				t.Errorf("in order %v: %d used descriptors written, want %d", inOrder, changed, want)
			}
			if m := r.drv.Reap(make([]UsedElem, 4)); m != 3 {
				t.Fatalf("reaped %d", m)
			}
		}
		l.ranges = nil
		if r.dev.EnableNotify() || !l.covers(cfg.Device) {
			t.Error("EnableNotify's write not marked")
		}
	}
}
