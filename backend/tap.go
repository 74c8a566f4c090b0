package backend

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/vhostd/vhostd/virtionet/vnet"
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
	// EgressDev names the device the guest's packets leave the host
	// through, whose limits Caps reports; "" finds it (see egress.go).
	EgressDev string

	noWatch bool // a later queue of OpenTapQueues: the first one watches
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
	vnetFile // fd, poller I/O and the TUNSET* control calls

	name    string
	ifindex int
	flags   uint16 // from TUNGETIFF
	created bool
	cfg     TapConfig
	// caps is shared by every queue of the device; the first queue's
	// watch keeps it current as the egress device changes.
	caps  *capsCell
	watch *egressWatch
	// nsfd is the tap's network namespace (TUNGETDEVNETNS) or -1: netlink
	// requests about the tap go there.
	nsfd    int
	closeNs sync.Once
}

// OpenTap opens (or creates) a tap with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, checks
// with TUNGETIFF that the kernel kept those flags, sets the vnet header
// length, probes USO support, brings the link up and reads its MTU and GSO
// limits. The tap lives in the calling thread's network namespace.
func OpenTap(cfg TapConfig) (*Tap, error) {
	if cfg.VnetHdrLen == 0 {
		cfg.VnetHdrLen = 12
	}
	if err := CheckVnetHdrLen(cfg.VnetHdrLen); err != nil {
		return nil, fmt.Errorf("open tap %q: %w", cfg.Name, err)
	}
	if len(cfg.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("open tap %q: name longer than %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	}

	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, explainOpenErr(err)
	}
	t := &Tap{}
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
	if t.name, t.flags, err = getIff(fd); err != nil {
		return nil, fmt.Errorf("open tap %q: TUNGETIFF: %w", cfg.Name, err)
	}
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
	uso := probeUSO(fd, 0)

	if err := t.setupLink(fd, cfg, uso); err != nil {
		return nil, err
	}

	ok = true // init owns fd now, also on error
	if err := t.vnetFile.init(fd, "/dev/net/tun:"+t.name, "tap "+t.name, cfg.VnetHdrLen, uso); err != nil {
		if t.nsfd >= 0 {
			unix.Close(t.nsfd)
		}
		return nil, err
	}
	t.multiQueue = t.flags&unix.IFF_MULTI_QUEUE != 0
	if !cfg.noWatch {
		t.watchLimits()
	}
	return t, nil
}

// checkTapFlags compares the flags TUNGETIFF reported with the ones asked for.
func checkTapFlags(name string, got, want uint16) error {
	return checkIffFlags("tap", name, got, want)
}

// setupLink brings the link up, applies the MTU and reads the TX limits
// from the egress device, through netlink in the tap's own network
// namespace when the kernel tells us which one it is (TUNGETDEVNETNS, Linux
// 5.2+).
func (t *Tap) setupLink(fd int, cfg TapConfig, uso bool) error {
	t.nsfd = -1
	if nsfd, err := unix.IoctlRetInt(fd, unix.TUNGETDEVNETNS); err == nil {
		t.nsfd = nsfd
	}
	h, done := t.handle()
	defer done()
	link, err := h.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("open tap %q: netlink lookup: %w", t.name, err)
	}
	if cfg.MTU > 0 && link.Attrs().MTU != cfg.MTU {
		if err := h.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("open tap %q: set MTU %d: %w (the tap accepts 68..65521)", t.name, cfg.MTU, err)
		}
	}
	// Setting the link up needs CAP_NET_ADMIN; a tap created up front
	// (ip tuntap add ... user U; ip link set ... up) needs no capability
	// at all, so leave a link that is already up alone.
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("open tap %q: set link up: %w: run as root, grant CAP_NET_ADMIN, or create the tap beforehand and set it up (ip tuntap add dev %s mode tap vnet_hdr user $USER; ip link set %s up)", t.name, err, t.name, t.name)
		}
	}
	if link, err = h.LinkByName(t.name); err != nil {
		return fmt.Errorf("open tap %q: netlink lookup: %w", t.name, err)
	}
	t.ifindex = link.Attrs().Index
	t.cfg = cfg
	t.caps = new(capsCell)
	offloads := vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6 | vnet.OffloadTSOECN | vnet.OffloadUFO
	// USO writes (VIRTIO_NET_HDR_GSO_UDP_L4) are accepted by the same
	// kernels (6.2+) that accept TUN_F_USO4|USO6. UFO writes are accepted
	// since 4.14 and fragmented by the stack.
	if uso {
		offloads |= vnet.OffloadUSO
	}
	t.caps.store(Capabilities{Offloads: offloads})
	if cfg.noWatch {
		return nil // a later queue: OpenTapQueues gives it queue 0's limits
	}
	if err := t.refreshLimits(h); err != nil {
		return fmt.Errorf("open tap %q: %w", t.name, err)
	}
	return nil
}

// handle returns a netlink handle in the tap's namespace (or the caller's)
// and the function that releases it.
func (t *Tap) handle() (*netlink.Handle, func()) {
	if t.nsfd >= 0 {
		if nh, err := netlink.NewHandleAt(netns.NsHandle(t.nsfd)); err == nil {
			return nh, nh.Close
		}
	}
	return &netlink.Handle{}, func() {}
}

