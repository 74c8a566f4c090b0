package virtqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

var le = binary.LittleEndian

// Config describes one split ring as negotiated and translated by the caller.
type Config struct {
	Size              uint16 // power of two, 1..32768
	Desc, Avail, Used []byte // host bytes: 16*Size, 6+2*Size, 6+8*Size (4+2*Size and 4+8*Size suffice without EventIdx)
	EventIdx          bool   // VIRTIO_F_EVENT_IDX negotiated
	Indirect          bool   // VIRTIO_F_INDIRECT_DESC negotiated
	LastAvail         uint16 // SET_VRING_BASE: next avail index to consume
	InOrder           bool   // VIRTIO_F_IN_ORDER negotiated: PushInOrder may write one used entry per run
	// Log, when non-nil, is told about every device write to the used ring
	// (entries, idx, flags, avail_event) after it is made: dirty-page
	// logging for live migration (vhost-user.rst "Dirty pages logging").
	// nil costs one compare per write.
	Log DirtyLogger
}

// DirtyLogger marks the guest pages behind host bytes the device wrote.
type DirtyLogger interface {
	MarkHost(b []byte)
}

// Buffer is one descriptor's bytes in host memory. B has length and capacity
// equal to the descriptor length, so appending to it cannot scribble over
// neighbouring guest memory. The guest may change the bytes at any time.
type Buffer struct {
	B     []byte
	Write bool // device-writable
}

// Chain is one popped descriptor chain.
type Chain struct {
	Head     uint16
	Bufs     []Buffer // reused across Pop calls (append to Bufs[:0]); readable ones come first
	ReadLen  uint32   // sum of readable lengths
	WriteLen uint32   // sum of writable lengths
	// Err is non-nil for a malformed chain (one of the chain sentinel
	// errors); Bufs is then empty and the lengths are 0. Head is still valid
	// and the chain was consumed, so the caller returns it with len 0 and
	// counts a drop.
	Err error
}

// UsedElem is one used ring entry (virtio 1.x §2.7.8): the head of a chain and
// the number of bytes the device wrote into it.
type UsedElem struct{ ID, Len uint32 }

// Split is the device side of one split virtqueue. Not safe for concurrent
// use; one worker goroutine owns it.
type Split struct {
	size     uint16
	mask     uint16
	eventIdx bool
	indirect bool
	desc     []byte
	avail    []byte
	used     []byte
	mem      Memory
	f        ringFields

	lastAvail      uint16 // next avail ring position to consume
	usedIdx        uint16 // next used ring position; published in used.idx by Push
	usedFlags      uint16 // our copy of used.flags (the device owns it)
	signalledUsed  uint16 // usedIdx at the last NeedNotify
	signalledValid bool   // false until the first NeedNotify: its used_event may predate us
	unpushed       int    // chains popped and not yet pushed; bounds Unpop
	broken         error  // ring-fatal error seen; sticky
	fenceWord      uint32 // private word for fullFence

	inOrder bool
	log     DirtyLogger // nil unless dirty logging is on
	full    []uint64    // InOrder only, by head: 1<<32 | WriteLen of a well-formed chain, 0 otherwise (split_inorder.go)
}

// NewSplit checks cfg and returns the device side of the ring. The used index
// is taken from used.idx in guest memory (virtio has no other record of it
// across a device restart); nothing is written to the ring.
func NewSplit(cfg Config, mem Memory) (*Split, error) {
	if cfg.Size == 0 || cfg.Size&(cfg.Size-1) != 0 || cfg.Size > MaxSize {
		return nil, fmt.Errorf("virtqueue: queue size %d is not a power of two in 1..%d", cfg.Size, MaxSize)
	}
	if mem == nil {
		return nil, errors.New("virtqueue: NewSplit needs a Memory to translate descriptor addresses")
	}
	if uint64(len(cfg.Desc)) < DescTableSize(cfg.Size) {
		return nil, fmt.Errorf("virtqueue: descriptor table is %d bytes, a ring of size %d needs %d: check the ring address translation",
			len(cfg.Desc), cfg.Size, DescTableSize(cfg.Size))
	}
	f, err := newRingFields(cfg.Size, cfg.Avail, cfg.Used, cfg.EventIdx)
	if err != nil {
		return nil, err
	}
	q := &Split{
		size:      cfg.Size,
		mask:      cfg.Size - 1,
		eventIdx:  cfg.EventIdx,
		indirect:  cfg.Indirect,
		desc:      cfg.Desc[:DescTableSize(cfg.Size)],
		avail:     cfg.Avail,
		used:      cfg.Used,
		mem:       mem,
		f:         f,
		lastAvail: cfg.LastAvail,
		inOrder:   cfg.InOrder,
		log:       cfg.Log,
	}
	if cfg.InOrder {
		q.full = make([]uint64, cfg.Size)
	}
	flags, idx := loadWord(f.usedWord)
	q.usedIdx = idx
	q.usedFlags = flags & UsedFNoNotify
	q.signalledUsed = idx
	return q, nil
}

