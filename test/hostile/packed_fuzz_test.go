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

// FuzzTxPackedList is FuzzTxChain over a packed ring: the whole TX path of a
// running virtionet.Device (packed descriptor walk, indirect tables, header
// validation, GSO parse/decide/segment, backend write) with buffers and
// guest memory built from the input. Every posted buffer must come back with
// length 0 (reaped by a PackedDriver that tracks their ids, expanding
// IN_ORDER batches), the ring must neither stall nor break, and posted ==
// written + dropped.
//
// Input layout: as FuzzTxChain's (see there), read differently where a
// packed ring differs:
//
//	[0]       bits 0-1 GSO policy; bit 2 backend without TSO/USO; bit 3
//	          IN_ORDER negotiated
//	[1]       bits 0-1 number of buffers to post, minus one
//	[2:6]     descriptors in each buffer (& 15, at least 1), taken in turn
//	          from descriptors 0..15 (wrapping)
//	[6:134]   descriptors 0..15 as in FuzzTxChain; flags & 6: WRITE,
//	          INDIRECT (NEXT is set on all but a buffer's last descriptor;
//	          the next byte is unused)
//	[134:]    the window (indirect tables in it are read in the packed
//	          layout: addr, len, id, flags)
func FuzzTxPackedList(f *testing.F) {
	p, err := openPort(portConfig{packed: true})
	if err != nil {
		f.Fatal(err)
	}
	wgpa := p.windowGPA()
	p.close()
	plain := make([]byte, 200)
	copy(plain, testpkt.VnetHdr(0, 0, 0, 0, 0))
	copy(plain[64:], testpkt.UDP4(100, testpkt.CsumNone))
	tso := make([]byte, 8192)
	copy(tso, testpkt.TSO4Hdr(1448))
	copy(tso[64:], testpkt.TCP4Super(3000))
	two := []fuzzDesc{{off: 0, len: 12}, {off: 64, len: 100}}
	ind := make([]byte, 4096+32)
	copy(ind, plain)
	virtqueue.PutPackedDesc(ind[4096:], virtqueue.PackedDesc{Addr: wgpa, Len: 12})
	virtqueue.PutPackedDesc(ind[4112:], virtqueue.PackedDesc{Addr: wgpa + 64, Len: 100})
	for _, s := range [][]byte{
		fuzzInput(0, 0, [4]uint8{2}, two, plain),
		fuzzInput(8, 1, [4]uint8{2, 2}, two, plain),
		fuzzInput(2|4|8, 0, [4]uint8{2}, []fuzzDesc{{off: 0, len: 12}, {off: 64, len: 3054}}, tso),
		fuzzInput(0, 0, [4]uint8{1}, []fuzzDesc{{off: 4096, len: 32, flags: 4}}, ind),
		fuzzInput(8, 3, [4]uint8{2, 1, 1, 3}, []fuzzDesc{{off: 0, len: 12}, {off: 64, len: 100, flags: 2}, {off: 0, len: 0}, {off: 0, len: 112, mode: 3}, {off: 4096, len: 32, flags: 4}}, ind),
		fuzzInput(0, 0, [4]uint8{1}, []fuzzDesc{{off: 0x7ff0, len: 0x20, mode: 2}}, plain),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < fuzzHdrLen {
			return
		}
		p := fuzzPackedPort(t, data[0]&4 != 0, data[0]&8 != 0)
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
		desc := func(i int) virtqueue.PackedDesc {
			b := data[6+8*(i%fuzzDescs):]
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
			return virtqueue.PackedDesc{Addr: addr, Len: n, Flags: uint16(b[4]) & (fWrite | fInd)}
		}
		drv := p.queue(victimTx).Packed
		bufs := int(data[1]&3) + 1
		ids := map[uint32]bool{}
		next := 0
		for i := 0; i < bufs; i++ {
			nd := max(int(data[2+i]&15), 1)
			list := make([]virtqueue.PackedDesc, nd)
			for k := range list {
				list[k] = desc(next)
				next++
				if k < nd-1 {
					list[k].Flags |= fNext
				}
			}
			id, err := drv.AddRaw(list...)
			if err != nil {
				t.Fatal(err)
			}
			ids[uint32(id)] = true
		}
		st := p.stats(0)
		postedBefore := st.Load(virtionet.CtrTxPosted)
		drv.Publish()
		if err := p.queue(victimTx).Kick(); err != nil {
			t.Fatal(err)
		}
		used := make([]virtqueue.UsedElem, 8)
		got := 0
		deadline := time.Now().Add(10 * time.Second)
		for got < bufs {
			k := drv.Reap(used[got:])
			for _, u := range used[got : got+k] {
				if u.Len != 0 || !ids[u.ID] {
					t.Fatalf("used %+v: TX must return a posted buffer id with length 0", u)
				}
				delete(ids, u.ID)
			}
			got += k
			if drv.Err() != nil {
				t.Fatalf("driver: %v", drv.Err())
			}
			if st.TxBroken.Load() {
				t.Fatalf("ring broken by well-formed lists: faults %d", st.Load(virtionet.CtrMemFaults))
			}
			if time.Now().After(deadline) {
				t.Fatalf("TX ring stalled: %d of %d buffers used", got, bufs)
			}
			if k == 0 {
				runtime.Gosched()
			}
		}
		if !eventually(func() bool {
			return st.Load(virtionet.CtrTxPosted) == postedBefore+uint64(bufs) &&
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

// fuzzPackedState is one packed port per (backend kind, IN_ORDER), reused
// across inputs.
var fuzzPackedState struct {
	ports [4]*port
}

func fuzzPackedPort(t *testing.T, noTSO, inOrder bool) *port {
	i := 0
	caps := backend.Capabilities{}
	if noTSO {
		i = 1
		caps = backend.Capabilities{Offloads: vnet.OffloadCSUM, GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500}
	}
	if inOrder {
		i += 2
	}
	p := fuzzPackedState.ports[i]
	if p != nil && (p.stats(0).TxBroken.Load() || p.stats(0).RxBroken.Load()) {
		p.close()
		p = nil
	}
	if p == nil {
		var err error
		if p, err = openPort(portConfig{caps: caps, packed: true, inOrder: inOrder}); err != nil {
			t.Fatal(err)
		}
		fuzzPackedState.ports[i] = p
	}
	p.t = t
	return p
}
