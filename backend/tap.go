package backend

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TapConfig says which tap to open and how.
type TapConfig struct {
	// Name is the interface name. If it exists it is opened (persistent or
	// not, it is left in place on Close); otherwise it is created
	// non-persistent and vanishes when its last queue closes. Empty lets the
	// kernel pick tapN.
	Name string
	// MultiQueue sets IFF_MULTI_QUEUE: each OpenTap with the same name then
	// attaches one more queue (one per queue pair).
	MultiQueue bool
	// VnetHdrLen is the initial TUNSETVNETHDRSZ: 10 or 12 (0 means 12).
	VnetHdrLen int
	// MTU, if > 0, is set on the link.
	MTU int
	// GSOMaxSize and GSOMaxSegs, if > 0, replace what Caps reports (the
	// link's own values are left alone).
	GSOMaxSize uint32
	GSOMaxSegs uint32
}

// Tap is one queue of a Linux tap device with IFF_VNET_HDR. Reads and writes
// go through the Go poller (the fd is non-blocking) and do not allocate in
// steady state.
//
// Direction of offloads: WritePackets (guest TX) may carry any GSO type the
// kernel's virtio_net_hdr_to_skb accepts, whatever TUNSETOFFLOAD says; the
// tap's transmit features, set by SetOffload from the guest's GUEST_* bits,
// decide what ReadPackets may return (guest RX).
//
// Tap write errors (WritePackets returns a *PacketError unwrapping to the
// errno): EINVAL means the kernel rejected the vnet header or frame
// (virtio_net_hdr_to_skb; older kernels count it in rx_frame_errors). Linux
// 6.6.44 and 6.6.45 (commit 89add40066f9, "net: drop bad gso csum_start and
// offset in virtio_net_hdr", without the 6.6.46 follow-up "net: tighten bad
// gso csum offset check") also reject valid GSO packets whose last segment is
// shorter than gso_size with EINVAL ("bad gso"): callers should count EINVAL
// on GSO writes and fall back to software segmentation.
type Tap struct {
	file     *os.File
	rawConn  syscall.RawConn
	name     string
	ifindex  int
	flags    uint16 // from TUNGETIFF
	created  bool
	uso      bool // TUNSETOFFLOAD accepted USO4|USO6
	caps     Capabilities
	closeErr error
	closed   sync.Once
	isClosed atomic.Bool // set before the fd closes, to report os.ErrClosed

	ctlMu      sync.Mutex // serialises control ioctls
	offload    uint32     // TUN_F_* currently set
	vnetHdrLen int

	// Reader state, used by readLocked through the prebuilt readFn so that
	// RawConn.Read gets no per-call closure (one reader at a time).
	readFn      func(fd uintptr) bool
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

// OpenTap opens (or creates) a tap with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, checks
// with TUNGETIFF that the kernel kept those flags, sets the vnet header
// length, probes USO support, brings the link up and reads its MTU and GSO
// limits. The tap lives in the calling thread's network namespace.
func OpenTap(cfg TapConfig) (*Tap, error) {
	if cfg.VnetHdrLen == 0 {
		cfg.VnetHdrLen = 12
	}
	if err := checkVnetHdrLen(cfg.VnetHdrLen); err != nil {
		return nil, fmt.Errorf("open tap %q: %w", cfg.Name, err)
	}
	if len(cfg.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("open tap %q: name longer than %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	}

	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, explainOpenErr(err)
	}
	t := &Tap{vnetHdrLen: cfg.VnetHdrLen}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()

	features, err := unix.IoctlGetUint32(fd, unix.TUNGETFEATURES)
	if err != nil {
		return nil, fmt.Errorf("open tap %q: TUNGETFEATURES: %w", cfg.Name, err)
	}
	want := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if cfg.MultiQueue {
		want |= unix.IFF_MULTI_QUEUE
	}
	if missing := uint32(want) &^ features; missing != 0 {
		return nil, fmt.Errorf("open tap %q: the kernel's tun driver lacks flags %#x (IFF_VNET_HDR 0x4000, IFF_MULTI_QUEUE 0x100): use a newer kernel", cfg.Name, missing)
	}

	existed := false
	if cfg.Name != "" {
		if _, err := netlink.LinkByName(cfg.Name); err == nil {
			existed = true
		}
	}

	ifr, err := unix.NewIfreq(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("open tap %q: %w", cfg.Name, err)
	}
	ifr.SetUint16(want)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, explainSetIffErr(cfg.Name, cfg.MultiQueue, err)
	}

	// A queue attached to an existing device can end up with flags other
	// than the ones asked for; check what the kernel actually has.
	got, err := unix.NewIfreq("")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, got); err != nil {
		return nil, fmt.Errorf("open tap %q: TUNGETIFF: %w", cfg.Name, err)
	}
	t.name = got.Name()
	t.flags = got.Uint16()
	if err := checkTapFlags(t.name, t.flags, want); err != nil {
		return nil, err
	}
	t.created = !existed

	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, cfg.VnetHdrLen); err != nil {
		return nil, fmt.Errorf("open tap %q: TUNSETVNETHDRSZ %d: %w", t.name, cfg.VnetHdrLen, err)
	}
	// Start with no transmit offloads: until the guest acks GUEST_* bits,
	// the tap must hand us only plain, fully checksummed frames.
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0); err != nil {
		return nil, fmt.Errorf("open tap %q: TUNSETOFFLOAD 0: %w", t.name, err)
	}
	t.uso = probeUSO(fd, 0)

	if err := t.setupLink(fd, cfg); err != nil {
		return nil, err
	}

	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("open tap %q: set O_NONBLOCK: %w", t.name, err)
	}
	t.file = os.NewFile(uintptr(fd), "/dev/net/tun:"+t.name)
	ok = true // the os.File owns fd now
	rc, err := t.file.SyscallConn()
	if err != nil {
		t.file.Close()
		return nil, fmt.Errorf("open tap %q: %w", t.name, err)
	}
	t.rawConn = rc
	t.readFn = t.readLocked
	t.writeFn = t.writeLocked
	t.iov = make([]unix.Iovec, 0, 64)
	return t, nil
}

