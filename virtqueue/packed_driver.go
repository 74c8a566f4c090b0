package virtqueue

import (
	"errors"
	"fmt"
	"unsafe"
)

// PackedDriver is the driver side of a packed ring (what a guest's virtio
// driver does, virtio 1.2 §2.8), for tests and for the Go front-end. It lays
// the ring out in a []byte that stands for guest memory, hands out buffer
// ids, makes buffers available with the driver ring wrap counter, decides
// whether to notify the device, and reaps used descriptors, skipping the
// descriptors of each used buffer (and, with IN_ORDER, of every buffer the
// device skipped). Raw writers let tests play a malicious guest.
//
//	mem := make([]byte, 1<<20)
//	d, err := NewPackedDriver(PackedDriverConfig{Size: 100, Mem: mem, Base: base,
//		Rings: LayoutPacked(0, 100)})
//	dev, err := NewPacked(d.DeviceConfig(), d.Memory())
//	id, err := d.Add([][]byte{mem[4096 : 4096+1514]}, nil)
//	if d.Publish() { kick.Signal() }
//	n := d.Reap(used)
//
// As with Driver, buffers added become visible to the device at the next
// Publish: Add writes every descriptor but the first one's flags, and
// Publish stores those with one release store. The device polls the ring in
// order, so the flags of later buffers, written with plain stores, are
// visible to it once it has seen that first one (the same argument as for
// the device's used batches, see usedWriter). PostRaw makes its
// descriptors available at once.
//
// A PackedDriver is not safe for concurrent use, but it may run in a
// different goroutine from the device it talks to (see access.go).
type PackedDriver struct {
	driverMem
	eventIdx bool
	inOrder  bool
	rings    PackedLayout
	desc     []byte
	drvEvent *uint32 // written by us
	devEvent *uint32 // written by the device

	availIdx  uint16 // next descriptor to fill
	availWrap bool   // driver ring wrap counter
	usedIdx   uint16 // next used descriptor to read
	usedWrap  bool   // device wrap counter expected there
	numFree   int    // free ring descriptors
	published int    // descriptors made available since the last Publish

	pend             *uint32 // first head not yet made available; Publish stores it
	pendID, pendFlag uint16

	freeIDs []uint16 // stack of free buffer ids
	ndesc   []uint16 // by id: ring descriptors of the buffer in flight, 0 if free
	wlen    []uint32 // by id: writable bytes (the length reported for a skipped buffer)

	fifo      []uint16 // InOrder: ids in flight in the order they were made available
	fifoHead  int
	fifoLen   int
	skipDescs int // InOrder: descriptors of a used batch reported so far

	drvOffWrap, drvFlags uint16 // our copy of the driver event area

	err       error
	fenceWord uint32
}

// PackedDriverConfig places a packed ring, and optionally indirect tables,
// in guest memory.
type PackedDriverConfig struct {
	Size     uint16       // queue size, 1..32768
	Mem      []byte       // guest memory: ring, indirect tables and buffers live here
	Base     uint64       // guest address of Mem[0]
	Rings    PackedLayout // offsets in Mem, e.g. LayoutPacked(0, Size); End is ignored
	EventIdx bool         // VIRTIO_F_EVENT_IDX negotiated
	InOrder  bool         // VIRTIO_F_IN_ORDER negotiated: Reap expands a used batch

	// IndirectMax > 0 enables AddIndirect: buffer id i, when it is an
	// indirect one, uses the table of IndirectMax entries at
	// Mem[IndirectOff+i*IndirectMax*16:] (IndirectAreaSize(Size, IndirectMax)
	// bytes).
	IndirectOff uint64
	IndirectMax uint16
}

// ErrDriverBadUsed is PackedDriver.Err after the device wrote a used
// descriptor whose id is not in flight: the driver cannot tell how many
// descriptors to skip, so it stops reaping.
var ErrDriverBadUsed = errors.New("virtqueue: driver: used descriptor with a buffer id that is not in flight")

