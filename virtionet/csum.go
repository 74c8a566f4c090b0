package virtionet

import "encoding/binary"

// completeRxChecksum finishes the partial checksum of a non-GSO packet that
// the backend handed over with NEEDS_CSUM, for a guest that did not negotiate
// GUEST_CSUM (virtio spec 5.1.6.4.1: without GUEST_CSUM the device must not
// set NEEDS_CSUM). pkt is virtio_net_hdr + frame. The csum field already holds
// the pseudo-header sum (that is what "partial" means), so folding the
// one's-complement sum of [csum_start, end) completes it. Returns false (and
// leaves the packet as it is) when the offsets do not fit the frame.
func completeRxChecksum(pkt []byte, hdrLen int) bool {
	if pkt[1] != GSONone {
		return false
	}
	frame := pkt[hdrLen:]
	start := int(binary.LittleEndian.Uint16(pkt[6:8]))
	off := int(binary.LittleEndian.Uint16(pkt[8:10]))
	if start > len(frame) || start+off+2 > len(frame) {
		return false
	}
	field := frame[start+off : start+off+2]
	s := onesSum(frame[start:])
	c := ^fold(s)
	if c == 0 && off == 6 { // UDP: 0 means "no checksum", send 0xffff (RFC 768)
		c = 0xffff
	}
	binary.BigEndian.PutUint16(field, c)
	pkt[0] = (pkt[0] &^ FlagNeedsCsum) | FlagDataValid
	return true
}

// onesSum is the 32-bit-accumulated one's-complement sum of b (RFC 1071).
func onesSum(b []byte) uint64 {
	var s uint64
	for len(b) >= 8 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}

func fold(s uint64) uint16 {
	for s>>16 != 0 {
		s = (s & 0xffff) + (s >> 16)
	}
	return uint16(s)
}
