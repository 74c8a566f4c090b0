package virtqueue

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"unsafe"
)

// PackedConfig describes one packed ring (VIRTIO_F_RING_PACKED) as
// negotiated and translated by the caller. In vhost-user, SET_VRING_ADDR's
// desc, avail and used addresses are the descriptor ring, the driver event
// suppression area and the device event suppression area.
type PackedConfig struct {
	Size     uint16 // 1..32768, any value (a packed ring need not be a power of two)
	Desc     []byte // descriptor ring: 16*Size bytes, 4-byte aligned at least (the spec asks 16)
	Driver   []byte // driver event suppression area (read by the device): 4 bytes, 4-byte aligned
	Device   []byte // device event suppression area (written by the device): 4 bytes, 4-byte aligned
	EventIdx bool   // VIRTIO_F_EVENT_IDX negotiated: RING_EVENT_FLAGS_DESC is honoured and used
	Indirect bool   // VIRTIO_F_INDIRECT_DESC negotiated
	InOrder  bool   // VIRTIO_F_IN_ORDER negotiated: PushInOrder may write one used descriptor per run
	// State is where the ring resumes: InitialPackedState for a fresh ring,
	// DecodePackedState(num) after SET_VRING_BASE.
	State PackedState
	// Log, when non-nil, is told about every device write to the ring (used
	// descriptors, the device event suppression area) after it is made, as
	// Config.Log for a split ring. nil costs one compare per write.
	Log DirtyLogger
}

// packedSlot is the device's record of one buffer id while it is in flight.
type packedSlot struct {
	ndesc    uint16 // ring descriptors the buffer took; 0: not in flight
	ok       bool   // the chain was well formed (PushInOrder may skip it)
	writeLen uint32 // its writable bytes (PushInOrder may skip it if fully written)
	pop      uint32 // Pop serial number, so Unpop recognises the buffers it gives back
}

// Packed is the device side of one packed virtqueue (virtio 1.2 §2.8). It
// has the same methods as Split (see Ring); Chain.Head is the buffer id of
// a popped list. Not safe for concurrent use; one worker goroutine owns it.
//
// The device copies each descriptor out of guest memory once, at Pop, and
// never reads it again, so used descriptors it writes later (which overwrite
// descriptors in ring order, not in id order) cannot race with its reads.
type Packed struct {
	size     uint16
	eventIdx bool
	indirect bool
	inOrder  bool
	desc     []byte
	drvEvent *uint32 // {off_wrap, flags} written by the driver
	devEvent *uint32 // {off_wrap, flags} written by us
	devArea  []byte  // the 4 bytes behind devEvent, for log
	log      DirtyLogger
	mem      Memory

	availIdx  uint16 // next descriptor to read
	availWrap bool   // driver wrap counter expected at availIdx
	usedIdx   uint16 // next descriptor to write a used descriptor to
	usedWrap  bool   // our wrap counter at usedIdx

	slots     []packedSlot // by buffer id
	order     []uint16     // ids in pop order, circular; for Unpop
	orderNext int          // next order slot to write
	pops      uint32       // serial number of the next popped buffer
	unpushed  int          // buffers popped and not pushed
	inflight  int          // ring descriptors popped and not pushed

	devOffWrap uint16 // our copy of the device area
	devFlags   uint16

	usedSince      int  // descriptors used since the last NeedNotify
	signalledValid bool // false until the first NeedNotify: the driver's event may predate us
	broken         error
	fenceWord      uint32
}

