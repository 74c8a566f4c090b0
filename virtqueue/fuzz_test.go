package virtqueue

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

// Fuzz input layout for FuzzChainWalk:
//
//	[0]      log2 of the queue size (mod 6: sizes 1..32)
//	[1]      bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 avail ring only
//	         2-aligned, bit 3 IN_ORDER (completions through PushInOrder),
//	         bits 4-5 Pop batch size - 1
//	[2:4]    LastAvail
//	[4:12]   guest address of region 0
//	[12:20]  guest address of region 1
//	[20:22]  length of region 0 (clamped to the rest of the input)
//	[22:]    region 0 bytes, then region 1 bytes
//
// Region 0 starts with the descriptor table followed by the avail ring (it
// is zero-padded if the input is shorter), so descriptors can point at the
// rings themselves, at indirect tables anywhere, or outside memory.
const fuzzHeader = 22

type fuzzSetup struct {
	sizeLog    uint8
	flags      uint8
	lastAvail  uint16
	base0      uint64
	base1      uint64
	mem0, mem1 []byte
}

func (s fuzzSetup) encode() []byte {
	b := make([]byte, fuzzHeader, fuzzHeader+len(s.mem0)+len(s.mem1))
	b[0], b[1] = s.sizeLog, s.flags
	binary.LittleEndian.PutUint16(b[2:], s.lastAvail)
	binary.LittleEndian.PutUint64(b[4:], s.base0)
	binary.LittleEndian.PutUint64(b[12:], s.base1)
	binary.LittleEndian.PutUint16(b[20:], uint16(len(s.mem0)))
	b = append(b, s.mem0...)
	return append(b, s.mem1...)
}

func (s fuzzSetup) size() uint16 { return 1 << (s.sizeLog % 6) }

func (s fuzzSetup) availOff() int {
	off := int(DescTableSize(s.size()))
	if s.flags&4 != 0 {
		off += 2
	}
	return off
}

func FuzzChainWalk(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.encode())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < fuzzHeader {
			return
		}
		s := fuzzSetup{
			sizeLog:   data[0],
			flags:     data[1],
			lastAvail: binary.LittleEndian.Uint16(data[2:]),
			base0:     binary.LittleEndian.Uint64(data[4:]),
			base1:     binary.LittleEndian.Uint64(data[12:]),
		}
		rest := data[fuzzHeader:]
		n0 := min(int(binary.LittleEndian.Uint16(data[20:])), len(rest))
		size := s.size()
		availOff := s.availOff()
		ringEnd := availOff + int(AvailRingSize(size))
		// Region 0: 8-aligned backing so the avail ring alignment is what
		// the flags ask for.
		mem0 := make([]byte, max(n0, ringEnd))
		copy(mem0, rest[:n0])
		mem1 := append([]byte(nil), rest[n0:]...)
		used := make([]byte, UsedRingSize(size))
		mem := RegionMemory{{Addr: s.base0, B: mem0}}
		if len(mem1) > 0 {
			mem = append(mem, MemRegion{Addr: s.base1, B: mem1})
		}
		q, err := NewSplit(Config{
			Size:      size,
			Desc:      mem0[:DescTableSize(size)],
			Avail:     mem0[availOff:ringEnd],
			Used:      used,
			EventIdx:  s.flags&1 != 0,
			Indirect:  s.flags&2 != 0,
			LastAvail: s.lastAvail,
			InOrder:   s.flags&8 != 0,
		}, mem)
		if err != nil {
			t.Fatalf("NewSplit: %v", err)
		}
		chains := make([]Chain, 1+int(s.flags>>4&3))
		usedElems := make([]UsedElem, len(chains))
		for iter := 0; iter < 64; iter++ {
			n, err := q.Pop(chains)
			for _, c := range chains[:n] {
				checkFuzzChain(t, c, size, mem0, mem1)
			}
			for i, c := range chains[:n] {
				usedElems[i] = UsedElem{ID: uint32(c.Head)}
				if i%2 == 0 {
					usedElems[i].Len = c.WriteLen
				}
			}
			before := q.UsedIdx()
			if s.flags&8 != 0 {
				q.PushInOrder(usedElems[:n])
			} else {
				q.Push(usedElems[:n])
			}
			if q.UsedIdx()-before != uint16(n) {
				t.Fatalf("used index moved by %d for %d chains", q.UsedIdx()-before, n)
			}
			q.NeedNotify()
			if err != nil {
				if err != ErrAvailIdxJump && err != ErrHeadIndex {
					t.Fatalf("Pop: unexpected error %v", err)
				}
				return
			}
			if n == 0 && !q.EnableNotify() {
				return
			}
			q.DisableNotify()
		}
	})
}

