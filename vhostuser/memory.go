package vhostuser

import (
	"errors"
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue"
)

// MaxMemSlots is what GET_MAX_MEM_SLOTS reports and the most regions a
// MemoryTable holds. Eight keeps every translation a short linear scan over a
// fixed array (no allocation, no locks on the datapath) and matches both the
// SET_MEM_TABLE limit and DPDK's answer. QEMU refuses to start a VM whose
// memory needs more slots than this, which a plain virtio-net guest never does.
const MaxMemSlots = MaxMemRegions

// ErrMemory wraps every MemoryTable error.
var ErrMemory = errors.New("vhost-user: guest memory")

// mappedRegion is one region mapped into this process.
type mappedRegion struct {
	MemoryRegion
	mapping []byte // the whole mmap, from the page-aligned file offset
	mem     []byte // the region's bytes: mapping[MmapOffset-aligned:][:Size]
	// extraRefs counts ADD_MEM_REG messages for this exact region beyond
	// the first (see Add); REM_MEM_REG unmaps only when it is 0.
	extraRefs int
}

// regionSet is a fixed array of regions; n entries are valid.
type regionSet struct {
	r [MaxMemSlots]mappedRegion
	n int
}

// MemoryTable holds the front-end's memory regions mapped MAP_SHARED
// (vhost-user.rst, "Memory access"). It is owned by one Session and is not
// safe for concurrent use; rings get their own read-only views from GPA.
// Views become invalid (point to unmapped memory) once the table changes, so
// every ring using them must be stopped first.
type MemoryTable struct {
	set regionSet
}

// NewMemoryTable returns an empty table.
func NewMemoryTable() *MemoryTable { return &MemoryTable{} }

// Len returns the number of mapped regions.
func (t *MemoryTable) Len() int { return t.set.n }

// Regions returns a copy of the region descriptions.
func (t *MemoryTable) Regions() []MemoryRegion {
	out := make([]MemoryRegion, t.set.n)
	for i := range out {
		out[i] = t.set.r[i].MemoryRegion
	}
	return out
}

// Set replaces the whole table (SET_MEM_TABLE). fds[i] backs regions[i]; the
// caller keeps ownership of the fds and closes them (the mappings stay valid
// after that). On error the old table is left untouched.
func (t *MemoryTable) Set(regions []MemoryRegion, fds []int) error {
	if len(regions) == 0 || len(regions) > MaxMemSlots {
		return fmt.Errorf("%w: %d regions, want 1..%d", ErrMemory, len(regions), MaxMemSlots)
	}
	if len(fds) != len(regions) {
		return fmt.Errorf("%w: %d regions but %d fds; each region needs its own fd", ErrMemory, len(regions), len(fds))
	}
	var next regionSet
	for i, r := range regions {
		if err := next.checkOverlap(r); err != nil {
			next.unmapAll()
			return err
		}
		m, err := mapRegion(r, fds[i])
		if err != nil {
			next.unmapAll()
			return fmt.Errorf("region %d: %w", i, err)
		}
		next.r[next.n] = m
		next.n++
	}
	t.set.unmapAll()
	t.set = next
	return nil
}

// Add maps one more region (ADD_MEM_REG). The caller keeps ownership of fd.
//
// QEMU before 8.x sends ADD_MEM_REG and REM_MEM_REG once per vhost_dev, that
// is once per queue pair of a multiqueue net device on the same connection
// (later QEMU made them one-time requests, "vhost-user: ... one time
// request"). A region identical to one already mapped (same guest address,
// user address and size) is therefore counted, not refused as an overlap
// (the caller still closes its fd); Remove unmaps after as many removals as additions.
func (t *MemoryTable) Add(r MemoryRegion, fd int) error {
	for i := 0; i < t.set.n; i++ {
		m := &t.set.r[i]
		if m.GuestPhysAddr == r.GuestPhysAddr && m.UserAddr == r.UserAddr && m.Size == r.Size {
			m.extraRefs++ // the dispatcher closes the unused fd
			return nil
		}
	}
	if t.set.n == MaxMemSlots {
		return fmt.Errorf("%w: all %d memory slots are in use; cannot add %v", ErrMemory, MaxMemSlots, r)
	}
	if err := t.set.checkOverlap(r); err != nil {
		return err
	}
	m, err := mapRegion(r, fd)
	if err != nil {
		return err
	}
	t.set.r[t.set.n] = m
	t.set.n++
	return nil
}

// Remove unmaps the region with the same guest address, user address and
// size (REM_MEM_REG; the mmap offset is ignored as the spec says).
func (t *MemoryTable) Remove(r MemoryRegion) error {
	s := &t.set
	for i := 0; i < s.n; i++ {
		m := &s.r[i]
		if m.GuestPhysAddr == r.GuestPhysAddr && m.UserAddr == r.UserAddr && m.Size == r.Size {
			if m.extraRefs > 0 {
				m.extraRefs--
				return nil
			}
			unmap(m)
			copy(s.r[i:s.n], s.r[i+1:s.n])
			s.n--
			s.r[s.n] = mappedRegion{}
			return nil
		}
	}
	return fmt.Errorf("%w: no region matches gpa=%#x uva=%#x size=%#x", ErrMemory, r.GuestPhysAddr, r.UserAddr, r.Size)
}

// Close unmaps every region.
func (t *MemoryTable) Close() {
	t.set.unmapAll()
}