// Size is the number of ring entries.
func (q *Split) Size() uint16 { return q.size }

// LastAvail is the next avail index the device will consume (the
// GET_VRING_BASE reply).
func (q *Split) LastAvail() uint16 { return q.lastAvail }

// UsedIdx is the used index the device has published.
func (q *Split) UsedIdx() uint16 { return q.usedIdx }

// Pending returns how many chains the driver has made available that Pop has
// not consumed yet. It fails with ErrAvailIdxJump if avail.idx is more than
// the queue size ahead (the ring is then broken).
func (q *Split) Pending() (int, error) {
	if q.broken != nil {
		return 0, q.broken
	}
	n := q.f.availIdx() - q.lastAvail
	if n > q.size {
		q.broken = ErrAvailIdxJump
		return 0, ErrAvailIdxJump
	}
	return int(n), nil
}

// HasAvail reports whether Pop would return at least one chain (Pending() >
// 0, with the same ErrAvailIdxJump check).
func (q *Split) HasAvail() (bool, error) {
	n, err := q.Pending()
	return n > 0, err
}

// Pop consumes up to len(chains) available chains into chains[:n]. A
// malformed chain is still consumed and reported in its Chain.Err.
//
// err != nil only for ring-fatal errors (ErrAvailIdxJump, ErrHeadIndex): the
// ring is broken, every later Pop and Pending returns the same error, and the
// ring must not be used again. chains[:n] are still the valid chains popped
// before the fault; the caller may complete them.
func (q *Split) Pop(chains []Chain) (n int, err error) {
	avail, err := q.Pending()
	if err != nil || avail == 0 {
		return 0, err
	}
	n = min(avail, len(chains))
	pos := q.lastAvail
	for i := 0; i < n; i++ {
		head := q.availEntry(pos & q.mask)
		if head >= q.size {
			q.broken = ErrHeadIndex
			q.lastAvail = pos
			q.unpushed += i
			return i, ErrHeadIndex
		}
		q.walkChain(&chains[i], head)
		if q.inOrder {
			q.recordInOrder(&chains[i])
		}
		pos++
	}
	q.lastAvail = pos
	q.unpushed += n
	return n, nil
}

// availEntry reads avail.ring[slot]. Entries are plain reads ordered by the
// acquire load of avail.idx in Pending; only ring[0] of a 2-aligned ring
// shares its aligned word with avail.idx, and the driver stores that word
// atomically, so it is read atomically as well.
func (q *Split) availEntry(slot uint16) uint16 {
	if slot == 0 && !q.f.availIdxHi {
		_, hi := loadWord(q.f.availWord)
		return hi
	}
	off := 4 + 2*int(slot)
	return le.Uint16(q.avail[off : off+2])
}

// walkChain follows the chain starting at head into c (virtio 1.x §2.7.5).
// Every descriptor is copied out of guest memory once before it is checked,
// so a guest rewriting the table meanwhile cannot make us act on a value we
// did not check.
func (q *Split) walkChain(c *Chain, head uint16) {
	c.Head = head
	bufs := c.Bufs[:0]
	var readLen, writeLen uint64
	err := error(nil)

	table := q.desc
	// limit is both the number of entries in the current table and the
	// most descriptors a walk through it may visit: visiting more means a
	// loop (virtio 1.x §2.7.5.3.1: no chain longer than the queue size).
	limit := uint32(q.size)
	visited := uint32(0)
	idx := uint32(head)
	inIndirect := false
	for {
		if idx >= limit {
			err = ErrDescIndex
			break
		}
		visited++
		if visited > limit {
			err = ErrChainTooLong
			break
		}
		d := table[idx*DescSize : idx*DescSize+DescSize : idx*DescSize+DescSize]
		addr := le.Uint64(d[0:8])
		length := le.Uint32(d[8:12])
		flags := le.Uint16(d[12:14])
		next := le.Uint16(d[14:16])

		if flags&DescFIndirect != 0 {
			switch {
			case !q.indirect:
				err = ErrIndirectNotNegotiated
			case inIndirect:
				err = ErrNestedIndirect
			case flags&DescFNext != 0:
				err = ErrIndirectNext
			case length == 0 || length%DescSize != 0 || length/DescSize > uint32(q.size):
				err = ErrIndirectLen
			}
			if err != nil {
				break
			}
			t, ok := q.mem.Slice(addr, uint64(length))
			if !ok || uint64(len(t)) < uint64(length) {
				err = ErrDescAddress
				break
			}
			// The WRITE flag of the descriptor naming the table is
			// ignored (virtio 1.x §2.7.5.3.2).
			table = t[:length:length]
			limit = length / DescSize
			visited = 0
			idx = 0
			inIndirect = true
			continue
		}

		if length == 0 {
			err = ErrZeroLen
			break
		}
		write := flags&DescFWrite != 0
		if !write && writeLen != 0 {
			err = ErrWriteBeforeRead
			break
		}
		b, ok := q.mem.Slice(addr, uint64(length))
		if !ok || uint64(len(b)) < uint64(length) {
			err = ErrDescAddress
			break
		}
		bufs = append(bufs, Buffer{B: b[:length:length], Write: write})
		if write {
			writeLen += uint64(length)
		} else {
			readLen += uint64(length)
		}
		if flags&DescFNext == 0 {
			break
		}
		idx = uint32(next)
	}
	// virtio 1.x §2.7.5.2: no chain longer than 2^32 bytes in total.
	if err == nil && readLen+writeLen > math.MaxUint32 {
		err = ErrChainTooLong
	}
	if err != nil {
		clear(bufs) // drop references into guest memory
		c.Bufs = bufs[:0]
		c.ReadLen, c.WriteLen, c.Err = 0, 0, err
		return
	}
	c.Bufs = bufs
	c.ReadLen, c.WriteLen, c.Err = uint32(readLen), uint32(writeLen), nil
}

