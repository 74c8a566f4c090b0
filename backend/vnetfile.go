package backend

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/vhostd/vhostd/virtionet/vnet"
	"golang.org/x/sys/unix"
)

// vnetFile is one queue of a kernel device that carries one Ethernet frame
// with a virtio_net_hdr in front per read(2) and per write(2): a tun/tap
// queue (/dev/net/tun) or a macvtap queue (/dev/tapN). Both drivers speak the
// same ioctls (TUNSETOFFLOAD, TUNSETVNETHDRSZ, TUNGETIFF), so Tap and Macvtap
// embed it and share the I/O and control code.
//
// The fd is non-blocking and goes through the Go poller; ReadPackets and
// WritePackets do not allocate in steady state (their RawConn callbacks are
// prebuilt method values, their iovec slice is reused).
type vnetFile struct {
	file     *os.File
	rawConn  syscall.RawConn
	label    string // "tap NAME" or "macvtap NAME": the prefix of errors
	uso      bool   // TUNSETOFFLOAD accepted USO4|USO6 at open
	closeErr error
	closed   sync.Once
	isClosed atomic.Bool // set before the fd closes, to report os.ErrClosed

	ctlMu      sync.Mutex // serialises control ioctls
	offload    uint32     // TUN_F_* currently set
	vnetHdrLen int
	// multiQueue: the device has several queues, so this one may be
	// detached (TUNSETQUEUE); detached says it is now.
	multiQueue bool
	detached   atomic.Bool

	// Reader state, used by readLocked through the prebuilt readFn so that
	// RawConn.Read gets no per-call closure (one reader at a time).
	readFn      func(fd uintptr) bool
	tryReadFn   func(fd uintptr) bool // readLocked that never waits (TryReadPackets)
	readBufs    [][]byte
	readSizes   []int
	readOffset  int
	readN       int
	readErr     error
	readPending error // an error met after some packets were read; returned next call

	// Writer state (one writer at a time).
	writeFn   func(fd uintptr) bool
	writePkts [][][]byte
	writeN    int
	writeErr  error
	iov       []unix.Iovec
}

// maxIovecs is UIO_MAXIOV: writev refuses more with EINVAL.
const maxIovecs = 1024

// init takes ownership of fd (also on error, when it closes it): it makes it
// non-blocking and hands it to the Go poller. path names the os.File.
func (f *vnetFile) init(fd int, path, label string, vnetHdrLen int, uso bool) error {
	f.label, f.vnetHdrLen, f.uso = label, vnetHdrLen, uso
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("open %s: set O_NONBLOCK: %w", label, err)
	}
	f.file = os.NewFile(uintptr(fd), path) // the os.File owns fd now
	rc, err := f.file.SyscallConn()
	if err != nil {
		f.file.Close()
		return fmt.Errorf("open %s: %w", label, err)
	}
	f.rawConn = rc
	f.readFn = f.readLocked
	f.tryReadFn = func(fd uintptr) bool { f.readLocked(fd); return true }
	f.writeFn = f.writeLocked
	f.iov = make([]unix.Iovec, 0, 64)
	return nil
}

// control runs fn on the fd under ctlMu.
func (f *vnetFile) control(fn func(fd int) error) error {
	f.ctlMu.Lock()
	defer f.ctlMu.Unlock()
	var ierr error
	if err := f.rawConn.Control(func(fd uintptr) { ierr = fn(int(fd)) }); err != nil {
		return f.rawConnErr(err)
	}
	return ierr
}

// queryIff asks the kernel (TUNGETIFF) for the device name and the queue's
// IFF_* flags as they are now.
func (f *vnetFile) queryIff() (name string, flags uint16, err error) {
	err = f.control(func(fd int) error {
		n, fl, err := getIff(fd)
		name, flags = n, fl
		return err
	})
	return name, flags, err
}

// getIff is TUNGETIFF on a raw fd.
func getIff(fd int) (string, uint16, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return "", 0, err
	}
	return ifr.Name(), ifr.Uint16(), nil
}

// checkIffFlags compares the flags TUNGETIFF reported with the ones asked for.
func checkIffFlags(kind, name string, got, want uint16) error {
	const checked = tapCheckedFlags
	if got&checked != want {
		return fmt.Errorf("open %s %q: the kernel set flags %#x, want %#x (IFF_TAP 0x2, IFF_NO_PI 0x1000, IFF_VNET_HDR 0x4000, IFF_MULTI_QUEUE 0x100): delete the device (ip link del %s) or use another name",
			kind, name, got&checked, want, name)
	}
	return nil
}

// probeUSO reports whether the kernel accepts TUN_F_USO4|TUN_F_USO6 (Linux
// 6.2+ for tun and for macvtap; set_offload returns EINVAL for any bit it does
// not know, which is how QEMU's tap_probe_has_uso probes it too), then
// restores restore.
func probeUSO(fd int, restore uint32) bool {
	err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, vnet.TunFCsum|vnet.TunFTSO4|vnet.TunFUSO4|vnet.TunFUSO6)
	_ = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, int(restore))
	return err == nil
}