// NewPacked checks cfg and returns the device side of the ring. Nothing is
// written to guest memory.
func NewPacked(cfg PackedConfig, mem Memory) (*Packed, error) {
	s := cfg.Size
	if s == 0 || s > MaxSize {
		return nil, fmt.Errorf("virtqueue: packed queue size %d is not in 1..%d", s, MaxSize)
	}
	if mem == nil {
		return nil, errors.New("virtqueue: NewPacked needs a Memory to translate descriptor addresses")
	}
	if uint64(len(cfg.Desc)) < PackedRingSize(s) {
		return nil, fmt.Errorf("virtqueue: packed descriptor ring is %d bytes, a ring of size %d needs %d: check the ring address translation",
			len(cfg.Desc), s, PackedRingSize(s))
	}
	for _, a := range [...]struct {
		name string
		b    []byte
		n    int
	}{{"descriptor ring", cfg.Desc, int(PackedRingSize(s))}, {"driver event area", cfg.Driver, EventSuppressSize}, {"device event area", cfg.Device, EventSuppressSize}} {
		if len(a.b) < a.n {
			return nil, fmt.Errorf("virtqueue: packed %s is %d bytes, needs %d: check the ring address translation", a.name, len(a.b), a.n)
		}
		if addrOf(a.b)%4 != 0 {
			return nil, fmt.Errorf("virtqueue: packed %s at host address %#x is not 4-byte aligned (virtio 1.2 §2.8 requires more)", a.name, addrOf(a.b))
		}
	}
	st := cfg.State
	if st.AvailIdx >= s || st.UsedIdx >= s {
		return nil, fmt.Errorf("virtqueue: packed ring state avail %d used %d is outside a ring of size %d", st.AvailIdx, st.UsedIdx, s)
	}
	q := &Packed{
		size:      s,
		eventIdx:  cfg.EventIdx,
		indirect:  cfg.Indirect,
		inOrder:   cfg.InOrder,
		desc:      cfg.Desc[:PackedRingSize(s):PackedRingSize(s)],
		drvEvent:  wordAt(cfg.Driver, 0),
		devEvent:  wordAt(cfg.Device, 0),
		devArea:   cfg.Device[:EventSuppressSize:EventSuppressSize],
		log:       cfg.Log,
		mem:       mem,
		availIdx:  st.AvailIdx,
		availWrap: st.AvailWrap,
		usedIdx:   st.UsedIdx,
		usedWrap:  st.UsedWrap,
		slots:     make([]packedSlot, s),
		order:     make([]uint16, s),
	}
	q.devOffWrap, q.devFlags = loadWord(q.devEvent)
	return q, nil
}

// Size is the number of ring entries.
func (q *Packed) Size() uint16 { return q.size }

// State is the current ring state (the GET_VRING_BASE reply is
// State().Encode(), see VringBase).
func (q *Packed) State() PackedState {
	return PackedState{AvailIdx: q.availIdx, AvailWrap: q.availWrap, UsedIdx: q.usedIdx, UsedWrap: q.usedWrap}
}

// VringBase is the GET_VRING_BASE reply: State().Encode().
func (q *Packed) VringBase() uint32 { return q.State().Encode() }

// LastAvail is the low half of VringBase: the next descriptor to read in
// bits 0-14 and the avail wrap counter in bit 15.
func (q *Packed) LastAvail() uint16 { return uint16(q.VringBase()) }

// UsedIdx is the high half of VringBase: the next used descriptor position
// in bits 0-14 and the used wrap counter in bit 15.
func (q *Packed) UsedIdx() uint16 { return uint16(q.VringBase() >> 16) }

// descWord is the aligned word {id, flags} of descriptor pos.
func (q *Packed) descWord(pos uint16) *uint32 {
	return wordPtr(q.desc, int(pos)*DescSize+12)
}

// wordPtr is wordAt without touching the memory: b[off:off+4] only checks
// the bounds, while wordAt's probe is a load, which the race detector counts
// as a racing read of a word the other side stores atomically.
func wordPtr(b []byte, off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&b[off : off+4 : off+4][0]))
}

// availBits returns the AVAIL/USED bits an available descriptor carries
// under driver wrap counter wrap.
func availBits(wrap bool) uint16 {
	if wrap {
		return DescFAvail
	}
	return DescFUsed
}

