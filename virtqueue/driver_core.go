package virtqueue

import (
	"fmt"
	"math"
)

// driverMem is what the split and packed drivers share: the guest memory
// they lay their ring out in, the indirect tables, and the checks and
// address arithmetic on buffers that every Add* does the same way.
type driverMem struct {
	size uint16
	mem  []byte
	base uint64

	indirectOff uint64
	indirectMax uint16
}

// driverArea is one ring area a driver config places in guest memory.
type driverArea struct {
	name       string
	off, n, al uint64
}

// newDriverMem checks that mem is a usable guest memory for a queue of
// size, that each area fits in it aligned (and, with hostAlign4, 4-byte
// aligned in host memory) without overlapping the others, and that the
// indirect area fits, and returns the shared part of a driver.
func newDriverMem(what string, size uint16, mem []byte, base uint64, areas []driverArea, hostAlign4 bool, indirectOff uint64, indirectMax uint16) (driverMem, error) {
	total := uint64(len(mem))
	if total == 0 {
		return driverMem{}, fmt.Errorf("virtqueue: driver: %s.Mem is empty", what)
	}
	if base > math.MaxUint64-(total-1) {
		return driverMem{}, fmt.Errorf("virtqueue: driver: guest memory at %#x of %d bytes wraps past 2^64", base, total)
	}
	for i, p := range areas {
		if !inside(p.off, p.n, total) {
			return driverMem{}, fmt.Errorf("virtqueue: driver: %s at offset %d (%d bytes) does not fit in %d bytes of guest memory", p.name, p.off, p.n, total)
		}
		if (base+p.off)%p.al != 0 {
			return driverMem{}, fmt.Errorf("virtqueue: driver: %s at guest address %#x is not %d-byte aligned", p.name, base+p.off, p.al)
		}
		if hostAlign4 && (uint64(addrOf(mem))+p.off)%4 != 0 {
			return driverMem{}, fmt.Errorf("virtqueue: driver: %s is not 4-byte aligned in host memory", p.name)
		}
		for _, q := range areas[:i] {
			if p.off < q.off+q.n && q.off < p.off+p.n {
				return driverMem{}, fmt.Errorf("virtqueue: driver: %s overlaps the %s", p.name, q.name)
			}
		}
	}
	if indirectMax > 0 {
		n := IndirectAreaSize(size, indirectMax)
		if !inside(indirectOff, n, total) {
			return driverMem{}, fmt.Errorf("virtqueue: driver: indirect area at offset %d (%d bytes) does not fit in %d bytes of guest memory", indirectOff, n, total)
		}
		if (base+indirectOff)%16 != 0 {
			return driverMem{}, fmt.Errorf("virtqueue: driver: indirect area at guest address %#x is not 16-byte aligned", base+indirectOff)
		}
	}
	return driverMem{size: size, mem: mem, base: base, indirectOff: indirectOff, indirectMax: indirectMax}, nil
}

// Size is the queue size.
func (m *driverMem) Size() uint16 { return m.size }

// Memory returns a Memory over the driver's guest memory, for an in-process
// device.
func (m *driverMem) Memory() RegionMemory { return RegionMemory{{Addr: m.base, B: m.mem}} }

// GuestAddr returns the guest address of b, which must be a subslice of the
// driver's memory. An empty b has no reliable address (Go may point a
// zero-capacity subslice at the start of the array), so its result is only
// good for a zero-length buffer.
func (m *driverMem) GuestAddr(b []byte) (uint64, bool) {
	p, base := addrOf(b), addrOf(m.mem)
	if p < base {
		return 0, false
	}
	off := uint64(p - base)
	if !inside(off, uint64(len(b)), uint64(len(m.mem))) {
		return 0, false
	}
	return m.base + off, true
}

func (m *driverMem) checkBufs(out, in [][]byte) error {
	for _, list := range [2][][]byte{out, in} {
		for _, b := range list {
			if _, ok := m.GuestAddr(b); !ok || len(b) > math.MaxUint32 {
				return ErrDriverNotInMemory
			}
		}
	}
	return nil
}

// bufSeg gives element k of out then in, buffers of the driver's memory,
// as an address and a length (checkBufs first).
func (m *driverMem) bufSeg(out, in [][]byte) func(k int) (uint64, uint32) {
	return func(k int) (uint64, uint32) {
		b := pick(out, in, k)
		a, _ := m.GuestAddr(b)
		return a, uint32(len(b))
	}
}

// segSeg gives element k of out then in.
func segSeg(out, in []Seg) func(k int) (uint64, uint32) {
	return func(k int) (uint64, uint32) {
		s := pick(out, in, k)
		return s.Addr, s.Len
	}
}

func pick[T any](out, in []T, k int) T {
	if k < len(out) {
		return out[k]
	}
	return in[k-len(out)]
}

// checkIndirect checks an indirect chain of n buffers against the config,
// with free telling whether a ring slot and id are free for it.
func (m *driverMem) checkIndirect(n int, free bool) error {
	switch {
	case m.indirectMax == 0:
		return ErrDriverNoIndirect
	case n == 0:
		return ErrDriverEmptyChain
	case n > int(m.indirectMax):
		return ErrDriverIndirectMax
	case !free:
		return ErrDriverFull
	}
	return nil
}

// indirectTable is the indirect table of ring entry or buffer id i, sized
// for n descriptors, and its guest address.
func (m *driverMem) indirectTable(i uint16, n int) ([]byte, uint64) {
	off := m.indirectOff + uint64(i)*uint64(m.indirectMax)*DescSize
	return m.mem[off : off+uint64(n)*DescSize], m.base + off
}
