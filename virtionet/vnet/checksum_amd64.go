package vnet

import "golang.org/x/sys/cpu"

// hasAVX2 selects the vector loop of sumLE. The vector loop adds the data as
// 32-bit little-endian words zero-extended into 64-bit lanes
// (VPMOVZXDQ + VPADDQ, 64 bytes per iteration into four accumulators): no
// carries can be lost below 2^32 iterations, and 2^32 ≡ 1 (mod 0xffff), so
// the result is congruent to the 64-bit-word sum of the generic loop.
var hasAVX2 = cpu.X86.HasAVX2

// sumAVX2 returns the sum of b as zero-extended 32-bit little-endian words.
// len(b) must be a multiple of 64 and below 2^36.
//
//go:noescape
func sumAVX2(b []byte) uint64

// vectorMin is the length from which the vector loop pays off.
const vectorMin = 128
