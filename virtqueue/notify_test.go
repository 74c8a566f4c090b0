package virtqueue

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newEventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatalf("eventfd: %v", err)
	}
	return fd
}

// eventfdPair returns a Kick and a Call on the same eventfd (the Call on a
// dup), as the two ends of one notification channel.
func eventfdPair(t *testing.T) (*Kick, *Call) {
	t.Helper()
	fd := newEventfd(t)
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKick(fd)
	if err != nil {
		t.Fatal(err)
	}
	return k, NewCall(dup)
}

func TestKickCallSignalAndWait(t *testing.T) {
	checkNoLeaks(t)
	k, c := eventfdPair(t)
	defer k.Close()
	defer c.Close()

	// Several signals before a Wait collapse into one wakeup.
	for i := 0; i < 3; i++ {
		if err := c.Signal(); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Wait(); err != nil {
		t.Fatal(err)
	}
	// Counter drained: the next Wait blocks until the deadline.
	k.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if err := k.Wait(); err != os.ErrDeadlineExceeded {
		t.Fatalf("Wait on a drained eventfd = %v, want os.ErrDeadlineExceeded", err)
	}
	k.SetDeadline(time.Time{})

	// A Wait blocked in the poller wakes up on Signal from elsewhere.
	done := make(chan error)
	go func() { done <- k.Wait() }()
	time.Sleep(10 * time.Millisecond)
	if err := c.Signal(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Signal")
	}
}

func TestKickDeadlineUnblocksWaiter(t *testing.T) {
	checkNoLeaks(t)
	k, err := NewKick(newEventfd(t))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	done := make(chan error)
	go func() { done <- k.Wait() }()
	time.Sleep(10 * time.Millisecond) // let it park in the poller
	if err := k.SetDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != os.ErrDeadlineExceeded {
			t.Fatalf("Wait = %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SetDeadline did not unblock Wait")
	}
}

func TestKickCloseUnblocksWaiter(t *testing.T) {
	checkNoLeaks(t)
	k, err := NewKick(newEventfd(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- k.Wait() }()
	time.Sleep(10 * time.Millisecond)
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Wait after Close = %v, want os.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Wait")
	}
}

func TestNewKickSetsNonblockAndRejectsBadFds(t *testing.T) {
	checkNoLeaks(t)
	fd := newEventfd(t)
	k, err := NewKick(fd)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("kick fd flags %#x, %v: O_NONBLOCK not set", fl, err)
	}
	k.Close()

	if _, err := NewKick(-1); err == nil {
		t.Error("NewKick(-1) succeeded")
	}
	// A regular file cannot be polled; NewKick must refuse it (and close it).
	f, err := os.CreateTemp(t.TempDir(), "kick")
	if err != nil {
		t.Fatal(err)
	}
	rfd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKick(rfd); err == nil {
		t.Error("NewKick accepted a regular file")
	}
	if _, err := unix.FcntlInt(uintptr(rfd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("NewKick did not close the fd it refused: %v", err)
	}
}

func TestCallSignalSaturatedAndClosed(t *testing.T) {
	checkNoLeaks(t)
	fd := newEventfd(t)
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dup)
	c := NewCall(fd)
	// Bring the counter to its maximum: the next write would block, so a
	// non-blocking Signal gets EAGAIN, which it ignores.
	var max [8]byte
	for i := range max {
		max[i] = 0xff
	}
	max[0] = 0xfe // 0xfffffffffffffffe in little endian
	if _, err := unix.Write(dup, max[:]); err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(); err != nil {
		t.Errorf("Signal on a saturated eventfd = %v, want nil", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Signal after Close = %v", err)
	}
	if err := c.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
	var nilCall *Call
	if err := nilCall.Signal(); err != nil {
		t.Errorf("nil Call Signal = %v", err)
	}
	bad := NewCall(-1)
	if err := bad.Signal(); err == nil {
		t.Error("Signal on fd -1 succeeded")
	}
}

func TestSignalDoesNotAllocate(t *testing.T) {
	k, c := eventfdPair(t)
	defer k.Close()
	defer c.Close()
	allocs := testing.AllocsPerRun(100, func() {
		c.Signal()
		k.Wait()
	})
	if allocs != 0 {
		t.Errorf("Signal+Wait allocate %v times per run", allocs)
	}
}
