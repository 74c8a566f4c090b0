package hostile_test

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtqueue"
)

// lifecycleCycles is how many sessions TestLifecycleNoGrowth runs.
const lifecycleCycles = 1000

// rssSlack bounds RSS growth over the run. RSS is not an exact measure: the
// Go heap is collected and returned to the OS (debug.FreeOSMemory) before
// both samples, but the runtime keeps some spans, stack and arena metadata,
// and the page cache of the memfds is charged as shared memory while they
// live. A leak of one 4 MiB guest-memory mapping per session would add 4 GiB
// (touched pages: at least 8 KiB per session, 8 MiB over the run); 4 MiB of
// slack catches both while tolerating allocator noise.
const rssSlack = 4 << 20

// resources is what one sample of the process looks like.
type resources struct {
	fds, goroutines, memfdMaps int
	rss                        int64
}

func (r resources) String() string {
	return fmt.Sprintf("fds=%d goroutines=%d memfd_mappings=%d rss=%.1fMiB", r.fds, r.goroutines, r.memfdMaps, float64(r.rss)/(1<<20))
}

func sample(t testing.TB) resources {
	runtime.GC()
	debug.FreeOSMemory()
	return resources{fds: fdCount(t), goroutines: runtime.NumGoroutine(), memfdMaps: memfdMappings(t), rss: rssBytes(t)}
}

// cycle is one whole session: connect, QEMU-order handshake, one packet each
// way, disconnect.
func (s *server) cycle() error {
	fe, err := s.dial()
	if err != nil {
		return err
	}
	defer fe.Close()
	if err := fe.Handshake(frontend.Options{QueueSize: 64, Regions: []frontend.Region{{Size: 1 << 20}}}); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	rx, tx := fe.Queues[0], fe.Queues[1]
	hb, fb, rb := fe.Buffer(0, 12), fe.Buffer(64, 100), fe.Buffer(4096, 2048)
	copy(fb, testpkt.UDP4(100, testpkt.CsumNone))
	if _, err := tx.Driver.Add([][]byte{hb, fb}, nil); err != nil {
		return err
	}
	if _, err := rx.Driver.Add(nil, [][]byte{rb}); err != nil {
		return err
	}
	tx.Driver.Publish()
	rx.Driver.Publish()
	tx.Kick()
	rx.Kick()
	if err := s.pipe.Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(80, testpkt.CsumNone))); err != nil {
		return err
	}
	used := make([]virtqueue.UsedElem, 4)
	deadline := time.Now().Add(5 * time.Second)
	for gotTx, gotRx := 0, 0; gotTx == 0 || gotRx == 0; {
		gotTx += tx.Driver.Reap(used)
		gotRx += rx.Driver.Reap(used)
		if time.Now().After(deadline) {
			return errors.New("no used entries within 5 s")
		}
		runtime.Gosched()
	}
	if n := len(s.pipe.TakeWritten()); n != 1 {
		return fmt.Errorf("backend got %d packets, want 1", n)
	}
	return nil
}

// TestLifecycleNoGrowth runs many whole sessions against one server and
// checks that fds, goroutines, memfd mappings and RSS do not grow.
func TestLifecycleNoGrowth(t *testing.T) {
	s := newServer(t)
	for i := 0; i < 20; i++ { // warm-up: runtime fds, pools, heap size
		if err := s.cycle(); err != nil {
			t.Fatalf("warm-up cycle %d: %v", i, err)
		}
	}
	must(t, s.waitIdle())
	before := sample(t)
	start := time.Now()
	for i := 0; i < lifecycleCycles; i++ {
		if err := s.cycle(); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	must(t, s.waitIdle())
	// Goroutines of the last session end right after it does.
	var after resources
	deadline := time.Now().Add(5 * time.Second)
	for {
		after = sample(t)
		if after.goroutines <= before.goroutines || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d sessions in %v", lifecycleCycles, elapsed.Round(time.Millisecond))
	t.Logf("before: %v", before)
	t.Logf("after:  %v", after)
	if after.fds != before.fds {
		t.Errorf("fds grew: %d -> %d", before.fds, after.fds)
	}
	if after.goroutines > before.goroutines {
		t.Errorf("goroutines grew: %d -> %d", before.goroutines, after.goroutines)
	}
	if after.memfdMaps != before.memfdMaps {
		t.Errorf("memfd mappings: %d -> %d", before.memfdMaps, after.memfdMaps)
	}
	if raceEnabled {
		t.Log("race detector on: RSS not checked")
	} else if after.rss > before.rss+rssSlack {
		t.Errorf("RSS grew by %.1f MiB (slack %d MiB)", float64(after.rss-before.rss)/(1<<20), rssSlack>>20)
	}
}