func isAvail(flags uint16, wrap bool) bool {
	return flags&(DescFAvail|DescFUsed) == availBits(wrap)
}

// headAvail reports whether the descriptor at availIdx is available and
// returns its {id, flags} word (acquire: its contents and those of the rest
// of its list are visible once the flags are).
func (q *Packed) headAvail() (id, flags uint16, ok bool) {
	id, flags = loadWord(q.descWord(q.availIdx))
	return id, flags, isAvail(flags, q.availWrap)
}

// Pending returns how many buffers the driver has made available that Pop
// has not consumed yet. Unlike Split.Pending it walks the descriptor flags,
// so it costs one load per available descriptor. A list that does not end is
// counted as one buffer; Pop then reports ErrChainUnterminated.
func (q *Packed) Pending() (int, error) {
	if q.broken != nil {
		return 0, q.broken
	}
	n := 0
	pos, wrap := q.availIdx, q.availWrap
	inList := false
	for seen := 0; seen < int(q.size); seen++ {
		_, flags := loadWord(q.descWord(pos))
		if !isAvail(flags, wrap) {
			if inList {
				n++ // unterminated: Pop reports it
			}
			return n, nil
		}
		if flags&DescFNext == 0 {
			n++
			inList = false
		} else {
			inList = true
		}
		if pos++; pos == q.size {
			pos, wrap = 0, !wrap
		}
	}
	if inList {
		n++
	}
	return n, nil
}

// HasAvail reports whether the descriptor at the next avail position is
// available: one load, where Pending walks every available descriptor. A
// broken ring reports its error.
func (q *Packed) HasAvail() (bool, error) {
	if q.broken != nil {
		return false, q.broken
	}
	_, _, ok := q.headAvail()
	return ok, nil
}

// Pop consumes up to len(chains) available buffers into chains[:n], in
// ring order. Chain.Head is the buffer id (from the last descriptor of each
// list). A malformed list (one of the chain sentinel errors) is still
// consumed and reported in its Chain.Err; the caller returns its id with
// length 0 and counts a drop.
//
// err != nil only for ring-fatal errors (ErrChainUnterminated, ErrBufferID,
// ErrBufferIDInUse): the ring is broken, every later Pop and Pending returns
// the same error, and the ring must not be used again. chains[:n] are the
// valid buffers popped before the fault; the caller may complete them.
func (q *Packed) Pop(chains []Chain) (n int, err error) {
	if q.broken != nil {
		return 0, q.broken
	}
	// The positions and counters live in locals for the batch.
	pos, wrap := q.availIdx, q.availWrap
	descs := 0
	for n < len(chains) {
		id, flags := loadWord(q.descWord(pos)) // acquire: the list is complete
		if !isAvail(flags, wrap) {
			break
		}
		nd, err := q.walk(&chains[n], pos, wrap, id, flags)
		if err != nil {
			q.broken = err
			c := &chains[n]
			clear(c.Bufs)
			c.Bufs = c.Bufs[:0]
			c.ReadLen, c.WriteLen, c.Err = 0, 0, nil
			break
		}
		if pos += uint16(nd); pos >= q.size {
			pos -= q.size
			wrap = !wrap
		}
		descs += nd
		n++
	}
	q.availIdx, q.availWrap = pos, wrap
	q.inflight += descs
	q.unpushed += n
	return n, q.broken
}

