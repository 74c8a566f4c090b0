package vnet

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/vhostd/vhostd/internal/testing/refcsum"
)

func TestChecksumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for n := 0; n <= 300; n++ {
		for _, off := range []int{0, 1, 3, 8} {
			b := buf[off : off+n]
			want := refcsum.Fold(refcsum.Sum(b, 0))
			if got := Checksum(b, 0); got != want && !(n > 0 && allZero(b)) {
				t.Fatalf("len %d off %d: got %#04x want %#04x", n, off, got, want)
			}
		}
	}
	// Long buffers take the vector loop where the CPU has one.
	big := make([]byte, 70001)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	for _, n := range []int{128, 191, 1448, 4096, 65536, 70001} {
		for _, off := range []int{0, 1, 5} {
			b := big[off:min(off+n, len(big))]
			if got, want := Checksum(b, 0), refcsum.Fold(refcsum.Sum(b, 0)); got != want {
				t.Fatalf("len %d off %d: got %#04x want %#04x", len(b), off, got, want)
			}
		}
	}
	// All-ones data: every partial sum is 0xffff; the result must stay in
	// the 1..0xffff range like the kernel's.
	ones := make([]byte, 1500)
	for i := range ones {
		ones[i] = 0xff
	}
	if got := Checksum(ones, 0); got != 0xffff {
		t.Fatalf("all ones: got %#04x", got)
	}
	if got := Checksum(make([]byte, 64), 0); got != 0 {
		t.Fatalf("all zero: got %#04x", got)
	}
	// initial is added with end-around carry.
	if got := Checksum([]byte{0xff, 0xff}, 1); got != 1 {
		t.Fatalf("0xffff + 1: got %#04x", got)
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func TestPseudoHeaderSum(t *testing.T) {
	got := PseudoHeaderSum(6, testIPv6Src, testIPv6Dst, 70000)
	want := refcsum.Fold(refcsum.Pseudo(testIPv6Src, testIPv6Dst, 6, 70000))
	if got != want {
		t.Fatalf("got %#04x want %#04x", got, want)
	}
}

var (
	testIPv6Src = []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	testIPv6Dst = []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}
)

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{64, 1448, 65536} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i)
		}
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			var s uint16
			for b.Loop() {
				s = Checksum(buf, s)
			}
		})
	}
}