// NewPackedDriver checks cfg, zeroes the ring and both event areas (virtio
// 1.2 §2.8: the descriptor ring is zero-initialised) and returns a driver
// with every descriptor and id free and both wrap counters 1.
func NewPackedDriver(cfg PackedDriverConfig) (*PackedDriver, error) {
	s := cfg.Size
	if s == 0 || s > MaxSize {
		return nil, fmt.Errorf("virtqueue: driver: packed queue size %d is not in 1..%d", s, MaxSize)
	}
	r := cfg.Rings
	m, err := newDriverMem("PackedDriverConfig", s, cfg.Mem, cfg.Base, []driverArea{
		{"descriptor ring", r.Desc, PackedRingSize(s), 16},
		{"driver event area", r.Driver, EventSuppressSize, 4},
		{"device event area", r.Device, EventSuppressSize, 4},
	}, true, cfg.IndirectOff, cfg.IndirectMax)
	if err != nil {
		return nil, err
	}
	d := &PackedDriver{
		driverMem: m,
		eventIdx:  cfg.EventIdx,
		inOrder:   cfg.InOrder,
		rings:     r,
		desc:      cfg.Mem[r.Desc : r.Desc+PackedRingSize(s) : r.Desc+PackedRingSize(s)],
		drvEvent:  wordAt(cfg.Mem, int(r.Driver)),
		devEvent:  wordAt(cfg.Mem, int(r.Device)),
		availWrap: true,
		usedWrap:  true,
		numFree:   int(s),
		freeIDs:   make([]uint16, s),
		ndesc:     make([]uint16, s),
		wlen:      make([]uint32, s),
	}
	if cfg.InOrder {
		d.fifo = make([]uint16, s)
	}
	for i := range d.freeIDs {
		d.freeIDs[i] = s - 1 - uint16(i) // id 0 on top
	}
	clear(d.desc)
	storeWord(d.drvEvent, 0, 0)
	storeWord(d.devEvent, 0, 0)
	return d, nil
}

// NumFree is the number of free ring descriptors.
func (d *PackedDriver) NumFree() int { return d.numFree }

// NumFreeIDs is the number of free buffer ids.
func (d *PackedDriver) NumFreeIDs() int { return len(d.freeIDs) }

// Err is ErrDriverBadUsed once Reap met a used descriptor it cannot account
// for; Reap returns nothing more after that.
func (d *PackedDriver) Err() error { return d.err }

// RingAddrs returns the guest addresses of the descriptor ring and the
// driver and device event suppression areas (what SET_VRING_ADDR passes as
// desc, avail and used).
func (d *PackedDriver) RingAddrs() (desc, driver, device uint64) {
	return d.base + d.rings.Desc, d.base + d.rings.Driver, d.base + d.rings.Device
}

// DeviceConfig returns the PackedConfig an in-process device uses for this
// ring: same EventIdx and InOrder, Indirect iff IndirectMax > 0, and the
// initial state.
func (d *PackedDriver) DeviceConfig() PackedConfig {
	return PackedConfig{
		Size:     d.size,
		Desc:     d.desc,
		Driver:   d.mem[d.rings.Driver : d.rings.Driver+EventSuppressSize : d.rings.Driver+EventSuppressSize],
		Device:   d.mem[d.rings.Device : d.rings.Device+EventSuppressSize : d.rings.Device+EventSuppressSize],
		EventIdx: d.eventIdx,
		Indirect: d.indirectMax > 0,
		InOrder:  d.inOrder,
		State:    InitialPackedState,
	}
}

// Add makes one buffer available: the elements of out (device-readable)
// then those of in (device-writable), as a NEXT-linked list of consecutive
// descriptors. It returns the buffer id, which Reap reports in UsedElem.ID.
func (d *PackedDriver) Add(out, in [][]byte) (id uint16, err error) {
	if err := d.checkBufs(out, in); err != nil {
		return 0, err
	}
	return d.addDirect(len(out), len(in), d.bufSeg(out, in))
}

// AddSegs is Add with elements given by guest address; they are not checked.
func (d *PackedDriver) AddSegs(out, in []Seg) (id uint16, err error) {
	return d.addDirect(len(out), len(in), segSeg(out, in))
}

// AddIndirect makes one buffer available as a single INDIRECT descriptor
// pointing at the id's indirect table.
func (d *PackedDriver) AddIndirect(out, in [][]byte) (id uint16, err error) {
	if err := d.checkBufs(out, in); err != nil {
		return 0, err
	}
	return d.addIndirect(len(out), len(in), d.bufSeg(out, in))
}

// AddIndirectSegs is AddIndirect with elements given by guest address; they
// are not checked.
func (d *PackedDriver) AddIndirectSegs(out, in []Seg) (id uint16, err error) {
	return d.addIndirect(len(out), len(in), segSeg(out, in))
}

func (d *PackedDriver) descWord(pos uint16) *uint32 { return wordPtr(d.desc, int(pos)*DescSize+12) }

// takeID allocates a buffer id.
func (d *PackedDriver) takeID() uint16 {
	id := d.freeIDs[len(d.freeIDs)-1]
	d.freeIDs = d.freeIDs[:len(d.freeIDs)-1]
	return id
}

