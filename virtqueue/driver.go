package virtqueue

import (
	"errors"
	"fmt"
)

// Driver is the driver side of a split ring (what a guest's virtio driver
// does, virtio 1.x §2.7.13 and §2.7.14), for tests and for the Go vhost-user
// front-end. It lays the ring out in a []byte that stands for guest memory,
// keeps a free list of descriptors, posts chains, decides whether to kick,
// and reaps used entries. It also exposes raw writers for descriptors, avail
// entries and indices so tests can play a malicious guest.
//
// Typical use:
//
//	mem := make([]byte, 1<<20)                      // guest memory at guest address base
//	d, err := NewDriver(DriverConfig{Size: 256, Mem: mem, Base: base,
//		Rings: LayoutRings(0, 256)})
//	dev, err := NewSplit(d.DeviceConfig(), d.Memory()) // in-process device
//	head, err := d.Add([][]byte{mem[4096:4096+1514]}, nil) // one readable buffer
//	if d.Publish() { kick.Signal() }
//	n := d.Reap(used)                                // after the device pushed
//
// Buffers passed as [][]byte must be subslices of Mem; AddSegs and
// AddIndirectSegs take guest addresses instead and do not check them, so
// they can describe anything, including invalid ranges.
//
// A Driver is not safe for concurrent use, but it may run in a different
// goroutine from the device it talks to: their shared accesses are ordered as
// described in access.go.
type Driver struct {
	driverMem
	mask     uint16
	eventIdx bool
	rings    RingLayout
	desc     []byte
	avail    []byte
	used     []byte
	f        ringFields

	availShadow    uint16 // next avail ring position to fill
	availPublished uint16 // value last stored in avail.idx
	availFlags     uint16 // our copy of avail.flags
	availRing0     uint16 // our copy of avail.ring[0] (2-aligned rings store it with idx)
	lastUsed       uint16 // next used ring position to reap

	freeHead uint16
	numFree  int
	next     []uint16 // free-list and chain links; our own copy, never read back from guest memory
	chainLen []uint16 // per head: descriptors owned by the in-flight chain, 0 if not in flight

	fenceWord uint32
}

// DriverConfig places a split ring, and optionally indirect tables, in guest
// memory.
type DriverConfig struct {
	Size     uint16     // queue size: a power of two, 1..32768
	Mem      []byte     // guest memory: rings, indirect tables and buffers live here
	Base     uint64     // guest address of Mem[0]
	Rings    RingLayout // ring offsets in Mem, e.g. LayoutRings(0, Size); End is ignored
	EventIdx bool       // VIRTIO_F_EVENT_IDX negotiated

	// IndirectMax > 0 enables AddIndirect: descriptor i, when it heads an
	// indirect chain, uses the table of IndirectMax entries at
	// Mem[IndirectOff+i*IndirectMax*16:]. The area is
	// IndirectAreaSize(Size, IndirectMax) bytes.
	IndirectOff uint64
	IndirectMax uint16
}

// IndirectAreaSize is the number of bytes DriverConfig.IndirectOff must
// provide: one table of maxPerChain descriptors per ring entry.
func IndirectAreaSize(size, maxPerChain uint16) uint64 {
	return uint64(size) * uint64(maxPerChain) * DescSize
}

// Seg is one buffer by guest address, for AddSegs and AddIndirectSegs.
type Seg struct {
	Addr uint64
	Len  uint32
}

// Driver errors.
var (
	ErrDriverFull        = errors.New("virtqueue: driver: not enough free descriptors; reap used entries first")
	ErrDriverEmptyChain  = errors.New("virtqueue: driver: a chain needs at least one buffer")
	ErrDriverNotInMemory = errors.New("virtqueue: driver: buffer is not a subslice of the driver's guest memory (or is 4 GiB or larger)")
	ErrDriverNoIndirect  = errors.New("virtqueue: driver: indirect chains need DriverConfig.IndirectMax > 0")
	ErrDriverIndirectMax = errors.New("virtqueue: driver: chain has more buffers than DriverConfig.IndirectMax")
)

// inside reports whether [off, off+n) lies within a buffer of length total.
func inside(off, n, total uint64) bool { return off <= total && n <= total-off }