// walk reads the list starting at pos (driver wrap counter wrap), whose
// first {id, flags} word was already loaded, into c (virtio 1.2 §2.8:
// NEXT-linked descriptors are consecutive in the ring; the buffer id is in
// the last). A malformed element sets c.Err and the rest of the list is only
// scanned for its end. It returns a ring-fatal error, or the number of
// descriptors the list takes after recording its id as in flight; the
// caller moves the avail position.
func (q *Packed) walk(c *Chain, pos uint16, wrap bool, id, flags uint16) (int, error) {
	bufs := c.Bufs[:0]
	var readLen, writeLen uint64
	var cerr error
	ndesc := 0
	for {
		if ndesc > 0 {
			id, flags = loadWord(q.descWord(pos))
			if !isAvail(flags, wrap) {
				c.Bufs = bufs
				return 0, ErrChainUnterminated
			}
		}
		ndesc++
		if cerr == nil {
			d := q.desc[int(pos)*DescSize : int(pos)*DescSize+12 : int(pos)*DescSize+12]
			addr := le.Uint64(d[0:8])
			length := le.Uint32(d[8:12])
			if flags&DescFIndirect != 0 {
				switch {
				case !q.indirect:
					cerr = ErrIndirectNotNegotiated
				case flags&DescFNext != 0 || ndesc > 1:
					cerr = ErrIndirectNext
				default:
					bufs, cerr = q.indirectTable(bufs, addr, length, &readLen, &writeLen)
				}
			} else {
				// element, by hand: this is the hot path.
				write := flags&DescFWrite != 0
				switch {
				case length == 0:
					cerr = ErrZeroLen
				case !write && writeLen != 0:
					cerr = ErrWriteBeforeRead
				default:
					b, ok := q.mem.Slice(addr, uint64(length))
					if !ok || uint64(len(b)) < uint64(length) {
						cerr = ErrDescAddress
						break
					}
					bufs = append(bufs, Buffer{B: b[:length:length], Write: write})
					if write {
						writeLen += uint64(length)
					} else {
						readLen += uint64(length)
					}
				}
			}
		}
		if pos++; pos == q.size {
			pos, wrap = 0, !wrap
		}
		if flags&DescFNext == 0 {
			break
		}
		if ndesc == int(q.size) {
			c.Bufs = bufs
			return 0, ErrChainUnterminated
		}
	}
	if id >= q.size {
		c.Bufs = bufs
		return 0, ErrBufferID
	}
	s := &q.slots[id]
	if s.ndesc != 0 {
		c.Bufs = bufs
		return 0, ErrBufferIDInUse
	}
	// As for split rings (virtio 1.x §2.7.5.2): no buffer longer than
	// 2^32-1 bytes, which a 32-bit used length could not describe.
	if cerr == nil && readLen+writeLen > math.MaxUint32 {
		cerr = ErrChainTooLong
	}
	q.order[q.orderNext] = id
	if q.orderNext++; q.orderNext == len(q.order) {
		q.orderNext = 0
	}
	c.Head = id
	pop := q.pops
	q.pops++
	if cerr != nil {
		clear(bufs) // drop references into guest memory
		c.Bufs = bufs[:0]
		c.ReadLen, c.WriteLen, c.Err = 0, 0, cerr
		*s = packedSlot{ndesc: uint16(ndesc), pop: pop}
		return ndesc, nil
	}
	c.Bufs = bufs
	c.ReadLen, c.WriteLen, c.Err = uint32(readLen), uint32(writeLen), nil
	*s = packedSlot{ndesc: uint16(ndesc), ok: true, writeLen: uint32(writeLen), pop: pop}
	return ndesc, nil
}

// element appends one buffer element after checking it.
func (q *Packed) element(bufs []Buffer, addr uint64, length uint32, write bool, readLen, writeLen *uint64) ([]Buffer, error) {
	if length == 0 {
		return bufs, ErrZeroLen
	}
	if !write && *writeLen != 0 {
		return bufs, ErrWriteBeforeRead
	}
	b, ok := q.mem.Slice(addr, uint64(length))
	if !ok || uint64(len(b)) < uint64(length) {
		return bufs, ErrDescAddress
	}
	bufs = append(bufs, Buffer{B: b[:length:length], Write: write})
	if write {
		*writeLen += uint64(length)
	} else {
		*readLen += uint64(length)
	}
	return bufs, nil
}

