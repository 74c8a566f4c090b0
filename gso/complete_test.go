package gso

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

func TestCompleteCsum(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	specs := []pktSpec{
		{payloadLen: 1000},
		{payloadLen: 999, tcpOpts: tcpOptsTS},
		{ipv6: true, payloadLen: 1201},
		{udp: true, payloadLen: 333},
		{udp: true, ipv6: true, payloadLen: 1000, v6Ext: []v6ext{{ProtoHopByHop, 8}}},
		{payloadLen: 500, mss: 1448, gsoType: vnet.GSOTCPv4}, // small GSO
	}
	for _, s := range specs {
		frame, h := s.build()
		m, r := Parse(frame, h)
		if r != ReasonNone || m.Kind != KindPlain || !m.NeedsCsum {
			t.Fatalf("parse: %v %+v", r, m)
		}
		c, at, ok := FinishCsum(randomSplit(rng, frame), &m)
		if !ok || at != int(h.CsumStart+h.CsumOffset) {
			t.Fatalf("FinishCsum: %v at %d", ok, at)
		}
		cp := append([]byte(nil), frame...)
		if !CompleteCsum(cp, &m) {
			t.Fatal("CompleteCsum failed")
		}
		if got := binary.BigEndian.Uint16(cp[at:]); got != c {
			t.Fatalf("CompleteCsum wrote %#04x, FinishCsum said %#04x", got, c)
		}
		verifyGopacket(t, "completed", cp)
		if !bytes.Equal(cp[:at], frame[:at]) || !bytes.Equal(cp[at+2:], frame[at+2:]) {
			t.Fatal("CompleteCsum changed other bytes")
		}
	}
	// A sum that completes to 0 goes out as 0xffff, for TCP too
	// (skb_checksum_help: "csum_fold(csum) ?: CSUM_MANGLED_0").
	frame := []byte{0, 0, 0xff, 0xff, 0, 0}
	m := Meta{FrameLen: 6, NeedsCsum: true, Hdr: vnet.Hdr{Flags: vnet.FlagNeedsCsum, CsumStart: 0, CsumOffset: 4}}
	if !CompleteCsum(frame, &m) || binary.BigEndian.Uint16(frame[4:]) != 0xffff {
		t.Fatalf("zero checksum: % x", frame)
	}
	if _, _, ok := FinishCsum([][]byte{frame}, &Meta{FrameLen: 6}); ok {
		t.Fatal("FinishCsum without NEEDS_CSUM")
	}
}
