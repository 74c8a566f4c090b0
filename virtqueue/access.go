package virtqueue

import (
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// Memory ordering between the driver and the device (virtio 1.x §2.7.13 and
// §2.7.14 ask for "a suitable memory barrier" at four points):
//
//  1. Driver: descriptors and avail.ring entries are written before avail.idx.
//     Device: avail.idx is read before the entries it exposes.
//     avail.idx is loaded and stored with sync/atomic on the aligned 32-bit
//     word that contains it, which is a release store / acquire load in the
//     Go memory model; plain accesses before the store are visible after the
//     load.
//  2. Device: used.ring elements are written before used.idx; driver reads
//     used.idx before the elements. Same mechanism on the used.flags+idx word
//     (the used ring is 4-byte aligned by spec, and the device owns both
//     halves, so storing them together is allowed).
//  3. A store followed by a load of a different location (Dekker pattern),
//     needed for notification suppression: the device publishes used.idx and
//     then reads used_event/avail.flags, while the driver writes used_event and
//     then re-reads used.idx; likewise for avail.idx vs avail_event/used.flags.
//     Neither acquire nor release orders store->load, so these places call
//     fullFence, an atomic read-modify-write (LOCK XADD on amd64, a full
//     barrier; LDADDAL on arm64, fully ordered). Each ring has its own fence
//     word so that queues served by different threads do not bounce one
//     shared cache line.
//  4. Fields with no aligned 32-bit word of their own (the ring-tail event
//     indices, and avail.flags when the avail ring is only 2-aligned) use
//     load16/store16, see half_norace.go.

// fullFence is a full memory barrier: every memory access before it in
// program order is ordered before every access after it. w is any word
// private to the caller.
func fullFence(w *uint32) { atomic.AddUint32(w, 1) }

// fromLE16 converts between a little-endian ring field and a host value (the
// conversion is its own inverse).
func fromLE16(v uint16) uint16 {
	if hostBigEndian {
		return bits.ReverseBytes16(v)
	}
	return v
}

// loadWord atomically loads the aligned 32-bit word at p and returns its two
// little-endian 16-bit halves: lo at byte offset 0, hi at byte offset 2.
func loadWord(p *uint32) (lo, hi uint16) {
	v := atomic.LoadUint32(p)
	if hostBigEndian {
		v = bits.ReverseBytes32(v)
	}
	return uint16(v), uint16(v >> 16)
}

// storeWord atomically stores two little-endian 16-bit halves into the
// aligned 32-bit word at p.
func storeWord(p *uint32, lo, hi uint16) {
	v := uint32(lo) | uint32(hi)<<16
	if hostBigEndian {
		v = bits.ReverseBytes32(v)
	}
	atomic.StoreUint32(p, v)
}

// ringFields locates the shared fields of one split ring that need ordered
// access. Driver and Split both build one over the same bytes, so the two
// sides always agree on which accesses are word-atomic.
type ringFields struct {
	// availWord is the aligned word holding avail.idx. If availIdxHi, the ring
	// is 4-aligned and the word is {flags, idx}; otherwise the ring is
	// 2-aligned only and the word is {idx, ring[0]}, and availFlags points at
	// avail.flags on its own.
	availWord  *uint32
	availIdxHi bool
	availFlags *uint16
	usedWord   *uint32 // {used.flags, used.idx}
	usedEvent  *uint16 // avail ring tail; nil without EVENT_IDX
	availEvent *uint16 // used ring tail; nil without EVENT_IDX
}

func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func wordAt(b []byte, off int) *uint32 {
	_ = b[off+3]
	return (*uint32)(unsafe.Pointer(&b[off]))
}

func halfAt(b []byte, off int) *uint16 {
	_ = b[off+1]
	return (*uint16)(unsafe.Pointer(&b[off]))
}

// newRingFields checks the ring sizes and alignment (virtio 1.x §2.7: avail
// ring 2, used ring 4) and locates the shared fields.
func newRingFields(size uint16, avail, used []byte, eventIdx bool) (ringFields, error) {
	var f ringFields
	need := 4 + 2*int(size)
	needUsed := 4 + 8*int(size)
	if eventIdx {
		need += 2
		needUsed += 2
	}
	if len(avail) < need {
		return f, fmt.Errorf("virtqueue: avail ring is %d bytes, a ring of size %d needs %d: check the ring address translation", len(avail), size, need)
	}
	if len(used) < needUsed {
		return f, fmt.Errorf("virtqueue: used ring is %d bytes, a ring of size %d needs %d: check the ring address translation", len(used), size, needUsed)
	}
	if addrOf(avail)%2 != 0 {
		return f, fmt.Errorf("virtqueue: avail ring at host address %#x is not 2-byte aligned (virtio 1.x §2.7 requires it)", addrOf(avail))
	}
	if addrOf(used)%4 != 0 {
		return f, fmt.Errorf("virtqueue: used ring at host address %#x is not 4-byte aligned (virtio 1.x §2.7 requires it)", addrOf(used))
	}
	if addrOf(avail)%4 == 0 {
		f.availWord = wordAt(avail, 0)
		f.availIdxHi = true
	} else {
		f.availWord = wordAt(avail, 2)
		f.availFlags = halfAt(avail, 0)
	}
	f.usedWord = wordAt(used, 0)
	if eventIdx {
		f.usedEvent = halfAt(avail, 4+2*int(size))
		f.availEvent = halfAt(used, 4+8*int(size))
	}
	return f, nil
}

// availIdx atomically loads avail.idx (acquire).
func (f *ringFields) availIdx() uint16 {
	lo, hi := loadWord(f.availWord)
	if f.availIdxHi {
		return hi
	}
	return lo
}

// availFlagsLoad reads avail.flags.
func (f *ringFields) availFlagsLoad() uint16 {
	if f.availIdxHi {
		lo, _ := loadWord(f.availWord)
		return lo
	}
	return load16(f.availFlags)
}

// needEvent is vring_need_event from virtio 1.x §2.7.7/§2.7.10: with EVENT_IDX
// the other side wants a notification iff the index moved from old to new
// passed event, i.e. event lies in [old, new) in 16-bit modular arithmetic.
func needEvent(event, newIdx, old uint16) bool {
	return newIdx-event-1 < newIdx-old
}