// checkTapFlags compares the flags TUNGETIFF reported with the ones asked for.
func checkTapFlags(name string, got, want uint16) error {
	const checked = unix.IFF_TAP | unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE
	if got&checked != want {
		return fmt.Errorf("open tap %q: the kernel set flags %#x, want %#x (IFF_TAP 0x2, IFF_NO_PI 0x1000, IFF_VNET_HDR 0x4000, IFF_MULTI_QUEUE 0x100): delete the device (ip link del %s) or use another name",
			name, got&checked, want, name)
	}
	return nil
}

// setupLink brings the link up, applies the MTU and reads MTU and GSO limits,
// through netlink in the tap's own network namespace when the kernel tells us
// which one it is (TUNGETDEVNETNS, Linux 5.2+).
func (t *Tap) setupLink(fd int, cfg TapConfig) error {
	h := &netlink.Handle{}
	if nsfd, err := unix.IoctlRetInt(fd, unix.TUNGETDEVNETNS); err == nil {
		ns := netns.NsHandle(nsfd)
		defer ns.Close()
		if nh, err := netlink.NewHandleAt(ns); err == nil {
			defer nh.Close()
			h = nh
		}
	}
	link, err := h.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("open tap %q: netlink lookup: %w", t.name, err)
	}
	if cfg.MTU > 0 && link.Attrs().MTU != cfg.MTU {
		if err := h.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("open tap %q: set MTU %d: %w (the tap accepts 68..65521)", t.name, cfg.MTU, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("open tap %q: set link up: %w: run as root or grant CAP_NET_ADMIN", t.name, err)
	}
	if link, err = h.LinkByName(t.name); err != nil {
		return fmt.Errorf("open tap %q: netlink lookup: %w", t.name, err)
	}
	a := link.Attrs()
	t.ifindex = a.Index
	t.caps = Capabilities{
		Offloads:   OffloadCSUM | OffloadTSO4 | OffloadTSO6 | OffloadTSOECN | OffloadUFO,
		GSOMaxSize: a.GSOMaxSize,
		GSOMaxSegs: a.GSOMaxSegs,
		MTU:        a.MTU,
	}
	// USO writes (VIRTIO_NET_HDR_GSO_UDP_L4) are accepted by the same
	// kernels (6.2+) that accept TUN_F_USO4|USO6. UFO writes are accepted
	// since 4.14 and fragmented by the stack.
	if t.uso {
		t.caps.Offloads |= OffloadUSO
	}
	if t.caps.GSOMaxSize == 0 {
		t.caps.GSOMaxSize = readSysfsUint(t.name, "gso_max_size", 65536)
	}
	if t.caps.GSOMaxSegs == 0 {
		t.caps.GSOMaxSegs = readSysfsUint(t.name, "gso_max_segs", 65535)
	}
	if cfg.GSOMaxSize > 0 {
		t.caps.GSOMaxSize = cfg.GSOMaxSize
	}
	if cfg.GSOMaxSegs > 0 {
		t.caps.GSOMaxSegs = cfg.GSOMaxSegs
	}
	return nil
}

