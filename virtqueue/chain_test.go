package virtqueue

import (
	"errors"
	"math"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

type wantBuf struct {
	region int // 0: ring memory, 1: adjacent region, 2: region ending at 2^64
	off    int
	len    int
	write  bool
}

// Extra regions of the chain-test memory: one directly after the ring
// memory (to test straddling) and one ending at 2^64 (to test wrapping).
const (
	region1Addr = testBase + testMemSize
	region1Size = 0x1000
	region2Size = 0x1000
	region2Addr = math.MaxUint64 - region2Size + 1
)

func TestChainWalk(t *testing.T) {
	const size = 8
	data := dataArea
	ind := indirectArea
	putInd := func(r *testRing, k int, d Desc) { PutDesc(r.mem[ind+k*DescSize:], d) }

	cases := []struct {
		name     string
		indirect bool // VIRTIO_F_INDIRECT_DESC negotiated
		setup    func(r *testRing)
		err      error
		bufs     []wantBuf
		noFollow bool // the chain uses descriptor 7, which the follow-up chain needs
	}{
		{name: "single readable",
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 64}) },
			bufs:  []wantBuf{{0, data, 64, false}}},
		{name: "readable then writable",
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 12, Flags: DescFNext, Next: 3})
				r.drv.SetDesc(3, Desc{Addr: gaddr(data + 0x100), Len: 1500, Flags: DescFNext, Next: 1})
				r.drv.SetDesc(1, Desc{Addr: gaddr(data + 0x800), Len: 100, Flags: DescFWrite})
			},
			bufs: []wantBuf{{0, data, 12, false}, {0, data + 0x100, 1500, false}, {0, data + 0x800, 100, true}}},
		{name: "chain of queue size", noFollow: true,
			setup: func(r *testRing) {
				for i := uint16(0); i < size; i++ {
					fl := DescFNext
					if i == size-1 {
						fl = 0
					}
					r.drv.SetDesc(i, Desc{Addr: gaddr(data + int(i)*0x100), Len: 8, Flags: fl, Next: i + 1})
				}
			},
			bufs: []wantBuf{{0, data, 8, false}, {0, data + 0x100, 8, false}, {0, data + 0x200, 8, false}, {0, data + 0x300, 8, false},
				{0, data + 0x400, 8, false}, {0, data + 0x500, 8, false}, {0, data + 0x600, 8, false}, {0, data + 0x700, 8, false}}},
		{name: "buffer ends at end of region",
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: gaddr(testMemSize - 16), Len: 16}) },
			bufs:  []wantBuf{{0, testMemSize - 16, 16, false}}},
		{name: "buffer in second region",
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: region1Addr, Len: region1Size, Flags: DescFWrite}) },
			bufs:  []wantBuf{{1, 0, region1Size, true}}},
		{name: "buffer ends exactly at 2^64",
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: math.MaxUint64 - 15, Len: 16}) },
			bufs:  []wantBuf{{2, region2Size - 16, 16, false}}},
		{name: "loop of two", err: ErrChainTooLong,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 8, Flags: DescFNext, Next: 1})
				r.drv.SetDesc(1, Desc{Addr: gaddr(data), Len: 8, Flags: DescFNext, Next: 0})
			}},
		{name: "self loop", err: ErrChainTooLong,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 8, Flags: DescFNext, Next: 0}) }},
		{name: "next out of range", err: ErrDescIndex,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 8, Flags: DescFNext, Next: size}) }},
		{name: "next 0xffff", err: ErrDescIndex,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 8, Flags: DescFNext, Next: 0xffff}) }},
		{name: "indirect", indirect: true,
			setup: func(r *testRing) {
				// WRITE on the descriptor naming the table must be ignored.
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: 3 * DescSize, Flags: DescFIndirect | DescFWrite})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 10, Flags: DescFNext, Next: 2})
				putInd(r, 2, Desc{Addr: gaddr(data + 0x100), Len: 20, Flags: DescFNext, Next: 1})
				putInd(r, 1, Desc{Addr: gaddr(data + 0x200), Len: 30, Flags: DescFWrite})
			},
			bufs: []wantBuf{{0, data, 10, false}, {0, data + 0x100, 20, false}, {0, data + 0x200, 30, true}}},
		{name: "direct descriptors then indirect", indirect: true,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 10, Flags: DescFNext, Next: 5})
				r.drv.SetDesc(5, Desc{Addr: gaddr(ind), Len: 2 * DescSize, Flags: DescFIndirect})
				putInd(r, 0, Desc{Addr: gaddr(data + 0x100), Len: 20, Flags: DescFNext, Next: 1})
				putInd(r, 1, Desc{Addr: gaddr(data + 0x200), Len: 30, Flags: DescFWrite})
			},
			bufs: []wantBuf{{0, data, 10, false}, {0, data + 0x100, 20, false}, {0, data + 0x200, 30, true}}},
		{name: "indirect table of queue size", indirect: true,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: size * DescSize, Flags: DescFIndirect})
				for k := 0; k < size; k++ {
					putInd(r, k, Desc{Addr: gaddr(data), Len: 1, Flags: DescFNext, Next: uint16(k + 1)})
				}
				putInd(r, size-1, Desc{Addr: gaddr(data), Len: 1})
			},
			bufs: []wantBuf{{0, data, 1, false}, {0, data, 1, false}, {0, data, 1, false}, {0, data, 1, false},
				{0, data, 1, false}, {0, data, 1, false}, {0, data, 1, false}, {0, data, 1, false}}},
		{name: "indirect loop", indirect: true, err: ErrChainTooLong,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: 2 * DescSize, Flags: DescFIndirect})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 1, Flags: DescFNext, Next: 1})
				putInd(r, 1, Desc{Addr: gaddr(data), Len: 1, Flags: DescFNext, Next: 0})
			}},
		{name: "indirect next out of table", indirect: true, err: ErrDescIndex,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: 2 * DescSize, Flags: DescFIndirect})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 1, Flags: DescFNext, Next: 2})
				putInd(r, 2, Desc{Addr: gaddr(data), Len: 1}) // valid-looking, but past the table
			}},
		{name: "indirect len not multiple of 16", indirect: true, err: ErrIndirectLen,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: 24, Flags: DescFIndirect}) }},
		{name: "indirect len zero", indirect: true, err: ErrIndirectLen,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: 0, Flags: DescFIndirect}) }},
		{name: "indirect table larger than queue", indirect: true, err: ErrIndirectLen,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: (size + 1) * DescSize, Flags: DescFIndirect})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 1})
			}},
		{name: "nested indirect", indirect: true, err: ErrNestedIndirect,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: 2 * DescSize, Flags: DescFIndirect})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 1, Flags: DescFNext, Next: 1})
				putInd(r, 1, Desc{Addr: gaddr(ind + 0x100), Len: DescSize, Flags: DescFIndirect})
				PutDesc(r.mem[ind+0x100:], Desc{Addr: gaddr(data), Len: 1})
			}},
		{name: "indirect with next", indirect: true, err: ErrIndirectNext,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: DescSize, Flags: DescFIndirect | DescFNext, Next: 1})
				r.drv.SetDesc(1, Desc{Addr: gaddr(data), Len: 1})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 1})
			}},
		{name: "indirect not negotiated", err: ErrIndirectNotNegotiated,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: DescSize, Flags: DescFIndirect})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 1})
			}},
		{name: "indirect table outside memory", indirect: true, err: ErrDescAddress,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: 0x100, Len: DescSize, Flags: DescFIndirect}) }},
		{name: "indirect table straddles regions", indirect: true, err: ErrDescAddress,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: region1Addr - DescSize, Len: 2 * DescSize, Flags: DescFIndirect})
			}},
		{name: "address below memory", err: ErrDescAddress,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: 0x100, Len: 16}) }},
		{name: "address between regions", err: ErrDescAddress,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: region1Addr + region1Size + 0x1000, Len: 16}) }},
		{name: "length past region end", err: ErrDescAddress,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: math.MaxUint32}) }},
		{name: "straddles two adjacent regions", err: ErrDescAddress,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: region1Addr - 8, Len: 16}) }},
		{name: "wraps past 2^64", err: ErrDescAddress,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: math.MaxUint64 - 7, Len: 16}) }},
		{name: "wraps past 2^64 from below region", err: ErrDescAddress,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: math.MaxUint64 - 7, Len: math.MaxUint32}) }},
		{name: "later buffer outside memory", err: ErrDescAddress,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 8, Flags: DescFNext, Next: 1})
				r.drv.SetDesc(1, Desc{Addr: 0, Len: 8, Flags: DescFWrite})
			}},
		{name: "zero length", err: ErrZeroLen,
			setup: func(r *testRing) { r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 0}) }},
		{name: "zero length after valid", err: ErrZeroLen,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 8, Flags: DescFNext, Next: 1})
				r.drv.SetDesc(1, Desc{Addr: gaddr(data), Len: 0, Flags: DescFWrite})
			}},
		{name: "zero length in indirect table", indirect: true, err: ErrZeroLen,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: DescSize, Flags: DescFIndirect})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 0})
			}},
		{name: "write before read", err: ErrWriteBeforeRead,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 8, Flags: DescFWrite | DescFNext, Next: 1})
				r.drv.SetDesc(1, Desc{Addr: gaddr(data), Len: 8})
			}},
		{name: "write before read in indirect table", indirect: true, err: ErrWriteBeforeRead,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(ind), Len: 2 * DescSize, Flags: DescFIndirect})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 8, Flags: DescFWrite | DescFNext, Next: 1})
				putInd(r, 1, Desc{Addr: gaddr(data), Len: 8})
			}},
		{name: "write before read across indirect", indirect: true, err: ErrWriteBeforeRead,
			setup: func(r *testRing) {
				r.drv.SetDesc(0, Desc{Addr: gaddr(data), Len: 8, Flags: DescFWrite | DescFNext, Next: 1})
				r.drv.SetDesc(1, Desc{Addr: gaddr(ind), Len: DescSize, Flags: DescFIndirect})
				putInd(r, 0, Desc{Addr: gaddr(data), Len: 8})
			}},
	}

	for _, tc := range cases {
		for _, odd := range []bool{false, true} {
			name := tc.name
			if odd {
				name += "/avail 2-aligned"
			}
			t.Run(name, func(t *testing.T) {
				r := newTestRing(t, ringOpts{size: size, indirect: tc.indirect, indirectMax: 1, availOdd: odd})
				region1 := make([]byte, region1Size)
				region2 := make([]byte, region2Size)
				mem := RegionMemory{{Addr: testBase, B: r.mem}, {Addr: region1Addr, B: region1}, {Addr: region2Addr, B: region2}}
				cfg := r.drv.DeviceConfig()
				cfg.Indirect = tc.indirect
				dev, err := NewSplit(cfg, mem)
				if err != nil {
					t.Fatal(err)
				}
				tc.setup(r)
				r.drv.PostRaw(0)
				if !tc.noFollow {
					// A good chain after the one under test: a malformed
					// chain must not disturb the ring.
					r.drv.SetDesc(7, Desc{Addr: gaddr(dataArea + 0x1000), Len: 32})
					r.drv.PostRaw(7)
				}
				r.drv.Publish()

				chains := make([]Chain, 4)
				chains[0].Bufs = make([]Buffer, 1, 16) // stale content must be dropped
				n, err := dev.Pop(chains)
				if err != nil {
					t.Fatalf("Pop: ring-fatal error %v", err)
				}
				wantN := 2
				if tc.noFollow {
					wantN = 1
				}
				if n != wantN {
					t.Fatalf("Pop returned %d chains, want %d", n, wantN)
				}
				c := chains[0]
				if c.Head != 0 {
					t.Errorf("Head = %d, want 0", c.Head)
				}
				if !errors.Is(c.Err, tc.err) || (tc.err == nil) != (c.Err == nil) {
					t.Fatalf("Err = %v, want %v", c.Err, tc.err)
				}
				regions := [][]byte{r.mem, region1, region2}
				if len(c.Bufs) != len(tc.bufs) {
					t.Fatalf("got %d buffers, want %d", len(c.Bufs), len(tc.bufs))
				}
				var rl, wl uint32
				for i, w := range tc.bufs {
					b := c.Bufs[i]
					if len(b.B) != w.len || cap(b.B) != w.len || b.Write != w.write ||
						unsafe.SliceData(b.B) != &regions[w.region][w.off] {
						t.Errorf("buffer %d: len %d cap %d write %v, want region %d offset %#x len %d write %v",
							i, len(b.B), cap(b.B), b.Write, w.region, w.off, w.len, w.write)
					}
					if w.write {
						wl += uint32(w.len)
					} else {
						rl += uint32(w.len)
					}
				}
				if c.ReadLen != rl || c.WriteLen != wl {
					t.Errorf("ReadLen/WriteLen = %d/%d, want %d/%d", c.ReadLen, c.WriteLen, rl, wl)
				}
				if !tc.noFollow {
					f := chains[1]
					if f.Err != nil || f.Head != 7 || len(f.Bufs) != 1 || f.ReadLen != 32 {
						t.Errorf("follow-up chain: head %d err %v bufs %d readLen %d", f.Head, f.Err, len(f.Bufs), f.ReadLen)
					}
				}
				if dev.LastAvail() != uint16(n) {
					t.Errorf("LastAvail = %d, want %d", dev.LastAvail(), n)
				}
			})
		}
	}
}

