package gso

import (
	"math/rand/v2"
	"testing"

	"github.com/vhostd/vhostd/internal/testing/refcsum"
)

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
		want := refcsum.Fold(refcsum.Sum(data[start:start+n], 0))
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
