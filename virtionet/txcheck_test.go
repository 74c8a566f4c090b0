package virtionet_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// The device's TX header check (virtionet.TxHeaderCheck, vnet.DeviceRules) and
// gso.Parse (vnet.KernelRules, then its own frame parsing) share one
// validator. These tests run both over the same inputs so that they can
// never disagree silently: they may differ only where the spec's driver
// MUSTs are stricter than the kernel, and then only as documented.

// headerReasons are the gso reasons Parse gives for header-level faults,
// i.e. the ones vnet.Check decides. ReasonMalformedCsumStart is left out: it
// is also a frame-level fault (csum_start is not the transport header).
var headerReasons = map[gso.Reason]bool{
	gso.ReasonMalformedGSOType:    true,
	gso.ReasonMalformedGSOSize:    true,
	gso.ReasonMalformedCsumRange:  true,
	gso.ReasonMalformedCsumOffset: true,
	gso.ReasonMalformedUSONoCsum:  true,
	gso.ReasonMalformedUSOSegs:    true,
}

// specOnly reports whether the device refused h for a rule the kernel does
// not have: a frame shorter than Ethernet, a TCP or UFO GSO header without
// NEEDS_CSUM, the ECN bit on UFO.
func specOnly(h vnet.Hdr, frameLen int, r vnet.HdrReason) bool {
	switch r {
	case vnet.HdrFrameShort:
		return true
	case vnet.HdrGSONoCsum:
		return h.GSOType != vnet.GSOUDPL4
	case vnet.HdrGSOECNNotTCP:
		return h.GSOType&^vnet.GSOECN == vnet.GSOUDP
	}
	return false
}

// checkAgreement asserts the contract between the two checks for one
// input.
func checkAgreement(t *testing.T, h vnet.Hdr, frame []byte) {
	t.Helper()
	dev := virtionet.TxHeaderCheck(h, len(frame))
	m, r := gso.Parse(frame, h)
	if r != gso.ReasonNone && r.Malformed() != (m.Malformed == r) {
		t.Fatalf("%+v: Parse returned %v but Meta.Malformed %v", h, r, m.Malformed)
	}
	switch {
	case dev == vnet.HdrOK:
		// Whatever the device lets through passes gso's header rules too;
		// gso may still refuse the frame's own headers.
		if headerReasons[r] {
			t.Fatalf("%+v len %d: device accepts, gso.Parse refuses the header: %v", h, len(frame), r)
		}
	case specOnly(h, len(frame), dev):
		// The device is stricter than the kernel here by policy. gso
		// judges by the kernel's rules alone.
		k := h.Check(len(frame), vnet.KernelRules)
		if k != vnet.HdrOK {
			if want := gso.HdrReasonOf(k); r != want {
				t.Fatalf("%+v len %d: device %v (spec only), kernel rules %v, gso.Parse %v, want %v", h, len(frame), dev, k, r, want)
			}
			return
		}
		if headerReasons[r] {
			t.Fatalf("%+v len %d: device %v (spec only), gso.Parse refuses the header: %v", h, len(frame), dev, r)
		}
		// The NEEDS_CSUM case: what the device drops as gso_no_csum, the
		// kernel (and gso) segment in software.
		if dev == vnet.HdrGSONoCsum && r == gso.ReasonNone && m.Kind != gso.KindPlain {
			all := vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6 | vnet.OffloadTSOECN | vnet.OffloadUSO | vnet.OffloadUFO
			if d, why := gso.Decide(m, all, gso.Limits{}, gso.PolicyAuto); d != gso.DecisionSegment || why != gso.ReasonGSONoNeedsCsum {
				t.Fatalf("%+v: GSO without NEEDS_CSUM: Decide %v %v, want segment for %v", h, d, why, gso.ReasonGSONoNeedsCsum)
			}
		}
	default:
		// A kernel rule: both refuse, with corresponding reasons.
		if want := gso.HdrReasonOf(dev); r != want {
			t.Fatalf("%+v len %d: device %v, gso.Parse %v, want %v", h, len(frame), dev, r, want)
		}
	}
}

// agreementFrames are well-formed frames of each GSO kind, so that the
// header is the only thing varied.
func agreementFrames() [][]byte {
	tcp6 := testpkt.TCP4Super(3000)
	// Re-label the IPv4 frame as IPv6 is not worth it here: the IPv4 frames
	// and the header variations already reach every header rule; an IPv6
	// frame only moves nh_min_len, which Check handles from gso_type alone.
	return [][]byte{testpkt.TCP4Super(3000), testpkt.TCP4Super(100), testpkt.UDP4(4000, testpkt.CsumPartial), testpkt.UDP4(60, testpkt.CsumPartial), tcp6[:13], tcp6[:54]}
}

func TestTxHeaderCheckAgreesWithGSO(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 15))
	gsoTypes := []uint8{vnet.GSONone, vnet.GSOTCPv4, vnet.GSOTCPv6, vnet.GSOUDP, vnet.GSOUDPL4,
		vnet.GSOTCPv4 | vnet.GSOECN, vnet.GSOUDP | vnet.GSOECN, vnet.GSOUDPL4 | vnet.GSOECN, vnet.GSOECN, 2, 0x20}
	sizes := []uint16{0, 1, 8, 100, 1400, 1448, 0xFFFE, 0xFFFF}
	starts := []uint16{0, 19, 20, 34, 39, 40, 54, 60000}
	offsets := []uint16{0, 6, 10, 16, 65000}
	n := 0
	for _, frame := range agreementFrames() {
		for _, gt := range gsoTypes {
			for _, flags := range []uint8{0, vnet.FlagNeedsCsum, vnet.FlagDataValid} {
				for _, size := range sizes {
					for _, start := range starts {
						for _, off := range offsets {
							h := vnet.Hdr{Flags: flags, GSOType: gt, GSOSize: size, CsumStart: start, CsumOffset: off, HdrLen: uint16(rng.UintN(100))}
							checkAgreement(t, h, frame)
							n++
						}
					}
				}
			}
		}
	}
	t.Logf("%d header/frame pairs", n)
}

// FuzzTxHeaderAgreesWithGSO is TestTxHeaderCheckAgreesWithGSO over
// arbitrary headers and frames, seeded with the frames above.
func FuzzTxHeaderAgreesWithGSO(f *testing.F) {
	for _, frame := range agreementFrames() {
		f.Add(testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, 1448, 34, 16), frame)
		f.Add(testpkt.VnetHdr(0, vnet.GSOTCPv4, 1448, 34, 16), frame)
		f.Add(testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOUDPL4, 1400, 34, 6), frame)
		f.Add(testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOUDP|vnet.GSOECN, 1400, 34, 6), frame)
	}
	f.Fuzz(func(t *testing.T, hb []byte, frame []byte) {
		if len(hb) < vnet.HdrLenLegacy || len(frame) > 1<<16 {
			return
		}
		h := vnet.DecodeHdr(hb[:vnet.HdrLenLegacy])
		checkAgreement(t, h, frame)
		// The same header over a frame whose IP length fields are made
		// consistent, so that gso's frame parsing gets past L3 more often.
		if len(frame) >= 34 && binary.BigEndian.Uint16(frame[12:]) == 0x0800 {
			g := append([]byte(nil), frame...)
			binary.BigEndian.PutUint16(g[16:], uint16(len(g)-14))
			g[14] = 0x45
			checkAgreement(t, h, g)
		}
	})
}
