package virtqueue

import (
	"math"
	"testing"
)

func TestNewDriverRejectsBadConfig(t *testing.T) {
	mem := make([]byte, 4096)
	good := func() DriverConfig {
		return DriverConfig{Size: 8, Mem: mem, Base: 0x1000, Rings: LayoutRings(0, 8), IndirectOff: 1024, IndirectMax: 4}
	}
	if _, err := NewDriver(good()); err != nil {
		t.Fatalf("good config rejected: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(c *DriverConfig)
	}{
		{"size 0", func(c *DriverConfig) { c.Size = 0 }},
		{"size 12", func(c *DriverConfig) { c.Size = 12 }},
		{"empty memory", func(c *DriverConfig) { c.Mem = nil }},
		{"memory wraps 2^64", func(c *DriverConfig) { c.Base = math.MaxUint64 - 100 }},
		{"desc misaligned", func(c *DriverConfig) { c.Rings.Desc = 8 }},
		{"avail odd", func(c *DriverConfig) { c.Rings.Avail++ }},
		{"used 2-aligned", func(c *DriverConfig) { c.Rings.Used += 2 }},
		{"used outside memory", func(c *DriverConfig) { c.Rings.Used = 4092 }},
		{"offset overflow", func(c *DriverConfig) { c.Rings.Used = math.MaxUint64 - 3 }},
		{"rings overlap", func(c *DriverConfig) { c.Rings.Avail = 64 }},
		{"indirect area outside memory", func(c *DriverConfig) { c.IndirectOff = 4000 }},
		{"indirect area misaligned", func(c *DriverConfig) { c.IndirectOff = 1032 }},
	} {
		c := good()
		tc.mod(&c)
		if _, err := NewDriver(c); err == nil {
			t.Errorf("%s: NewDriver accepted it", tc.name)
		}
	}
}

func TestLayoutRings(t *testing.T) {
	l := LayoutRings(3, 256)
	if l.Desc != 16 || l.Avail != 16+4096 || l.Used != alignUp(16+4096+518, 4) || l.End != l.Used+2054 {
		t.Errorf("LayoutRings(3, 256) = %+v", l)
	}
	if DescTableSize(32768) != 524288 || AvailRingSize(32768) != 65542 || UsedRingSize(32768) != 262150 {
		t.Error("ring sizes for the largest queue are wrong")
	}
}

func TestDriverAddAndFreeList(t *testing.T) {
	r := newTestRing(t, ringOpts{size: 4, indirectMax: 3, indirect: true})
	buf := r.mem[dataArea : dataArea+100]
	if _, err := r.drv.Add(nil, nil); err != ErrDriverEmptyChain {
		t.Errorf("empty chain: %v", err)
	}
	if _, err := r.drv.Add([][]byte{make([]byte, 4)}, nil); err != ErrDriverNotInMemory {
		t.Errorf("foreign buffer: %v", err)
	}
	if _, err := r.drv.Add([][]byte{r.mem[len(r.mem)-4:], buf[:1]}, nil); err != nil {
		t.Errorf("a buffer ending at the end of memory is fine: %v", err)
	}
	if _, err := r.drv.Add([][]byte{buf, buf, buf}, nil); err != ErrDriverFull {
		t.Errorf("3 buffers with 2 free descriptors: %v", err)
	}
	if _, err := r.drv.AddIndirect([][]byte{buf, buf}, [][]byte{buf, buf}); err != ErrDriverIndirectMax {
		t.Errorf("4 buffers with IndirectMax 3: %v", err)
	}
	h, err := r.drv.AddIndirect([][]byte{buf}, [][]byte{buf, buf})
	if err != nil {
		t.Fatal(err)
	}
	if d := r.drv.Desc(h); d.Flags != DescFIndirect || d.Len != 48 || d.Addr != gaddr(indirectArea+int(h)*3*DescSize) {
		t.Errorf("indirect head descriptor %+v", d)
	}
	if r.drv.NumFree() != 1 {
		t.Errorf("NumFree = %d, want 1", r.drv.NumFree())
	}
	raw, ok := r.drv.TakeDesc()
	if !ok || r.drv.NumFree() != 0 {
		t.Fatalf("TakeDesc = %d, %v; NumFree %d", raw, ok, r.drv.NumFree())
	}
	if _, ok := r.drv.TakeDesc(); ok {
		t.Error("TakeDesc from an empty free list succeeded")
	}
	if _, err := r.drv.AddIndirect([][]byte{buf}, nil); err != ErrDriverFull {
		t.Errorf("AddIndirect with no free descriptor: %v", err)
	}
	// Device completes both chains and the raw one; the raw one frees nothing.
	r.drv.SetDesc(raw, Desc{Addr: gaddr(dataArea), Len: 1})
	r.drv.PostRaw(raw)
	r.drv.Publish()
	chains := popAll(t, r.dev, 3)
	used := make([]UsedElem, 3)
	for i, c := range chains {
		if c.Err != nil {
			t.Fatalf("chain %d: %v", c.Head, c.Err)
		}
		used[i] = UsedElem{ID: uint32(c.Head), Len: c.WriteLen}
	}
	if chains[1].ReadLen != 100 || chains[1].WriteLen != 200 || len(chains[1].Bufs) != 3 {
		t.Errorf("indirect chain: read %d write %d bufs %d", chains[1].ReadLen, chains[1].WriteLen, len(chains[1].Bufs))
	}
	r.dev.Push(used)
	got := make([]UsedElem, 8)
	if n := r.drv.Reap(got[:2]); n != 2 || got[1].Len != 200 {
		t.Fatalf("Reap = %d %+v", n, got[:n])
	}
	if r.drv.NumFree() != 3 {
		t.Errorf("NumFree = %d after reaping two chains of 2+1 descriptors, want 3", r.drv.NumFree())
	}
	if n := r.drv.Reap(got); n != 1 || got[0].ID != uint32(raw) {
		t.Fatalf("Reap raw = %d %+v", n, got[:n])
	}
	if r.drv.NumFree() != 3 {
		t.Errorf("reaping a raw chain changed the free list: NumFree %d", r.drv.NumFree())
	}
	r.drv.ReturnDesc(raw)
	if r.drv.NumFree() != 4 {
		t.Errorf("NumFree = %d after ReturnDesc, want 4", r.drv.NumFree())
	}
	// Device reports an id the driver never posted: reaped, nothing freed.
	r.dev.Push([]UsedElem{{ID: 1000}})
	if n := r.drv.Reap(got); n != 1 || got[0].ID != 1000 || r.drv.NumFree() != 4 {
		t.Errorf("bogus id: Reap %d %+v NumFree %d", n, got[:n], r.drv.NumFree())
	}
}

func TestDriverSegsAndGuestAddr(t *testing.T) {
	r := newTestRing(t, ringOpts{size: 4, indirect: true})
	if a, ok := r.drv.GuestAddr(r.mem[dataArea:]); !ok || a != gaddr(dataArea) {
		t.Errorf("GuestAddr = %#x, %v", a, ok)
	}
	other := make([]byte, 10)
	if _, ok := r.drv.GuestAddr(other); ok {
		t.Error("GuestAddr accepted a buffer outside guest memory")
	}
	if _, ok := r.drv.GuestAddr(nil); ok {
		t.Error("GuestAddr accepted nil")
	}
	// Segments are not checked: an out-of-memory one reaches the device,
	// which must refuse it.
	if _, err := r.drv.AddSegs([]Seg{{Addr: 1, Len: 8}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.drv.AddIndirectSegs(nil, []Seg{{Addr: gaddr(dataArea), Len: 8}}); err != nil {
		t.Fatal(err)
	}
	r.drv.Publish()
	chains := popAll(t, r.dev, 2)
	if chains[0].Err != ErrDescAddress {
		t.Errorf("out-of-memory segment: %v", chains[0].Err)
	}
	if chains[1].Err != nil || chains[1].WriteLen != 8 {
		t.Errorf("indirect segment chain: %v, write %d", chains[1].Err, chains[1].WriteLen)
	}
}
