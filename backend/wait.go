package backend

import (
	"os"
	"sync"
	"time"
)

// readWaiter blocks an in-memory backend's reader until a packet arrives, the
// read deadline passes or the backend closes: the same contract the Go poller
// gives a tap's reader. It is for the test and benchmark backends, not a hot
// path.
type readWaiter struct {
	closed    chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // cap 1: the deadline changed
	timer    *time.Timer
}

func newReadWaiter() *readWaiter {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &readWaiter{
		closed: make(chan struct{}),
		wake:   make(chan struct{}, 1),
		timer:  t,
	}
}

func (w *readWaiter) close() {
	w.closeOnce.Do(func() { close(w.closed) })
}

func (w *readWaiter) isClosed() bool {
	select {
	case <-w.closed:
		return true
	default:
		return false
	}
}

func (w *readWaiter) setDeadline(t time.Time) {
	w.mu.Lock()
	w.deadline = t
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// expired reports whether a deadline is set and has passed.
func (w *readWaiter) expired() bool {
	w.mu.Lock()
	dl := w.deadline
	w.mu.Unlock()
	return !dl.IsZero() && !time.Now().Before(dl)
}

// wait returns the next packet from in (nil: wait only for the deadline or
// close), os.ErrDeadlineExceeded or os.ErrClosed. Only one goroutine may wait.
func (w *readWaiter) wait(in <-chan []byte) ([]byte, error) {
	for {
		if w.isClosed() {
			return nil, os.ErrClosed
		}
		w.mu.Lock()
		dl := w.deadline
		w.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return nil, os.ErrDeadlineExceeded
			}
			w.timer.Reset(d)
			timeout = w.timer.C
		}
		select {
		case p := <-in:
			w.timer.Stop()
			return p, nil
		case <-w.closed:
			w.timer.Stop()
			return nil, os.ErrClosed
		case <-w.wake:
			w.timer.Stop()
		case <-timeout:
		}
	}
}
