package vhostuser

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue"
)

// memfd returns a memfd of size bytes whose byte i holds byte(i/4096) (the
// page number), so a translation can be checked by content.
func memfd(t testing.TB, size int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("vhostuser-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i / 4096)
	}
	if _, err := unix.Pwrite(fd, buf, 0); err != nil {
		t.Fatal(err)
	}
	return fd
}

func mapped(t *testing.T, addr uintptr) bool {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x", &lo, &hi); n == 2 && addr >= lo && addr < hi {
			return true
		}
	}
	return false
}

func TestMemoryTranslation(t *testing.T) {
	const page = 4096
	fd := memfd(t, 16*page)
	tbl := NewMemoryTable()
	defer tbl.Close()
	// Two regions of one file, adjacent in guest-physical space: gpa
	// [0x10000, 0x14000) is file pages 0-3 and [0x14000, 0x18000) is file
	// pages 8-11. The second starts at a non-page-aligned-in-GPA-terms but
	// page-aligned file offset; a third region uses an unaligned offset.
	regions := []MemoryRegion{
		{GuestPhysAddr: 0x10000, Size: 4 * page, UserAddr: 0x7000_0000, MmapOffset: 0},
		{GuestPhysAddr: 0x14000, Size: 4 * page, UserAddr: 0x8000_0000, MmapOffset: 8 * page},
		{GuestPhysAddr: math.MaxUint64 - 2*page, Size: page, UserAddr: 0x9000_0000, MmapOffset: 12*page + 100},
	}
	if err := tbl.Set(regions, []int{fd, fd, fd}); err != nil {
		t.Fatal(err)
	}
	g := tbl.GPA()
	tests := []struct {
		name      string
		addr, n   uint64
		ok        bool
		firstByte byte
	}{
		{"start of region 0", 0x10000, 16, true, 0},
		{"inside region 0", 0x11000, page, true, 1},
		{"last byte of region 0", 0x13fff, 1, true, 3},
		{"whole region 0", 0x10000, 4 * page, true, 0},
		{"region 1 start", 0x14000, 8, true, 8},
		{"exact end of region 1", 0x17000, page, true, 11},
		{"straddles regions 0 and 1", 0x13ff0, 32, false, 0},
		{"one past region 1", 0x17001, page, false, 0},
		{"below every region", 0xfff, 1, false, 0},
		{"zero size inside", 0x10010, 0, true, 0},
		{"zero size at region end", 0x18000, 0, false, 0},
		{"wraps past 2^64", 0x10000, math.MaxUint64, false, 0},
		{"huge size from the top region", math.MaxUint64 - 2*page, math.MaxUint64, false, 0},
		{"unaligned offset region", math.MaxUint64 - 2*page, 1, true, 12},
		{"top region end", math.MaxUint64 - page, 1, false, 0},
	}
	for _, tt := range tests {
		b, ok := g.Slice(tt.addr, tt.n)
		if ok != tt.ok {
			t.Errorf("%s: Slice(%#x, %#x) ok = %t", tt.name, tt.addr, tt.n, ok)
			continue
		}
		if !ok {
			continue
		}
		if uint64(len(b)) != tt.n || uint64(cap(b)) != tt.n {
			t.Errorf("%s: len %d cap %d, want %d", tt.name, len(b), cap(b), tt.n)
		}
		if tt.n > 0 && b[0] != tt.firstByte {
			t.Errorf("%s: first byte %d, want %d (wrong file offset)", tt.name, b[0], tt.firstByte)
		}
	}
	// The unaligned offset must land exactly on file byte 12*page+100.
	b, _ := g.Slice(math.MaxUint64-2*page, 1)
	b[0] = 0xee
	probe := make([]byte, 2)
	unix.Pread(fd, probe, 12*page+99)
	if probe[0] != 12 || probe[1] != 0xee {
		t.Errorf("unaligned mmap_offset mapped the wrong bytes: %v", probe)
	}
	// Writes through the mapping reach the file (MAP_SHARED).
	w, _ := g.Slice(0x14000, 4)
	copy(w, "abcd")
	got := make([]byte, 4)
	unix.Pread(fd, got, 8*page)
	if string(got) != "abcd" {
		t.Errorf("write through the mapping not shared: %q", got)
	}
	// UVA translation uses user addresses.
	if b, ok := tbl.UVA(0x8000_0000+10, 4); !ok || len(b) != 4 || b[0] != 8 {
		t.Errorf("UVA: %v %v", b, ok)
	}
	if _, ok := tbl.UVA(0x7000_0000+4*page-2, 4); ok {
		t.Error("UVA straddling a region end accepted")
	}
	if _, ok := tbl.UVA(0x10000, 1); ok {
		t.Error("a GPA accepted as UVA")
	}
}

