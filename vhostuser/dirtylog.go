package vhostuser

import (
	"fmt"
	"math"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Dirty-page logging for live migration (vhost-user.rst "Migration", "Dirty
// pages logging"). While the front-end has acked VHOST_F_LOG_ALL, every byte
// the back-end writes into guest memory must be marked in a shared bitmap
// the front-end gave with SET_LOG_BASE: one bit per 4 KiB guest-physical
// page, bit p%8 of byte p/8, set atomically. QEMU reads and clears the
// bitmap while it copies memory to the destination, so a page must be marked
// after it was written: a mark that came first could be cleared by a sync
// before the write lands, and the page would reach the destination stale.
// The workers therefore write, then mark (the atomic OR orders both).

// LogPageSize is VHOST_LOG_PAGE: the granularity of the dirty log.
const LogPageSize = 0x1000

// logMapping is one SET_LOG_BASE mapping; it is unmapped only when no ring
// can use it any more (the session replaces or drops it with every ring
// stopped).
type logMapping struct {
	mapping []byte // the whole mmap
	bitmap  []byte // mapping[offset:][:size]
	pages   atomic.Uint64
	over    atomic.Uint64 // marks beyond the bitmap: the front-end's log is too small
}

// DirtyLog marks guest pages written through host addresses. It is an
// immutable snapshot of the log mapping and of the memory regions (host
// range -> guest-physical address) taken with the rings stopped; the
// session builds a new one whenever either changes and rebuilds the rings.
// Mark may be called by any number of workers at once.
type DirtyLog struct {
	m       *logMapping
	n       int
	hostLo  [MaxMemSlots]uintptr
	hostHi  [MaxMemSlots]uintptr // exclusive
	gpaBase [MaxMemSlots]uint64
}

// MarkHost marks the guest pages behind b, which must lie in guest memory
// (a descriptor's buffer or a ring). Bytes outside every region are ignored:
// they are not guest memory.
func (l *DirtyLog) MarkHost(b []byte) {
	if len(b) == 0 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	for i := 0; i < l.n; i++ {
		if p >= l.hostLo[i] && p < l.hostHi[i] {
			n := uintptr(len(b))
			if n > l.hostHi[i]-p {
				n = l.hostHi[i] - p
			}
			l.MarkGPA(l.gpaBase[i]+uint64(p-l.hostLo[i]), uint64(n))
			return
		}
	}
}

// MarkGPA marks the pages of [gpa, gpa+n).
func (l *DirtyLog) MarkGPA(gpa, n uint64) {
	if n == 0 {
		return
	}
	bm := l.m.bitmap
	first := gpa / LogPageSize
	last := (gpa + n - 1) / LogPageSize
	if gpa+n-1 < gpa {
		last = math.MaxUint64 / LogPageSize
	}
	for page := first; page <= last; page++ {
		byteIdx := page / 8
		if byteIdx >= uint64(len(bm)) {
			l.m.over.Add(last - page + 1)
			return
		}
		// Atomic OR on the aligned 32-bit word holding the byte (the
		// mapping starts page-aligned, so the word is inside it).
		bp := unsafe.Pointer(&bm[byteIdx])
		mis := uintptr(bp) & 3
		word := (*uint32)(unsafe.Add(bp, -int(mis)))
		mask := uint32(1) << (mis*8 + uintptr(page%8))
		if atomic.OrUint32(word, mask)&mask == 0 {
			l.m.pages.Add(1)
		}
	}
}

// LogStats are the dirty log's counters.
type LogStats struct {
	Active    bool   // logging is on (LOG_ALL acked and a log given)
	Size      uint64 // bitmap bytes
	Pages     uint64 // pages newly marked (bits set from 0 to 1) since the log was given
	Overflows uint64 // pages that fell outside the bitmap (front-end bug)
}

// openLog maps the SET_LOG_BASE fd: size bytes at offset, MAP_SHARED.
func openLog(l Log, fd int) (*logMapping, error) {
	if l.Size == 0 {
		return nil, fmt.Errorf("%w: SET_LOG_BASE with a zero-size log", ErrPayloadValue)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("SET_LOG_BASE: fstat of the log fd: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: the SET_LOG_BASE fd is not a regular file (mode %#o): give shared file memory (memfd)", ErrPayloadValue, st.Mode)
	}
	if st.Size < 0 || l.Offset > uint64(st.Size) || l.Size > uint64(st.Size)-l.Offset {
		return nil, fmt.Errorf("%w: log of %d bytes at offset %d extends past the end of its file (%d bytes)", ErrPayloadValue, l.Size, l.Offset, st.Size)
	}
	page := uint64(os.Getpagesize())
	aligned := l.Offset &^ (page - 1)
	length := l.Offset - aligned + l.Size
	if length > math.MaxInt || aligned > math.MaxInt64 {
		return nil, fmt.Errorf("%w: log of %d bytes is too large", ErrPayloadValue, l.Size)
	}
	mapping, err := unix.Mmap(fd, int64(aligned), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("SET_LOG_BASE: mmap of the log: %w", err)
	}
	d := l.Offset - aligned
	return &logMapping{mapping: mapping, bitmap: mapping[d : d+l.Size : d+l.Size]}, nil
}

func (m *logMapping) close() {
	if m != nil && m.mapping != nil {
		unix.Munmap(m.mapping)
		m.mapping, m.bitmap = nil, nil
	}
}

// dirtyLog builds the snapshot for the current regions.
func (t *MemoryTable) dirtyLog(m *logMapping) *DirtyLog {
	l := &DirtyLog{m: m, n: t.set.n}
	for i := 0; i < t.set.n; i++ {
		r := &t.set.r[i]
		if len(r.mem) == 0 {
			continue
		}
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(r.mem)))
		l.hostLo[i], l.hostHi[i], l.gpaBase[i] = lo, lo+uintptr(len(r.mem)), r.GuestPhysAddr
	}
	return l
}
