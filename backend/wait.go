package backend

import (
	"os"
	"sync"
	"time"
)

// ReadWaiter blocks an in-memory backend's reader until a packet arrives,
// the read deadline passes or the backend closes: the same contract the Go
// poller gives a tap's reader. It is for the benchmark backend (Null) and the
// test doubles (backendtest), not a hot path.
type ReadWaiter struct {
	closed    chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // cap 1: the deadline changed
	timer    *time.Timer
}

// NewReadWaiter returns an open ReadWaiter without a deadline.
func NewReadWaiter() *ReadWaiter {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &ReadWaiter{
		closed: make(chan struct{}),
		wake:   make(chan struct{}, 1),
		timer:  t,
	}
}

// Close wakes the reader for good.
func (w *ReadWaiter) Close() {
	w.closeOnce.Do(func() { close(w.closed) })
}

// IsClosed reports whether Close was called.
func (w *ReadWaiter) IsClosed() bool {
	select {
	case <-w.closed:
		return true
	default:
		return false
	}
}

// Closed is closed by Close.
func (w *ReadWaiter) Closed() <-chan struct{} { return w.closed }

// SetDeadline sets the read deadline (zero: none) and wakes the reader.
func (w *ReadWaiter) SetDeadline(t time.Time) {
	w.mu.Lock()
	w.deadline = t
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Expired reports whether a deadline is set and has passed.
func (w *ReadWaiter) Expired() bool {
	w.mu.Lock()
	dl := w.deadline
	w.mu.Unlock()
	return !dl.IsZero() && !time.Now().Before(dl)
}

// Wait returns the next packet from in (nil: wait only for the deadline or
// close), os.ErrDeadlineExceeded or os.ErrClosed. Only one goroutine may wait.
func (w *ReadWaiter) Wait(in <-chan []byte) ([]byte, error) {
	for {
		if w.IsClosed() {
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