func TestMemoryTableErrors(t *testing.T) {
	const page = 4096
	fd := memfd(t, 4*page)
	tbl := NewMemoryTable()
	defer tbl.Close()
	good := MemoryRegion{GuestPhysAddr: 0, Size: 2 * page, UserAddr: 0x1000_0000}
	tests := []struct {
		name    string
		regions []MemoryRegion
		fds     []int
		want    string
	}{
		{"overlap", []MemoryRegion{good, {GuestPhysAddr: page, Size: page, UserAddr: 0x2000_0000}}, []int{fd, fd}, "overlaps"},
		{"past end of file", []MemoryRegion{{GuestPhysAddr: 0, Size: 5 * page}}, []int{fd}, "past the end"},
		{"offset past end of file", []MemoryRegion{{GuestPhysAddr: 0, Size: page, MmapOffset: 4 * page}}, []int{fd}, "past the end"},
		{"fd count", []MemoryRegion{good}, nil, "fds"},
		{"not a regular file", []MemoryRegion{good}, []int{eventfds(t, 1)[0]}, "not a regular file"},
	}
	for _, tt := range tests {
		err := tbl.Set(tt.regions, tt.fds)
		if err == nil || !errors.Is(err, ErrMemory) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want ErrMemory containing %q", tt.name, err, tt.want)
		}
		if tbl.Len() != 0 {
			t.Errorf("%s: failed Set changed the table", tt.name)
		}
	}
}

func TestMemoryReplaceUnmaps(t *testing.T) {
	const page = 4096
	fd := memfd(t, 4*page)
	tbl := NewMemoryTable()
	r := MemoryRegion{GuestPhysAddr: 0, Size: 4 * page, UserAddr: 0x1000}
	if err := tbl.Set([]MemoryRegion{r}, []int{fd}); err != nil {
		t.Fatal(err)
	}
	b, _ := tbl.GPA().Slice(0, 1)
	old := uintptr(unsafe.Pointer(&b[0]))
	if !mapped(t, old) {
		t.Fatal("region not in /proc/self/maps")
	}
	// A failing Set keeps the old table.
	if err := tbl.Set([]MemoryRegion{{GuestPhysAddr: 0, Size: 8 * page}}, []int{fd}); err == nil {
		t.Fatal("oversized region accepted")
	}
	if _, ok := tbl.GPA().Slice(0, 1); !ok || !mapped(t, old) {
		t.Fatal("failed Set dropped the old table")
	}
	if err := tbl.Set([]MemoryRegion{{GuestPhysAddr: 1 << 20, Size: page, UserAddr: 0x1000}}, []int{fd}); err != nil {
		t.Fatal(err)
	}
	if mapped(t, old) {
		t.Error("replaced region still mapped")
	}
	if _, ok := tbl.GPA().Slice(0, 1); ok {
		t.Error("old GPA still translates")
	}
	nb, _ := tbl.GPA().Slice(1<<20, 1)
	cur := uintptr(unsafe.Pointer(&nb[0]))
	tbl.Close()
	if mapped(t, cur) {
		t.Error("Close left the region mapped")
	}
}

