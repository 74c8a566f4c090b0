package virtionet

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPollWindowAdapts(t *testing.T) {
	p := newPollWindow(64 * time.Microsecond)
	if p.cur != pollFloor {
		t.Fatalf("initial window %v, want the floor %v", p.cur, pollFloor)
	}
	for i := 0; i < 10; i++ {
		p.grow()
	}
	if p.cur != 64*time.Microsecond {
		t.Fatalf("after hits the window is %v, want the maximum", p.cur)
	}
	p.shrink()
	if p.cur != 32*time.Microsecond {
		t.Fatalf("one miss: %v, want half", p.cur)
	}
	for i := 0; i < 10; i++ {
		p.shrink()
	}
	if p.cur != pollFloor {
		t.Fatalf("after misses the window is %v, want the floor", p.cur)
	}
	small := newPollWindow(time.Microsecond)
	small.grow()
	small.shrink()
	if small.cur != time.Microsecond {
		t.Fatalf("a maximum below the floor: window %v, want the maximum", small.cur)
	}
}

func TestPollOffReturnsAtOnce(t *testing.T) {
	p := newPollWindow(0)
	calls := 0
	ok, err := p.poll(func() (bool, error) { calls++; return true, nil }, func() bool { return false })
	if ok || err != nil || calls != 0 {
		t.Fatalf("polling off: ok=%v err=%v looks=%d, want no look at all", ok, err, calls)
	}
}

func TestPollHitMissQuit(t *testing.T) {
	p := newPollWindow(200 * time.Microsecond)
	ok, _ := p.poll(func() (bool, error) { return true, nil }, func() bool { return false })
	if !ok || p.hits != 1 || p.cur != 2*pollFloor {
		t.Fatalf("hit: ok=%v hits=%d window=%v", ok, p.hits, p.cur)
	}
	start := time.Now()
	ok, _ = p.poll(func() (bool, error) { return false, nil }, func() bool { return false })
	if ok || p.misses+p.contended != 1 {
		t.Fatalf("empty ring: ok=%v misses=%d contended=%d", ok, p.misses, p.contended)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("an empty poll of an %v window took %v", 2*pollFloor, d)
	}
	looks := 0
	ok, _ = p.poll(func() (bool, error) { looks++; return false, nil }, func() bool { return true })
	if ok || looks != 1 {
		t.Fatalf("quit: ok=%v looks=%d, want one look then out", ok, looks)
	}
	h, m, c, _ := p.take()
	if h != 1 || m+c != 1 || p.hits != 0 {
		t.Fatalf("take: hits=%d misses=%d contended=%d, and not cleared", h, m, c)
	}
}

// TestPollLeavesForARunnableTask pins a busy OS thread and the polling
// thread to one CPU: the poll's sched_yield lets the busy thread run, comes
// back late, and the poll must stop at once, counted as contended, long
// before its (large) window runs out.
func TestPollLeavesForARunnableTask(t *testing.T) {
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		t.Skipf("sched_getaffinity: %v", err)
	}
	cpu := -1
	for i := 0; i < 1024; i++ {
		if orig.IsSet(i) {
			cpu = i
			break
		}
	}
	var one unix.CPUSet
	one.Set(cpu)
	stop := atomic.Bool{}
	started := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			close(started)
			return
		}
		close(started)
		for !stop.Load() {
		}
	}()
	<-started
	defer stop.Store(true)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Skipf("sched_setaffinity: %v", err)
	}
	defer unix.SchedSetaffinity(0, &orig)

	p := newPollWindow(time.Second)
	p.cur = time.Second
	start := time.Now()
	ok, _ := p.poll(func() (bool, error) { return false, nil }, func() bool { return false })
	d := time.Since(start)
	if ok || p.contended != 1 {
		t.Fatalf("with a busy thread on the same CPU: ok=%v contended=%d misses=%d after %v", ok, p.contended, p.misses, d)
	}
	if d > 500*time.Millisecond {
		t.Fatalf("the poll left only after %v", d)
	}
	if p.cur >= time.Second {
		t.Fatalf("window not shrunk: %v", p.cur)
	}
}
