package virtqueue

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestNeedEventMath(t *testing.T) {
	// needEvent(event, new, old): notify iff event is in [old, new) mod 2^16.
	for _, tc := range []struct {
		event, newIdx, old uint16
		want               bool
	}{
		{0, 1, 0, true},   // first entry used, driver asked for index 0
		{0, 0, 0, false},  // nothing moved
		{1, 1, 0, false},  // waits for index 1, only 0 written
		{1, 2, 0, true},   // batch passed it
		{5, 10, 6, false}, // event behind the batch: already notified earlier
		{9, 10, 6, true},  // last entry of the batch
		{10, 10, 6, false},
		{0xffff, 0x0001, 0xfffe, true},  // batch wraps 2^16 and covers event
		{0x0000, 0x0001, 0xfffe, true},  // event just after the wrap
		{0x0001, 0x0001, 0xfffe, false}, // event is the next index
		{0xfffd, 0x0001, 0xfffe, false}, // event just before the batch
		{0x8000, 0x0000, 0x7fff, true},  // half-ring distance
		{0x7ffe, 0x0000, 0x7fff, false},
	} {
		if got := needEvent(tc.event, tc.newIdx, tc.old); got != tc.want {
			t.Errorf("needEvent(event %#x, new %#x, old %#x) = %v, want %v", tc.event, tc.newIdx, tc.old, got, tc.want)
		}
	}
	// Exhaustive cross-check against the spec wording: notify iff one of the
	// indices old..new-1 written equals event.
	for i := 0; i < 20000; i++ {
		old := uint16(rand.Uint32())
		n := uint16(rand.IntN(40))
		event := old + uint16(rand.IntN(80)) - 20
		want := false
		for k := uint16(0); k < n; k++ {
			if old+k == event {
				want = true
			}
		}
		if got := needEvent(event, old+n, old); got != want {
			t.Fatalf("needEvent(%#x, %#x, %#x) = %v, want %v", event, old+n, old, got, want)
		}
	}
}

// postOne posts a one-buffer chain of n readable bytes at the given data
// offset and returns its head.
func postOne(t testing.TB, r *testRing, off, n int) uint16 {
	t.Helper()
	h, err := r.drv.Add([][]byte{r.mem[off : off+n]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func popAll(t testing.TB, q *Split, want int) []Chain {
	t.Helper()
	chains := make([]Chain, want+1)
	n, err := q.Pop(chains)
	if err != nil || n != want {
		t.Fatalf("Pop = %d, %v; want %d chains", n, err, want)
	}
	return chains[:n]
}

func TestUsedNotificationFlags(t *testing.T) {
	for _, odd := range []bool{false, true} {
		t.Run(fmt.Sprintf("availOdd=%v", odd), func(t *testing.T) {
			r := newTestRing(t, ringOpts{size: 8, availOdd: odd})
			if r.dev.NeedNotify() {
				t.Error("NeedNotify with nothing pushed")
			}
			h := postOne(t, r, dataArea, 10)
			r.drv.Publish()
			popAll(t, r.dev, 1)
			r.dev.Push([]UsedElem{{ID: uint32(h)}})
			if !r.dev.NeedNotify() {
				t.Error("NeedNotify = false with NO_INTERRUPT clear")
			}
			if r.dev.NeedNotify() {
				t.Error("second NeedNotify without a new Push = true")
			}
			r.drv.DisableInterrupts()
			if r.drv.EnableInterrupts() != true {
				t.Error("EnableInterrupts: used entry not reaped yet, want more = true")
			}
			r.drv.Reap(make([]UsedElem, 8))
			r.drv.DisableInterrupts()
			h = postOne(t, r, dataArea, 10)
			r.drv.Publish()
			popAll(t, r.dev, 1)
			r.dev.Push([]UsedElem{{ID: uint32(h)}})
			if r.dev.NeedNotify() {
				t.Error("NeedNotify = true with NO_INTERRUPT set")
			}
			if !r.drv.EnableInterrupts() {
				t.Error("EnableInterrupts must report the entry pushed while interrupts were off")
			}
		})
	}
}

func TestUsedNotificationEventIdx(t *testing.T) {
	for _, odd := range []bool{false, true} {
		t.Run(fmt.Sprintf("availOdd=%v", odd), func(t *testing.T) {
			r := newTestRing(t, ringOpts{size: 8, eventIdx: true, availOdd: odd})
			used := make([]UsedElem, 8)
			cycle := func(n int) {
				t.Helper()
				for i := 0; i < n; i++ {
					postOne(t, r, dataArea, 10)
				}
				r.drv.Publish()
				chains := popAll(t, r.dev, n)
				for i, c := range chains {
					used[i] = UsedElem{ID: uint32(c.Head)}
				}
				r.dev.Push(used[:n])
			}
			// A fresh device notifies once: used_event may predate it.
			cycle(1)
			if !r.dev.NeedNotify() {
				t.Fatal("first NeedNotify = false")
			}
			r.drv.Reap(used)
			// used_event = 5: the driver wants a call once entry 5 is used.
			// Entries 1..4 are not enough, 5..6 are.
			r.drv.SetUsedEvent(5)
			cycle(4) // used idx 1 -> 5
			if r.dev.NeedNotify() {
				t.Error("NeedNotify for entries 1..4 with used_event 5")
			}
			r.drv.Reap(used)
			cycle(2) // entries 5, 6
			if !r.dev.NeedNotify() {
				t.Error("NeedNotify = false for the batch containing used_event")
			}
			r.drv.Reap(used)
			cycle(1) // entry 7: passed used_event long ago
			if r.dev.NeedNotify() {
				t.Error("NeedNotify = true after passing used_event")
			}
			// NO_INTERRUPT must be ignored with EVENT_IDX.
			r.drv.Reap(used)
			r.drv.SetAvailFlags(AvailFNoInterrupt)
			r.drv.SetUsedEvent(8)
			cycle(1)
			if !r.dev.NeedNotify() {
				t.Error("NeedNotify = false: avail.flags must be ignored with EVENT_IDX")
			}
			// EnableInterrupts sets used_event to the next index to reap.
			r.drv.Reap(used)
			if r.drv.EnableInterrupts() {
				t.Error("EnableInterrupts with nothing pending returned more = true")
			}
			if got := load16(r.drv.f.usedEvent); got != 9 {
				t.Errorf("used_event = %d, want 9", got)
			}
		})
	}
}

func TestUsedNotificationEventIdxWrap(t *testing.T) {
	// Start the used index just below 2^16 so batches straddle the wrap.
	r := newTestRing(t, ringOpts{size: 8, eventIdx: true})
	binary.LittleEndian.PutUint16(r.drv.used[2:], 0xfffc) // device restarted with used.idx 0xfffc
	r.drv.lastUsed = 0xfffc
	dev, err := NewSplit(r.drv.DeviceConfig(), r.drv.Memory())
	if err != nil {
		t.Fatal(err)
	}
	r.dev = dev
	used := make([]UsedElem, 8)
	batch := func(n int) {
		for i := 0; i < n; i++ {
			postOne(t, r, dataArea, 4)
		}
		r.drv.Publish()
		chains := popAll(t, r.dev, n)
		for i, c := range chains {
			used[i] = UsedElem{ID: uint32(c.Head)}
		}
		r.dev.Push(used[:n])
	}
	batch(1)
	r.dev.NeedNotify() // first call is unconditional
	r.drv.Reap(used)
	r.drv.SetUsedEvent(0x0001)
	batch(4) // 0xfffd..0x0000
	if r.dev.NeedNotify() {
		t.Error("notified before used_event 0x0001 across the wrap")
	}
	r.drv.Reap(used)
	batch(2) // 0x0001, 0x0002
	if !r.dev.NeedNotify() {
		t.Error("not notified for used_event 0x0001 after the wrap")
	}
	if r.dev.UsedIdx() != 3 || r.drv.UsedIdx() != 3 {
		t.Errorf("used idx = %d/%d, want 3", r.dev.UsedIdx(), r.drv.UsedIdx())
	}
}

func TestAvailNotificationFlags(t *testing.T) {
	for _, odd := range []bool{false, true} {
		r := newTestRing(t, ringOpts{size: 8, availOdd: odd})
		postOne(t, r, dataArea, 4)
		if !r.drv.Publish() {
			t.Error("Publish: kick not needed with NO_NOTIFY clear")
		}
		if r.drv.Publish() {
			t.Error("Publish with nothing posted wants a kick")
		}
		r.dev.DisableNotify()
		if r.drv.UsedFlags()&UsedFNoNotify == 0 {
			t.Error("DisableNotify did not set NO_NOTIFY")
		}
		postOne(t, r, dataArea, 4)
		if r.drv.Publish() {
			t.Error("Publish wants a kick despite NO_NOTIFY")
		}
		if !r.dev.EnableNotify() {
			t.Error("EnableNotify: two chains pending, want more = true")
		}
		if r.drv.UsedFlags() != 0 {
			t.Errorf("used.flags = %#x after EnableNotify", r.drv.UsedFlags())
		}
		chains := popAll(t, r.dev, 2)
		if r.dev.EnableNotify() {
			t.Error("EnableNotify with the ring empty: want more = false")
		}
		// used.idx and used.flags share a word: Push must keep NO_NOTIFY.
		r.dev.DisableNotify()
		r.dev.Push([]UsedElem{{ID: uint32(chains[0].Head)}, {ID: uint32(chains[1].Head)}})
		if r.drv.UsedFlags() != UsedFNoNotify || r.drv.UsedIdx() != 2 {
			t.Errorf("after Push: used.flags %#x idx %d", r.drv.UsedFlags(), r.drv.UsedIdx())
		}
	}
}

func TestAvailNotificationEventIdx(t *testing.T) {
	r := newTestRing(t, ringOpts{size: 8, eventIdx: true})
	// avail_event starts at 0: the first chain (index 0) needs a kick.
	postOne(t, r, dataArea, 4)
	if !r.drv.Publish() {
		t.Error("no kick for avail index 0 with avail_event 0")
	}
	// The device polls without EnableNotify: no more kicks.
	r.dev.DisableNotify()
	if r.drv.UsedFlags() != 0 {
		t.Error("DisableNotify must not touch used.flags with EVENT_IDX")
	}
	postOne(t, r, dataArea, 4)
	if r.drv.Publish() {
		t.Error("kick although avail_event was passed")
	}
	chains := popAll(t, r.dev, 2)
	if r.dev.EnableNotify() {
		t.Error("EnableNotify: ring empty, want more = false")
	}
	if got := r.drv.AvailEvent(); got != 2 {
		t.Errorf("avail_event = %d, want 2 (next avail index)", got)
	}
	// A batch of three starting at index 2 covers avail_event: one kick.
	r.dev.Push([]UsedElem{{ID: uint32(chains[0].Head)}, {ID: uint32(chains[1].Head)}})
	r.drv.Reap(make([]UsedElem, 8))
	for i := 0; i < 3; i++ {
		postOne(t, r, dataArea, 4)
	}
	if !r.drv.Publish() {
		t.Error("no kick for the batch covering avail_event")
	}
	postOne(t, r, dataArea, 4)
	if r.drv.Publish() {
		t.Error("kick after avail_event was passed")
	}
	// EnableNotify with chains already pending reports them.
	if !r.dev.EnableNotify() {
		t.Error("EnableNotify with 4 chains pending: want more = true")
	}
	if got := r.drv.AvailEvent(); got != 2 {
		t.Errorf("avail_event = %d, want 2", got)
	}
}

// TestBatchedPopPushWrap runs more than 2^16 chains through a small ring in
// random batch sizes, so ring slots and both 16-bit indices wrap many times,
// and checks every chain's head and bytes.
func TestBatchedPopPushWrap(t *testing.T) {
	for _, o := range []ringOpts{
		{size: 8},
		{size: 8, availOdd: true},
		{size: 16, eventIdx: true, indirect: true},
		{size: 1},
		{size: 256, availOdd: true, eventIdx: true},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			r := newTestRing(t, o)
			rng := rand.New(rand.NewPCG(1, uint64(o.size)))
			chains := make([]Chain, o.size)
			used := make([]UsedElem, o.size)
			reaped := make([]UsedElem, o.size)
			inflight := make(map[uint16]uint32) // head -> sequence number written in the buffer
			var seq, next uint32
			total := 70000
			if o.size == 1 {
				total = 66000
			}
			for int(next) < total {
				// Driver posts a random batch; each chain carries its
				// sequence number in a 4-byte readable buffer and a
				// 4-byte writable buffer for the device's answer.
				k := 1 + rng.IntN(int(o.size))
				for i := 0; i < k && r.drv.NumFree() >= 2 || o.size == 1 && i == 0 && r.drv.NumFree() == 1; i++ {
					slot := int(seq%512) * 8
					buf := r.mem[dataArea+slot : dataArea+slot+8]
					binary.LittleEndian.PutUint32(buf, seq)
					var h uint16
					var err error
					switch {
					case o.size == 1:
						h, err = r.drv.Add([][]byte{buf[:4]}, nil)
					case o.indirect && seq%2 == 0:
						h, err = r.drv.AddIndirect([][]byte{buf[:4]}, [][]byte{buf[4:]})
					default:
						h, err = r.drv.Add([][]byte{buf[:4]}, [][]byte{buf[4:]})
					}
					if err != nil {
						t.Fatal(err)
					}
					inflight[h] = seq
					seq++
				}
				r.drv.Publish()
				// Device pops in random batch sizes until empty.
				for {
					m := 1 + rng.IntN(int(o.size))
					n, err := r.dev.Pop(chains[:m])
					if err != nil {
						t.Fatal(err)
					}
					if n == 0 {
						break
					}
					for i, c := range chains[:n] {
						if c.Err != nil {
							t.Fatalf("chain %d: %v", c.Head, c.Err)
						}
						want, ok := inflight[c.Head]
						if !ok {
							t.Fatalf("popped head %d that is not in flight", c.Head)
						}
						if got := binary.LittleEndian.Uint32(c.Bufs[0].B); got != want || c.ReadLen != 4 {
							t.Fatalf("head %d carries seq %d, want %d", c.Head, got, want)
						}
						var wlen uint32
						if len(c.Bufs) == 2 {
							binary.LittleEndian.PutUint32(c.Bufs[1].B, ^want)
							wlen = 4
						}
						used[i] = UsedElem{ID: uint32(c.Head), Len: wlen}
					}
					r.dev.Push(used[:n])
				}
				// Driver reaps in order of use.
				for {
					n := r.drv.Reap(reaped)
					if n == 0 {
						break
					}
					for _, e := range reaped[:n] {
						s, ok := inflight[uint16(e.ID)]
						if !ok {
							t.Fatalf("reaped unknown id %d", e.ID)
						}
						if s != next {
							t.Fatalf("reaped seq %d, want %d (used ring order)", s, next)
						}
						if e.Len == 4 {
							slot := int(s%512) * 8
							if got := binary.LittleEndian.Uint32(r.mem[dataArea+slot+4:]); got != ^s {
								t.Fatalf("device answer %#x, want %#x", got, ^s)
							}
						}
						delete(inflight, uint16(e.ID))
						next++
					}
				}
			}
			if r.drv.NumFree() != int(o.size) {
				t.Errorf("driver leaked descriptors: %d free of %d", r.drv.NumFree(), o.size)
			}
			if r.dev.LastAvail() != uint16(seq) || r.dev.UsedIdx() != uint16(seq) {
				t.Errorf("LastAvail %d UsedIdx %d, want %d", r.dev.LastAvail(), r.dev.UsedIdx(), uint16(seq))
			}
		})
	}
}

// TestDeviceRestart rebuilds the device side mid-stream, as vhost-user does
// after GET_VRING_BASE / SET_VRING_BASE: LastAvail comes from the old device,
// the used index from guest memory.
func TestDeviceRestart(t *testing.T) {
	r := newTestRing(t, ringOpts{size: 4})
	used := make([]UsedElem, 4)
	round := func() {
		for i := 0; i < 3; i++ {
			postOne(t, r, dataArea, 4)
		}
		r.drv.Publish()
		chains := popAll(t, r.dev, 3)
		for i, c := range chains {
			used[i] = UsedElem{ID: uint32(c.Head)}
		}
		r.dev.Push(used[:3])
		if n := r.drv.Reap(used); n != 3 {
			t.Fatalf("reaped %d, want 3", n)
		}
	}
	round()
	round()
	cfg := r.drv.DeviceConfig()
	cfg.LastAvail = r.dev.LastAvail()
	dev, err := NewSplit(cfg, r.drv.Memory())
	if err != nil {
		t.Fatal(err)
	}
	if dev.UsedIdx() != 6 || dev.LastAvail() != 6 {
		t.Fatalf("restarted device: used idx %d last avail %d, want 6/6", dev.UsedIdx(), dev.LastAvail())
	}
	r.dev = dev
	round()
	if r.drv.UsedIdx() != 9 {
		t.Errorf("used.idx = %d, want 9", r.drv.UsedIdx())
	}
}

func TestUnpop(t *testing.T) {
	r := newTestRing(t, ringOpts{size: 8})
	var heads []uint16
	for i := 0; i < 4; i++ {
		heads = append(heads, postOne(t, r, dataArea+i*16, 4))
	}
	r.drv.Publish()
	r.dev.Unpop(1) // nothing popped yet: no-op
	if r.dev.LastAvail() != 0 {
		t.Fatalf("Unpop with nothing popped moved LastAvail to %d", r.dev.LastAvail())
	}
	chains := popAll(t, r.dev, 4)
	r.dev.Push([]UsedElem{{ID: uint32(chains[0].Head)}})
	r.dev.Unpop(4) // only 3 popped and not pushed: no-op
	if r.dev.LastAvail() != 4 {
		t.Fatalf("Unpop(4) with 3 unpushed moved LastAvail to %d", r.dev.LastAvail())
	}
	r.dev.Unpop(2)
	if r.dev.LastAvail() != 2 {
		t.Fatalf("LastAvail after Unpop(2) = %d, want 2", r.dev.LastAvail())
	}
	again := popAll(t, r.dev, 2)
	if again[0].Head != heads[2] || again[1].Head != heads[3] {
		t.Errorf("re-popped heads %d,%d, want %d,%d", again[0].Head, again[1].Head, heads[2], heads[3])
	}
}