func TestMemorySlots(t *testing.T) {
	const page = 4096
	fd := memfd(t, MaxMemSlots*page+page)
	tbl := NewMemoryTable()
	defer tbl.Close()
	region := func(i int) MemoryRegion {
		return MemoryRegion{GuestPhysAddr: uint64(i) * 2 * page, Size: page, UserAddr: uint64(i+1) << 30, MmapOffset: uint64(i) * page}
	}
	for i := 0; i < MaxMemSlots; i++ {
		if err := tbl.Add(region(i), fd); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	if err := tbl.Add(region(MaxMemSlots), fd); err == nil {
		t.Fatal("slot beyond MaxMemSlots accepted")
	}
	if err := tbl.Add(MemoryRegion{GuestPhysAddr: 2*page + 16, Size: 8, UserAddr: 1 << 40}, fd); err == nil {
		t.Fatal("overlapping slot accepted")
	}
	// REM identifies by gpa+uva+size; the offset is ignored.
	r := region(3)
	r.MmapOffset = 12345
	if err := tbl.Remove(r); err != nil {
		t.Fatal(err)
	}
	if _, ok := tbl.GPA().Slice(region(3).GuestPhysAddr, 1); ok {
		t.Error("removed region still translates")
	}
	if b, ok := tbl.GPA().Slice(region(4).GuestPhysAddr, 1); !ok || b[0] != 4 {
		t.Error("remaining region broken after remove")
	}
	wrong := region(5)
	wrong.UserAddr++
	if err := tbl.Remove(wrong); err == nil {
		t.Error("remove with a different uva accepted")
	}
	if err := tbl.Add(region(MaxMemSlots), fd); err != nil {
		t.Errorf("freed slot not reusable: %v", err)
	}
}

// TestGuestMemorySliceAllocs: the datapath translation must not allocate.
func TestGuestMemorySliceAllocs(t *testing.T) {
	fd := memfd(t, 8192)
	tbl := NewMemoryTable()
	defer tbl.Close()
	if err := tbl.Set([]MemoryRegion{{GuestPhysAddr: 0, Size: 4096, UserAddr: 1}, {GuestPhysAddr: 1 << 20, Size: 4096, UserAddr: 1 << 30, MmapOffset: 4096}}, []int{fd, fd}); err != nil {
		t.Fatal(err)
	}
	g := tbl.GPA()
	if n := testing.AllocsPerRun(100, func() {
		g.Slice(10, 100)
		g.Slice(1<<20+10, 100)
		g.Slice(5<<20, 1)
	}); n != 0 {
		t.Errorf("Slice allocates %v times per run", n)
	}
}

func BenchmarkGuestMemorySlice(b *testing.B) {
	fd := memfd(b, 8*4096)
	tbl := NewMemoryTable()
	defer tbl.Close()
	var regions []MemoryRegion
	var fds []int
	for i := 0; i < 8; i++ {
		regions = append(regions, MemoryRegion{GuestPhysAddr: uint64(i) << 20, Size: 4096, UserAddr: uint64(i+1) << 30, MmapOffset: uint64(i) * 4096})
		fds = append(fds, fd)
	}
	if err := tbl.Set(regions, fds); err != nil {
		b.Fatal(err)
	}
	g := tbl.GPA()
	// Baseline: virtqueue.RegionMemory (a slice of regions, no last-hit
	// cache) over the same mappings.
	// Both are called through the virtqueue.Memory interface, as Split does.
	var rms virtqueue.RegionMemory
	for _, r := range regions {
		mb, _ := g.Slice(r.GuestPhysAddr, r.Size)
		rms = append(rms, virtqueue.MemRegion{Addr: r.GuestPhysAddr, B: mb})
	}
	var rm virtqueue.Memory = rms
	b.Run("baseline-RegionMemory-same-region", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			rm.Slice(7<<20+64, 1500)
		}
	})
	b.Run("baseline-RegionMemory-alternating", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			rm.Slice(uint64(i&7)<<20+64, 1500)
		}
	})
	b.Run("same-region", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			g.Slice(7<<20+64, 1500)
		}
	})
	b.Run("alternating", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			g.Slice(uint64(i&7)<<20+64, 1500)
		}
	})
}

// QEMU 7.2 sends ADD_MEM_REG (and REM_MEM_REG) once per queue pair of a
// multiqueue device: an identical region is counted, not an overlap.
func TestMemoryAddSameRegionTwice(t *testing.T) {
	fd, err := unix.MemfdCreate("dup", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, 1<<20); err != nil {
		t.Fatal(err)
	}
	tab := NewMemoryTable()
	defer tab.Close()
	r := MemoryRegion{GuestPhysAddr: 0, Size: 1 << 20, UserAddr: 0x7f0000000000}
	if err := tab.Add(r, fd); err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(r, fd); err != nil {
		t.Fatalf("second identical ADD_MEM_REG: %v", err)
	}
	if tab.Len() != 1 {
		t.Fatalf("%d regions", tab.Len())
	}
	other := r
	other.UserAddr += 4096
	if err := tab.Add(other, fd); err == nil {
		t.Error("an overlapping, different region was accepted")
	}
	if err := tab.Remove(r); err != nil || tab.Len() != 1 {
		t.Fatalf("first REM_MEM_REG: err %v, %d regions left (want the mapping kept)", err, tab.Len())
	}
	if err := tab.Remove(r); err != nil || tab.Len() != 0 {
		t.Fatalf("second REM_MEM_REG: err %v, %d regions left", err, tab.Len())
	}
}