// readSysfsUint reads /sys/class/net/NAME/ATTR (the fallback for kernels whose
// netlink lacks IFLA_GSO_MAX_*; note sysfs shows the namespace it was mounted
// in).
func readSysfsUint(name, attr string, def uint32) uint32 {
	b, err := os.ReadFile("/sys/class/net/" + name + "/" + attr)
	if err != nil {
		return def
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil || v == 0 {
		return def
	}
	return uint32(v)
}

// probeUSO reports whether the kernel accepts TUN_F_USO4|TUN_F_USO6 (Linux
// 6.2+; set_offload returns EINVAL for any bit it does not know, which is how
// QEMU's tap_probe_has_uso probes it too), then restores restore.
func probeUSO(fd int, restore uint32) bool {
	err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, TunFCsum|TunFTSO4|TunFUSO4|TunFUSO6)
	_ = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, int(restore))
	return err == nil
}

func explainOpenErr(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return fmt.Errorf("open /dev/net/tun: %w: load the tun module (modprobe tun) or create the node (mknod /dev/net/tun c 10 200)", err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("open /dev/net/tun: %w: run as root or grant CAP_NET_ADMIN", err)
	}
	return fmt.Errorf("open /dev/net/tun: %w", err)
}

func explainSetIffErr(name string, multiQueue bool, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("open tap %q: TUNSETIFF: %w: run as root or grant CAP_NET_ADMIN, or pre-create the tap for this user (ip tuntap add %s mode tap user $USER vnet_hdr)", name, err, name)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("open tap %q: TUNSETIFF: %w: another process has the tap open (single-queue taps take one opener); stop it or use another name", name, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("open tap %q: TUNSETIFF: %w: a device of that name exists with another type or multiqueue setting (multiqueue asked: %v); delete it (ip link del %s) or use another name", name, err, multiQueue, name)
	}
	return fmt.Errorf("open tap %q: TUNSETIFF: %w", name, err)
}

// Name returns the interface name.
func (t *Tap) Name() string { return t.name }

// Index returns the interface index.
func (t *Tap) Index() int { return t.ifindex }

// Created reports whether OpenTap created the device (it then disappears when
// its last queue closes).
func (t *Tap) Created() bool { return t.created }

// Flags returns the IFF_* flags TUNGETIFF reported at open.
func (t *Tap) Flags() uint16 { return t.flags }

// Caps implements Backend.
func (t *Tap) Caps() Capabilities { return t.caps }

// ProbeUSO asks the kernel again whether it accepts TUN_F_USO4|TUN_F_USO6 and
// restores the current offloads.
func (t *Tap) ProbeUSO() bool {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	ok := false
	err := t.rawConn.Control(func(fd uintptr) { ok = probeUSO(int(fd), t.offload) })
	return err == nil && ok
}

// OffloadFlags returns the TUN_F_* flags currently set.
func (t *Tap) OffloadFlags() uint32 {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	return t.offload
}

// SetOffload implements Backend: TUNSETOFFLOAD with TunOffloadFlags of the
// guest's acked features. USO is left out when the kernel refused it at open
// (the guest was then not offered GUEST_USO4/6).
func (t *Tap) SetOffload(guestFeatures uint64) error {
	flags := TunOffloadFlags(guestFeatures)
	if !t.uso {
		flags &^= TunFUSO4 | TunFUSO6
	}
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	var ierr error
	if err := t.rawConn.Control(func(fd uintptr) {
		ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, int(flags))
	}); err != nil {
		return fmt.Errorf("tap %s: TUNSETOFFLOAD: %w", t.name, err)
	}
	if ierr != nil {
		return fmt.Errorf("tap %s: the kernel refused TUNSETOFFLOAD %#x: %w", t.name, flags, ierr)
	}
	t.offload = flags
	return nil
}

