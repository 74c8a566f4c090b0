package vnet

import (
	"bytes"
	"testing"
)

func TestHdrDecodeEncode(t *testing.T) {
	wire := []byte{
		0x01,       // flags NEEDS_CSUM
		0x81,       // TCPV4|ECN
		0x36, 0x00, // hdr_len 54
		0xb4, 0x05, // gso_size 1460
		0x22, 0x00, // csum_start 34
		0x10, 0x00, // csum_offset 16
		0x03, 0x00, // num_buffers 3
	}
	want := Hdr{Flags: 1, GSOType: 0x81, HdrLen: 54, GSOSize: 1460, CsumStart: 34, CsumOffset: 16, NumBuffers: 3}
	if got := DecodeHdr(wire); got != want {
		t.Fatalf("DecodeHdr(12) = %+v, want %+v", got, want)
	}
	want10 := want
	want10.NumBuffers = 0
	if got := DecodeHdr(wire[:10]); got != want10 {
		t.Fatalf("DecodeHdr(10) = %+v, want %+v", got, want10)
	}
	if got := DecodeHdr(wire[:9]); got != (Hdr{}) {
		t.Fatalf("DecodeHdr(9) = %+v, want zero", got)
	}

	out := make([]byte, 12)
	if n := want.Encode(out); n != 12 || !bytes.Equal(out, wire) {
		t.Fatalf("Encode(12) = %d % x, want % x", n, out, wire)
	}
	out = make([]byte, 11)
	if n := want.Encode(out); n != 10 || !bytes.Equal(out[:10], wire[:10]) || out[10] != 0 {
		t.Fatalf("Encode(11) = %d % x", n, out)
	}
	if n := want.Encode(out[:9]); n != 0 {
		t.Fatalf("Encode(9) = %d, want 0", n)
	}
}

func TestHdrReasonString(t *testing.T) {
	seen := map[string]bool{}
	for r := HdrReason(0); r < numHdrReasons; r++ {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("HdrReason(%d).String() = %q (empty, unknown or duplicate)", r, s)
		}
		seen[s] = true
	}
	if HdrReason(200).String() != "unknown" {
		t.Errorf("out-of-range reason name")
	}
}

