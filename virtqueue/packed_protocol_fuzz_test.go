package virtqueue

import (
	"encoding/binary"
	"testing"
)

// FuzzPackedProtocol runs an operation script between a well-behaved
// PackedDriver and a Packed device: the fuzzer picks queue size, features,
// and the order of adds, pops, completions (any order, or in order), Unpop,
// reaps, notification calls and device restarts. Every buffer must come
// back to the driver exactly once, with the id, length and bytes the device
// gave it, and both sides must agree on the ring state.
//
// Input: [0] queue size - 1 (mod 64), [1] bit 0 EVENT_IDX, bit 1
// INDIRECT_DESC, bit 2 IN_ORDER; then one byte per operation (low 3 bits
// the operation, the rest its argument).
func FuzzPackedProtocol(f *testing.F) {
	f.Add([]byte{7, 0, 0x08, 0x10, 0x02, 0x0b, 0x05, 0x00, 0x02, 0x03, 0x05})
	f.Add([]byte{4, 7, 0x18, 0x01, 0x09, 0x3a, 0x1c, 0x05, 0x1e, 0x07, 0x00, 0x02, 0x23, 0x05})
	f.Add([]byte{0, 2, 0x01, 0x02, 0x03, 0x05, 0x01, 0x02, 0x04, 0x02, 0x03, 0x05, 0x07})
	f.Add([]byte{99, 1, 0x10, 0x10, 0x10, 0x3a, 0x0c, 0x1a, 0x0b, 0x6b, 0x05, 0x06, 0x0e, 0x16, 0x1e, 0x07})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		o := packedOpts{size: uint16(data[0]%64) + 1, eventIdx: data[1]&1 != 0, indirect: data[1]&2 != 0, inOrder: data[1]&4 != 0}
		if len(data) > 2+512 {
			data = data[:2+512]
		}
		r := newPackedTestRing(t, o)
		size := int(o.size)
		type buf struct {
			seq  uint32
			wlen uint32
			got  uint32
			nOut int
		}
		type heldBuf struct {
			Chain
			serial int
		}
		inflight := map[uint16]*buf{}
		var held []heldBuf  // popped, not pushed, in pop order
		var popLog []int    // serials in pop order (what Unpop may give back)
		var pushed []uint16 // pushed, not reaped, in push order
		var seq uint32
		serial := 0
		chains := make([]Chain, 8)
		reaped := make([]UsedElem, size)

		add := func(nOut, nIn int, indirect bool) {
			if nOut+nIn == 0 || r.drv.NumFreeIDs() == 0 {
				return
			}
			need := nOut + nIn
			if indirect {
				need = 1
				if !o.indirect || nOut+nIn > 4 || nOut+nIn > size {
					return
				}
			}
			if r.drv.NumFree() < need {
				return
			}
			// Elements live in the slots of the id the driver hands out
			// next: readable ones at 0x18000, writable ones at 0x10000.
			next := r.drv.freeIDs[len(r.drv.freeIDs)-1]
			var out, in []Seg
			for k := 0; k < nOut; k++ {
				out = append(out, Seg{Addr: r.addr(0x18000 + int(next)*16 + 4*k), Len: 4})
			}
			for k := 0; k < nIn; k++ {
				in = append(in, Seg{Addr: r.addr(0x10000 + int(next)*16 + 4*k), Len: 4})
			}
			binary.LittleEndian.PutUint32(r.buf(0x18000+int(next)*16, 4), seq)
			var id uint16
			var err error
			if indirect {
				id, err = r.drv.AddIndirectSegs(out, in)
			} else {
				id, err = r.drv.AddSegs(out, in)
			}
			if err != nil || id != next {
				t.Fatalf("Add: id %d (expected %d), %v", id, next, err)
			}
			if inflight[id] != nil {
				t.Fatalf("driver handed out id %d twice", id)
			}
			inflight[id] = &buf{seq: seq, wlen: uint32(4 * nIn), nOut: nOut}
			seq++
		}
		for _, op := range data[2:] {
			arg := int(op >> 3)
			switch op & 7 {
			case 0:
				add(1+arg&1, arg>>1&3, false)
			case 1:
				add(arg&1, 1+arg>>1&3, true)
			case 2:
				n, err := r.dev.Pop(chains[:1+arg%len(chains)])
				if err != nil {
					t.Fatalf("Pop: %v", err)
				}
				for _, c := range chains[:n] {
					b := inflight[c.Head]
					if c.Err != nil || b == nil {
						t.Fatalf("popped id %d: %v (in flight %v)", c.Head, c.Err, b != nil)
					}
					if c.WriteLen != b.wlen || c.ReadLen != uint32(4*b.nOut) {
						t.Fatalf("id %d: read/write %d/%d, want %d/%d", c.Head, c.ReadLen, c.WriteLen, 4*b.nOut, b.wlen)
					}
					if b.nOut > 0 && binary.LittleEndian.Uint32(c.Bufs[0].B) != b.seq {
						t.Fatalf("id %d: carries seq %d, want %d", c.Head, binary.LittleEndian.Uint32(c.Bufs[0].B), b.seq)
					}
					held = append(held, heldBuf{Chain{Head: c.Head, Bufs: append([]Buffer(nil), c.Bufs...), WriteLen: c.WriteLen}, serial})
					popLog = append(popLog, serial)
					serial++
				}
			case 3:
				if len(held) == 0 {
					continue
				}
				k := 1 + arg%len(held)
				var done []heldBuf
				if o.inOrder || arg&8 != 0 {
					done = append(done, held[:k]...)
					held = append(held[:0], held[k:]...)
				} else {
					// k buffers picked from the end backwards: out of order.
					for i := 0; i < k; i++ {
						done = append(done, held[len(held)-1])
						held = held[:len(held)-1]
					}
				}
				used := make([]UsedElem, len(done))
				for i, c := range done {
					b := inflight[c.Head]
					b.got = c.WriteLen
					if arg&4 != 0 && i%2 == 1 {
						b.got /= 2
					}
					for _, e := range c.Bufs {
						if e.Write {
							e.B[0] = byte(b.seq) ^ 0xa5
						}
					}
					used[i] = UsedElem{ID: uint32(c.Head), Len: b.got}
					pushed = append(pushed, c.Head)
				}
				if o.inOrder {
					r.dev.PushInOrder(used)
				} else {
					r.dev.Push(used)
				}
			case 4:
				// Valid only if the last u popped are still held (the
				// device checks the same and otherwise does nothing).
				u := 1 + arg%4
				valid := u <= len(popLog)
				for i := 0; valid && i < u; i++ {
					s := popLog[len(popLog)-1-i]
					valid = false
					for _, h := range held {
						if h.serial == s {
							valid = true
						}
					}
				}
				before := r.dev.State()
				r.dev.Unpop(u)
				if !valid {
					if r.dev.State() != before {
						t.Fatalf("Unpop(%d) over a pushed buffer moved the ring", u)
					}
					continue
				}
				for i := 0; i < u; i++ {
					s := popLog[len(popLog)-1]
					popLog = popLog[:len(popLog)-1]
					for j, h := range held {
						if h.serial == s {
							held = append(held[:j], held[j+1:]...)
							break
						}
					}
				}
			case 5:
				n := r.drv.Reap(reaped)
				if r.drv.Err() != nil {
					t.Fatal(r.drv.Err())
				}
				for _, e := range reaped[:n] {
					b := inflight[uint16(e.ID)]
					if b == nil || len(pushed) == 0 || uint32(pushed[0]) != e.ID {
						t.Fatalf("reaped id %d, expected %v", e.ID, pushed)
					}
					pushed = pushed[1:]
					if e.Len != b.got {
						t.Fatalf("id %d: length %d, device said %d", e.ID, e.Len, b.got)
					}
					if b.wlen > 0 && r.buf(0x10000+int(e.ID)*16, 1)[0] != byte(b.seq)^0xa5 {
						t.Fatalf("id %d: the device's bytes are missing", e.ID)
					}
					delete(inflight, uint16(e.ID))
				}
			case 6:
				switch arg & 7 {
				case 0:
					r.drv.EnableInterrupts()
				case 1:
					r.drv.DisableInterrupts()
				case 2:
					r.dev.EnableNotify()
				case 3:
					r.dev.DisableNotify()
				case 4:
					r.dev.NeedNotify()
				case 5:
					r.drv.Publish()
				default:
					if p, err := r.dev.Pending(); err != nil || p < 0 || p > size {
						t.Fatalf("Pending = %d, %v", p, err)
					}
				}
			case 7:
				if len(held) != 0 {
					continue
				}
				cfg := r.drv.DeviceConfig()
				cfg.Indirect = o.indirect
				cfg.State = DecodePackedState(r.dev.VringBase())
				dev, err := NewPacked(cfg, r.drv.Memory())
				if err != nil {
					t.Fatal(err)
				}
				r.dev = dev
			}
			checkPackedInvariants(t, r.dev, len(held), 0)
		}
		// Drain: everything comes back.
		for round := 0; len(inflight) > 0; round++ {
			if round > 4*size+8 {
				t.Fatalf("drain stuck: %d in flight, %d held, %d pushed", len(inflight), len(held), len(pushed))
			}
			r.drv.Publish()
			n, err := r.dev.Pop(chains)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range chains[:n] {
				held = append(held, heldBuf{Chain{Head: c.Head, WriteLen: c.WriteLen}, 0})
			}
			used := make([]UsedElem, len(held))
			for i, c := range held {
				inflight[c.Head].got = c.WriteLen
				used[i] = UsedElem{ID: uint32(c.Head), Len: c.WriteLen}
				pushed = append(pushed, c.Head)
			}
			held = held[:0]
			r.dev.PushInOrder(used)
			m := r.drv.Reap(reaped)
			for _, e := range reaped[:m] {
				if uint32(pushed[0]) != e.ID || e.Len != inflight[uint16(e.ID)].got {
					t.Fatalf("drain: reaped %+v, expected id %d", e, pushed[0])
				}
				pushed = pushed[1:]
				delete(inflight, uint16(e.ID))
			}
		}
		if r.drv.NumFree() != size || r.drv.NumFreeIDs() != size || r.drv.Err() != nil {
			t.Fatalf("after drain: %d descriptors and %d ids free of %d, err %v", r.drv.NumFree(), r.drv.NumFreeIDs(), size, r.drv.Err())
		}
		ds := r.dev.State()
		ap, aw := r.drv.NextAvail()
		up, uw := r.drv.NextUsed()
		if ds != (PackedState{ap, aw, up, uw}) {
			t.Fatalf("device %+v, driver avail %d/%v used %d/%v", ds, ap, aw, up, uw)
		}
	})
}