// indirectTable appends the elements of an indirect table (virtio 1.2 §2.8,
// Indirect Flag): its entries are used in table order, WRITE is their only
// meaningful flag (NEXT and the id are ignored), and an INDIRECT entry is
// refused.
func (q *Packed) indirectTable(bufs []Buffer, addr uint64, length uint32, readLen, writeLen *uint64) ([]Buffer, error) {
	if length == 0 || length%DescSize != 0 || length/DescSize > uint32(q.size) {
		return bufs, ErrIndirectLen
	}
	t, ok := q.mem.Slice(addr, uint64(length))
	if !ok || uint64(len(t)) < uint64(length) {
		return bufs, ErrDescAddress
	}
	t = t[:length:length]
	for off := 0; off < len(t); off += DescSize {
		d := t[off : off+DescSize : off+DescSize]
		eaddr := le.Uint64(d[0:8])
		elen := le.Uint32(d[8:12])
		eflags := le.Uint16(d[14:16])
		if eflags&DescFIndirect != 0 {
			return bufs, ErrNestedIndirect
		}
		var err error
		if bufs, err = q.element(bufs, eaddr, elen, eflags&DescFWrite != 0, readLen, writeLen); err != nil {
			return bufs, err
		}
	}
	return bufs, nil
}

// usedWriter writes a batch of used descriptors, holding back the flags of
// the first until the end so the driver, which polls that position, sees the
// batch complete or not at all (virtio 1.2 §2.8, Multi-buffer requests). It
// keeps the used position in locals and hands it back to the ring in finish.
//
// Only that last store needs to be atomic (a release): the driver reads the
// used descriptors in ring order, so it reads any other descriptor of the
// batch only after it has seen the first one's flags, and by then every
// store before that one is visible to it (Go memory model; x86-TSO; STLR on
// arm64). The others are plain stores, each a single aligned 32-bit store
// the compiler does not split, so a driver polling early sees the old word
// or the new one, never a mix. This saves a locked instruction (XCHG on
// amd64) per used descriptor; the race detector checks the argument in
// TestPackedConcurrentDriverDevice.
type usedWriter struct {
	q          *Packed
	pos        uint16
	wrap       bool
	descs      int // descriptors skipped past
	bufs       int // buffers returned
	first      *uint32
	firstDesc  []byte
	firstID    uint16
	firstFlags uint16
}

func (q *Packed) usedWriter() usedWriter {
	return usedWriter{q: q, pos: q.usedIdx, wrap: q.usedWrap}
}

// put writes one used descriptor for id at the used position and moves the
// position past skip descriptors. Its flags have AVAIL and USED both equal
// to the device wrap counter, and WRITE if the device wrote anything.
func (w *usedWriter) put(id uint16, length uint32, skip int) {
	q := w.q
	off := int(w.pos) * DescSize
	d := q.desc[off : off+DescSize : off+DescSize]
	le.PutUint32(d[8:12], length)
	var flags uint16
	if w.wrap {
		flags = DescFAvail | DescFUsed
	}
	if length != 0 {
		flags |= DescFWrite
	}
	word := (*uint32)(unsafe.Pointer(&d[12]))
	if w.first == nil {
		w.first, w.firstDesc, w.firstID, w.firstFlags = word, d, id, flags
	} else {
		storePlain(word, id, flags) // published by the first one's store
		if q.log != nil {
			q.log.MarkHost(d)
		}
	}
	p := int(w.pos) + skip
	if p >= int(q.size) {
		p -= int(q.size)
		w.wrap = !w.wrap
	}
	w.pos = uint16(p)
	w.descs += skip
}

// storePlain stores the two little-endian halves of the aligned word at p
// with a plain store (see usedWriter for when that is enough).
func storePlain(p *uint32, lo, hi uint16) {
	v := uint32(lo) | uint32(hi)<<16
	if hostBigEndian {
		v = bits.ReverseBytes32(v)
	}
	*p = v
}