// TestChainTotalLengthOver4G checks the 2^32-byte chain limit (virtio 1.x
// §2.7.5.2) with a 3 GiB region of untouched, unbacked address space.
func TestChainTotalLengthOver4G(t *testing.T) {
	const big = 3 << 30
	huge, err := unix.Mmap(-1, 0, big, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Skipf("cannot reserve 3 GiB of address space: %v", err)
	}
	defer unix.Munmap(huge)
	r := newTestRing(t, ringOpts{size: 8})
	const hugeAddr = 1 << 40
	dev, err := NewSplit(r.drv.DeviceConfig(), RegionMemory{{Addr: testBase, B: r.mem}, {Addr: hugeAddr, B: huge}})
	if err != nil {
		t.Fatal(err)
	}
	r.drv.SetDesc(0, Desc{Addr: hugeAddr, Len: big, Flags: DescFNext, Next: 1})
	r.drv.SetDesc(1, Desc{Addr: hugeAddr, Len: big, Flags: DescFWrite})
	r.drv.PostRaw(0)
	// Exactly 2^32-1 bytes: fine.
	r.drv.SetDesc(2, Desc{Addr: hugeAddr, Len: big, Flags: DescFWrite | DescFNext, Next: 3})
	r.drv.SetDesc(3, Desc{Addr: hugeAddr, Len: math.MaxUint32 - big, Flags: DescFWrite})
	r.drv.PostRaw(2)
	r.drv.Publish()
	var chains [2]Chain
	n, err := dev.Pop(chains[:])
	if n != 2 || err != nil {
		t.Fatalf("Pop = %d, %v", n, err)
	}
	if chains[0].Err != ErrChainTooLong {
		t.Errorf("6 GiB chain: Err = %v, want ErrChainTooLong", chains[0].Err)
	}
	if chains[1].Err != nil || chains[1].WriteLen != math.MaxUint32 {
		t.Errorf("4 GiB-1 chain: Err = %v WriteLen = %d", chains[1].Err, chains[1].WriteLen)
	}
}