// write fills ring descriptors from availIdx on, the first one's flags last
// (virtio 1.2 §2.8, Next Flag: the device never sees a partial list).
// elem(k) gives descriptor k; its AVAIL/USED bits are replaced by those of
// the driver wrap counter. The list becomes available at the next Publish,
// or now if immediate.
func (d *PackedDriver) write(n int, immediate bool, elem func(k int) PackedDesc) {
	head := d.availIdx
	var headID, headFlags uint16
	for k := 0; k < n; k++ {
		e := elem(k)
		f := d.putDesc(e.Addr, e.Len, e.ID, e.Flags, k == 0)
		if k == 0 {
			headID, headFlags = e.ID, f
		}
	}
	d.endList(head, headID, headFlags, n, immediate)
}

// putDesc writes one descriptor at availIdx and moves past it. Its flags
// (returned) get the AVAIL/USED bits of the driver wrap counter; they are
// stored now unless it heads a list (endList stores those).
func (d *PackedDriver) putDesc(addr uint64, length uint32, id, flags uint16, head bool) uint16 {
	flags = flags&^(DescFAvail|DescFUsed) | availBits(d.availWrap)
	off := int(d.availIdx) * DescSize
	b := d.desc[off : off+DescSize : off+DescSize]
	le.PutUint64(b[0:8], addr)
	le.PutUint32(b[8:12], length)
	if !head {
		storePlain((*uint32)(unsafe.Pointer(&b[12])), id, flags)
	}
	if d.availIdx++; d.availIdx == d.size {
		d.availIdx, d.availWrap = 0, !d.availWrap
	}
	return flags
}

// endList stores the flags of a list's head at position head: now (a
// release) if immediate, at the next Publish if it is the first list since
// the last one, or with a plain store published by that first list's.
func (d *PackedDriver) endList(head, id, flags uint16, n int, immediate bool) {
	switch {
	case immediate:
		d.flush()
		storeWord(d.descWord(head), id, flags) // release: the whole list
	case d.pend == nil:
		d.pend, d.pendID, d.pendFlag = d.descWord(head), id, flags
	default:
		storePlain(d.descWord(head), id, flags) // published with d.pend
	}
	d.published += n
}

// flush makes the lists written since the last Publish available: one
// release store of the first one's head flags.
func (d *PackedDriver) flush() {
	if d.pend != nil {
		storeWord(d.pend, d.pendID, d.pendFlag)
		d.pend = nil
	}
}

func (d *PackedDriver) track(id uint16, n int, wlen uint32) {
	d.ndesc[id] = uint16(n)
	d.wlen[id] = wlen
	d.numFree -= n
	if d.inOrder {
		d.fifo[(d.fifoHead+d.fifoLen)%len(d.fifo)] = id
		d.fifoLen++
	}
}

func (d *PackedDriver) addDirect(nOut, nIn int, seg func(k int) (uint64, uint32)) (uint16, error) {
	n := nOut + nIn
	if n == 0 {
		return 0, ErrDriverEmptyChain
	}
	if n > d.numFree || len(d.freeIDs) == 0 {
		return 0, ErrDriverFull
	}
	id := d.takeID()
	head := d.availIdx
	var headFlags uint16
	var wlen uint32
	for k := 0; k < n; k++ {
		addr, length := seg(k)
		if k >= nOut {
			wlen += length
		}
		f := d.putDesc(addr, length, id, chainFlags(k, nOut, n), k == 0)
		if k == 0 {
			headFlags = f
		}
	}
	d.endList(head, id, headFlags, n, false)
	d.track(id, n, wlen)
	return id, nil
}

func (d *PackedDriver) addIndirect(nOut, nIn int, seg func(k int) (uint64, uint32)) (uint16, error) {
	n := nOut + nIn
	if err := d.checkIndirect(n, d.numFree > 0 && len(d.freeIDs) > 0); err != nil {
		return 0, err
	}
	id := d.takeID()
	table, addr := d.indirectTable(id, n)
	var wlen uint32
	for k := 0; k < n; k++ {
		addr, length := seg(k)
		var flags uint16
		if k >= nOut {
			flags = DescFWrite
			wlen += length
		}
		PutPackedDesc(table[k*DescSize:], PackedDesc{Addr: addr, Len: length, Flags: flags})
	}
	head := d.availIdx
	f := d.putDesc(addr, uint32(n)*DescSize, id, DescFIndirect, true)
	d.endList(head, id, f, 1, false)
	d.track(id, 1, wlen)
	return id, nil
}