func checkFuzzChain(t *testing.T, c Chain, size uint16, regions ...[]byte) {
	t.Helper()
	if c.Head >= size {
		t.Fatalf("head %d >= size %d", c.Head, size)
	}
	if c.Err != nil {
		if len(c.Bufs) != 0 || c.ReadLen != 0 || c.WriteLen != 0 {
			t.Fatalf("failed chain (%v) carries %d buffers", c.Err, len(c.Bufs))
		}
		return
	}
	if len(c.Bufs) == 0 || len(c.Bufs) > 2*int(size) {
		t.Fatalf("chain of %d buffers with queue size %d", len(c.Bufs), size)
	}
	var rl, wl uint64
	seenWrite := false
	for _, b := range c.Bufs {
		if len(b.B) == 0 || cap(b.B) != len(b.B) {
			t.Fatalf("buffer len %d cap %d", len(b.B), cap(b.B))
		}
		if !b.Write && seenWrite {
			t.Fatal("readable buffer after a writable one")
		}
		seenWrite = seenWrite || b.Write
		p := uintptr(unsafe.Pointer(unsafe.SliceData(b.B)))
		inside := false
		for _, r := range regions {
			lo := uintptr(unsafe.Pointer(unsafe.SliceData(r)))
			if len(r) > 0 && p >= lo && p-lo < uintptr(len(r)) && uintptr(len(b.B)) <= uintptr(len(r))-(p-lo) {
				inside = true
			}
		}
		if !inside {
			t.Fatalf("buffer [%#x, +%d) is outside guest memory", p, len(b.B))
		}
		if b.Write {
			wl += uint64(len(b.B))
		} else {
			rl += uint64(len(b.B))
		}
	}
	if rl != uint64(c.ReadLen) || wl != uint64(c.WriteLen) || rl+wl > math.MaxUint32 {
		t.Fatalf("ReadLen/WriteLen %d/%d, buffers add up to %d/%d", c.ReadLen, c.WriteLen, rl, wl)
	}
}