// finish publishes the batch and the new used position.
func (w *usedWriter) finish() {
	q := w.q
	if w.first != nil {
		storeWord(w.first, w.firstID, w.firstFlags) // release: the whole batch
		if q.log != nil {
			q.log.MarkHost(w.firstDesc)
		}
	}
	q.usedIdx, q.usedWrap = w.pos, w.wrap
	q.usedSince += w.descs
	q.inflight -= w.descs
	q.unpushed -= w.bufs
}

// take looks up a buffer id the caller returns and marks it no longer in
// flight. ok is false for an id that is not in flight (a caller bug).
func (q *Packed) take(id uint32) (s packedSlot, ok bool) {
	if id >= uint32(q.size) {
		return s, false
	}
	p := &q.slots[id]
	s = *p
	if s.ndesc == 0 {
		return s, false
	}
	p.ndesc = 0
	return s, true
}

// Push writes one used descriptor per element, in the order given, which
// may differ from the order Pop returned them (virtio 1.2 §2.8: used
// descriptors are written in the order buffers complete). Each ID must be
// the Head of a chain popped and not yet pushed; other IDs are ignored. Len
// is the number of bytes written into the buffer (0 for a device-readable
// one).
func (q *Packed) Push(used []UsedElem) {
	w := q.usedWriter()
	for _, e := range used {
		s, ok := q.take(e.ID)
		if !ok {
			continue
		}
		w.bufs++
		w.put(uint16(e.ID), e.Len, int(s.ndesc))
	}
	w.finish()
}

// PushInOrder returns buffers in the order Pop returned them (the caller
// guarantees it, as VIRTIO_F_IN_ORDER requires). With InOrder negotiated it
// writes one used descriptor for each run of buffers with the id and length
// of the run's last buffer and skips the run's descriptors (virtio 1.2 §2.8,
// In-order use of descriptors): the driver takes the skipped buffers as
// completely used, so a run only continues past a buffer whose Len equals
// its whole writable length (0 for a device-readable buffer) and whose chain
// was well formed. Without InOrder it is Push.
func (q *Packed) PushInOrder(used []UsedElem) {
	if !q.inOrder {
		q.Push(used)
		return
	}
	w := q.usedWriter()
	run, pending := 0, false
	var lastID uint16
	var lastLen uint32
	for _, e := range used {
		s, ok := q.take(e.ID)
		if !ok {
			continue
		}
		w.bufs++
		run += int(s.ndesc)
		lastID, lastLen = uint16(e.ID), e.Len
		if s.ok && s.writeLen == e.Len {
			pending = true // the run may go on past this buffer
			continue
		}
		w.put(lastID, lastLen, run)
		run, pending = 0, false
	}
	if pending {
		w.put(lastID, lastLen, run)
	}
	w.finish()
}

// NeedNotify reports whether the driver wants a used buffer notification
// for the descriptors used since the previous NeedNotify (virtio 1.2 §2.8,
// Driver and Device Event Suppression): never with RING_EVENT_FLAGS_DISABLE,
// always with ENABLE, and with DESC (only honoured with EVENT_IDX) when the
// descriptor at the driver's event offset and wrap counter was among those
// used, the packed form of vring_need_event. It returns false if nothing was
// pushed since the last call.
func (q *Packed) NeedNotify() bool {
	since := q.usedSince
	if since == 0 {
		return false
	}
	q.usedSince = 0
	valid := q.signalledValid
	q.signalledValid = true
	// Order the used flags stores in Push before the load of the driver
	// event area; pairs with the driver's fence between writing it and
	// re-reading the next used descriptor (see access.go, point 3).
	fullFence(&q.fenceWord)
	offWrap, flags := loadWord(q.drvEvent)
	switch flags & 3 {
	case RingEventFlagsDisable:
		return false
	case RingEventFlagsDesc:
		if !q.eventIdx {
			return true // DESC without EVENT_IDX is invalid: notify, never lose one
		}
		if !valid {
			// The event offset may have been written for an earlier
			// device instance; one spurious call beats a lost one.
			return true
		}
		return eventPassed(offWrap, int(q.usedIdx), q.usedWrap, since, int(q.size))
	}
	return true // ENABLE, or the reserved value 3
}

