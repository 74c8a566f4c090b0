package frontend

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/virtqueue"
)

// Region places one piece of guest memory at a guest-physical address.
type Region struct {
	GPA  uint64
	Size uint64 // rounded up to the page size
}

// MemRegion is one mapped region of guest memory.
type MemRegion struct {
	GPA        uint64
	UVA        uint64 // its address in this process: the vhost-user "user address"
	FileOffset uint64 // mmap_offset in the shared memfd
	B          []byte
}

// Desc returns the wire description of the region.
func (r MemRegion) Desc() vhostuser.MemoryRegion {
	return vhostuser.MemoryRegion{GuestPhysAddr: r.GPA, Size: uint64(len(r.B)), UserAddr: r.UVA, MmapOffset: r.FileOffset}
}

// Memory is guest memory the way QEMU's memory-backend-memfd,share=on makes
// it: one memfd, mapped MAP_SHARED, cut into regions at chosen guest
// addresses. The regions lie one after another in the file, so every region
// but the first has a non-zero mmap_offset.
type Memory struct {
	fd      int
	mapping []byte
	Regions []MemRegion
}

// NewMemory creates the memfd and maps it. With identity set, each region's
// GPA is replaced by its UVA, as DPDK virtio-user does ("its guest addresses
// are its own virtual addresses").
func NewMemory(regions []Region, identity bool) (*Memory, error) {
	if len(regions) == 0 {
		return nil, errors.New("frontend: guest memory needs at least one region")
	}
	page := uint64(os.Getpagesize())
	var total uint64
	sizes := make([]uint64, len(regions))
	for i, r := range regions {
		sizes[i] = (r.Size + page - 1) &^ (page - 1)
		if sizes[i] == 0 {
			return nil, fmt.Errorf("frontend: region %d has size 0", i)
		}
		total += sizes[i]
	}
	fd, err := unix.MemfdCreate("vhostd-frontend-guest", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("frontend: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(total)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("frontend: ftruncate memfd to %d: %w", total, err)
	}
	mapping, err := unix.Mmap(fd, 0, int(total), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("frontend: mmap memfd: %w", err)
	}
	m := &Memory{fd: fd, mapping: mapping}
	var off uint64
	for i, r := range regions {
		b := mapping[off : off+sizes[i] : off+sizes[i]]
		uva := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
		gpa := r.GPA
		if identity {
			gpa = uva
		}
		m.Regions = append(m.Regions, MemRegion{GPA: gpa, UVA: uva, FileOffset: off, B: b})
		off += sizes[i]
	}
	return m, nil
}

// Fd is the memfd backing every region.
func (m *Memory) Fd() int { return m.fd }

// Table returns the SET_MEM_TABLE payload for all regions.
func (m *Memory) Table() vhostuser.MemoryRegions {
	var t vhostuser.MemoryRegions
	for i, r := range m.Regions {
		if i == len(t.Regions) {
			break
		}
		t.Regions[i] = r.Desc()
		t.NRegions++
	}
	return t
}

// Slice returns the bytes of guest-physical range [gpa, gpa+size) if it lies
// in one region.
func (m *Memory) Slice(gpa, size uint64) ([]byte, bool) {
	return m.GuestMemory().Slice(gpa, size)
}

// GuestMemory returns a virtqueue.Memory over the regions by GPA.
func (m *Memory) GuestMemory() virtqueue.RegionMemory {
	rm := make(virtqueue.RegionMemory, len(m.Regions))
	for i, r := range m.Regions {
		rm[i] = virtqueue.MemRegion{Addr: r.GPA, B: r.B}
	}
	return rm
}

// Close unmaps the memory and closes the memfd.
func (m *Memory) Close() error {
	if m.mapping == nil {
		return nil
	}
	err := unix.Munmap(m.mapping)
	unix.Close(m.fd)
	m.mapping, m.Regions = nil, nil
	return err
}