func TestHeadIndexIsRingFatal(t *testing.T) {
	for _, odd := range []bool{false, true} {
		r := newTestRing(t, ringOpts{size: 8, availOdd: odd})
		r.drv.SetDesc(0, Desc{Addr: gaddr(dataArea), Len: 8})
		r.drv.PostRaw(0)
		r.drv.PostRaw(8) // no such descriptor
		r.drv.PostRaw(0)
		r.drv.Publish()
		chains := make([]Chain, 4)
		n, err := r.dev.Pop(chains)
		if n != 1 || err != ErrHeadIndex || chains[0].Err != nil {
			t.Fatalf("Pop = %d, %v (chain 0 err %v); want 1 good chain and ErrHeadIndex", n, err, chains[0].Err)
		}
		if r.dev.LastAvail() != 1 {
			t.Errorf("LastAvail = %d, want 1 (stops at the bad entry)", r.dev.LastAvail())
		}
		if n, err := r.dev.Pop(chains); n != 0 || err != ErrHeadIndex {
			t.Errorf("second Pop = %d, %v; the error must be sticky", n, err)
		}
		if _, err := r.dev.Pending(); err != ErrHeadIndex {
			t.Errorf("Pending err = %v, want ErrHeadIndex", err)
		}
		if !r.dev.EnableNotify() {
			t.Errorf("EnableNotify on a broken ring must report more work so the caller sees the error")
		}
	}
}