// GPA returns a translator for guest-physical addresses (descriptor
// addresses) over a snapshot of the current regions. Each ring gets its own:
// the view caches the last region hit and must be used by one goroutine.
func (t *MemoryTable) GPA() virtqueue.Memory {
	g := &GuestMemory{n: t.set.n}
	for i := 0; i < t.set.n; i++ {
		g.start[i] = t.set.r[i].GuestPhysAddr
		g.mem[i] = t.set.r[i].mem
	}
	return g
}

// UVA translates a front-end virtual address range (SET_VRING_ADDR) to host
// bytes, with the same rules as GuestMemory.Slice.
func (t *MemoryTable) UVA(addr, size uint64) ([]byte, bool) {
	for i := 0; i < t.set.n; i++ {
		m := &t.set.r[i]
		if b, ok := sliceRegion(m.mem, m.UserAddr, addr, size); ok {
			return b, true
		}
	}
	return nil, false
}

// GuestMemory translates guest-physical addresses. It implements
// virtqueue.Memory and does not allocate. The region starts and byte slices
// sit in two compact arrays, so a scan of all eight slots touches few cache
// lines.
type GuestMemory struct {
	start [MaxMemSlots]uint64
	mem   [MaxMemSlots][]byte
	n     int
	last  int // index of the region that served the previous lookup
}

// Slice returns the host bytes of [addr, addr+size). ok is false unless the
// whole range lies in one region; a range straddling two regions (even if
// they are contiguous) or wrapping past 2^64 is refused. addr itself must
// lie inside the region, so a zero size at a region's end is refused, as
// virtqueue.RegionMemory does.
func (g *GuestMemory) Slice(addr, size uint64) ([]byte, bool) {
	if i := g.last; i < g.n {
		if b, ok := sliceRegion(g.mem[i], g.start[i], addr, size); ok {
			return b, true
		}
	}
	for i := 0; i < g.n; i++ {
		if b, ok := sliceRegion(g.mem[i], g.start[i], addr, size); ok {
			g.last = i
			return b, true
		}
	}
	return nil, false
}

// sliceRegion returns mem[addr-base:][:size] if addr lies within mem and
// so does the whole range. The checks never compute addr+size, so they
// cannot overflow: size <= n-off bounds the end by the region's end.
func sliceRegion(mem []byte, base, addr, size uint64) ([]byte, bool) {
	// addr < base makes off wrap to a value >= n: one compare covers both.
	off := addr - base
	n := uint64(len(mem))
	if off >= n || size > n-off {
		return nil, false
	}
	end := off + size
	return mem[off:end:end], true
}

// checkOverlap refuses a region whose guest-physical range intersects one
// already in the set: a GPA must translate to exactly one place.
func (s *regionSet) checkOverlap(r MemoryRegion) error {
	for i := 0; i < s.n; i++ {
		o := &s.r[i]
		// Both ranges are validated not to wrap, so the ends are exact.
		if r.GuestPhysAddr < o.GuestPhysAddr+o.Size && o.GuestPhysAddr < r.GuestPhysAddr+r.Size {
			return fmt.Errorf("%w: region %v overlaps region %v in guest-physical space", ErrMemory, r, o.MemoryRegion)
		}
	}
	return nil
}

func (s *regionSet) unmapAll() {
	for i := 0; i < s.n; i++ {
		unmap(&s.r[i])
	}
	*s = regionSet{}
}

func unmap(m *mappedRegion) {
	if m.mapping != nil {
		unix.Munmap(m.mapping)
	}
	*m = mappedRegion{}
}

// mapRegion maps r from fd MAP_SHARED, read-write. mmap needs a page-aligned
// file offset, so the mapping starts at the offset rounded down and the
// region is sliced out of it.
func mapRegion(r MemoryRegion, fd int) (mappedRegion, error) {
	if err := r.Validate(); err != nil {
		return mappedRegion{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return mappedRegion{}, fmt.Errorf("%w: fstat of the fd for region %v: %v", ErrMemory, r, err)
	}
	// Touching a shared mapping past the end of its file raises SIGBUS, so
	// the region must lie inside the file. QEMU and DPDK back guest memory
	// with memfd, hugetlbfs or plain files, all regular files.
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return mappedRegion{}, fmt.Errorf("%w: the fd for region %v is not a regular file (mode %#o); guest memory must be shared file memory (memfd, hugetlbfs, share=on)", ErrMemory, r, st.Mode)
	}
	if st.Size < 0 || r.MmapOffset > uint64(st.Size) || r.Size > uint64(st.Size)-r.MmapOffset {
		return mappedRegion{}, fmt.Errorf("%w: region %v extends past the end of its file (%d bytes)", ErrMemory, r, st.Size)
	}
	// hugetlbfs needs offsets aligned to its huge page size, which it
	// reports as st_blksize; tmpfs/memfd and disk files report the page size.
	page := uint64(os.Getpagesize())
	if bs := uint64(st.Blksize); bs > page && bs&(bs-1) == 0 {
		page = bs
	}
	aligned := r.MmapOffset &^ (page - 1)
	delta := r.MmapOffset - aligned
	length := r.Size + delta
	if length < r.Size || length > math.MaxInt || aligned > math.MaxInt64 {
		return mappedRegion{}, fmt.Errorf("%w: region %v is too large to map", ErrMemory, r)
	}
	mapping, err := unix.Mmap(fd, int64(aligned), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return mappedRegion{}, fmt.Errorf("%w: mmap of region %v: %v", ErrMemory, r, err)
	}
	return mappedRegion{
		MemoryRegion: r,
		mapping:      mapping,
		mem:          mapping[delta : delta+r.Size : delta+r.Size],
	}, nil
}
