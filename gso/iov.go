package gso

import (
	"math/bits"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// A frame handed to Segment or Resegment is a list of byte slices in order
// (for instance the guest buffers of one virtqueue chain, translated to host
// memory), so that a super-packet never has to be linearised first: Segment
// copies each payload byte once, straight into its output segment, and
// Resegment copies none.

// iovLen returns the total length of src.
func iovLen(src [][]byte) int {
	n := 0
	for _, b := range src {
		n += len(b)
	}
	return n
}

// iovReader reads a list of byte slices sequentially.
type iovReader struct {
	src [][]byte
	i   int // current slice
	off int // offset into src[i]
}

// seek positions the reader at absolute offset pos.
func (r *iovReader) seek(pos int) {
	r.i, r.off = 0, 0
	for r.i < len(r.src) && pos >= len(r.src[r.i]) {
		pos -= len(r.src[r.i])
		r.i++
	}
	r.off = pos
}

// next returns the next piece of the current slice, at most n bytes long
// (empty when the current slice is), and moves past it. The caller checks
// that the reader is not at the end (r.i < len(r.src)).
func (r *iovReader) next(n int) []byte {
	b := r.src[r.i][r.off:]
	if len(b) > n {
		b = b[:n]
	}
	r.off += len(b)
	if r.off == len(r.src[r.i]) {
		r.i++
		r.off = 0
	}
	return b
}

// read copies the next len(dst) bytes into dst and returns how many it
// copied (fewer only at the end of src).
func (r *iovReader) read(dst []byte) int {
	n := 0
	for n < len(dst) && r.i < len(r.src) {
		n += copy(dst[n:], r.next(len(dst)-n))
	}
	return n
}

// views appends to out sub-slices of src covering the next n bytes, without
// copying, and returns the extended list; ok is false if src ends first.
// It appends at most len(src) slices.
func (r *iovReader) views(out [][]byte, n int) ([][]byte, bool) {
	for n > 0 && r.i < len(r.src) {
		b := r.next(n)
		if len(b) > 0 {
			out = append(out, b)
		}
		n -= len(b)
	}
	return out, n == 0
}

// sum returns the one's-complement sum (BE domain) of the next n bytes,
// treating their first byte as being at an even offset. A piece that starts
// at an odd position contributes its byte-swapped sum (RFC 1071 2(B)).
func (r *iovReader) sum(n int) (s uint16, ok bool) {
	odd := false
	for n > 0 && r.i < len(r.src) {
		b := r.next(n)
		p := vnet.Checksum(b, 0)
		if odd { // b starts at an odd offset: its bytes sit swapped in the 16-bit words
			p = bits.ReverseBytes16(p)
		}
		s = vnet.ChecksumAdd(s, p)
		if len(b)%2 == 1 {
			odd = !odd
		}
		n -= len(b)
	}
	return s, n == 0
}