// ProbeUSO asks the kernel again whether it accepts TUN_F_USO4|TUN_F_USO6 and
// restores the current offloads.
func (f *vnetFile) ProbeUSO() bool {
	f.ctlMu.Lock()
	defer f.ctlMu.Unlock()
	ok := false
	err := f.rawConn.Control(func(fd uintptr) { ok = probeUSO(int(fd), f.offload) })
	return err == nil && ok
}

// OffloadFlags returns the TUN_F_* flags currently set.
func (f *vnetFile) OffloadFlags() uint32 {
	f.ctlMu.Lock()
	defer f.ctlMu.Unlock()
	return f.offload
}

// SetOffload implements Backend: TUNSETOFFLOAD with vnet.TunOffloads of the
// guest's acked features. USO is left out when the kernel refused it at open
// (the guest was then not offered GUEST_USO4/6). When the kernel still
// refuses the set (EINVAL: a driver or kernel without one of the flags),
// SetOffload gives offloads up one at a time (tunOffloadFallbacks) instead of
// failing: fewer transmit offloads only mean the host kernel segments or
// checksums before handing packets to us, and the guest takes those. Only a
// failure to program even no offloads is an error. OffloadFlags tells what
// was set.
func (f *vnetFile) SetOffload(guestFeatures uint64) error {
	want := vnet.TunOffloads(vnet.Feature(guestFeatures))
	if !f.uso {
		want &^= vnet.TunFUSO4 | vnet.TunFUSO6
	}
	f.ctlMu.Lock()
	defer f.ctlMu.Unlock()
	flags := want
	var ierr error
	for i := -1; i < len(tunOffloadFallbacks); i++ {
		if i >= 0 {
			next := want & tunOffloadFallbacks[i]
			if next == flags {
				continue // this step gives nothing up for this set
			}
			flags = next
		}
		if err := f.rawConn.Control(func(fd uintptr) {
			ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, int(flags))
		}); err != nil {
			return fmt.Errorf("%s: TUNSETOFFLOAD: %w", f.label, f.rawConnErr(err))
		}
		if ierr == nil {
			f.offload = flags
			return nil
		}
		if !errors.Is(ierr, unix.EINVAL) {
			break
		}
	}
	return fmt.Errorf("%s: the kernel refused TUNSETOFFLOAD %#x and every smaller set down to %#x: %w", f.label, want, flags, ierr)
}

// SetQueueAttached implements QueueAttacher with TUNSETQUEUE
// (IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE; tun.c tun_set_queue, tap.c
// tap_ioctl_set_queue). No capability is needed: the caller owns the queue's
// fd. On a single-queue device it does nothing.
func (f *vnetFile) SetQueueAttached(on bool) error {
	f.ctlMu.Lock()
	defer f.ctlMu.Unlock()
	if !f.multiQueue || f.detached.Load() == !on {
		return nil
	}
	flag := uint16(unix.IFF_DETACH_QUEUE)
	if on {
		flag = unix.IFF_ATTACH_QUEUE
	}
	var ierr error
	if err := f.rawConn.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			ierr = err
			return
		}
		ifr.SetUint16(flag)
		ierr = unix.IoctlIfreq(int(fd), unix.TUNSETQUEUE, ifr)
	}); err != nil {
		return fmt.Errorf("%s: TUNSETQUEUE: %w", f.label, f.rawConnErr(err))
	}
	if ierr != nil {
		verb := "detach"
		if on {
			verb = "attach"
		}
		return fmt.Errorf("%s: %s queue (TUNSETQUEUE): %w", f.label, verb, ierr)
	}
	f.detached.Store(!on)
	return nil
}

// QueueAttached implements QueueAttacher.
func (f *vnetFile) QueueAttached() bool { return !f.detached.Load() }

// SetVnetHdrLen implements Backend (TUNSETVNETHDRSZ).
func (f *vnetFile) SetVnetHdrLen(n int) error {
	if err := CheckVnetHdrLen(n); err != nil {
		return fmt.Errorf("%s: %w", f.label, err)
	}
	f.ctlMu.Lock()
	defer f.ctlMu.Unlock()
	var ierr error
	if err := f.rawConn.Control(func(fd uintptr) {
		ierr = unix.IoctlSetPointerInt(int(fd), unix.TUNSETVNETHDRSZ, n)
	}); err != nil {
		return fmt.Errorf("%s: TUNSETVNETHDRSZ: %w", f.label, f.rawConnErr(err))
	}
	if ierr != nil {
		return fmt.Errorf("%s: TUNSETVNETHDRSZ %d: %w", f.label, n, ierr)
	}
	f.vnetHdrLen = n
	return nil
}

// VnetHdrLen returns the header length last set.
func (f *vnetFile) VnetHdrLen() int {
	f.ctlMu.Lock()
	defer f.ctlMu.Unlock()
	return f.vnetHdrLen
}

