package hostile_test

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vhostd/vhostd/virtqueue"
)

// FuzzTxChain drives the whole TX path of a running virtionet.Device (ring,
// chain walk, header validation, GSO parse/decide/segment, backend write)
// with descriptor chains and guest memory built from the input. It checks
// that every posted chain comes back on the used ring with length 0, that
// the ring never stalls, and that the accounting holds (posted == written +
// dropped); a panic anywhere ends the process and reports the input.
//
// Input layout:
//
//	[0]       bits 0-1 GSO policy (0 auto, 1 defer, 2 software, 3 auto);
//	          bit 2 backend without TSO/USO (vhostd segments)
//	[1]       bits 0-1 number of chains to post, minus one
//	[2:6]     head descriptor of each chain (& 15)
//	[6:134]   descriptors 0..15, 8 bytes each:
//	            [0:2] offset (LE), [2:4] length (LE), [4] flags (& 7:
//	            NEXT, WRITE, INDIRECT), [5] next, [6] address mode, [7]
//	            length bits 16-23
//	          address mode (& 7): 0, 4-7 window + offset; 1 guest address
//	          offset (rings, tables); 2 straddling regions 0 and 1;
//	          3 far outside guest memory
//	[134:]    the window: up to 64 KiB of guest memory the descriptors
//	          (and indirect tables inside it) point into
const (
	fuzzHdrLen   = 134
	fuzzDescs    = 16
	fuzzWindowSz = 64 << 10
)

// fuzzState is one port per backend kind, reused across inputs (building a
// session per input would leave the fuzzer measuring the handshake).
var fuzzState struct {
	ports [2]*port
}

func fuzzPort(t *testing.T, noTSO bool) *port {
	i := 0
	caps := backend.Capabilities{}
	if noTSO {
		i = 1
		caps = backend.Capabilities{Offloads: vnet.OffloadCSUM, GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500}
	}
	p := fuzzState.ports[i]
	if p != nil && (p.stats(0).TxBroken.Load() || p.stats(0).RxBroken.Load()) {
		p.close()
		p = nil
	}
	if p == nil {
		var err error
		if p, err = openPort(portConfig{caps: caps}); err != nil {
			t.Fatal(err)
		}
		fuzzState.ports[i] = p
	}
	p.t = t
	return p
}

// windowGPA is where the window lies in guest memory: the victim TX ring's
// data area.
func (p *port) windowGPA() uint64 { return p.fe.DataOffset + victimTx*areaSize }

type fuzzDesc struct {
	off, len uint16
	flags    uint8
	next     uint8
	mode     uint8
	lenHi    uint8
}

func (d fuzzDesc) put(b []byte) {
	binary.LittleEndian.PutUint16(b[0:], d.off)
	binary.LittleEndian.PutUint16(b[2:], d.len)
	b[4], b[5], b[6], b[7] = d.flags, d.next, d.mode, d.lenHi
}

func fuzzInput(ctl, chains uint8, heads [4]uint8, descs []fuzzDesc, window []byte) []byte {
	b := make([]byte, fuzzHdrLen, fuzzHdrLen+len(window))
	b[0], b[1] = ctl, chains
	copy(b[2:6], heads[:])
	for i, d := range descs {
		d.put(b[6+8*i:])
	}
	return append(b, window...)
}

// fuzzSeeds are valid packets of each kind and a few malformed chains.
func fuzzSeeds(windowGPA uint64) [][]byte {
	plain := make([]byte, 200)
	copy(plain, testpkt.VnetHdr(0, 0, 0, 0, 0))
	copy(plain[64:], testpkt.UDP4(100, testpkt.CsumNone))
	tso := make([]byte, 8192)
	copy(tso, testpkt.TSO4Hdr(1448))
	copy(tso[64:], testpkt.TCP4Super(3000))
	uso := make([]byte, 4096)
	copy(uso, testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOUDPL4, 1000, 34, 6))
	copy(uso[64:], testpkt.UDP4(2500, testpkt.CsumPartial))
	csum := make([]byte, 256)
	copy(csum, testpkt.VnetHdr(vnet.FlagNeedsCsum, 0, 0, 34, 6))
	copy(csum[64:], testpkt.UDP4(150, testpkt.CsumPartial))
	two := []fuzzDesc{{off: 0, len: 12, flags: 1, next: 1}, {off: 64, len: 100}}
	// An indirect table at window offset 4096 describing the plain packet.
	ind := make([]byte, 4096+32)
	copy(ind, plain)
	virtqueue.PutDesc(ind[4096:], virtqueue.Desc{Addr: windowGPA, Len: 12, Flags: virtqueue.DescFNext, Next: 1})
	virtqueue.PutDesc(ind[4112:], virtqueue.Desc{Addr: windowGPA + 64, Len: 100})
	// A TSO packet whose headers are split over several descriptors.
	split := []fuzzDesc{
		{off: 0, len: 5, flags: 1, next: 1}, {off: 5, len: 7, flags: 1, next: 2},
		{off: 64, len: 20, flags: 1, next: 3}, {off: 84, len: 30, flags: 1, next: 4},
		{off: 114, len: 3000 + 54 - 50},
	}
	return [][]byte{
		fuzzInput(0, 0, [4]uint8{}, two, plain),
		fuzzInput(1, 1, [4]uint8{0, 0}, two, plain),
		fuzzInput(0, 0, [4]uint8{}, []fuzzDesc{{off: 0, len: 12, flags: 1, next: 1}, {off: 64, len: 3054}}, tso),
		fuzzInput(2|4, 0, [4]uint8{}, []fuzzDesc{{off: 0, len: 12, flags: 1, next: 1}, {off: 64, len: 3054}}, tso),
		fuzzInput(4, 0, [4]uint8{}, split, tso),
		fuzzInput(4, 0, [4]uint8{}, []fuzzDesc{{off: 0, len: 12, flags: 1, next: 1}, {off: 64, len: 2500}}, uso),
		fuzzInput(4, 0, [4]uint8{}, []fuzzDesc{{off: 0, len: 12, flags: 1, next: 1}, {off: 64, len: 150}}, csum),
		fuzzInput(0, 0, [4]uint8{}, []fuzzDesc{{off: 4096, len: 32, flags: 4}}, ind),
		fuzzInput(0, 3, [4]uint8{0, 1, 2, 3}, []fuzzDesc{{off: 0, len: 12, flags: 1, next: 1}, {off: 64, len: 100, flags: 1, next: 0}, {off: 0, len: 0}, {off: 0, len: 112, mode: 3}}, plain),
		fuzzInput(0, 0, [4]uint8{}, []fuzzDesc{{off: 0x7ff0, len: 0x20, mode: 2}}, plain),
	}
}

func FuzzTxChain(f *testing.F) {
	// The window address only matters for the indirect seed; it is the
	// same in every port.
	p, err := openPort(portConfig{})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range fuzzSeeds(p.windowGPA()) {
		f.Add(s)
	}
	p.close()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < fuzzHdrLen {
			return
		}
		p := fuzzPort(t, data[0]&4 != 0)
		defer func() { p.t = nil }()
		switch data[0] & 3 {
		case 1:
			p.dev.SetPolicy(gso.PolicyDefer)
		case 2:
			p.dev.SetPolicy(gso.PolicySoftware)
		default:
			p.dev.SetPolicy(gso.PolicyAuto)
		}
		win := p.fe.Buffer(victimTx*areaSize, fuzzWindowSz)
		clear(win)
		copy(win, data[fuzzHdrLen:])
		wgpa := p.windowGPA()
		drv := p.queue(victimTx).Driver
		for i := 0; i < fuzzDescs; i++ {
			b := data[6+8*i:]
			off := uint64(binary.LittleEndian.Uint16(b[0:]))
			n := uint32(binary.LittleEndian.Uint16(b[2:])) | uint32(b[7])<<16
			var addr uint64
			switch b[6] & 7 {
			case 1:
				addr = off
			case 2:
				addr = region1GPA - 0x8000 + off
			case 3:
				addr = off<<48 | off
			default:
				addr = wgpa + off
			}
			drv.SetDesc(uint16(i), virtqueue.Desc{Addr: addr, Len: n, Flags: uint16(b[4] & 7), Next: uint16(b[5])})
		}
		chains := int(data[1]&3) + 1
		heads := map[uint32]bool{}
		for i := 0; i < chains; i++ {
			h := uint16(data[2+i] & 15)
			heads[uint32(h)] = true
			drv.PostRaw(h)
		}
		st := p.stats(0)
		postedBefore := st.Load(virtionet.CtrTxPosted)
		want := drv.LastUsed() + uint16(chains)
		drv.Publish()
		if err := p.queue(victimTx).Kick(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for drv.UsedIdx() != want {
			if st.TxBroken.Load() {
				t.Fatalf("ring broken by chains with valid heads: faults %d", st.Load(virtionet.CtrMemFaults))
			}
			if time.Now().After(deadline) {
				t.Fatalf("TX ring stalled: used.idx %d, want %d", drv.UsedIdx(), want)
			}
			runtime.Gosched()
		}
		used := make([]virtqueue.UsedElem, 8)
		n := drv.Reap(used)
		if n != chains {
			t.Fatalf("reaped %d used entries, posted %d chains", n, chains)
		}
		for _, u := range used[:n] {
			if u.Len != 0 || !heads[u.ID] {
				t.Fatalf("used entry %+v: TX must return a posted head with length 0", u)
			}
		}
		// Counters are folded right after the used ring is published.
		if !eventually(func() bool {
			return st.Load(virtionet.CtrTxPosted) == postedBefore+uint64(chains) &&
				st.Load(virtionet.CtrTxPosted) == st.TxWritten()+st.TxDropTotal()
		}) {
			t.Fatalf("accounting: posted %d, written %d, dropped %d", st.Load(virtionet.CtrTxPosted), st.TxWritten(), st.TxDropTotal())
		}
		for _, pkt := range p.pipes[0].TakeWritten() {
			if len(pkt) < 12+14 || len(pkt) > 12+14+8+65535 {
				t.Fatalf("backend got a %d-byte packet", len(pkt))
			}
		}
	})
}
