package gso

import (
	"math/rand/v2"
	"testing"
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
			want := refFold(refSum(b, 0))
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
			if got, want := Checksum(b, 0), refFold(refSum(b, 0)); got != want {
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

func TestIOVSumOddPieces(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for trial := 0; trial < 200; trial++ {
		src := randomSplit(rng, data)
		start := rng.IntN(100)
		n := rng.IntN(len(data) - start)
		r := iovReader{src: src}
		r.seek(start)
		got, ok := r.sum(n)
		want := refFold(refSum(data[start:start+n], 0))
		if !ok || got != want {
			t.Fatalf("trial %d: got %#04x ok=%v want %#04x", trial, got, ok, want)
		}
	}
}

// randomSplit cuts b into 1..8 pieces of random (possibly odd or zero) size.
func randomSplit(rng *rand.Rand, b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		if len(out) == 7 {
			out = append(out, b)
			break
		}
		n := rng.IntN(len(b) + 1)
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func TestPseudoHeaderSum(t *testing.T) {
	got := PseudoHeaderSum(ProtoTCP, testIPv6Src, testIPv6Dst, 70000)
	want := refFold(refPseudo(testIPv6Src, testIPv6Dst, ProtoTCP, 70000))
	if got != want {
		t.Fatalf("got %#04x want %#04x", got, want)
	}
}