// refreshLimits reads the egress device's limits into the shared caps,
// keeping the offloads. --gso-max-size/--gso-max-segs still win.
func (t *Tap) refreshLimits(h linkLister) error {
	e, err := findEgress(h, t.ifindex, t.cfg.EgressDev)
	if err != nil {
		return err
	}
	c := t.caps.load()
	c.GSOMaxSize, c.GSOMaxSegs, c.MTU, c.LimitsFrom = e.GSOMaxSize, e.GSOMaxSegs, e.MTU, e.String()
	if t.cfg.GSOMaxSize > 0 || t.cfg.GSOMaxSegs > 0 {
		c.LimitsFrom = "--gso-max-size/--gso-max-segs, else " + c.LimitsFrom
	}
	if t.cfg.GSOMaxSize > 0 {
		c.GSOMaxSize = t.cfg.GSOMaxSize
	}
	if t.cfg.GSOMaxSegs > 0 {
		c.GSOMaxSegs = t.cfg.GSOMaxSegs
	}
	t.caps.store(c)
	return nil
}

// watchLimits starts re-reading the egress limits whenever links or routes
// change in the tap's namespace (first queue only; the others share caps).
func (t *Tap) watchLimits() {
	ns := netns.None()
	if t.nsfd >= 0 {
		ns = netns.NsHandle(t.nsfd)
	}
	t.watch = watchEgress(ns, func() {
		h, done := t.handle()
		defer done()
		_ = t.refreshLimits(h) // a device that vanished keeps the last limits
	})
}

// SetLinkMTU implements MTUSetter: the tap's MTU bounds the frames the host
// sends toward the guest (and a bridge's MTU follows its ports).
func (t *Tap) SetLinkMTU(mtu int) error {
	h, done := t.handle()
	defer done()
	link, err := h.LinkByIndex(t.ifindex)
	if err != nil {
		return fmt.Errorf("tap %s: netlink lookup: %w", t.name, err)
	}
	if link.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("tap %s: set MTU %d: %w (needs CAP_NET_ADMIN; a tap takes 68..65521, and a bridge port cannot exceed what the bridge's other ports allow)", t.name, mtu, err)
	}
	return nil
}

// LinkMTU reads the tap's MTU now.
func (t *Tap) LinkMTU() int {
	h, done := t.handle()
	defer done()
	link, err := h.LinkByIndex(t.ifindex)
	if err != nil {
		return 0
	}
	return link.Attrs().MTU
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

// Caps implements Backend. GSOMaxSize, GSOMaxSegs and MTU are the egress
// device's (see egress.go), kept current while the first queue is open.
func (t *Tap) Caps() Capabilities { return t.caps.load() }

// Close implements Backend. A created, non-persistent tap disappears once its
// last queue is closed.
func (t *Tap) Close() error {
	t.watch.stop()
	err := t.closeFile()
	if t.nsfd >= 0 {
		t.closeNs.Do(func() { unix.Close(t.nsfd) })
	}
	return err
}

// OpenTapQueues opens n queues of one tap, one per queue pair. For n > 1 it
// sets cfg.MultiQueue (IFF_MULTI_QUEUE); the first queue creates or opens the
// device and the others attach to it by name, so an empty cfg.Name works too.
//
// Every queue's flags are checked again with TUNGETIFF once all are open: tun
// keeps IFF_VNET_HDR and friends per device, and a queue attached to an
// existing multiqueue device silently gets the device's flags, not the ones it
// asked for (tun.c tun_set_iff returns early for the second and later queues).
// Likewise TUNSETVNETHDRSZ and TUNSETOFFLOAD act on the whole device: setting
// them on one queue sets them for all.
//
// On error every queue opened so far is closed.
func OpenTapQueues(cfg TapConfig, n int) ([]*Tap, error) {
	if n < 1 {
		return nil, fmt.Errorf("open tap %q: %d queues asked: give at least 1", cfg.Name, n)
	}
	if n > 1 {
		cfg.MultiQueue = true
	}
	queues := make([]*Tap, 0, n)
	fail := func(err error) ([]*Tap, error) {
		for i := len(queues) - 1; i >= 0; i-- {
			queues[i].Close()
		}
		return nil, err
	}
	for i := 0; i < n; i++ {
		q, err := OpenTap(cfg)
		if err != nil {
			return fail(fmt.Errorf("queue %d of %d: %w", i, n, err))
		}
		if i > 0 {
			q.caps = queues[0].caps // one device, one set of limits (only queue 0 watches)
		}
		queues = append(queues, q)
		cfg.Name = q.Name() // the later queues attach to the same device
		cfg.noWatch = true
	}
	want := queues[0].flags
	for i, q := range queues {
		name, flags, err := q.queryIff()
		if err != nil {
			return fail(fmt.Errorf("tap %s queue %d: TUNGETIFF: %w", q.name, i, err))
		}
		if name != queues[0].name || q.ifindex != queues[0].ifindex {
			return fail(fmt.Errorf("tap %s queue %d is attached to %s (index %d), not %s (index %d): another process replaced the device; retry",
				q.name, i, name, q.ifindex, queues[0].name, queues[0].ifindex))
		}
		if err := checkTapFlags(name, flags, want&tapCheckedFlags); err != nil {
			return fail(fmt.Errorf("queue %d: %w", i, err))
		}
		q.flags = flags
	}
	return queues, nil
}

// tapCheckedFlags are the IFF_* bits whose value OpenTap and OpenTapQueues
// insist on; IFF_PERSIST and the like may differ.
const tapCheckedFlags = unix.IFF_TAP | unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE
