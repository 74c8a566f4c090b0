package virtqueue

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// Fuzz input layout for FuzzPackedChainWalk:
//
//	[0]      queue size - 1 (mod 40: sizes 1..40, most not powers of two)
//	[1]      bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 IN_ORDER,
//	         bits 4-5 Pop batch size - 1, bit 6 complete out of order
//	         (reversed), bit 7 Unpop one buffer now and then
//	[2:6]    ring state, a vring base (DecodePackedState; indices taken
//	         modulo the size)
//	[6:14]   guest address of region 0
//	[14:22]  guest address of region 1
//	[22:24]  length of region 0 (clamped to the rest of the input)
//	[24:26]  length of region 1 (clamped likewise)
//	[26:]    region 0 bytes, region 1 bytes, then patches of 18 bytes:
//	         a ring position (le16, modulo the size) and a 16-byte
//	         descriptor written there before each round, so the guest can
//	         post new lists, in later laps too, or rewrite old ones.
//
// Region 0 starts with the descriptor ring, followed by the driver and the
// device event suppression areas (zero-padded if the input is shorter), so
// descriptors can point at the ring itself, at indirect tables anywhere, or
// outside memory.
const packedFuzzHeader = 26

type packedFuzzSetup struct {
	sizeM1     uint8
	flags      uint8
	state      uint32
	base0      uint64
	base1      uint64
	mem0, mem1 []byte
	patches    []packedPatch
}

type packedPatch struct {
	pos uint16
	d   PackedDesc
}

func (s packedFuzzSetup) encode() []byte {
	b := make([]byte, packedFuzzHeader, packedFuzzHeader+len(s.mem0)+len(s.mem1)+18*len(s.patches))
	b[0], b[1] = s.sizeM1, s.flags
	binary.LittleEndian.PutUint32(b[2:], s.state)
	binary.LittleEndian.PutUint64(b[6:], s.base0)
	binary.LittleEndian.PutUint64(b[14:], s.base1)
	binary.LittleEndian.PutUint16(b[22:], uint16(len(s.mem0)))
	binary.LittleEndian.PutUint16(b[24:], uint16(len(s.mem1)))
	b = append(b, s.mem0...)
	b = append(b, s.mem1...)
	for _, p := range s.patches {
		var e [18]byte
		binary.LittleEndian.PutUint16(e[:], p.pos)
		PutPackedDesc(e[2:], p.d)
		b = append(b, e[:]...)
	}
	return b
}

func packedFuzzSize(b byte) uint16 { return uint16(b%40) + 1 }

