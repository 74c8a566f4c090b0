package virtqueue

// Descriptor flags (virtio 1.x §2.7.5, VIRTQ_DESC_F_*).
const (
	DescFNext     uint16 = 1 // the chain continues at Next
	DescFWrite    uint16 = 2 // buffer is device-writable (else device-readable)
	DescFIndirect uint16 = 4 // buffer is a table of descriptors
)

// Ring flags (virtio 1.x §2.7.6 and §2.7.8).
const (
	AvailFNoInterrupt uint16 = 1 // avail.flags: driver needs no used-buffer notification
	UsedFNoNotify     uint16 = 1 // used.flags: device needs no kick
)

// MaxSize is the largest split queue size (virtio 1.x §2.7).
const MaxSize = 32768

// DescSize is the size of one descriptor in bytes.
const DescSize = 16

// DescTableSize is the size in bytes of the descriptor table of a ring with
// size entries.
func DescTableSize(size uint16) uint64 { return DescSize * uint64(size) }

// AvailRingSize is the size in bytes of the avail ring including used_event.
func AvailRingSize(size uint16) uint64 { return 6 + 2*uint64(size) }

// UsedRingSize is the size in bytes of the used ring including avail_event.
func UsedRingSize(size uint16) uint64 { return 6 + 8*uint64(size) }

// RingLayout gives the offsets of the three parts of a split ring inside some
// larger buffer, and End, the first byte after the used ring.
type RingLayout struct {
	Desc, Avail, Used, End uint64
}

// LayoutRings packs a ring of the given size starting at offset off: the
// descriptor table at the next 16-byte boundary, the avail ring right after
// it, the used ring at the next 4-byte boundary. The offsets give the
// alignment virtio 1.x §2.7 requires as long as the buffer itself starts
// 16-byte aligned (any page-aligned mapping does).
func LayoutRings(off uint64, size uint16) RingLayout {
	var l RingLayout
	l.Desc = alignUp(off, 16)
	l.Avail = l.Desc + DescTableSize(size)
	l.Used = alignUp(l.Avail+AvailRingSize(size), 4)
	l.End = l.Used + UsedRingSize(size)
	return l
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// Desc is one split-ring descriptor as the driver writes it.
type Desc struct {
	Addr  uint64 // guest address of the buffer (or indirect table)
	Len   uint32 // length in bytes
	Flags uint16 // DescF*
	Next  uint16 // next descriptor index if Flags&DescFNext
}

// Both ring formats lay a descriptor out in the same 16 bytes: le64
// address, le32 length, then two le16 fields (split: flags and next;
// packed: buffer id and flags).

// putDesc16 encodes a descriptor's four fields into b[0:16].
func putDesc16(b []byte, addr uint64, n uint32, w12, w14 uint16) {
	_ = b[15]
	le.PutUint64(b[0:], addr)
	le.PutUint32(b[8:], n)
	le.PutUint16(b[12:], w12)
	le.PutUint16(b[14:], w14)
}

// readDesc16 decodes the four fields of the descriptor in b[0:16].
func readDesc16(b []byte) (addr uint64, n uint32, w12, w14 uint16) {
	_ = b[15]
	return le.Uint64(b[0:]), le.Uint32(b[8:]), le.Uint16(b[12:]), le.Uint16(b[14:])
}

// PutDesc encodes d little-endian into b[0:16].
func PutDesc(b []byte, d Desc) { putDesc16(b, d.Addr, d.Len, d.Flags, d.Next) }

// ReadDesc decodes the descriptor in b[0:16].
func ReadDesc(b []byte) (d Desc) {
	d.Addr, d.Len, d.Flags, d.Next = readDesc16(b)
	return d
}