func TestAvailIdxJump(t *testing.T) {
	for _, tc := range []struct {
		name string
		idx  uint16
		err  error
		n    int
	}{
		{"exactly queue size", 8, nil, 8},
		{"queue size plus one", 9, ErrAvailIdxJump, 0},
		{"backwards by one", 0xffff, ErrAvailIdxJump, 0},
		{"far ahead", 0x8000, ErrAvailIdxJump, 0},
	} {
		for _, odd := range []bool{false, true} {
			t.Run(tc.name, func(t *testing.T) {
				r := newTestRing(t, ringOpts{size: 8, availOdd: odd})
				for i := uint16(0); i < 8; i++ {
					r.drv.SetDesc(i, Desc{Addr: gaddr(dataArea), Len: 8})
					r.drv.SetAvailEntry(i, i)
				}
				r.drv.SetAvailIdx(tc.idx)
				n, err := r.dev.Pending()
				if n != tc.n || err != tc.err {
					t.Fatalf("Pending = %d, %v; want %d, %v", n, err, tc.n, tc.err)
				}
				chains := make([]Chain, 16)
				n, err = r.dev.Pop(chains)
				if n != tc.n || err != tc.err {
					t.Fatalf("Pop = %d, %v; want %d, %v", n, err, tc.n, tc.err)
				}
				if tc.err != nil {
					r.drv.SetAvailIdx(1) // even a sane index later does not revive the ring
					if _, err := r.dev.Pop(chains); err != tc.err {
						t.Errorf("ring-fatal error is not sticky: %v", err)
					}
				}
			})
		}
	}
}