// NewDriver checks cfg, zeroes the three ring areas (virtio 1.x §2.7.10: the
// driver initialises used.flags to 0) and returns a Driver with every
// descriptor free.
func NewDriver(cfg DriverConfig) (*Driver, error) {
	s := cfg.Size
	if s == 0 || s&(s-1) != 0 || s > MaxSize {
		return nil, fmt.Errorf("virtqueue: driver: queue size %d is not a power of two in 1..%d", s, MaxSize)
	}
	r := cfg.Rings
	m, err := newDriverMem("DriverConfig", s, cfg.Mem, cfg.Base, []driverArea{
		{"descriptor table", r.Desc, DescTableSize(s), 16},
		{"avail ring", r.Avail, AvailRingSize(s), 2},
		{"used ring", r.Used, UsedRingSize(s), 4},
	}, false, cfg.IndirectOff, cfg.IndirectMax)
	if err != nil {
		return nil, err
	}
	d := &Driver{
		driverMem: m,
		mask:      s - 1,
		eventIdx:  cfg.EventIdx,
		rings:     r,
		desc:      cfg.Mem[r.Desc : r.Desc+DescTableSize(s) : r.Desc+DescTableSize(s)],
		avail:     cfg.Mem[r.Avail : r.Avail+AvailRingSize(s) : r.Avail+AvailRingSize(s)],
		used:      cfg.Mem[r.Used : r.Used+UsedRingSize(s) : r.Used+UsedRingSize(s)],
		numFree:   int(s),
		next:      make([]uint16, s),
		chainLen:  make([]uint16, s),
	}
	// The rings are always laid out with their event fields, so locate
	// them even without EVENT_IDX: tests may poke them regardless.
	f, err := newRingFields(s, d.avail, d.used, true)
	if err != nil {
		return nil, fmt.Errorf("%w (the host address of Mem decides atomic alignment)", err)
	}
	d.f = f
	clear(d.desc)
	clear(d.avail)
	clear(d.used)
	for i := range d.next {
		d.next[i] = uint16(i + 1)
	}
	return d, nil
}

// NumFree is the number of free descriptors.
func (d *Driver) NumFree() int { return d.numFree }

// RingAddrs returns the guest addresses of the descriptor table, avail ring
// and used ring.
func (d *Driver) RingAddrs() (desc, avail, used uint64) {
	return d.base + d.rings.Desc, d.base + d.rings.Avail, d.base + d.rings.Used
}

// DeviceConfig returns the Config an in-process device uses for this ring:
// same EventIdx, Indirect iff IndirectMax > 0, LastAvail 0.
func (d *Driver) DeviceConfig() Config {
	return Config{
		Size:     d.size,
		Desc:     d.desc,
		Avail:    d.avail,
		Used:     d.used,
		EventIdx: d.eventIdx,
		Indirect: d.indirectMax > 0,
	}
}

// Add posts one direct chain: the buffers of out (device-readable) then
// those of in (device-writable), each a subslice of the driver's memory. The
// chain becomes visible to the device at the next Publish. It returns the
// head descriptor index, which Reap reports in UsedElem.ID.
func (d *Driver) Add(out, in [][]byte) (head uint16, err error) {
	if err := d.checkBufs(out, in); err != nil {
		return 0, err
	}
	return d.addDirect(len(out), len(in), d.bufSeg(out, in))
}

// AddSegs is Add with buffers given by guest address; they are not checked.
func (d *Driver) AddSegs(out, in []Seg) (head uint16, err error) {
	return d.addDirect(len(out), len(in), segSeg(out, in))
}

// AddIndirect posts one chain as a single INDIRECT descriptor pointing at
// the head's indirect table (virtio 1.x §2.7.5.3). It uses one ring
// descriptor however many buffers the chain has, at most IndirectMax.
func (d *Driver) AddIndirect(out, in [][]byte) (head uint16, err error) {
	if err := d.checkBufs(out, in); err != nil {
		return 0, err
	}
	return d.addIndirect(len(out), len(in), d.bufSeg(out, in))
}

// AddIndirectSegs is AddIndirect with buffers given by guest address; they
// are not checked.
func (d *Driver) AddIndirectSegs(out, in []Seg) (head uint16, err error) {
	return d.addIndirect(len(out), len(in), segSeg(out, in))
}

func chainFlags(k, nOut, n int) uint16 {
	var f uint16
	if k >= nOut {
		f |= DescFWrite
	}
	if k < n-1 {
		f |= DescFNext
	}
	return f
}