// Publish makes the buffers added since the last Publish available and
// reports whether the device wants an available buffer notification for
// them (virtio 1.2 §2.8, Sending Available Buffer Notifications): not with
// RING_EVENT_FLAGS_DISABLE in the device area; with DESC (EVENT_IDX) only if
// the descriptor at the device's event offset was among them. It returns
// false if nothing was added.
func (d *PackedDriver) Publish() (kick bool) {
	d.flush()
	n := d.published
	if n == 0 {
		return false
	}
	d.published = 0
	// Order the flags stores of Add before reading the device area; pairs
	// with the fence in Packed.EnableNotify.
	fullFence(&d.fenceWord)
	offWrap, flags := loadWord(d.devEvent)
	switch flags & 3 {
	case RingEventFlagsDisable:
		return false
	case RingEventFlagsDesc:
		if d.eventIdx {
			return eventPassed(offWrap, int(d.availIdx), d.availWrap, n, int(d.size))
		}
	}
	return true
}

func usedBits(wrap bool) uint16 {
	if wrap {
		return DescFAvail | DescFUsed
	}
	return 0
}

// usedReady loads the descriptor at usedIdx and reports whether the device
// marked it used (acquire: its id and len are complete).
func (d *PackedDriver) usedReady() (id uint16, ok bool) {
	id, flags := loadWord(d.descWord(d.usedIdx))
	return id, flags&(DescFAvail|DescFUsed) == usedBits(d.usedWrap)
}

// advanceUsed moves the used position past n descriptors and frees them.
func (d *PackedDriver) advanceUsed(n int) {
	p := int(d.usedIdx) + n
	for p >= int(d.size) {
		p -= int(d.size)
		d.usedWrap = !d.usedWrap
	}
	d.usedIdx = uint16(p)
	d.numFree += n
}

func (d *PackedDriver) freeID(id uint16) {
	d.ndesc[id] = 0
	d.freeIDs = append(d.freeIDs, id)
}

// Reap copies up to len(out) used buffers into out, in the order the device
// used them, frees their ids and descriptors and returns how many. With
// InOrder, a used descriptor stands for every buffer made available up to
// and including its id; the skipped ones are reported with their whole
// writable length (a batch larger than out is finished by the next Reap).
// After a used descriptor with an id that is not in flight, Err is set and
// Reap returns nothing more.
func (d *PackedDriver) Reap(out []UsedElem) int {
	n := 0
	for n < len(out) && d.err == nil {
		id, ok := d.usedReady()
		if !ok {
			break
		}
		if id >= d.size || d.ndesc[id] == 0 {
			d.err = ErrDriverBadUsed
			break
		}
		length := le.Uint32(d.desc[int(d.usedIdx)*DescSize+8:])
		if !d.inOrder {
			out[n] = UsedElem{ID: uint32(id), Len: length}
			n++
			nd := int(d.ndesc[id])
			d.freeID(id)
			d.advanceUsed(nd)
			continue
		}
		for n < len(out) {
			h := d.fifo[d.fifoHead]
			d.fifoHead = (d.fifoHead + 1) % len(d.fifo)
			d.fifoLen--
			d.skipDescs += int(d.ndesc[h])
			if h != id {
				out[n] = UsedElem{ID: uint32(h), Len: d.wlen[h]}
				n++
				d.freeID(h)
				continue
			}
			out[n] = UsedElem{ID: uint32(id), Len: length}
			n++
			d.freeID(h)
			d.advanceUsed(d.skipDescs)
			d.skipDescs = 0
			break
		}
	}
	return n
}

// EnableInterrupts asks for used buffer notifications again
// (RING_EVENT_FLAGS_ENABLE, or with EVENT_IDX DESC at the next used
// position) and reports whether used descriptors arrived meanwhile; if so,
// reap before sleeping.
func (d *PackedDriver) EnableInterrupts() (more bool) {
	if d.eventIdx {
		d.drvOffWrap = d.usedIdx
		if d.usedWrap {
			d.drvOffWrap |= RingEventWrap
		}
		d.drvFlags = RingEventFlagsDesc
	} else {
		d.drvFlags = RingEventFlagsEnable
	}
	storeWord(d.drvEvent, d.drvOffWrap, d.drvFlags)
	// Order the driver area store before re-reading the next used
	// descriptor; pairs with the fence in Packed.NeedNotify.
	fullFence(&d.fenceWord)
	_, ok := d.usedReady()
	return ok
}

