// Package refcsum is a naive reference Internet checksum (RFC 1071), written
// independently of the production one (virtionet/vnet), for tests to hold
// it and the packets they build against. Only tests import it.
package refcsum

// Sum adds b to s as big-endian 16-bit words (an odd last byte padded with
// zero), without folding.
func Sum(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// Fold folds the carries of s into 16 bits.
func Fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// Pseudo is the pseudo-header sum (not folded) for the given addresses.
func Pseudo(src, dst []byte, proto uint8, length int) uint32 {
	s := Sum(src, 0)
	s = Sum(dst, s)
	s += uint32(proto)
	s += uint32(length>>16) + uint32(length&0xffff)
	return s
}
