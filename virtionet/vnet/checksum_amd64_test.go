package vnet

import "testing"

// The generic loop must agree with the reference too on machines with AVX2.
func TestChecksumGenericLoop(t *testing.T) {
	if !hasAVX2 {
		t.Skip("the generic loop is the only loop here; TestChecksumMatchesReference covers it")
	}
	hasAVX2 = false
	defer func() { hasAVX2 = true }()
	TestChecksumMatchesReference(t)
}

// BenchmarkChecksumGeneric is BenchmarkChecksum with the pure-Go ADC loop.
func BenchmarkChecksumGeneric(b *testing.B) {
	if !hasAVX2 {
		b.Skip("no vector loop on this CPU: BenchmarkChecksum already measures the generic loop")
	}
	hasAVX2 = false
	defer func() { hasAVX2 = true }()
	BenchmarkChecksum(b)
}