func FuzzPackedChainWalk(f *testing.F) {
	for _, s := range packedFuzzSeeds() {
		f.Add(s.encode())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < packedFuzzHeader {
			return
		}
		size := packedFuzzSize(data[0])
		flags := data[1]
		st := DecodePackedState(binary.LittleEndian.Uint32(data[2:]))
		st.AvailIdx %= size
		st.UsedIdx %= size
		base0 := binary.LittleEndian.Uint64(data[6:])
		base1 := binary.LittleEndian.Uint64(data[14:])
		rest := data[packedFuzzHeader:]
		n0 := min(int(binary.LittleEndian.Uint16(data[22:])), len(rest))
		n1 := min(int(binary.LittleEndian.Uint16(data[24:])), len(rest)-n0)
		patches := rest[n0+n1:]
		ringEnd := int(PackedRingSize(size)) + 2*EventSuppressSize
		mem0 := make([]byte, max(n0, ringEnd)) // 8-aligned backing
		copy(mem0, rest[:n0])
		mem1 := append([]byte(nil), rest[n0:n0+n1]...)
		mem := RegionMemory{{Addr: base0, B: mem0}}
		if len(mem1) > 0 {
			mem = append(mem, MemRegion{Addr: base1, B: mem1})
		}
		descEnd := int(PackedRingSize(size))
		q, err := NewPacked(PackedConfig{
			Size:     size,
			Desc:     mem0[:descEnd],
			Driver:   mem0[descEnd : descEnd+4],
			Device:   mem0[descEnd+4 : descEnd+8],
			EventIdx: flags&1 != 0,
			Indirect: flags&2 != 0,
			InOrder:  flags&4 != 0,
			State:    st,
		}, mem)
		if err != nil {
			t.Fatalf("NewPacked: %v", err)
		}
		d0 := packedGap(q)
		chains := make([]Chain, 1+int(flags>>4&3))
		var held []uint16 // popped and not pushed, in pop order
		used := make([]UsedElem, 0, int(size))
		for iter := 0; iter < 64; iter++ {
			if len(patches) >= 18 {
				pos := binary.LittleEndian.Uint16(patches) % size
				copy(mem0[int(pos)*DescSize:], patches[2:18])
				patches = patches[18:]
			}
			pending, perr := q.Pending()
			n, err := q.Pop(chains)
			if perr != nil && err != perr {
				t.Fatalf("Pending error %v, Pop error %v", perr, err)
			}
			if perr == nil && n > pending {
				t.Fatalf("Pop returned %d buffers, Pending said %d", n, pending)
			}
			for _, c := range chains[:n] {
				checkFuzzChain(t, c, size, mem0, mem1)
				for _, h := range held {
					if h == c.Head {
						t.Fatalf("id %d popped twice while in flight", h)
					}
				}
				held = append(held, c.Head)
			}
			if flags&0x80 != 0 && iter%3 == 1 && n > 0 {
				q.Unpop(1)
				held = held[:len(held)-1]
			}
			checkPackedInvariants(t, q, len(held), d0)
			// Complete what is held, in pop order (every fourth round only
			// the older half): Len is the buffer's writable length or 0, so
			// in-order runs form and break.
			k := len(held)
			if iter%4 == 3 {
				k /= 2
			}
			used = used[:0]
			for i, h := range held[:k] {
				l := uint32(0)
				if s := q.slots[h]; s.ok && i%2 == 0 {
					l = s.writeLen
				}
				used = append(used, UsedElem{ID: uint32(h), Len: l})
			}
			if flags&0x40 != 0 {
				for i, j := 0, len(used)-1; i < j; i, j = i+1, j-1 {
					used[i], used[j] = used[j], used[i]
				}
			}
			if flags&4 != 0 && flags&0x40 == 0 {
				q.PushInOrder(used)
			} else {
				q.Push(used)
			}
			held = append(held[:0], held[k:]...)
			checkPackedInvariants(t, q, len(held), d0)
			q.NeedNotify()
			if err != nil {
				if err != ErrChainUnterminated && err != ErrBufferID && err != ErrBufferIDInUse {
					t.Fatalf("Pop: unexpected error %v", err)
				}
				if n2, err2 := q.Pop(chains); n2 != 0 || err2 != err {
					t.Fatalf("ring-fatal error not sticky: %d, %v", n2, err2)
				}
				if !q.EnableNotify() {
					t.Fatal("EnableNotify on a broken ring reports no work")
				}
				return
			}
			if n == 0 && !q.EnableNotify() && len(patches) < 18 {
				return
			}
			q.DisableNotify()
		}
	})
}

// packedGap is how far the avail position is ahead of the used position,
// modulo two laps (a position and its wrap counter name a place in a
// two-lap cycle).
func packedGap(q *Packed) int {
	lin := func(idx uint16, wrap bool) int {
		if wrap {
			return int(idx)
		}
		return int(idx) + int(q.size)
	}
	two := 2 * int(q.size)
	return ((lin(q.availIdx, q.availWrap)-lin(q.usedIdx, q.usedWrap))%two + two) % two
}

// checkPackedInvariants checks the device's own accounting: d0 is the gap
// between the avail and used positions the ring started with (a restored
// state may have lost buffers in flight).
func checkPackedInvariants(t *testing.T, q *Packed, held, d0 int) {
	t.Helper()
	st := q.State()
	if st.AvailIdx >= q.size || st.UsedIdx >= q.size {
		t.Fatalf("state %+v outside a ring of %d", st, q.size)
	}
	if q.unpushed != held {
		t.Fatalf("unpushed %d, caller holds %d", q.unpushed, held)
	}
	inflight := 0
	busy := 0
	for _, s := range q.slots {
		inflight += int(s.ndesc)
		if s.ndesc != 0 {
			busy++
		}
	}
	if busy != held || inflight != q.inflight || inflight > int(q.size) {
		t.Fatalf("%d ids and %d descriptors in flight (counter %d), caller holds %d", busy, inflight, q.inflight, held)
	}
	// The used position trails the avail position by exactly the
	// descriptors in flight (plus what the ring started with).
	two := 2 * int(q.size)
	if got := ((packedGap(q)-inflight-d0)%two + two) % two; got != 0 {
		t.Fatalf("avail %d/%v used %d/%v: gap %d, %d descriptors in flight, started at %d", st.AvailIdx, st.AvailWrap, st.UsedIdx, st.UsedWrap, packedGap(q), inflight, d0)
	}
}