// SetVnetHdrLen implements Backend (TUNSETVNETHDRSZ).
func (t *Tap) SetVnetHdrLen(n int) error {
	if err := checkVnetHdrLen(n); err != nil {
		return fmt.Errorf("tap %s: %w", t.name, err)
	}
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	var ierr error
	if err := t.rawConn.Control(func(fd uintptr) {
		ierr = unix.IoctlSetPointerInt(int(fd), unix.TUNSETVNETHDRSZ, n)
	}); err != nil {
		return fmt.Errorf("tap %s: TUNSETVNETHDRSZ: %w", t.name, err)
	}
	if ierr != nil {
		return fmt.Errorf("tap %s: TUNSETVNETHDRSZ %d: %w", t.name, n, ierr)
	}
	t.vnetHdrLen = n
	return nil
}

// VnetHdrLen returns the header length last set.
func (t *Tap) VnetHdrLen() int {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	return t.vnetHdrLen
}

// SetReadDeadline implements Backend.
func (t *Tap) SetReadDeadline(tm time.Time) error { return t.file.SetReadDeadline(tm) }

// Close implements Backend. A created, non-persistent tap disappears once its
// last queue is closed.
func (t *Tap) Close() error {
	t.closed.Do(func() {
		t.isClosed.Store(true)
		t.closeErr = t.file.Close()
	})
	return t.closeErr
}

// ReadPackets implements Backend. Each read returns one packet (the kernel
// writes the vnet header then the frame). The kernel silently truncates a
// packet longer than the buffer (sizes[i] is then len(bufs[i])-offset), so
// give each buffer VnetHdrLen + GSOMaxSize + 18 (Ethernet + VLAN tag) bytes
// after offset once the guest has GUEST_TSO/USO. After the first packet it
// keeps reading until EAGAIN or len(bufs). An error met after some packets
// is returned by the next call.
func (t *Tap) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	if err := t.readPending; err != nil {
		t.readPending = nil
		return 0, err
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	t.readBufs, t.readSizes, t.readOffset = bufs, sizes[:len(bufs)], offset
	t.readN, t.readErr = 0, nil
	err := t.rawConn.Read(t.readFn)
	n, rerr := t.readN, t.readErr
	t.readBufs, t.readSizes = nil, nil
	if err == nil {
		err = rerr
	} else {
		err = t.rawConnErr(err)
	}
	if err != nil {
		if n > 0 {
			t.readPending = fmt.Errorf("read tap %s: %w", t.name, err)
			return n, nil
		}
		return 0, fmt.Errorf("read tap %s: %w", t.name, err)
	}
	return n, nil
}

// rawConnErr maps the poller's "use of closed file" (which RawConn, unlike
// os.File's own methods, does not translate) to os.ErrClosed.
func (t *Tap) rawConnErr(err error) error {
	if t.isClosed.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
		return os.ErrClosed
	}
	return err
}

// readLocked is the RawConn.Read callback: false asks the poller to wait for
// readability (only before the first packet).
func (t *Tap) readLocked(fd uintptr) bool {
	for t.readN < len(t.readBufs) {
		m, err := unix.Read(int(fd), t.readBufs[t.readN][t.readOffset:])
		switch err {
		case nil:
			t.readSizes[t.readN] = m
			t.readN++
		case unix.EINTR:
		case unix.EAGAIN:
			return t.readN > 0
		default:
			t.readErr = err
			return true
		}
	}
	return true
}

// WritePackets implements Backend: one writev per packet, with iovecs pointing
// straight at the caller's slices (no copy).
func (t *Tap) WritePackets(pkts [][][]byte) (int, error) {
	if len(pkts) == 0 {
		return 0, nil
	}
	t.writePkts, t.writeN, t.writeErr = pkts, 0, nil
	err := t.rawConn.Write(t.writeFn)
	n, werr := t.writeN, t.writeErr
	t.writePkts = nil
	if err == nil {
		err = werr
	} else {
		err = t.rawConnErr(err)
	}
	if err != nil {
		return n, &PacketError{Index: n, Err: err}
	}
	return n, nil
}

// writeLocked is the RawConn.Write callback: false (on EAGAIN) asks the
// poller to wait for writability.
func (t *Tap) writeLocked(fd uintptr) bool {
	for t.writeN < len(t.writePkts) {
		iov := t.iov[:0]
		for _, b := range t.writePkts[t.writeN] {
			if len(b) == 0 {
				continue
			}
			if len(iov) == maxIovecs {
				t.writeErr = ErrTooManySegments
				return true
			}
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
		t.iov = iov // keep any grown capacity for the next packet
		if len(iov) == 0 {
			t.writeErr = unix.EINVAL // an empty packet has no vnet header
			return true
		}
		_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		switch e {
		case 0:
			t.writeN++
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			t.writeErr = e
			return true
		}
	}
	return true
}