// DisableInterrupts sets RING_EVENT_FLAGS_DISABLE while the driver polls.
// With EVENT_IDX it does nothing: the event offset stays where
// EnableInterrupts put it, so the device notifies at most once more.
func (d *PackedDriver) DisableInterrupts() {
	if d.eventIdx || d.drvFlags == RingEventFlagsDisable {
		return
	}
	d.drvFlags = RingEventFlagsDisable
	storeWord(d.drvEvent, d.drvOffWrap, d.drvFlags)
}

// Raw access, for tests that play a misbehaving guest. These bypass all
// accounting; positions are taken modulo Size.

// SetDesc writes descriptor pos of the ring exactly as given (flags
// included, stored last).
func (d *PackedDriver) SetDesc(pos uint16, desc PackedDesc) {
	pos %= d.size
	off := int(pos) * DescSize
	le.PutUint64(d.desc[off:], desc.Addr)
	le.PutUint32(d.desc[off+8:], desc.Len)
	storeWord(d.descWord(pos), desc.ID, desc.Flags)
}

// Desc reads back descriptor pos.
func (d *PackedDriver) Desc(pos uint16) PackedDesc {
	pos %= d.size
	id, flags := loadWord(d.descWord(pos))
	off := int(pos) * DescSize
	return PackedDesc{Addr: le.Uint64(d.desc[off:]), Len: le.Uint32(d.desc[off+8:]), ID: id, Flags: flags}
}

// AvailBits are the AVAIL/USED bits that mark a descriptor available under
// driver wrap counter wrap; UsedBits those that mark it used under device
// wrap counter wrap.
func AvailBits(wrap bool) uint16 { return availBits(wrap) }

// UsedBits: see AvailBits.
func UsedBits(wrap bool) uint16 { return usedBits(wrap) }

// NextAvail is the next descriptor position Add fills and the driver wrap
// counter there; NextUsed the next position Reap reads and the device wrap
// counter expected there.
func (d *PackedDriver) NextAvail() (pos uint16, wrap bool) { return d.availIdx, d.availWrap }

// NextUsed: see NextAvail.
func (d *PackedDriver) NextUsed() (pos uint16, wrap bool) { return d.usedIdx, d.usedWrap }

// PostRaw writes descs from the next avail position on, each with the
// AVAIL/USED bits of its position's wrap counter replacing those in its
// Flags, the first one's flags last, makes them (and anything added before)
// available at once, and moves the avail position past them. It does no id
// or descriptor accounting: Reap will not recognise their ids.
func (d *PackedDriver) PostRaw(descs ...PackedDesc) {
	if len(descs) == 0 {
		return
	}
	d.write(len(descs), true, func(k int) PackedDesc { return descs[k] })
	d.numFree -= len(descs)
}

// AddRaw makes one buffer of descs available, written exactly as given
// (addresses, lengths, NEXT/WRITE/INDIRECT flags, however wrong) but with a
// free buffer id in every descriptor, the AVAIL/USED bits of the driver
// wrap counter, and the id tracked as in flight over len(descs) descriptors
// (writable length: the WRITE descriptors' lengths), so Reap recognises the
// used descriptor the device writes for it. It becomes available at the
// next Publish, as with Add. For tests that post malformed buffers and then
// go on using the ring.
func (d *PackedDriver) AddRaw(descs ...PackedDesc) (id uint16, err error) {
	n := len(descs)
	if n == 0 {
		return 0, ErrDriverEmptyChain
	}
	if n > d.numFree || len(d.freeIDs) == 0 {
		return 0, ErrDriverFull
	}
	id = d.takeID()
	var wlen uint32
	for _, e := range descs {
		if e.Flags&DescFWrite != 0 {
			wlen += e.Len
		}
	}
	d.write(n, false, func(k int) PackedDesc {
		e := descs[k]
		e.ID = id
		return e
	})
	d.track(id, n, wlen)
	return id, nil
}

// SetDriverEvent stores the driver event suppression area (any values).
func (d *PackedDriver) SetDriverEvent(offWrap, flags uint16) {
	d.drvOffWrap, d.drvFlags = offWrap, flags
	storeWord(d.drvEvent, offWrap, flags)
}

// DriverEvent loads the driver event suppression area.
func (d *PackedDriver) DriverEvent() (offWrap, flags uint16) { return loadWord(d.drvEvent) }

// DeviceEvent loads the device event suppression area.
func (d *PackedDriver) DeviceEvent() (offWrap, flags uint16) { return loadWord(d.devEvent) }
