package virtqueue

// Memory translates a driver address range to host bytes. ok is false unless
// the whole range [addr, addr+size) lies inside ONE mapped region and does not
// wrap past 2^64. The returned slice has length size. Slice is called once per
// descriptor on the hot path and must not allocate.
type Memory interface {
	Slice(addr, size uint64) (b []byte, ok bool)
}

// MemRegion is one contiguous range of guest memory: guest address Addr maps
// to B[0].
type MemRegion struct {
	Addr uint64
	B    []byte
}

// RegionMemory is a Memory over a few non-overlapping regions, searched
// linearly. It suits tests and the Go front-end, whose guest memory is a
// handful of []byte; vhostuser.MemoryTable has its own implementation over
// mmapped regions.
type RegionMemory []MemRegion

// Slice implements Memory. A range touching two adjacent regions is refused
// even if together they cover it: the host bytes need not be contiguous.
func (m RegionMemory) Slice(addr, size uint64) ([]byte, bool) {
	for i := range m {
		r := &m[i]
		if addr < r.Addr {
			continue
		}
		off := addr - r.Addr
		n := uint64(len(r.B))
		// off < n keeps the start inside; size <= n-off keeps the end inside
		// and, because n-off cannot exceed the region, rules out wrapping.
		if off < n && size <= n-off {
			return r.B[off : off+size : off+size], true
		}
	}
	return nil, false
}