// Push writes used entries into the used ring, then publishes used.idx once
// for the whole batch (virtio 1.x §2.7.8: len and the entry are written
// before idx). The caller never has more than Size entries outstanding, so a
// batch never overwrites entries the driver has not seen. IDs are not
// checked: they come from Chain.Head.
func (q *Split) Push(used []UsedElem) {
	if len(used) == 0 {
		return
	}
	idx := q.usedIdx
	for _, e := range used {
		off := 4 + 8*int(idx&q.mask)
		b := q.used[off : off+8 : off+8]
		le.PutUint32(b[0:4], e.ID)
		le.PutUint32(b[4:8], e.Len)
		idx++
	}
	q.usedIdx = idx
	q.unpushed = max(q.unpushed-len(used), 0)
	// Release: the entries above become visible no later than the new idx.
	storeWord(q.f.usedWord, q.usedFlags, idx)
	q.logUsed()
}

// logUsed marks the used ring dirty after a write to it (the whole ring:
// at most a few pages, and only while migrating).
func (q *Split) logUsed() {
	if q.log != nil {
		q.log.MarkHost(q.used)
	}
}

// NeedNotify reports whether the driver wants a used-buffer notification
// (call) for the entries pushed since the previous NeedNotify (virtio 1.x
// §2.7.7). With EVENT_IDX it applies vring_need_event to used_event;
// without, it honours avail.flags NO_INTERRUPT. It returns false if nothing
// was pushed since the last call.
func (q *Split) NeedNotify() bool {
	old, newIdx, valid := q.signalledUsed, q.usedIdx, q.signalledValid
	if old == newIdx {
		return false
	}
	q.signalledUsed, q.signalledValid = newIdx, true
	// Order the used.idx store in Push before the load of used_event or
	// avail.flags below. Pairs with the driver's fence between writing
	// used_event/flags and re-reading used.idx: one of the two sides sees
	// the other's store, so no notification is lost.
	fullFence(&q.fenceWord)
	if !q.eventIdx {
		return q.f.availFlagsLoad()&AvailFNoInterrupt == 0
	}
	if !valid {
		// used_event may have been written for an earlier device instance;
		// one spurious call is cheaper than a lost one.
		return true
	}
	return needEvent(load16(q.f.usedEvent), newIdx, old)
}

// DisableNotify asks the driver not to kick while the worker is polling the
// ring (virtio 1.x §2.7.10). Without EVENT_IDX it sets NO_NOTIFY in
// used.flags. With EVENT_IDX it does nothing: avail_event is only moved
// forward by EnableNotify, so once the driver passes it the driver stops
// kicking (the Linux vhost approach, which saves a guest-memory write per
// batch).
func (q *Split) DisableNotify() {
	if q.eventIdx || q.usedFlags&UsedFNoNotify != 0 {
		return
	}
	q.usedFlags |= UsedFNoNotify
	storeWord(q.f.usedWord, q.usedFlags, q.usedIdx)
	q.logUsed()
}

// EnableNotify asks for kicks again before the worker sleeps: it clears
// NO_NOTIFY, or with EVENT_IDX sets avail_event to the next avail index
// (so the driver kicks as soon as it publishes one more chain). It returns
// true if chains became available meanwhile (or the ring is broken); the
// caller must then pop again instead of sleeping, or it may miss the kick.
func (q *Split) EnableNotify() (more bool) {
	if q.broken != nil {
		return true
	}
	if q.eventIdx {
		store16(q.f.availEvent, q.lastAvail)
		q.logUsed()
	} else if q.usedFlags&UsedFNoNotify != 0 {
		q.usedFlags &^= UsedFNoNotify
		storeWord(q.f.usedWord, q.usedFlags, q.usedIdx)
		q.logUsed()
	}
	// Order the avail_event/flags store before re-reading avail.idx. Pairs
	// with the driver's fence between publishing avail.idx and reading
	// avail_event/used.flags: either it sees our request and kicks, or we
	// see its new idx here.
	fullFence(&q.fenceWord)
	return q.f.availIdx() != q.lastAvail
}