// eventPassed reports whether the descriptor named by an event suppression
// offWrap lies among the since descriptors just before position pos in the
// current lap (wrap counter wrap). Positions are made linear around the
// current lap: an event whose wrap bit differs from wrap lies in the previous
// lap. It is vring_need_event for ring positions that wrap at size.
func eventPassed(offWrap uint16, pos int, wrap bool, since, size int) bool {
	ev := int(offWrap &^ RingEventWrap)
	if (offWrap&RingEventWrap != 0) != wrap {
		ev -= size
	}
	return pos-since <= ev && ev < pos
}

// DisableNotify asks the driver not to send available buffer notifications
// while the worker polls the ring: RING_EVENT_FLAGS_DISABLE in the device
// area, written only when it was not there already (so once per sleep, not
// per batch).
func (q *Packed) DisableNotify() {
	if q.devFlags == RingEventFlagsDisable {
		return
	}
	q.devFlags = RingEventFlagsDisable
	storeWord(q.devEvent, q.devOffWrap, q.devFlags)
	q.logDevArea()
}

// logDevArea marks the device event suppression area dirty after a write.
func (q *Packed) logDevArea() {
	if q.log != nil {
		q.log.MarkHost(q.devArea)
	}
}

// EnableNotify asks for notifications again before the worker sleeps:
// RING_EVENT_FLAGS_ENABLE, or with EVENT_IDX RING_EVENT_FLAGS_DESC at the
// next descriptor to read (so the driver notifies as soon as it makes one
// more buffer available). It returns true if a buffer became available
// meanwhile (or the ring is broken); the caller must then pop again instead
// of sleeping, or it may miss the notification.
func (q *Packed) EnableNotify() (more bool) {
	if q.broken != nil {
		return true
	}
	if q.eventIdx {
		q.devOffWrap = q.availIdx
		if q.availWrap {
			q.devOffWrap |= RingEventWrap
		}
		q.devFlags = RingEventFlagsDesc
	} else {
		q.devFlags = RingEventFlagsEnable
	}
	storeWord(q.devEvent, q.devOffWrap, q.devFlags)
	q.logDevArea()
	// Order the device area store before re-reading the next descriptor;
	// pairs with the driver's fence between making a descriptor available
	// and reading the device area.
	fullFence(&q.fenceWord)
	_, _, ok := q.headAvail()
	return ok
}

// Unpop gives back the n most recently popped buffers, which the device has
// not pushed: the next Pop returns them again and the ring state (VringBase)
// no longer counts them. As Split.Unpop, it does nothing if n is more than
// the buffers popped and not pushed, or if one of the last n popped was
// pushed already.
func (q *Packed) Unpop(n int) {
	if n <= 0 || n > q.unpushed {
		return
	}
	descs := 0
	k := q.orderNext
	for i := 0; i < n; i++ {
		if k--; k < 0 {
			k = len(q.order) - 1
		}
		// Still in flight, and from the i-th most recent Pop rather than
		// an earlier one under a reused id.
		s := q.slots[q.order[k]]
		if s.ndesc == 0 || s.pop != q.pops-1-uint32(i) {
			return
		}
		descs += int(s.ndesc)
	}
	if descs > q.inflight {
		return
	}
	for i := 0; i < n; i++ {
		if q.orderNext--; q.orderNext < 0 {
			q.orderNext = len(q.order) - 1
		}
		q.slots[q.order[q.orderNext]].ndesc = 0
	}
	p := int(q.availIdx) - descs
	if p < 0 {
		p += int(q.size)
		q.availWrap = !q.availWrap
	}
	q.availIdx = uint16(p)
	q.unpushed -= n
	q.inflight -= descs
	q.pops -= uint32(n)
}
