package virtqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kick waits on an eventfd that the driver side signals: the vhost-user kick
// fd on the device side (the Go front-end uses it for the call fd). Reads go
// through the Go runtime poller, so a waiting worker parks its goroutine, not
// an OS thread, and SetDeadline or Close can wake it.
//
// One goroutine calls Wait; SetDeadline and Close may be called from others.
type Kick struct {
	f   *os.File
	buf [8]byte // read buffer; a field so Wait does not allocate
}

// NewKick takes ownership of fd, an eventfd (for instance received over
// SCM_RIGHTS), sets it non-blocking and registers it with the Go poller. fd is
// closed by Close, or before NewKick returns an error.
//
// Note that O_NONBLOCK is a property of the open file description, which the
// sender shares; QEMU and KVM do not care.
func NewKick(fd int) (*Kick, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("virtqueue: kick fd %d: setting O_NONBLOCK: %w", fd, err)
	}
	// With O_NONBLOCK set, os.NewFile registers the fd with the poller.
	f := os.NewFile(uintptr(fd), "vhost-kick")
	if f == nil {
		unix.Close(fd)
		return nil, fmt.Errorf("virtqueue: kick fd %d is not a valid descriptor", fd)
	}
	// Deadlines only work on pollable files; this fails for an fd epoll
	// refuses (a regular file, say), which would otherwise block an OS
	// thread in Wait with no way to wake it.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("virtqueue: kick fd %d cannot be polled (is it an eventfd?): %w", fd, err)
	}
	return &Kick{f: f}, nil
}

// Wait blocks until the eventfd counter is non-zero and resets it to zero
// (several kicks since the last Wait are reported once). It returns
// os.ErrDeadlineExceeded once the deadline set by SetDeadline passes, and an
// error wrapping os.ErrClosed after Close.
func (k *Kick) Wait() error {
	n, err := k.f.Read(k.buf[:])
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return os.ErrDeadlineExceeded
		}
		return fmt.Errorf("virtqueue: waiting for kick: %w", err)
	}
	if n != len(k.buf) {
		// An eventfd read is always 8 bytes.
		return fmt.Errorf("virtqueue: kick fd returned a %d-byte read; it must be an eventfd", n)
	}
	return nil
}

// SetDeadline makes a pending and any later Wait return
// os.ErrDeadlineExceeded once t passes; the zero time clears it. Use a past
// time to unblock a waiter now.
func (k *Kick) SetDeadline(t time.Time) error { return k.f.SetReadDeadline(t) }

// Close closes the eventfd and wakes a pending Wait.
func (k *Kick) Close() error { return k.f.Close() }

// eventfdOne is the 8-byte host-endian value 1 that Signal writes; package
// level so that Signal does not allocate.
var eventfdOne = func() (b [8]byte) {
	binary.NativeEndian.PutUint64(b[:], 1)
	return b
}()

// Call signals an eventfd that the other side waits on: the vhost-user call
// (or error) fd on the device side (the Go front-end uses it for the kick
// fd). Signal is a plain write(2): cheap and never blocking.
type Call struct {
	fd atomic.Int64 // -1 once closed
}

// NewCall takes ownership of fd, an eventfd, and sets it non-blocking (best
// effort; a bad fd makes Signal fail instead). Close closes it.
func NewCall(fd int) *Call {
	_ = unix.SetNonblock(fd, true)
	c := &Call{}
	c.fd.Store(int64(fd))
	return c
}

// Signal adds 1 to the eventfd counter. If the counter is already at its
// maximum the write fails with EAGAIN, which is ignored: the reader has a
// notification pending anyway. A nil *Call (no call fd configured, e.g.
// vhost-user NOFD) signals nothing.
//
// Signal must not race with Close: the fd number could be reused.
func (c *Call) Signal() error {
	if c == nil {
		return nil
	}
	fd := int(c.fd.Load())
	if fd < 0 {
		return os.ErrClosed
	}
	for {
		// Raw: an eventfd write never blocks (EAGAIN when the counter is
		// saturated), and a plain Syscall after idle wakes the runtime's
		// sysmon thread (see backend/vnetfile.go).
		_, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&eventfdOne[0])), 8)
		var err error
		if e != 0 {
			err = e
		}
		switch err {
		case nil, unix.EAGAIN:
			return nil
		case unix.EINTR:
			continue
		default:
			return fmt.Errorf("virtqueue: signalling eventfd %d: %w", fd, err)
		}
	}
}

// Close closes the eventfd. Closing twice returns os.ErrClosed.
func (c *Call) Close() error {
	fd := c.fd.Swap(-1)
	if fd < 0 {
		return os.ErrClosed
	}
	return unix.Close(int(fd))
}
