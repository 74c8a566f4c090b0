package vnet

import (
	"bytes"
	"testing"
)

// FuzzHeader feeds arbitrary bytes as a header plus a frame length. Decode and
// Check must not panic, Check must agree with a direct re-statement of
// the kernel's bounds, and encode(decode(x)) must give back x's header bytes.
// Seeds live in testdata/fuzz/FuzzHeader.
func FuzzHeader(f *testing.F) {
	f.Add([]byte{1, 1, 0x36, 0, 0xb4, 5, 34, 0, 16, 0, 0, 0}, 4434)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 60)
	f.Add([]byte{1, 5, 0, 0, 0x78, 5, 34, 0, 6, 0, 1, 0}, 7042)
	f.Add([]byte{1, 0x81, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 65535)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, frameLen int) {
		h := DecodeHdr(b)
		r := h.Check(frameLen, DeviceRules)
		if r >= numHdrReasons {
			t.Fatalf("Check returned out-of-range reason %d", r)
		}
		_ = r.String()
		if r == HdrOK {
			checkAccepted(t, h, frameLen)
		}
		// KernelRules only drop the spec's extra MUSTs: whatever they
		// refuse, DeviceRules refuse too, for the same reason unless one of
		// those MUSTs came first.
		if k := h.Check(frameLen, KernelRules); k != HdrOK && k != r {
			if r == HdrOK || !specOnly(r) {
				t.Fatalf("%+v len %d: KernelRules %v, DeviceRules %v", h, frameLen, k, r)
			}
		}
		for _, n := range []int{HdrLenLegacy, HdrLenV1} {
			if len(b) < n {
				continue
			}
			h := DecodeHdr(b[:n])
			out := make([]byte, n)
			if got := h.Encode(out); got != n {
				t.Fatalf("Encode(%d bytes) wrote %d", n, got)
			}
			if !bytes.Equal(out, b[:n]) {
				t.Fatalf("round trip %d: % x -> %+v -> % x", n, b[:n], h, out)
			}
		}
	})
}

// checkAccepted re-states the invariants every accepted header satisfies, so
// the fuzzer can find a header that slips past Check.
func checkAccepted(t *testing.T, h Hdr, frameLen int) {
	t.Helper()
	if frameLen < 14 {
		t.Fatalf("accepted frame of %d bytes", frameLen)
	}
	if h.GSOType != GSONone {
		if h.Flags&FlagNeedsCsum == 0 || h.GSOSize == 0 || h.GSOSize == 0xFFFF {
			t.Fatalf("accepted GSO header %+v", h)
		}
		switch h.GSOType {
		case GSOTCPv4, GSOTCPv6, GSOTCPv4 | GSOECN, GSOTCPv6 | GSOECN:
			if h.CsumOffset != 16 {
				t.Fatalf("accepted TCP GSO with csum_offset %d", h.CsumOffset)
			}
		case GSOUDPL4:
			if h.CsumOffset != 6 || frameLen-int(h.CsumStart)-8 > int(h.GSOSize)*128 {
				t.Fatalf("accepted bad USO %+v len %d", h, frameLen)
			}
		case GSOUDP:
		default:
			t.Fatalf("accepted gso_type %#x", h.GSOType)
		}
	}
	if h.Flags&FlagNeedsCsum != 0 {
		if int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen || h.CsumStart < 20 {
			t.Fatalf("accepted csum_start %d csum_offset %d in %d bytes", h.CsumStart, h.CsumOffset, frameLen)
		}
	}
}

// specOnly reports whether r can come from a rule DeviceRules add to the
// kernel's.
func specOnly(r HdrReason) bool {
	return r == HdrFrameShort || r == HdrGSONoCsum || r == HdrGSOECNNotTCP
}
