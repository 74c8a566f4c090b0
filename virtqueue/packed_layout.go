package virtqueue

// Packed ring wire format (virtio 1.2 §2.8 "Packed Virtqueues").

// Packed descriptor flags beyond DescFNext, DescFWrite and DescFIndirect
// (VIRTQ_DESC_F_AVAIL and VIRTQ_DESC_F_USED). A descriptor is available when
// AVAIL equals the driver's ring wrap counter and USED does not; it is used
// when both equal the device's ring wrap counter.
const (
	DescFAvail uint16 = 1 << 7
	DescFUsed  uint16 = 1 << 15
)

// Event suppression flags (RING_EVENT_FLAGS_*), the flags half of the driver
// and device event suppression areas.
const (
	RingEventFlagsEnable  uint16 = 0 // notify on every event
	RingEventFlagsDisable uint16 = 1 // do not notify
	RingEventFlagsDesc    uint16 = 2 // notify when the descriptor at the event offset is made available/used (EVENT_IDX only)
)

// RingEventWrap is the wrap counter bit of an event suppression offset
// (desc_event_off in bits 0-14, desc_event_wrap in bit 15).
const RingEventWrap uint16 = 1 << 15

// EventSuppressSize is the size in bytes of one event suppression area
// (struct pvirtq_event_suppress: le16 off_wrap, le16 flags); both the driver
// area and the device area are 4-byte aligned.
const EventSuppressSize = 4

// PackedRingSize is the size in bytes of the descriptor ring of a packed
// ring with size entries (the same 16 bytes a descriptor as in a split ring).
func PackedRingSize(size uint16) uint64 { return DescSize * uint64(size) }

// RingAreaSizes gives the sizes in bytes of the three areas that
// SET_VRING_ADDR (or a virtio transport) places: for a split ring the
// descriptor table, avail ring and used ring (with their EVENT_IDX tail
// fields); for a packed ring the descriptor ring, the driver event
// suppression area (which vhost-user passes as the "avail" address) and the
// device event suppression area (the "used" address).
func RingAreaSizes(size uint16, packed bool) (desc, driver, device uint64) {
	if packed {
		return PackedRingSize(size), EventSuppressSize, EventSuppressSize
	}
	return DescTableSize(size), AvailRingSize(size), UsedRingSize(size)
}

// PackedDesc is one packed-ring descriptor (struct pvirtq_desc).
type PackedDesc struct {
	Addr  uint64 // guest address of the buffer (or indirect table)
	Len   uint32 // length in bytes; in a used descriptor, bytes written
	ID    uint16 // buffer id; only the last descriptor of a list carries it
	Flags uint16 // DescF*, including DescFAvail and DescFUsed
}

// PutPackedDesc encodes d little-endian into b[0:16].
func PutPackedDesc(b []byte, d PackedDesc) { putDesc16(b, d.Addr, d.Len, d.ID, d.Flags) }

// ReadPackedDesc decodes the packed descriptor in b[0:16].
func ReadPackedDesc(b []byte) (d PackedDesc) {
	d.Addr, d.Len, d.ID, d.Flags = readDesc16(b)
	return d
}

// PackedLayout gives the offsets of the three parts of a packed ring inside
// some larger buffer, and End, the first byte after them.
type PackedLayout struct {
	Desc, Driver, Device, End uint64
}

// LayoutPacked places a packed ring of the given size at offset off: the
// descriptor ring at the next 16-byte boundary, then the driver and the
// device event suppression areas, 4 bytes each (the alignments virtio 1.2
// §2.8 asks for, as long as the buffer itself starts 16-byte aligned).
func LayoutPacked(off uint64, size uint16) PackedLayout {
	var l PackedLayout
	l.Desc = alignUp(off, 16)
	l.Driver = l.Desc + PackedRingSize(size)
	l.Device = l.Driver + EventSuppressSize
	l.End = l.Device + EventSuppressSize
	return l
}

// PackedState is where both sides of a packed ring stand: the next
// descriptor the device reads and the driver's wrap counter it expects
// there, and the next descriptor the device writes a used descriptor to and
// the device's wrap counter. It is what vhost-user GET/SET_VRING_BASE carry
// for a packed ring.
type PackedState struct {
	AvailIdx  uint16 // 0..size-1
	AvailWrap bool
	UsedIdx   uint16 // 0..size-1
	UsedWrap  bool
}

// InitialPackedState is the state of a freshly initialised ring: both
// positions 0 and both wrap counters 1 (virtio 1.2 §2.8.1).
var InitialPackedState = PackedState{AvailWrap: true, UsedWrap: true}

// Encode packs s the way QEMU and DPDK put a packed ring state in the
// vhost-user vring state num field: bits 0-14 the avail index, bit 15 the
// avail wrap counter, bits 16-30 the used index, bit 31 the used wrap
// counter. Indices are taken modulo 2^15.
func (s PackedState) Encode() uint32 {
	v := uint32(s.AvailIdx&0x7fff) | uint32(s.UsedIdx&0x7fff)<<16
	if s.AvailWrap {
		v |= 1 << 15
	}
	if s.UsedWrap {
		v |= 1 << 31
	}
	return v
}

// DecodePackedState is the inverse of Encode, for SET_VRING_BASE.
//
// Some front-ends send only the avail half: DPDK's virtio-user sends 0x8000
// for a fresh ring, and DPDK's own vhost back-end ignores bits 16-31 and
// sets the used position equal to the avail one. So when bits 16-31 are all
// zero, the used position and wrap counter are taken from the avail half.
// The one state this misreads, used index 0 with used wrap counter 0 while
// buffers are in flight, cannot be told apart from such a message.
func DecodePackedState(v uint32) PackedState {
	s := PackedState{
		AvailIdx:  uint16(v & 0x7fff),
		AvailWrap: v&(1<<15) != 0,
		UsedIdx:   uint16(v >> 16 & 0x7fff),
		UsedWrap:  v&(1<<31) != 0,
	}
	if v>>16 == 0 {
		s.UsedIdx, s.UsedWrap = s.AvailIdx, s.AvailWrap
	}
	return s
}