func (d *Driver) addDirect(nOut, nIn int, seg func(k int) (uint64, uint32)) (uint16, error) {
	n := nOut + nIn
	if n == 0 {
		return 0, ErrDriverEmptyChain
	}
	if n > d.numFree {
		return 0, ErrDriverFull
	}
	head := d.freeHead
	i := head
	for k := 0; k < n; k++ {
		addr, length := seg(k)
		flags := chainFlags(k, nOut, n)
		var next uint16
		if flags&DescFNext != 0 {
			next = d.next[i]
		}
		PutDesc(d.desc[int(i)*DescSize:], Desc{Addr: addr, Len: length, Flags: flags, Next: next})
		if k < n-1 {
			i = d.next[i]
		}
	}
	d.freeHead = d.next[i]
	d.numFree -= n
	d.chainLen[head] = uint16(n)
	d.PostRaw(head)
	return head, nil
}

func (d *Driver) addIndirect(nOut, nIn int, seg func(k int) (uint64, uint32)) (uint16, error) {
	n := nOut + nIn
	if err := d.checkIndirect(n, d.numFree > 0); err != nil {
		return 0, err
	}
	head := d.freeHead
	d.freeHead = d.next[head]
	d.numFree--
	table, addr := d.indirectTable(head, n)
	for k := 0; k < n; k++ {
		addr, length := seg(k)
		flags := chainFlags(k, nOut, n)
		var next uint16
		if flags&DescFNext != 0 {
			next = uint16(k + 1)
		}
		PutDesc(table[k*DescSize:], Desc{Addr: addr, Len: length, Flags: flags, Next: next})
	}
	PutDesc(d.desc[int(head)*DescSize:], Desc{Addr: addr, Len: uint32(n) * DescSize, Flags: DescFIndirect})
	d.chainLen[head] = 1
	d.PostRaw(head)
	return head, nil
}

// Publish stores avail.idx to expose every chain posted since the last
// Publish, and reports whether the device wants a kick for them (virtio 1.x
// §2.7.13.4): with EVENT_IDX, whether avail.idx passed avail_event; without,
// whether used.flags lacks NO_NOTIFY. It returns false if nothing was posted.
func (d *Driver) Publish() (kick bool) {
	old, newIdx := d.availPublished, d.availShadow
	if old == newIdx {
		return false
	}
	d.availPublished = newIdx
	d.storeAvailWord() // release: descriptors and entries before idx
	// Order the avail.idx store before reading avail_event/used.flags;
	// pairs with the fence in Split.EnableNotify.
	fullFence(&d.fenceWord)
	if d.eventIdx {
		return needEvent(load16(d.f.availEvent), newIdx, old)
	}
	flags, _ := loadWord(d.f.usedWord)
	return flags&UsedFNoNotify == 0
}

// storeAvailWord stores the aligned word holding avail.idx, filling its
// other half from our copy (both halves are driver-owned).
func (d *Driver) storeAvailWord() {
	if d.f.availIdxHi {
		storeWord(d.f.availWord, d.availFlags, d.availPublished)
	} else {
		storeWord(d.f.availWord, d.availPublished, d.availRing0)
	}
}

// Reap copies up to len(out) new used entries into out, in ring order, and
// returns how many. Chains posted with Add* go back to the free list; IDs the
// driver did not post (raw tests, or a buggy device) are returned but freed
// nothing.
func (d *Driver) Reap(out []UsedElem) int {
	_, usedIdx := loadWord(d.f.usedWord) // acquire: entries below are complete
	n := 0
	for n < len(out) && d.lastUsed != usedIdx {
		off := 4 + 8*int(d.lastUsed&d.mask)
		e := UsedElem{ID: le.Uint32(d.used[off:]), Len: le.Uint32(d.used[off+4:])}
		out[n] = e
		n++
		d.lastUsed++
		if e.ID < uint32(d.size) && d.chainLen[e.ID] != 0 {
			d.freeChain(uint16(e.ID))
		}
	}
	return n
}

func (d *Driver) freeChain(head uint16) {
	n := d.chainLen[head]
	tail := head
	for k := uint16(1); k < n; k++ {
		tail = d.next[tail]
	}
	d.next[tail] = d.freeHead
	d.freeHead = head
	d.numFree += int(n)
	d.chainLen[head] = 0
}