// packedFuzzSeeds are hand-built starting points: valid lists of each
// shape, each kind of malformed and ring-fatal list, and multi-lap patch
// scripts.
func packedFuzzSeeds() map[string]packedFuzzSetup {
	const b0 = 0x200000
	const b1 = b0 + 2048 // adjacent to region 0
	av := func(wrap bool) uint16 { return availBits(wrap) }
	build := func(size uint16, flags uint8, st PackedState, n1 int, descs map[int]PackedDesc, extra func(m []byte), patches ...packedPatch) packedFuzzSetup {
		s := packedFuzzSetup{sizeM1: uint8(size - 1), flags: flags, state: st.Encode(), base0: b0, base1: b1, patches: patches}
		m := make([]byte, 2048)
		for i, d := range descs {
			PutPackedDesc(m[i*DescSize:], d)
		}
		if extra != nil {
			extra(m)
		}
		s.mem0 = m
		s.mem1 = make([]byte, n1)
		for i := range s.mem1 {
			s.mem1[i] = byte(i)
		}
		return s
	}
	init := InitialPackedState
	evOff := func(size uint16) int { return int(PackedRingSize(size)) }
	return map[string]packedFuzzSetup{
		"valid-single": build(4, 0, init, 64, map[int]PackedDesc{0: {Addr: b0 + 1024, Len: 64, ID: 2, Flags: av(true)}}, nil),
		"valid-mixed-odd-size": build(5, 0x10, init, 64, map[int]PackedDesc{
			0: {Addr: b0 + 1024, Len: 12, Flags: DescFNext | av(true)},
			1: {Addr: b1, Len: 32, Flags: DescFWrite | DescFNext | av(true)},
			2: {Addr: b0 + 1100, Len: 8, ID: 4, Flags: DescFWrite | av(true)},
			3: {Addr: b0 + 1200, Len: 100, ID: 0, Flags: av(true)}}, nil),
		"valid-indirect": build(3, 0x02, init, 64, map[int]PackedDesc{0: {Addr: b0 + 1536, Len: 32, ID: 1, Flags: DescFIndirect | av(true)}},
			func(m []byte) {
				PutPackedDesc(m[1536:], PackedDesc{Addr: b0 + 1024, Len: 10})
				PutPackedDesc(m[1552:], PackedDesc{Addr: b1 + 8, Len: 20, Flags: DescFWrite})
			}),
		"valid-across-ring-end-lap2": build(3, 0x11, PackedState{AvailIdx: 2, AvailWrap: false, UsedIdx: 2, UsedWrap: false}, 0, map[int]PackedDesc{
			2: {Addr: b0 + 1024, Len: 4, Flags: DescFNext | av(false)},
			0: {Addr: b0 + 1028, Len: 4, ID: 1, Flags: av(true)}}, nil),
		"inorder-eventidx-runs": build(6, 0x07|0x30, init, 0, map[int]PackedDesc{
			0: {Addr: b0 + 1024, Len: 4, ID: 0, Flags: av(true)},
			1: {Addr: b0 + 1028, Len: 4, ID: 1, Flags: DescFWrite | av(true)},
			2: {Addr: b0 + 1032, Len: 4, Flags: DescFNext | av(true)},
			3: {Addr: b0 + 1036, Len: 4, ID: 2, Flags: DescFWrite | av(true)}},
			func(m []byte) {
				binary.LittleEndian.PutUint32(m[evOff(6):], uint32(RingEventFlagsDesc)<<16|uint32(2|RingEventWrap))
			}),
		"multi-lap-patches": build(2, 0x91, init, 0, nil, nil,
			packedPatch{0, PackedDesc{Addr: b0 + 1024, Len: 4, ID: 0, Flags: av(true)}},
			packedPatch{1, PackedDesc{Addr: b0 + 1024, Len: 4, ID: 1, Flags: av(true)}},
			packedPatch{0, PackedDesc{Addr: b0 + 1024, Len: 4, ID: 1, Flags: av(false)}},
			packedPatch{1, PackedDesc{Addr: b0 + 1024, Len: 4, ID: 0, Flags: DescFWrite | av(false)}},
			packedPatch{0, PackedDesc{Addr: b0 + 1024, Len: 4, ID: 0, Flags: av(true)}}),
		"out-of-order-reversed": build(7, 0x70, init, 0, map[int]PackedDesc{
			0: {Addr: b0 + 1024, Len: 4, ID: 6, Flags: av(true)},
			1: {Addr: b0 + 1024, Len: 4, Flags: DescFNext | av(true)},
			2: {Addr: b0 + 1024, Len: 4, ID: 5, Flags: av(true)},
			3: {Addr: b0 + 1024, Len: 4, ID: 0, Flags: av(true)}}, nil),
		"nested-indirect": build(4, 0x02, init, 0, map[int]PackedDesc{0: {Addr: b0 + 1536, Len: 16, ID: 0, Flags: DescFIndirect | av(true)}},
			func(m []byte) { PutPackedDesc(m[1536:], PackedDesc{Addr: b0 + 1536, Len: 16, Flags: DescFIndirect}) }),
		"indirect-bad-len": build(4, 0x02, init, 0, map[int]PackedDesc{0: {Addr: b0 + 1536, Len: 24, ID: 0, Flags: DescFIndirect | av(true)}}, nil),
		"indirect-in-list": build(4, 0x02, init, 0, map[int]PackedDesc{
			0: {Addr: b0 + 1024, Len: 4, Flags: DescFNext | av(true)},
			1: {Addr: b0 + 1536, Len: 16, ID: 3, Flags: DescFIndirect | av(true)}}, nil),
		"indirect-not-negotiated": build(4, 0, init, 0, map[int]PackedDesc{0: {Addr: b0 + 1536, Len: 16, ID: 0, Flags: DescFIndirect | av(true)}}, nil),
		"straddle-regions":        build(4, 0, init, 64, map[int]PackedDesc{0: {Addr: b1 - 8, Len: 16, ID: 0, Flags: av(true)}}, nil),
		"wrap-past-2pow64": func() packedFuzzSetup {
			s := build(4, 0, init, 0, map[int]PackedDesc{0: {Addr: math.MaxUint64 - 7, Len: 16, ID: 0, Flags: av(true)}}, nil)
			s.base0 = math.MaxUint64 - 2047
			return s
		}(),
		"zero-len-and-write-before-read": build(4, 0x10, init, 0, map[int]PackedDesc{
			0: {Addr: b0 + 1024, Len: 0, ID: 0, Flags: av(true)},
			1: {Addr: b0 + 1024, Len: 4, Flags: DescFWrite | DescFNext | av(true)},
			2: {Addr: b0 + 1024, Len: 4, ID: 1, Flags: av(true)}}, nil),
		"wrong-wrap-head": build(4, 0, init, 0, map[int]PackedDesc{0: {Addr: b0 + 1024, Len: 4, ID: 0, Flags: DescFAvail | DescFUsed}}, nil),
		"unterminated-wrong-wrap-tail": build(4, 0, init, 0, map[int]PackedDesc{
			0: {Addr: b0 + 1024, Len: 4, Flags: DescFNext | av(true)},
			1: {Addr: b0 + 1024, Len: 4, ID: 1, Flags: av(false)}}, nil),
		"unterminated-whole-ring": build(3, 0, init, 0, map[int]PackedDesc{
			0: {Addr: b0 + 1024, Len: 4, Flags: DescFNext | av(true)},
			1: {Addr: b0 + 1024, Len: 4, Flags: DescFNext | av(true)},
			2: {Addr: b0 + 1024, Len: 4, Flags: DescFNext | av(true)}}, nil),
		"id-out-of-range": build(4, 0, init, 0, map[int]PackedDesc{0: {Addr: b0 + 1024, Len: 4, ID: 4, Flags: av(true)}}, nil),
		"id-reused-in-flight": build(4, 0x10, init, 0, map[int]PackedDesc{
			0: {Addr: b0 + 1024, Len: 4, ID: 2, Flags: av(true)},
			1: {Addr: b0 + 1024, Len: 4, ID: 2, Flags: av(true)}}, nil),
		"vring-base-avail-half-only": func() packedFuzzSetup {
			s := build(5, 0x01, init, 0, map[int]PackedDesc{3: {Addr: b0 + 1024, Len: 4, ID: 3, Flags: av(true)}}, nil)
			s.state = 0x8003
			return s
		}(),
	}
}

// TestWritePackedFuzzSeeds regenerates testdata/fuzz/FuzzPackedChainWalk
// from packedFuzzSeeds when VIRTQUEUE_WRITE_SEEDS=1; otherwise it checks the
// committed corpus is up to date.
func TestWritePackedFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzPackedChainWalk")
	write := os.Getenv("VIRTQUEUE_WRITE_SEEDS") == "1"
	if write {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range packedFuzzSeeds() {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.encode())
		path := filepath.Join(dir, "seed-"+name)
		if write {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Errorf("seed %s missing or stale; run VIRTQUEUE_WRITE_SEEDS=1 go test -run TestWritePackedFuzzSeeds ./virtqueue/", path)
		}
	}
}