func TestHdrValidate(t *testing.T) {
	const (
		tcp4Start = 14 + 20 // Ethernet + IPv4
		tcp6Start = 14 + 40 // Ethernet + IPv6
		frame     = 14 + 20 + 20 + 3*1448
	)
	tso4 := Hdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: tcp4Start, CsumOffset: 16}
	tso6 := Hdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv6, GSOSize: 1428, CsumStart: tcp6Start, CsumOffset: 16}
	uso := Hdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4, GSOSize: 1400, CsumStart: tcp4Start, CsumOffset: 6}
	ufo := Hdr{Flags: FlagNeedsCsum, GSOType: GSOUDP, GSOSize: 1400, CsumStart: tcp4Start, CsumOffset: 6}
	with := func(h Hdr, f func(*Hdr)) Hdr { f(&h); return h }

	cases := []struct {
		name     string
		h        Hdr
		frameLen int
		want     HdrReason
	}{
		{"plain frame, no flags", Hdr{}, 60, HdrOK},
		{"plain frame ignores csum fields without NEEDS_CSUM", Hdr{CsumStart: 0xFFFF, CsumOffset: 0xFFFF}, 60, HdrOK},
		{"hdr_len is never trusted", with(tso4, func(h *Hdr) { h.HdrLen = 0xFFFF }), frame, HdrOK},
		{"unknown flag bits ignored", Hdr{Flags: 0xF0}, 60, HdrOK},
		{"DATA_VALID ignored on TX", Hdr{Flags: FlagDataValid}, 60, HdrOK},
		{"frame shorter than Ethernet", Hdr{}, 13, HdrFrameShort},
		{"negative frame", Hdr{}, -2, HdrFrameShort},
		{"partial csum UDP, no GSO", Hdr{Flags: FlagNeedsCsum, CsumStart: tcp4Start, CsumOffset: 6}, tcp4Start + 8, HdrOK},
		{"partial csum: any offset without GSO", Hdr{Flags: FlagNeedsCsum, CsumStart: tcp4Start, CsumOffset: 10}, 100, HdrOK},
		{"csum field ends exactly at frame end", Hdr{Flags: FlagNeedsCsum, CsumStart: tcp4Start, CsumOffset: 6}, tcp4Start + 8, HdrOK},
		{"csum field one past frame end", Hdr{Flags: FlagNeedsCsum, CsumStart: tcp4Start, CsumOffset: 6}, tcp4Start + 7, HdrCsumOutOfFrame},
		{"csum_start past frame", Hdr{Flags: FlagNeedsCsum, CsumStart: 0xFFFF, CsumOffset: 0xFFFF}, 60, HdrCsumOutOfFrame},
		{"csum_start inside L2/L3 minimum", Hdr{Flags: FlagNeedsCsum, CsumStart: 19, CsumOffset: 6}, 60, HdrCsumStartTooSmall},
		{"csum_start 20 is the kernel minimum", Hdr{Flags: FlagNeedsCsum, CsumStart: 20, CsumOffset: 6}, 60, HdrOK},

		{"TSO4", tso4, frame, HdrOK},
		{"TSO4 ECN", with(tso4, func(h *Hdr) { h.GSOType |= GSOECN }), frame, HdrOK},
		{"TSO6", tso6, frame + 20, HdrOK},
		{"USO", uso, tcp4Start + 8 + 5*1400, HdrOK},
		{"UFO", ufo, tcp4Start + 8 + 5*1400, HdrOK},
		{"GSO tail shorter than gso_size is valid (6.6.44 regression case)", tso4, tcp4Start + 20 + 1448 + 100, HdrOK},
		{"GSO payload below one segment is valid", tso4, tcp4Start + 20 + 10, HdrOK},

		{"gso_size zero", with(tso4, func(h *Hdr) { h.GSOSize = 0 }), frame, HdrGSOSizeZero},
		{"gso_size GSO_BY_FRAGS", with(tso4, func(h *Hdr) { h.GSOSize = 0xFFFF }), frame, HdrGSOSizeByFrags},
		{"gso_size 0xFFFE allowed", with(tso4, func(h *Hdr) { h.GSOSize = 0xFFFE }), frame, HdrOK},
		{"GSO without NEEDS_CSUM", with(tso4, func(h *Hdr) { h.Flags = 0 }), frame, HdrGSONoCsum},
		{"GSO without NEEDS_CSUM but DATA_VALID", with(tso4, func(h *Hdr) { h.Flags = FlagDataValid }), frame, HdrGSONoCsum},
		{"gso_type 2 unknown", with(tso4, func(h *Hdr) { h.GSOType = 2 }), frame, HdrGSOUnknownType},
		{"gso_type 6 unknown", with(tso4, func(h *Hdr) { h.GSOType = 6 }), frame, HdrGSOUnknownType},
		{"ECN alone", with(tso4, func(h *Hdr) { h.GSOType = GSOECN }), frame, HdrGSOUnknownType},
		{"UDP tunnel v4 not negotiated", with(tso4, func(h *Hdr) { h.GSOType = GSOTCPv4 | GSOUDPTunnelIPv4 }), frame, HdrGSOUnknownType},
		{"UDP tunnel v6 not negotiated", with(uso, func(h *Hdr) { h.GSOType = GSOUDPL4 | GSOUDPTunnelIPv6 }), frame, HdrGSOUnknownType},
		{"USO with ECN", with(uso, func(h *Hdr) { h.GSOType |= GSOECN }), frame, HdrGSOECNNotTCP},
		{"UFO with ECN", with(ufo, func(h *Hdr) { h.GSOType |= GSOECN }), frame, HdrGSOECNNotTCP},
		{"TSO4 csum_offset 6", with(tso4, func(h *Hdr) { h.CsumOffset = 6 }), frame, HdrCsumOffsetBad},
		{"TSO6 csum_offset 0", with(tso6, func(h *Hdr) { h.CsumOffset = 0 }), frame, HdrCsumOffsetBad},
		{"USO csum_offset 16", with(uso, func(h *Hdr) { h.CsumOffset = 16 }), frame, HdrCsumOffsetBad},
		{"TSO6 csum_start below IPv6 minimum", with(tso6, func(h *Hdr) { h.CsumStart = 39 }), frame, HdrCsumStartTooSmall},
		{"TSO4 csum_start 20 passes the kernel minimum", with(tso4, func(h *Hdr) { h.CsumStart = 20 }), frame, HdrOK},
		{"TSO4 TCP header past frame", tso4, tcp4Start + 19, HdrCsumOutOfFrame},
		{"TSO4 TCP header exactly fits", tso4, tcp4Start + 20, HdrOK},
		{"USO UDP header past frame", uso, tcp4Start + 7, HdrCsumOutOfFrame},
		{"USO 128 segments", with(uso, func(h *Hdr) { h.GSOSize = 100 }), tcp4Start + 8 + 128*100, HdrOK},
		{"USO 128 segments + 1 byte", with(uso, func(h *Hdr) { h.GSOSize = 100 }), tcp4Start + 8 + 128*100 + 1, HdrUSOTooManySegs},
		{"UFO has no segment limit here", with(ufo, func(h *Hdr) { h.GSOSize = 100 }), tcp4Start + 8 + 200*100, HdrOK},
	}
	// KernelRules differ from DeviceRules only where the spec says MUST and
	// __virtio_net_hdr_to_skb lets the packet through.
	kernelDiffers := map[string]HdrReason{
		"frame shorter than Ethernet":           HdrOK,
		"negative frame":                        HdrOK,
		"GSO without NEEDS_CSUM":                HdrOK,
		"GSO without NEEDS_CSUM but DATA_VALID": HdrOK,
		"UFO with ECN":                          HdrOK,
	}
	for _, c := range cases {
		if got := c.h.Check(c.frameLen, DeviceRules); got != c.want {
			t.Errorf("%s: Check(%+v, %d, DeviceRules) = %v, want %v", c.name, c.h, c.frameLen, got, c.want)
		}
		want, ok := kernelDiffers[c.name]
		if !ok {
			want = c.want
		}
		if got := c.h.Check(c.frameLen, KernelRules); got != want {
			t.Errorf("%s: Check(%+v, %d, KernelRules) = %v, want %v", c.name, c.h, c.frameLen, got, want)
		}
	}
	// USO is the one GSO type the kernel also refuses without NEEDS_CSUM.
	if got := (Hdr{GSOType: GSOUDPL4, GSOSize: 1400}).Check(frame, KernelRules); got != HdrGSONoCsum {
		t.Errorf("USO without NEEDS_CSUM, KernelRules: %v, want %v", got, HdrGSONoCsum)
	}
}

func TestHdrZeroAlloc(t *testing.T) {
	b := []byte{1, 1, 0, 0, 0xb4, 5, 34, 0, 16, 0, 0, 0}
	out := make([]byte, 12)
	var sink HdrReason
	allocs := testing.AllocsPerRun(100, func() {
		h := DecodeHdr(b)
		sink += h.Check(9000, DeviceRules)
		h.Encode(out)
		_ = sink.String()
	})
	if allocs != 0 {
		t.Errorf("decode/validate/encode allocate %.1f times", allocs)
	}
}

func BenchmarkHdrDecodeValidate(b *testing.B) {
	wire := []byte{1, 1, 0, 0, 0xb4, 5, 34, 0, 16, 0, 0, 0}
	b.ReportAllocs()
	var sink HdrReason
	for b.Loop() {
		h := DecodeHdr(wire)
		sink += h.Check(65000, DeviceRules)
	}
	_ = sink
}