// EnableInterrupts asks the device for used-buffer notifications again
// (clears NO_INTERRUPT, or with EVENT_IDX sets used_event to the next used
// index to reap) and reports whether used entries arrived meanwhile; if so,
// reap before sleeping (virtio 1.x §2.7.14).
func (d *Driver) EnableInterrupts() (more bool) {
	if d.eventIdx {
		store16(d.f.usedEvent, d.lastUsed)
	} else {
		d.SetAvailFlags(d.availFlags &^ AvailFNoInterrupt)
	}
	// Order the used_event/flags store before re-reading used.idx; pairs
	// with the fence in Split.NeedNotify.
	fullFence(&d.fenceWord)
	_, usedIdx := loadWord(d.f.usedWord)
	return usedIdx != d.lastUsed
}

// DisableInterrupts sets NO_INTERRUPT while the driver polls. With EVENT_IDX
// it does nothing: used_event stays where EnableInterrupts put it, so the
// device notifies at most once more.
func (d *Driver) DisableInterrupts() {
	if !d.eventIdx {
		d.SetAvailFlags(d.availFlags | AvailFNoInterrupt)
	}
}

// Raw access, for tests that play a misbehaving guest. These bypass the free
// list and all checks; indices are taken modulo Size.

// SetDesc writes descriptor i of the ring's table.
func (d *Driver) SetDesc(i uint16, desc Desc) {
	PutDesc(d.desc[int(i&d.mask)*DescSize:], desc)
}

// Desc reads back descriptor i.
func (d *Driver) Desc(i uint16) Desc { return ReadDesc(d.desc[int(i&d.mask)*DescSize:]) }

// SetAvailEntry writes avail.ring[slot] without moving any index.
func (d *Driver) SetAvailEntry(slot, head uint16) {
	slot &= d.mask
	if slot == 0 && !d.f.availIdxHi {
		d.availRing0 = head
		storeWord(d.f.availWord, d.availPublished, head)
		return
	}
	le.PutUint16(d.avail[4+2*int(slot):], head)
}

// PostRaw puts head in the next avail ring entry, to be exposed by the next
// Publish, without any descriptor accounting: Reap will not free it.
func (d *Driver) PostRaw(head uint16) {
	d.SetAvailEntry(d.availShadow, head)
	d.availShadow++
}

// SetAvailIdx stores avail.idx = idx now (any value, e.g. a jump of more
// than Size) and continues posting from there.
func (d *Driver) SetAvailIdx(idx uint16) {
	d.availShadow, d.availPublished = idx, idx
	d.storeAvailWord()
}

// AvailIdx is the avail.idx last stored.
func (d *Driver) AvailIdx() uint16 { return d.availPublished }

// SetAvailFlags stores avail.flags (AvailFNoInterrupt, or anything).
func (d *Driver) SetAvailFlags(flags uint16) {
	d.availFlags = flags
	if d.f.availIdxHi {
		d.storeAvailWord()
	} else {
		store16(d.f.availFlags, flags)
	}
}

// SetUsedEvent stores used_event (the avail ring tail), even without
// EVENT_IDX.
func (d *Driver) SetUsedEvent(v uint16) { store16(d.f.usedEvent, v) }

// UsedIdx loads the used.idx the device published.
func (d *Driver) UsedIdx() uint16 {
	_, idx := loadWord(d.f.usedWord)
	return idx
}

// UsedFlags loads used.flags.
func (d *Driver) UsedFlags() uint16 {
	flags, _ := loadWord(d.f.usedWord)
	return flags
}

// AvailEvent loads avail_event (the used ring tail).
func (d *Driver) AvailEvent() uint16 { return load16(d.f.availEvent) }

// LastUsed is the next used index Reap will read.
func (d *Driver) LastUsed() uint16 { return d.lastUsed }

// TakeDesc removes one descriptor from the free list, for raw use.
func (d *Driver) TakeDesc() (uint16, bool) {
	if d.numFree == 0 {
		return 0, false
	}
	i := d.freeHead
	d.freeHead = d.next[i]
	d.numFree--
	return i, true
}

// ReturnDesc puts a descriptor taken with TakeDesc back on the free list.
// Returning one that is free or in flight corrupts the free list.
func (d *Driver) ReturnDesc(i uint16) {
	i &= d.mask
	d.next[i] = d.freeHead
	d.freeHead = i
	d.numFree++
}
