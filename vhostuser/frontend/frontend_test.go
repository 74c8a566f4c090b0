package frontend

import (
	"testing"
	"unsafe"
)

func TestMemoryLayout(t *testing.T) {
	m, err := NewMemory([]Region{{GPA: 0, Size: 8192}, {GPA: 1 << 32, Size: 100}}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r0, r1 := m.Regions[0], m.Regions[1]
	if r0.GPA != 0 || len(r0.B) != 8192 || r0.FileOffset != 0 {
		t.Errorf("region 0: %+v", r0.Desc())
	}
	// Sizes are rounded up to pages; regions follow each other in the file.
	if r1.GPA != 1<<32 || len(r1.B) != 4096 || r1.FileOffset != 8192 {
		t.Errorf("region 1: %+v", r1.Desc())
	}
	if r1.UVA != uint64(uintptr(unsafe.Pointer(&r1.B[0]))) {
		t.Error("UVA is not the region's address in this process")
	}
	tbl := m.Table()
	if tbl.NRegions != 2 || tbl.Regions[1] != r1.Desc() {
		t.Errorf("table %+v", tbl)
	}
	b, ok := m.Slice(1<<32+10, 4)
	if !ok {
		t.Fatal("GPA translation failed")
	}
	copy(b, "abcd")
	if string(r1.B[10:14]) != "abcd" {
		t.Error("Slice does not alias the region")
	}
	if _, ok := m.Slice(8190, 4); ok {
		t.Error("range past region 0 accepted")
	}
}

func TestMemoryIdentity(t *testing.T) {
	m, err := NewMemory([]Region{{GPA: 0, Size: 4096}}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Regions[0].GPA != m.Regions[0].UVA || m.Regions[0].GPA == 0 {
		t.Errorf("identity mapping: gpa %#x uva %#x", m.Regions[0].GPA, m.Regions[0].UVA)
	}
}

func TestSetupPlacesRings(t *testing.T) {
	f := &Frontend{}
	if err := f.Setup(Options{NumQueues: 4, QueueSize: 1024, IndirectMax: 8}); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[uint64]bool{}
	for _, q := range f.Queues {
		desc, avail, used := q.Driver.RingAddrs()
		if desc%16 != 0 || avail%2 != 0 || used%4 != 0 || seen[desc] {
			t.Errorf("queue %d rings at %#x %#x %#x", q.Index, desc, avail, used)
		}
		seen[desc] = true
		if used >= f.DataOffset {
			t.Errorf("queue %d used ring beyond DataOffset %#x", q.Index, f.DataOffset)
		}
	}
	if err := f.Setup(Options{QueueSize: 32768, NumQueues: 8}); err == nil {
		t.Error("Setup twice accepted")
	}
	if err := (&Frontend{}).Setup(Options{QueueSize: 32768, NumQueues: 8, Regions: []Region{{Size: 1 << 20}}}); err == nil {
		t.Error("rings larger than region 0 accepted")
	}
}