func TestNewSplitRejectsBadConfig(t *testing.T) {
	mem := make([]byte, 4096)
	good := func() Config {
		return Config{Size: 8, Desc: mem[0:128], Avail: mem[128:150], Used: mem[152:222], EventIdx: true}
	}
	if _, err := NewSplit(good(), RegionMemory{}); err != nil {
		t.Fatalf("good config rejected: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		mem  Memory
	}{
		{"size 0", func(c *Config) { c.Size = 0 }, RegionMemory{}},
		{"size not power of two", func(c *Config) { c.Size = 6 }, RegionMemory{}},
		{"nil memory", func(c *Config) {}, nil},
		{"short desc", func(c *Config) { c.Desc = c.Desc[:127] }, RegionMemory{}},
		{"short avail", func(c *Config) { c.Avail = c.Avail[:21] }, RegionMemory{}},
		{"short used", func(c *Config) { c.Used = c.Used[:69] }, RegionMemory{}},
		{"avail odd address", func(c *Config) { c.Avail = mem[129:151] }, RegionMemory{}},
		{"used only 2-aligned", func(c *Config) { c.Used = mem[154:224] }, RegionMemory{}},
	} {
		c := good()
		tc.mod(&c)
		if _, err := NewSplit(c, tc.mem); err == nil {
			t.Errorf("%s: NewSplit accepted it", tc.name)
		}
	}
	// Without EVENT_IDX the tail fields are not needed.
	c := good()
	c.EventIdx = false
	c.Avail, c.Used = c.Avail[:20], c.Used[:68]
	if _, err := NewSplit(c, RegionMemory{}); err != nil {
		t.Errorf("config without EVENT_IDX and without tail fields rejected: %v", err)
	}
}

func TestRegionMemory(t *testing.T) {
	a := make([]byte, 100)
	b := make([]byte, 50)
	m := RegionMemory{{Addr: 1000, B: a}, {Addr: 1100, B: b}, {Addr: math.MaxUint64 - 9, B: make([]byte, 10)}}
	for _, tc := range []struct {
		addr, size uint64
		ok         bool
	}{
		{1000, 100, true},
		{1000, 0, true},
		{999, 1, false},
		{1099, 1, true},
		{1099, 2, false}, // straddles a and b although they are adjacent
		{1100, 50, true},
		{1149, 2, false},
		{1150, 0, false},
		{math.MaxUint64 - 9, 10, true},
		{math.MaxUint64 - 9, 11, false},
		{math.MaxUint64, 2, false},
		{1000, math.MaxUint64, false},
	} {
		s, ok := m.Slice(tc.addr, tc.size)
		if ok != tc.ok || (ok && uint64(len(s)) != tc.size) || (ok && uint64(cap(s)) != tc.size) {
			t.Errorf("Slice(%#x, %d) = len %d, %v; want ok %v", tc.addr, tc.size, len(s), ok, tc.ok)
		}
	}
}
