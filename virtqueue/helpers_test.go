package virtqueue

import (
	"os"
	"runtime"
	"testing"
	"time"
)

const testBase = 0x10000 // guest address of testRing.mem[0]

// testRing is a driver and an in-process device over one guest memory.
type testRing struct {
	mem []byte
	drv *Driver
	dev *Split
}

type ringOpts struct {
	size        uint16
	eventIdx    bool
	indirect    bool
	availOdd    bool // place the avail ring at 2 mod 4 (only 2-byte aligned)
	indirectMax uint16
}

// Guest memory map used by the tests: rings from offset 0, indirect tables
// at indirectArea, payload buffers from dataArea.
const (
	indirectArea = 0x8000
	dataArea     = 0x10000
	testMemSize  = 0x40000
)

func newTestRing(t testing.TB, o ringOpts) *testRing {
	t.Helper()
	if o.size == 0 {
		o.size = 8
	}
	mem := make([]byte, testMemSize)
	l := LayoutRings(0, o.size)
	if o.availOdd {
		l.Avail += 2
		l.Used = alignUp(l.Avail+AvailRingSize(o.size), 4)
		l.End = l.Used + UsedRingSize(o.size)
	}
	if l.End > indirectArea {
		t.Fatalf("ring of size %d does not fit below the indirect area", o.size)
	}
	cfg := DriverConfig{Size: o.size, Mem: mem, Base: testBase, Rings: l, EventIdx: o.eventIdx}
	if o.indirect || o.indirectMax > 0 {
		cfg.IndirectMax = o.indirectMax
		if cfg.IndirectMax == 0 {
			cfg.IndirectMax = 4
		}
		cfg.IndirectOff = indirectArea
	}
	drv, err := NewDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dcfg := drv.DeviceConfig()
	dcfg.Indirect = o.indirect
	dev, err := NewSplit(dcfg, drv.Memory())
	if err != nil {
		t.Fatal(err)
	}
	if got := dev.f.availIdxHi; got == o.availOdd {
		t.Fatalf("avail ring alignment: availIdxHi = %v, want %v", got, !o.availOdd)
	}
	return &testRing{mem: mem, drv: drv, dev: dev}
}

// gaddr is the guest address of mem offset off.
func gaddr(off int) uint64 { return testBase + uint64(off) }

// checkNoLeaks fails the test if it leaves goroutines or file descriptors
// behind.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	// Make sure the runtime poller exists before counting: its first use
	// opens an epoll fd and a wakeup eventfd that stay open for good.
	if pr, pw, err := os.Pipe(); err == nil {
		pr.Close()
		pw.Close()
	}
	fds0 := countFDs(t)
	g0 := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			g, fds := runtime.NumGoroutine(), countFDs(t)
			if g <= g0 && fds <= fds0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leak: goroutines %d -> %d, fds %d -> %d", g0, g, fds0, fds)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}