// SetReadDeadline implements Backend.
func (f *vnetFile) SetReadDeadline(tm time.Time) error { return f.file.SetReadDeadline(tm) }

// closeFile closes the fd once; later calls return the first result. A
// blocked reader returns os.ErrClosed.
func (f *vnetFile) closeFile() error {
	f.closed.Do(func() {
		f.isClosed.Store(true)
		f.closeErr = f.file.Close()
	})
	return f.closeErr
}

// ReadPackets implements Backend. Each read returns one packet (the kernel
// writes the vnet header then the frame). The kernel silently truncates a
// packet longer than the buffer (sizes[i] is then len(bufs[i])-offset), so
// give each buffer VnetHdrLen + GSOMaxSize + 18 (Ethernet + VLAN tag) bytes
// after offset once the guest has GUEST_TSO/USO. After the first packet it
// keeps reading until EAGAIN or len(bufs). An error met after some packets
// is returned by the next call.
func (f *vnetFile) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	return f.read(bufs, sizes, offset, f.readFn)
}

// TryReadPackets implements PollReader: ReadPackets that returns 0 at once
// instead of waiting when nothing is queued. It goes through RawConn.Read,
// which holds the fd against a concurrent Close, with a callback that never
// asks the poller to wait.
func (f *vnetFile) TryReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	return f.read(bufs, sizes, offset, f.tryReadFn)
}

// read runs one RawConn.Read with fn, a prebuilt readLocked callback.
func (f *vnetFile) read(bufs [][]byte, sizes []int, offset int, fn func(fd uintptr) bool) (int, error) {
	if err := f.readPending; err != nil {
		f.readPending = nil
		return 0, err
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	f.readBufs, f.readSizes, f.readOffset = bufs, sizes[:len(bufs)], offset
	f.readN, f.readErr = 0, nil
	err := f.rawConn.Read(fn)
	n, rerr := f.readN, f.readErr
	f.readBufs, f.readSizes = nil, nil
	if err == nil {
		err = rerr
	} else {
		err = f.rawConnErr(err)
	}
	if err != nil {
		if n > 0 {
			f.readPending = fmt.Errorf("read %s: %w", f.label, err)
			return n, nil
		}
		return 0, fmt.Errorf("read %s: %w", f.label, err)
	}
	return n, nil
}

// rawConnErr maps the poller's "use of closed file" (which RawConn, unlike
// os.File's own methods, does not translate) to os.ErrClosed.
func (f *vnetFile) rawConnErr(err error) error {
	if f.isClosed.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
		return os.ErrClosed
	}
	return err
}

// readLocked is the RawConn.Read callback: false asks the poller to wait for
// readability (only before the first packet).
func (f *vnetFile) readLocked(fd uintptr) bool {
	for f.readN < len(f.readBufs) {
		b := f.readBufs[f.readN][f.readOffset:]
		var m int
		var err error
		if len(b) == 0 {
			err = unix.EINVAL
		} else {
			// Raw: the fd is non-blocking, and a plain Syscall after idle
			// makes the runtime wake sysmon, which then polls every 20 µs
			// (golang/go#18236); measured at a quarter of vhostd's CPU in a
			// guest iperf3 run.
			r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			m = int(r)
			if e != 0 {
				err = e
			}
		}
		switch err {
		case nil:
			f.readSizes[f.readN] = m
			f.readN++
		case unix.EINTR:
		case unix.EAGAIN:
			return f.readN > 0
		default:
			f.readErr = err
			return true
		}
	}
	return true
}

// WritePackets implements Backend: one writev per packet, with iovecs pointing
// straight at the caller's slices (no copy).
func (f *vnetFile) WritePackets(pkts [][][]byte) (int, error) {
	if len(pkts) == 0 {
		return 0, nil
	}
	f.writePkts, f.writeN, f.writeErr = pkts, 0, nil
	err := f.rawConn.Write(f.writeFn)
	n, werr := f.writeN, f.writeErr
	f.writePkts = nil
	if err == nil {
		err = werr
	} else {
		err = f.rawConnErr(err)
	}
	if err != nil {
		return n, &PacketError{Index: n, Err: err}
	}
	return n, nil
}

// writeLocked is the RawConn.Write callback: false (on EAGAIN) asks the
// poller to wait for writability.
func (f *vnetFile) writeLocked(fd uintptr) bool {
	for f.writeN < len(f.writePkts) {
		iov := f.iov[:0]
		for _, b := range f.writePkts[f.writeN] {
			if len(b) == 0 {
				continue
			}
			if len(iov) == maxIovecs {
				f.writeErr = ErrTooManySegments
				return true
			}
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
		f.iov = iov // keep any grown capacity for the next packet
		if len(iov) == 0 {
			f.writeErr = unix.EINVAL // an empty packet has no vnet header
			return true
		}
		// Raw for the same reason as the read: the fd never blocks, and a
		// tap writev returns in microseconds.
		_, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		switch e {
		case 0:
			f.writeN++
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			f.writeErr = e
			return true
		}
	}
	return true
}
