package gso

import "encoding/binary"

// FinishCsum computes the checksum that completes the partial checksum of a
// non-GSO NEEDS_CSUM packet (DecisionCompleteCsum), as skb_checksum_help()
// does: the one's-complement sum of the frame from csum_start to its end
// (the checksum field already holds the pseudo-header sum), folded,
// complemented, and 0 sent as 0xFFFF (CSUM_MANGLED_0) whatever the
// protocol. It returns the value and the frame offset where it belongs (big
// endian, 2 bytes); src is the frame as one or more slices and is not
// modified (guest TX buffers are read-only to the device), so the caller
// writes the value into its own copy of the bytes around "at".
// ok is false if m has no partial checksum or src is shorter than the frame.
func FinishCsum(src [][]byte, m *Meta) (csum uint16, at int, ok bool) {
	if !m.NeedsCsum || m.Malformed != ReasonNone || m.Kind != KindPlain {
		return 0, 0, false
	}
	start := int(m.Hdr.CsumStart)
	if iovLen(src) < m.FrameLen {
		return 0, 0, false
	}
	r := iovReader{src: src}
	r.seek(start)
	s, ok := r.sum(m.FrameLen - start)
	if !ok {
		return 0, 0, false
	}
	c := ^s
	if c == 0 {
		c = 0xffff
	}
	return c, start + int(m.Hdr.CsumOffset), true
}

// CompleteCsum finishes the partial checksum of a non-GSO NEEDS_CSUM frame
// in place (see FinishCsum). frame must be a writable copy of the whole
// frame. It reports whether it did.
func CompleteCsum(frame []byte, m *Meta) bool {
	if len(frame) < m.FrameLen {
		return false
	}
	c, at, ok := FinishCsum([][]byte{frame[:m.FrameLen]}, m)
	if !ok {
		return false
	}
	binary.BigEndian.PutUint16(frame[at:], c)
	return true
}
