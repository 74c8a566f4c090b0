package vnet

import (
	"encoding/binary"
	"math/bits"
)

// Internet checksum (RFC 1071) arithmetic.
//
// Values of type uint16 in this package are one's-complement sums in network
// byte order ("BE domain"), folded to 16 bits and not complemented, like the
// kernel's csum_fold() input. The hot loop (sumLE) adds the data as
// little-endian 64-bit words with an add-with-carry chain: the one's-
// complement sum is independent of byte order up to a final byte swap
// (RFC 1071 section 2(B)) and 2^64 ≡ 1 (mod 0xffff), so a 64-bit
// end-around-carry accumulator is exact. The compiler turns the bits.Add64
// chain into ADC instructions; eight words per iteration keep the loop
// overhead small (about 0.5x of memmove speed on the benchmark machine, see
// docs/benchmarks-gso.md).
//
// Zero: a folded sum is 0 only if every byte summed was zero; any nonzero
// input folds into 1..0xffff. Two different but correct ways of summing the
// same nonzero data therefore give the same 16-bit value, which is what
// makes byte-exact agreement with the kernel's incremental updates possible.

// sumLE returns the one's-complement sum of b read as little-endian 64-bit
// words (a short tail is zero-padded), as an unfolded 64-bit accumulator.
func sumLE(b []byte) uint64 {
	var s, c uint64
	if hasAVX2 && len(b) >= vectorMin {
		n := len(b) &^ 63
		s = sumAVX2(b[:n])
		b = b[n:]
	}
	n := len(b) &^ 63
	for i := 0; i < n; i += 64 {
		q := b[i : i+64 : i+64]
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(q[0:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(q[8:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(q[16:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(q[24:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(q[32:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(q[40:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(q[48:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(q[56:]), c)
	}
	b = b[n:]
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) > 0 {
		var t uint64
		for i := len(b) - 1; i >= 0; i-- {
			t = t<<8 | uint64(b[i])
		}
		s, c = bits.Add64(s, t, c)
	}
	s, c = bits.Add64(s, 0, c)
	return s + c // cannot carry again: s was at most 2^64-2 when c was 1
}

// fold64 folds a 64-bit one's-complement accumulator to 16 bits.
func fold64(s uint64) uint16 {
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// ChecksumAdd is one's-complement addition of BE-domain values
// (csum16_add): it combines two sums, or adds a 16-bit field to one.
func ChecksumAdd(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// ChecksumAdd32 adds a 32-bit quantity (e.g. an IPv6 upper-layer length)
// to a sum.
func ChecksumAdd32(a uint16, v uint32) uint16 {
	return ChecksumAdd(ChecksumAdd(a, uint16(v>>16)), uint16(v))
}

// ChecksumSub is one's-complement subtraction (csum16_sub: add the
// complement), for incremental updates (RFC 1624).
func ChecksumSub(a, b uint16) uint16 { return ChecksumAdd(a, ^b) }

// ChecksumSub32 subtracts a 32-bit quantity.
func ChecksumSub32(a uint16, v uint32) uint16 {
	return ChecksumSub(ChecksumSub(a, uint16(v>>16)), uint16(v))
}

// Checksum returns the one's-complement sum of b added to initial, folded to
// 16 bits and not complemented (gVisor's header.Checksum contract). b is
// treated as starting at an even offset; an odd final byte is padded.
func Checksum(b []byte, initial uint16) uint16 {
	return ChecksumAdd(initial, bits.ReverseBytes16(fold64(sumLE(b))))
}

// PseudoHeaderSum returns the sum of the IPv4 or IPv6 pseudo-header (RFC 768,
// RFC 8200 section 8.1) for an upper-layer packet of length bytes: src and
// dst are 4- or 16-byte addresses. Stored in a transport checksum field it
// is the "partial" checksum that NEEDS_CSUM / CHECKSUM_PARTIAL expects.
func PseudoHeaderSum(proto uint8, src, dst []byte, length uint32) uint16 {
	s := Checksum(src, 0)
	s = Checksum(dst, s)
	s = ChecksumAdd(s, uint16(proto))
	return ChecksumAdd32(s, length)
}