// fuzzSeeds are hand-built starting points: valid chains of each shape and
// each kind of malformed chain, so the fuzzer starts near the interesting
// edges instead of at random addresses.
func fuzzSeeds() map[string]fuzzSetup {
	type descAt struct {
		i int
		d Desc
	}
	build := func(sizeLog, flags uint8, base0, base1 uint64, n1 int, heads []uint16, availIdx uint16, descs []descAt, extra func(mem0 []byte)) fuzzSetup {
		s := fuzzSetup{sizeLog: sizeLog, flags: flags, base0: base0, base1: base1}
		size := s.size()
		mem0 := make([]byte, 1024)
		for _, d := range descs {
			PutDesc(mem0[d.i*DescSize:], d.d)
		}
		a := s.availOff()
		binary.LittleEndian.PutUint16(mem0[a+2:], availIdx)
		for k, h := range heads {
			binary.LittleEndian.PutUint16(mem0[a+4+2*(k%int(size)):], h)
		}
		if extra != nil {
			extra(mem0)
		}
		s.mem0 = mem0
		s.mem1 = make([]byte, n1)
		for i := range s.mem1 {
			s.mem1[i] = byte(i)
		}
		return s
	}
	const b0 = 0x100000
	const b1 = b0 + 1024 // adjacent to region 0
	return map[string]fuzzSetup{
		"valid-single": build(2, 0, b0, b1, 64, []uint16{0}, 1,
			[]descAt{{0, Desc{Addr: b0 + 512, Len: 64}}}, nil),
		"valid-mixed-two-chains": build(3, 0x10, b0, b1, 64, []uint16{0, 3}, 2,
			[]descAt{{0, Desc{Addr: b0 + 512, Len: 12, Flags: DescFNext, Next: 1}},
				{1, Desc{Addr: b1, Len: 32, Flags: DescFWrite | DescFNext, Next: 2}},
				{2, Desc{Addr: b0 + 600, Len: 8, Flags: DescFWrite}},
				{3, Desc{Addr: b0 + 700, Len: 100}}}, nil),
		"valid-indirect": build(2, 0x02, b0, b1, 64, []uint16{1}, 1,
			[]descAt{{1, Desc{Addr: b0 + 768, Len: 32, Flags: DescFIndirect}}},
			func(m []byte) {
				PutDesc(m[768:], Desc{Addr: b0 + 512, Len: 10, Flags: DescFNext, Next: 1})
				PutDesc(m[784:], Desc{Addr: b1 + 8, Len: 20, Flags: DescFWrite})
			}),
		"valid-eventidx-odd-avail-idx-wrap": func() fuzzSetup {
			s := build(1, 0x05|0x30, b0, b1, 0, []uint16{0, 1}, 0x0001,
				[]descAt{{0, Desc{Addr: b0 + 512, Len: 4}}, {1, Desc{Addr: b0 + 520, Len: 4}}},
				nil)
			s.lastAvail = 0xffff // two chains pending across the 2^16 wrap
			return s
		}(),
		"loop": build(2, 0, b0, b1, 0, []uint16{0}, 1,
			[]descAt{{0, Desc{Addr: b0 + 512, Len: 4, Flags: DescFNext, Next: 1}},
				{1, Desc{Addr: b0 + 512, Len: 4, Flags: DescFNext, Next: 0}}}, nil),
		"next-out-of-range": build(2, 0, b0, b1, 0, []uint16{0}, 1,
			[]descAt{{0, Desc{Addr: b0 + 512, Len: 4, Flags: DescFNext, Next: 9}}}, nil),
		"nested-indirect": build(2, 0x02, b0, b1, 0, []uint16{0}, 1,
			[]descAt{{0, Desc{Addr: b0 + 768, Len: 16, Flags: DescFIndirect}}},
			func(m []byte) { PutDesc(m[768:], Desc{Addr: b0 + 768, Len: 16, Flags: DescFIndirect}) }),
		"indirect-bad-len": build(2, 0x02, b0, b1, 0, []uint16{0}, 1,
			[]descAt{{0, Desc{Addr: b0 + 768, Len: 24, Flags: DescFIndirect}}}, nil),
		"indirect-next": build(2, 0x02, b0, b1, 0, []uint16{0}, 1,
			[]descAt{{0, Desc{Addr: b0 + 768, Len: 16, Flags: DescFIndirect | DescFNext, Next: 1}}}, nil),
		"straddle-regions": build(2, 0, b0, b1, 64, []uint16{0}, 1,
			[]descAt{{0, Desc{Addr: b1 - 8, Len: 16}}}, nil),
		"wrap-past-2pow64": build(2, 0, math.MaxUint64-1023, b1, 0, []uint16{0}, 1,
			[]descAt{{0, Desc{Addr: math.MaxUint64 - 7, Len: 16}}}, nil),
		"zero-len-and-write-before-read": build(2, 0x10, b0, b1, 0, []uint16{0, 1}, 2,
			[]descAt{{0, Desc{Addr: b0 + 512, Len: 0}},
				{1, Desc{Addr: b0 + 512, Len: 4, Flags: DescFWrite | DescFNext, Next: 2}},
				{2, Desc{Addr: b0 + 512, Len: 4}}}, nil),
		"inorder-mixed-lengths": build(3, 0x08|0x30, b0, b1, 64, []uint16{0, 2, 3, 5}, 4,
			[]descAt{{0, Desc{Addr: b0 + 512, Len: 12, Flags: DescFNext, Next: 1}},
				{1, Desc{Addr: b1, Len: 32, Flags: DescFWrite}},
				{2, Desc{Addr: b0 + 600, Len: 8, Flags: DescFWrite}},
				{3, Desc{Addr: b0 + 700, Len: 0}},
				{5, Desc{Addr: b0 + 800, Len: 16, Flags: DescFWrite}}}, nil),
		"avail-jump":        build(2, 0, b0, b1, 0, nil, 5, nil, nil),
		"head-out-of-range": build(2, 0, b0, b1, 0, []uint16{7}, 1, nil, nil),
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzChainWalk from
// fuzzSeeds when VIRTQUEUE_WRITE_SEEDS=1; otherwise it checks the committed
// corpus is up to date.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzChainWalk")
	write := os.Getenv("VIRTQUEUE_WRITE_SEEDS") == "1"
	if write {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range fuzzSeeds() {
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
			t.Errorf("seed %s missing or stale; run VIRTQUEUE_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./virtqueue/", path)
		}
	}
}
