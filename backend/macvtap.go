package backend

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Proposed daemon flags (cmd/vhostd wires them; they map onto MacvtapConfig
// and OpenMacvtapQueues):
//
//	--backend macvtap        use a macvtap (default when --macvtap is given)
//	--macvtap NAME           the macvtap link: opened if it exists, else created
//	--macvtap-lower DEV      lower device to create it on (needed to create;
//	                         checked against an existing link when given)
//	--macvtap-mode MODE      bridge (default), vepa, private or passthru
//	                         (ParseMacvtapMode); only used when creating
//	--macvtap-mac MAC        MAC of a created macvtap (default: random). The
//	                         guest must use the macvtap's MAC (offer it with
//	                         VIRTIO_NET_F_MAC from Macvtap.HardwareAddr): a
//	                         macvtap passes up only unicast to its own address.
//	--queues N               N queue pairs: OpenMacvtapQueues(cfg, N)
//	--mtu, --gso-max-size, --gso-max-segs  as for --tap (MacvtapConfig.MTU,
//	                         GSOMaxSize, GSOMaxSegs)

// MacvtapMode is the macvlan mode of a created macvtap (IFLA_MACVLAN_MODE).
type MacvtapMode string

// The macvlan modes a macvtap can be created in.
const (
	// MacvtapBridge: frames between macvtaps/macvlans on the same lower
	// device are switched inside the kernel; others leave through the lower
	// device. The lower device's own stack does not see them.
	MacvtapBridge MacvtapMode = "bridge"
	// MacvtapVEPA: every frame leaves through the lower device; an external
	// switch with hairpin (reflective relay) sends local traffic back.
	MacvtapVEPA MacvtapMode = "vepa"
	// MacvtapPrivate: like VEPA, but frames coming back from the switch to
	// another macvtap on the same lower device are dropped.
	MacvtapPrivate MacvtapMode = "private"
	// MacvtapPassthru: the only macvtap on the lower device, which it puts in
	// promiscuous mode; the guest may then change its MAC.
	MacvtapPassthru MacvtapMode = "passthru"
)

var macvtapModes = map[MacvtapMode]netlink.MacvlanMode{
	MacvtapBridge:   netlink.MACVLAN_MODE_BRIDGE,
	MacvtapVEPA:     netlink.MACVLAN_MODE_VEPA,
	MacvtapPrivate:  netlink.MACVLAN_MODE_PRIVATE,
	MacvtapPassthru: netlink.MACVLAN_MODE_PASSTHRU,
}

// ParseMacvtapMode parses a --macvtap-mode value; "" means bridge.
func ParseMacvtapMode(s string) (MacvtapMode, error) {
	if s == "" {
		return MacvtapBridge, nil
	}
	m := MacvtapMode(strings.ToLower(s))
	if _, ok := macvtapModes[m]; !ok {
		return "", fmt.Errorf("unknown macvtap mode %q: use bridge, vepa, private or passthru", s)
	}
	return m, nil
}

func macvtapModeOf(m netlink.MacvlanMode) MacvtapMode {
	for k, v := range macvtapModes {
		if v == m {
			return k
		}
	}
	return MacvtapMode(fmt.Sprintf("mode%d", m))
}

// MacvtapConfig says which macvtap to open or create, and how.
type MacvtapConfig struct {
	// Name is the macvtap link name (required). If a link of that name
	// exists it must be a macvtap and is opened and left in place on Close;
	// otherwise it is created on Lower and deleted when the last queue
	// opened with it closes.
	Name string
	// Lower is the lower device: required to create; if set when opening an
	// existing macvtap, it must be that macvtap's lower device.
	Lower string
	// Mode is the macvlan mode of a created macvtap ("" means bridge). For
	// an existing one it must match when set.
	Mode MacvtapMode
	// MAC is the address of a created macvtap (nil: random). For an existing
	// one it must match when set.
	MAC net.HardwareAddr
	// VnetHdrLen is the initial TUNSETVNETHDRSZ: 10 or 12 (0 means 12).
	VnetHdrLen int
	// MTU, if > 0, is set on the macvtap (at most the lower device's MTU).
	MTU int
	// GSOMaxSize and GSOMaxSegs, if > 0, replace what Caps reports.
	GSOMaxSize uint32
	GSOMaxSegs uint32
}

// Macvtap is one queue of a macvtap device (/dev/tapN, N the macvtap's
// ifindex) opened with IFF_VNET_HDR. It implements Backend exactly as Tap
// does (same fd I/O, zero allocations per packet); OpenMacvtapQueues opens
// several queues, which for macvtap are simply several opens of /dev/tapN.
//
// Offloads: WritePackets (guest TX) may carry any GSO type the kernel's
// virtio_net_hdr_to_skb accepts; the frame leaves through the lower device,
// which segments in software what it cannot offload. SetOffload (TUNSETOFFLOAD,
// from the guest's GUEST_* bits) decides what ReadPackets may return, and
// acts on the whole macvtap device, not one queue: tap.c tap_handle_frame
// segments in software every GSO packet whose type is not in the device's
// tap_features. With GUEST_CSUM|GUEST_TSO4/6 acked, TCP super-packets reach
// the reader whole. USO does not, as of Linux 6.18: set_offload accepts
// TUN_F_USO4|USO6 (so ProbeUSO says yes and USO writes work) but puts
// NETIF_F_GSO_UDP_L4 in the device features instead of tap_features, so UDP
// GSO packets are still segmented toward the reader (TestMacvtapReadOffloads
// shows the lower device receiving one super-packet and the reader three
// datagrams).
//
// Turning TSO off (TUNSETOFFLOAD without TUN_F_TSO4/TSO6, as OpenMacvtap does
// until the guest acks GUEST_TSO*) also turns off GRO/LRO toward the reader:
// tap.c set_offload then clears RX_OFFLOADS (NETIF_F_GRO|NETIF_F_LRO) in the
// features it asks for the macvtap (macvtap_update_features). In macvlan.c
// fix_features only LRO follows that request (GRO is taken from the lower
// device as it is); LRO is an upper-disables feature, so the kernel also
// turns LRO off on the lower device (netdev_sync_lower_features), for every
// user of that NIC, and does not turn it back on when TSO is enabled again.
// What the lower device still aggregates with GRO is segmented again in
// tap_handle_frame, so a guest without TSO never receives a super-packet.
//
// Unlike a tap, TUNSETVNETHDRSZ is per queue.
type Macvtap struct {
	vnetFile // fd, poller I/O and the TUNSET* control calls

	link       *macvtapLink
	ifindex    int
	flags      uint16 // from TUNGETIFF
	mode       MacvtapMode
	mac        net.HardwareAddr
	lowerName  string
	lowerIndex int
	caps       Capabilities

	closeOnce   sync.Once
	closeResult error
}

// macvtapLink is the macvtap link shared by the queues opened together; the
// last queue to close deletes it if it was created.
type macvtapLink struct {
	name    string
	index   int
	created bool
	nl      *netlink.Handle // created links only: a socket in the link's namespace, for the delete
	ns      netns.NsHandle  // the link's namespace (for SET_MTU), closed by the last release
	refs    atomic.Int32
}

// release drops one queue's reference; the last one deletes a created link.
func (l *macvtapLink) release() error {
	if l.refs.Add(-1) != 0 {
		return nil
	}
	if l.ns.IsOpen() {
		l.ns.Close()
	}
	if !l.created {
		return nil
	}
	defer l.nl.Close()
	return deleteMacvtapLink(l.nl, l.name, l.index)
}

// deleteMacvtapLink deletes the macvtap link index if it is still the one we
// created (same name and kind), so that a link another process made meanwhile
// with a reused index is left alone.
func deleteMacvtapLink(h *netlink.Handle, name string, index int) error {
	link, err := h.LinkByIndex(index)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil // already gone (namespace deleted, or someone else deleted it)
		}
		return fmt.Errorf("delete macvtap %s: netlink lookup: %w", name, err)
	}
	if link.Attrs().Name != name || link.Type() != "macvtap" {
		return nil
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("delete macvtap %s: %w: delete it by hand (ip link del %s)", name, err, name)
	}
	return nil
}

// OpenMacvtap opens one queue of a macvtap (creating the link if it does not
// exist): see OpenMacvtapQueues.
func OpenMacvtap(cfg MacvtapConfig) (*Macvtap, error) {
	qs, err := OpenMacvtapQueues(cfg, 1)
	if err != nil {
		return nil, err
	}
	return qs[0], nil
}

// OpenMacvtapQueues opens the macvtap cfg.Name, or creates it on cfg.Lower in
// cfg.Mode, brings it up, and opens n queues of /dev/tapN (N its ifindex).
// The device node is found through sysfs (class/net/NAME/macvtap/tapN/dev,
// or /sys/dev/char when sysfs shows another network namespace, as in a
// container or after unshare); when /dev lacks a node with that number (no
// devtmpfs, or /dev/tapN belongs to a macvtap of the same ifindex in another
// namespace) a private node is made with mknod and unlinked once open.
//
// Each queue is set to IFF_TAP|IFF_NO_PI|IFF_VNET_HDR with TUNSETIFF, checked
// with TUNGETIFF and SIOCGIFHWADDR (name, flags and MAC), given the vnet
// header length, and the device's offloads start at 0 (see Macvtap). Once all
// are open every queue's flags are checked again. On error everything opened
// or created is closed or deleted. The link lives in the calling thread's
// network namespace.
//
// The queues share the link: if it was created here, the last of them to
// close deletes it. Opening the same macvtap again with another call attaches
// more queues but does not share that ownership.
func OpenMacvtapQueues(cfg MacvtapConfig, n int) ([]*Macvtap, error) {
	if cfg.VnetHdrLen == 0 {
		cfg.VnetHdrLen = 12
	}
	if err := CheckVnetHdrLen(cfg.VnetHdrLen); err != nil {
		return nil, fmt.Errorf("open macvtap %q: %w", cfg.Name, err)
	}
	if cfg.Name == "" {
		return nil, errors.New("open macvtap: no name given: name the macvtap link (--macvtap NAME)")
	}
	if len(cfg.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("open macvtap %q: name longer than %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	}
	if n < 1 || n > 256 {
		return nil, fmt.Errorf("open macvtap %q: %d queues asked: use 1..256 (MAX_TAP_QUEUES)", cfg.Name, n)
	}
	if cfg.Mode != "" {
		if _, ok := macvtapModes[cfg.Mode]; !ok {
			return nil, fmt.Errorf("open macvtap %q: unknown mode %q: use bridge, vepa, private or passthru", cfg.Name, cfg.Mode)
		}
	}

	// Every netlink call and the device-node lookup must see one network
	// namespace: the calling thread's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open macvtap %q: netlink: %w", cfg.Name, err)
	}
	link, created, err := ensureMacvtapLink(h, cfg)
	if err != nil {
		h.Close()
		return nil, err
	}
	owner := &macvtapLink{name: cfg.Name, index: link.Attrs().Index, created: created, ns: netns.None()}
	if ns, err := netns.Get(); err == nil {
		owner.ns = ns
	}
	if created {
		owner.nl = h // kept for the delete at Close, in this namespace
	} else {
		defer h.Close()
	}
	queues := make([]*Macvtap, 0, n)
	fail := func(err error) ([]*Macvtap, error) {
		for i := len(queues) - 1; i >= 0; i-- {
			queues[i].closeFile()
		}
		if created {
			if derr := deleteMacvtapLink(h, owner.name, owner.index); derr != nil {
				err = fmt.Errorf("%w (and %v)", err, derr)
			}
			h.Close()
		}
		return nil, err
	}

	base, err := macvtapSetup(h, cfg, link)
	if err != nil {
		return fail(err)
	}
	dev, err := macvtapDevT(base.link.Attrs().Name, base.ifindex, base.mac)
	if err != nil {
		return fail(err)
	}
	for i := 0; i < n; i++ {
		q := &Macvtap{
			link: owner, ifindex: base.ifindex, mode: base.mode, mac: base.mac,
			lowerName: base.lowerName, lowerIndex: base.lowerIndex, caps: base.caps,
		}
		first := i == 0
		uso := !first && queues[0].uso
		uso, err := q.openQueue(cfg, dev, first, uso)
		if err != nil {
			return fail(fmt.Errorf("queue %d of %d: %w", i, n, err))
		}
		if first && uso {
			base.caps.Offloads |= vnet.OffloadUSO
			q.caps = base.caps
		}
		queues = append(queues, q)
	}
	want := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	for i, q := range queues {
		name, flags, err := q.queryIff()
		if err != nil {
			return fail(fmt.Errorf("macvtap %s queue %d: TUNGETIFF: %w", cfg.Name, i, err))
		}
		if err := checkIffFlags("macvtap", name, flags, want); err != nil {
			return fail(fmt.Errorf("queue %d: %w", i, err))
		}
		q.flags = flags
	}
	for _, q := range queues {
		q.multiQueue = n > 1 // a queue of several may be detached (TUNSETQUEUE)
	}
	owner.refs.Store(int32(n))
	return queues, nil
}

// ensureMacvtapLink finds cfg.Name and checks it against cfg, or creates it.
func ensureMacvtapLink(h *netlink.Handle, cfg MacvtapConfig) (netlink.Link, bool, error) {
	link, err := h.LinkByName(cfg.Name)
	if err == nil {
		return link, false, checkExistingMacvtap(h, cfg, link)
	}
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		return nil, false, fmt.Errorf("open macvtap %q: netlink lookup: %w", cfg.Name, err)
	}
	if cfg.Lower == "" {
		return nil, false, fmt.Errorf("open macvtap %q: no such link, and no lower device given to create it on (--macvtap-lower DEV)", cfg.Name)
	}
	lower, err := h.LinkByName(cfg.Lower)
	if err != nil {
		return nil, false, fmt.Errorf("open macvtap %q: lower device %q: %w: give an existing Ethernet device (ip link show)", cfg.Name, cfg.Lower, err)
	}
	mode := cfg.Mode
	if mode == "" {
		mode = MacvtapBridge
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = cfg.Name
	attrs.ParentIndex = lower.Attrs().Index
	attrs.HardwareAddr = cfg.MAC
	mvt := &netlink.Macvtap{Macvlan: netlink.Macvlan{LinkAttrs: attrs, Mode: macvtapModes[mode]}}
	if err := h.LinkAdd(mvt); err != nil {
		return nil, false, explainMacvtapAddErr(cfg, mode, err)
	}
	link, err = h.LinkByName(cfg.Name)
	if err != nil {
		return nil, false, fmt.Errorf("open macvtap %q: netlink lookup after create: %w", cfg.Name, err)
	}
	return link, true, nil
}

func explainMacvtapAddErr(cfg MacvtapConfig, mode MacvtapMode, err error) error {
	prefix := fmt.Sprintf("create macvtap %q on %q (mode %s)", cfg.Name, cfg.Lower, mode)
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s: %w: run as root or grant CAP_NET_ADMIN", prefix, err)
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s: %w: the kernel lacks macvtap (modprobe macvtap; CONFIG_MACVTAP)", prefix, err)
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%s: %w: a link of that name appeared meanwhile; retry", prefix, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%s: %w: the lower device already belongs to a bridge, bond or similar (it has a receive handler); use the bridge itself or a free device", prefix, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("%s: %w: the lower device must be Ethernet (not loopback), and a passthru macvtap takes it alone (no other macvlan/macvtap on it, before or after); check with ip -d link show %s", prefix, err, cfg.Lower)
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// checkExistingMacvtap refuses a link that is not a macvtap or does not match
// the lower device, mode or MAC that cfg asks for.
func checkExistingMacvtap(h *netlink.Handle, cfg MacvtapConfig, link netlink.Link) error {
	mvt, ok := link.(*netlink.Macvtap)
	if !ok {
		return fmt.Errorf("open macvtap %q: the link exists and is a %s, not a macvtap: delete it (ip link del %s) or use another name", cfg.Name, link.Type(), cfg.Name)
	}
	if cfg.Lower != "" && mvt.NetNsID < 0 {
		lower, err := h.LinkByName(cfg.Lower)
		if err != nil || lower.Attrs().Index != mvt.ParentIndex {
			return fmt.Errorf("open macvtap %q: it exists on another lower device than %q (ip -d link show %s): drop --macvtap-lower or delete it", cfg.Name, cfg.Lower, cfg.Name)
		}
	}
	if cfg.Mode != "" && macvtapModes[cfg.Mode] != mvt.Mode {
		return fmt.Errorf("open macvtap %q: it exists in mode %s, not %s: drop --macvtap-mode or delete it (ip link del %s)", cfg.Name, macvtapModeOf(mvt.Mode), cfg.Mode, cfg.Name)
	}
	if cfg.MAC != nil && !bytes.Equal(cfg.MAC, mvt.HardwareAddr) {
		return fmt.Errorf("open macvtap %q: it exists with MAC %v, not %v: drop --macvtap-mac or set it (ip link set %s address %v)", cfg.Name, mvt.HardwareAddr, cfg.MAC, cfg.Name, cfg.MAC)
	}
	return nil
}

// macvtapBase is what every queue of one open shares.
type macvtapBase struct {
	link       netlink.Link
	ifindex    int
	mode       MacvtapMode
	mac        net.HardwareAddr
	lowerName  string
	lowerIndex int
	caps       Capabilities
}

// macvtapSetup applies the MTU, brings the macvtap up and reads its limits
// and its lower device's.
func macvtapSetup(h *netlink.Handle, cfg MacvtapConfig, link netlink.Link) (*macvtapBase, error) {
	name := link.Attrs().Name
	if cfg.MTU > 0 && link.Attrs().MTU != cfg.MTU {
		if err := h.LinkSetMTU(link, cfg.MTU); err != nil {
			return nil, fmt.Errorf("open macvtap %q: set MTU %d: %w (a macvtap's MTU cannot exceed its lower device's)", name, cfg.MTU, err)
		}
	}
	// Already up: no capability needed (see Tap.setupLink).
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("open macvtap %q: set link up: %w: run as root, grant CAP_NET_ADMIN, or set the macvtap up beforehand", name, err)
		}
	}
	link, err := h.LinkByIndex(link.Attrs().Index)
	if err != nil {
		return nil, fmt.Errorf("open macvtap %q: netlink lookup: %w", name, err)
	}
	mvt, ok := link.(*netlink.Macvtap)
	if !ok {
		return nil, fmt.Errorf("open macvtap %q: the link changed type to %s while opening; retry", name, link.Type())
	}
	a := link.Attrs()
	b := &macvtapBase{
		link: link, ifindex: a.Index, mode: macvtapModeOf(mvt.Mode),
		mac: append(net.HardwareAddr(nil), a.HardwareAddr...), lowerIndex: a.ParentIndex,
	}
	b.caps = Capabilities{
		Offloads:   vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6 | vnet.OffloadTSOECN | vnet.OffloadUFO,
		GSOMaxSize: nonZero(a.GSOMaxSize, 65536),
		GSOMaxSegs: nonZero(a.GSOMaxSegs, 65535),
		MTU:        a.MTU,
	}
	// A frame written to the macvtap leaves through the lower device (in
	// bridge mode it may instead go straight to another macvtap on it), so
	// the lower device's gso_max_size/segs bound what can pass whole. The
	// macvtap does not follow them: it inherits only the lower device's
	// tso_max_* at creation (netif_inherit_tso_max), so an
	// `ip link set DEV gso_max_size 16384` on the lower device leaves the
	// macvtap at 65536. Report the smaller of the two. A lower device in
	// another namespace (IFLA_LINK_NETNSID set) cannot be looked up by index
	// here; then only the macvtap's own limits count.
	if a.NetNsID < 0 {
		if lower, err := h.LinkByIndex(a.ParentIndex); err == nil {
			la := lower.Attrs()
			b.lowerName = la.Name
			b.caps.GSOMaxSize = min(b.caps.GSOMaxSize, nonZero(la.GSOMaxSize, 65536))
			b.caps.GSOMaxSegs = min(b.caps.GSOMaxSegs, nonZero(la.GSOMaxSegs, 65535))
		}
	}
	b.caps.LimitsFrom = "macvtap " + name
	if b.lowerName != "" {
		b.caps.LimitsFrom = "macvtap " + name + " and its lower device " + b.lowerName
	}
	if cfg.GSOMaxSize > 0 || cfg.GSOMaxSegs > 0 {
		b.caps.LimitsFrom = "--gso-max-size/--gso-max-segs, else " + b.caps.LimitsFrom
	}
	if cfg.GSOMaxSize > 0 {
		b.caps.GSOMaxSize = cfg.GSOMaxSize
	}
	if cfg.GSOMaxSegs > 0 {
		b.caps.GSOMaxSegs = cfg.GSOMaxSegs
	}
	return b, nil
}

// nonZero is v, or def when the kernel did not report v (IFLA_GSO_MAX_* is
// Linux 4.16+).
func nonZero(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

// openQueue opens one queue of the macvtap whose character device is dev and
// sets it up. The first queue also resets the device's offloads and probes
// whether TUNSETOFFLOAD takes USO (the result is returned); the others take
// uso from it.
func (m *Macvtap) openQueue(cfg MacvtapConfig, dev uint64, first, uso bool) (bool, error) {
	name := m.link.name
	path := fmt.Sprintf("/dev/tap%d", m.ifindex)
	fd, err := openCharDev(path, dev)
	if err != nil {
		return false, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	// TUNSETIFF on a macvtap ignores the name and takes only the flags:
	// IFF_TAP|IFF_NO_PI are mandatory, IFF_VNET_HDR and IFF_MULTI_QUEUE
	// optional (tap.c tap_ioctl). Queues need no IFF_MULTI_QUEUE: every open
	// of /dev/tapN is one more queue.
	want := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return false, fmt.Errorf("open macvtap %q: %w", name, err)
	}
	ifr.SetUint16(want)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return false, fmt.Errorf("open macvtap %q: TUNSETIFF %#x: %w", name, want, err)
	}
	gotName, flags, err := getIff(fd)
	if err != nil {
		return false, fmt.Errorf("open macvtap %q: TUNGETIFF: %w: the link went away; retry", name, err)
	}
	if gotName != name {
		return false, fmt.Errorf("open macvtap %q: %s (device %d:%d) belongs to %q: another process renamed or replaced the link; retry", name, path, unix.Major(dev), unix.Minor(dev), gotName)
	}
	if err := checkIffFlags("macvtap", name, flags, want); err != nil {
		return false, err
	}
	if hw, err := getHwaddr(fd); err != nil || !bytes.Equal(hw, m.mac) {
		return false, fmt.Errorf("open macvtap %q: %s has MAC %v (%v), want %v: it is a macvtap of that name in another network namespace; retry, or run vhostd in the macvtap's namespace with its sysfs mounted", name, path, hw, err, m.mac)
	}
	m.flags = flags
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, cfg.VnetHdrLen); err != nil {
		return false, fmt.Errorf("open macvtap %q: TUNSETVNETHDRSZ %d: %w", name, cfg.VnetHdrLen, err)
	}
	if first {
		// Start with no transmit offloads: until the guest acks GUEST_*
		// bits the macvtap must hand us only plain, fully checksummed
		// frames (a new macvtap starts with all of them on).
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0); err != nil {
			return false, fmt.Errorf("open macvtap %q: TUNSETOFFLOAD 0: %w", name, err)
		}
		uso = probeUSO(fd, 0)
	}
	ok = true // init owns fd now, also on error
	if err := m.vnetFile.init(fd, path, "macvtap "+name, cfg.VnetHdrLen, uso); err != nil {
		return false, err
	}
	return uso, nil
}

// getHwaddr is SIOCGIFHWADDR on a macvtap fd (tap.c answers it with the
// macvtap's name and MAC).
func getHwaddr(fd int) (net.HardwareAddr, error) {
	var ifr struct {
		name   [unix.IFNAMSIZ]byte
		family uint16
		data   [14]byte
		_      [8]byte // struct ifreq is 40 bytes
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCGIFHWADDR, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return nil, e
	}
	return append(net.HardwareAddr(nil), ifr.data[:6]...), nil
}

// macvtapDevT finds the character device number (major:minor) of the
// macvtap name with index ifindex and address mac. The minor is allocated
// by the driver (not the ifindex), so it must be read from sysfs:
//
//  1. /sys/class/net/NAME/macvtap/tapN/dev, when sysfs shows this thread's
//     network namespace (NAME's ifindex and address match);
//  2. otherwise /sys/dev/char, which lists the char devices of every
//     namespace: the entry whose link ends in /net/NAME/macvtap/tapN;
//  3. if several namespaces have such a NAME and ifindex (fresh namespaces
//     number their links alike, so containers easily collide), a sysfs
//     mounted for this thread's network namespace on a throwaway thread
//     (needs CAP_SYS_ADMIN, as `ip netns exec` does).
//
// openQueue's name and MAC check guard the result.
//
// It must run on a locked thread (the namespace is the thread's).
func macvtapDevT(name string, ifindex int, mac net.HardwareAddr) (uint64, error) {
	dir := "/sys/class/net/" + name
	if sysfsShowsLink(dir, ifindex, mac) {
		b, err := os.ReadFile(fmt.Sprintf("%s/macvtap/tap%d/dev", dir, ifindex))
		if err == nil {
			return parseDevT(b)
		}
	}
	ents, err := os.ReadDir("/sys/dev/char")
	if err != nil {
		return 0, fmt.Errorf("open macvtap %q: find its device number: %w: mount sysfs on /sys", name, err)
	}
	suffix := fmt.Sprintf("/net/%s/macvtap/tap%d", name, ifindex)
	var found []uint64
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/sys/dev/char", e.Name()))
		if err != nil || !strings.HasSuffix(target, suffix) {
			continue
		}
		if dev, err := parseDevT([]byte(e.Name())); err == nil {
			found = append(found, dev)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("open macvtap %q: no character device tap%d in sysfs: the macvtap module did not create it (check dmesg), or sysfs is not mounted on /sys", name, ifindex)
	case 1:
		return found[0], nil
	}
	dev, err := devTFromPrivateSysfs(name, ifindex, mac)
	if err != nil {
		return 0, fmt.Errorf("open macvtap %q: %d network namespaces have a macvtap %s with index %d and the sysfs on /sys does not show which is ours (%v): use a unique name, or run vhostd with this namespace's sysfs mounted (ip netns exec does that)", name, len(found), name, ifindex, err)
	}
	return dev, nil
}

// devTFromPrivateSysfs reads /sys/class/net/NAME/macvtap/tapN/dev from a
// sysfs mounted for the calling thread's network namespace, in a private
// mount namespace of a throwaway thread, so nothing changes for the rest of
// the process.
func devTFromPrivateSysfs(name string, ifindex int, mac net.HardwareAddr) (uint64, error) {
	ns, err := netns.Get()
	if err != nil {
		return 0, fmt.Errorf("get network namespace: %w", err)
	}
	defer ns.Close()
	type result struct {
		dev uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine, and its
		// mount namespace with it.
		runtime.LockOSThread()
		dev, err := func() (uint64, error) {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return 0, fmt.Errorf("unshare mount namespace: %w", err)
			}
			if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
				return 0, fmt.Errorf("setns: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return 0, fmt.Errorf("make mounts private: %w", err)
			}
			if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return 0, fmt.Errorf("mount sysfs: %w", err)
			}
			dir := "/sys/class/net/" + name
			if !sysfsShowsLink(dir, ifindex, mac) {
				return 0, errors.New("a fresh sysfs does not show the link either")
			}
			b, err := os.ReadFile(fmt.Sprintf("%s/macvtap/tap%d/dev", dir, ifindex))
			if err != nil {
				return 0, err
			}
			return parseDevT(b)
		}()
		done <- result{dev, err}
	}()
	r := <-done
	return r.dev, r.err
}

// sysfsShowsLink reports whether dir (/sys/class/net/NAME) is the link with
// this ifindex and MAC, i.e. sysfs was mounted in our network namespace.
func sysfsShowsLink(dir string, ifindex int, mac net.HardwareAddr) bool {
	b, err := os.ReadFile(dir + "/ifindex")
	if err != nil {
		return false
	}
	idx, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || idx != ifindex {
		return false
	}
	b, err = os.ReadFile(dir + "/address")
	if err != nil {
		return false
	}
	hw, err := net.ParseMAC(strings.TrimSpace(string(b)))
	return err == nil && bytes.Equal(hw, mac)
}

// parseDevT parses "major:minor".
func parseDevT(b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("bad device number %q", s)
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad device number %q", s)
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), nil
}

// mknodSeq makes private node names unique within the process.
var mknodSeq atomic.Uint64

// openCharDev opens the character device dev: through path when that is a
// node for dev, otherwise through a private node made with mknod next to it
// (or in the temporary directory if /dev is read-only) and unlinked once
// open, so nothing is left behind and no other namespace's /dev/tapN is
// touched. The opened fd is checked to be dev.
func openCharDev(path string, dev uint64) (int, error) {
	var st unix.Stat_t
	open := path
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != dev {
		var merr error
		open = ""
		for _, dir := range []string{filepath.Dir(path), os.TempDir()} {
			p := filepath.Join(dir, fmt.Sprintf(".vhostd-%s-%d-%d", filepath.Base(path), os.Getpid(), mknodSeq.Add(1)))
			if merr = unix.Mknod(p, unix.S_IFCHR|0o600, int(dev)); merr == nil {
				open = p
				defer os.Remove(p)
				break
			}
		}
		if open == "" {
			return -1, fmt.Errorf("open %s: no node for device %d:%d and mknod failed: %w: run as root (CAP_MKNOD) or create it (mknod %s c %d %d)",
				path, unix.Major(dev), unix.Minor(dev), merr, path, unix.Major(dev), unix.Minor(dev))
		}
	}
	fd, err := unix.Open(open, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return -1, fmt.Errorf("open %s: %w: run as root, or give this user the node (chown), as libvirt does", path, err)
		case errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
			return -1, fmt.Errorf("open %s: %w: the macvtap went away; retry", path, err)
		}
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	if err := unix.Fstat(fd, &st); err != nil || st.Rdev != dev {
		unix.Close(fd)
		return -1, fmt.Errorf("open %s: the node changed while opening (want device %d:%d); retry", path, unix.Major(dev), unix.Minor(dev))
	}
	return fd, nil
}

// Name returns the macvtap's interface name.
func (m *Macvtap) Name() string { return m.link.name }

// Index returns the macvtap's interface index (the N of /dev/tapN).
func (m *Macvtap) Index() int { return m.ifindex }

// Lower returns the lower device's name and index (name "" when it lives in
// another network namespace).
func (m *Macvtap) Lower() (name string, index int) { return m.lowerName, m.lowerIndex }

// Mode returns the macvlan mode the link has.
func (m *Macvtap) Mode() MacvtapMode { return m.mode }

// HardwareAddr returns the macvtap's MAC: the guest must use it (offer it in
// the virtio config space with VIRTIO_NET_F_MAC), since the macvtap passes up
// only unicast frames addressed to it.
func (m *Macvtap) HardwareAddr() net.HardwareAddr { return m.mac }

// Created reports whether the link was created by the open that returned
// this queue (the last of those queues to close then deletes it).
func (m *Macvtap) Created() bool { return m.link.created }

// Flags returns the queue's IFF_* flags TUNGETIFF reported at open.
func (m *Macvtap) Flags() uint16 { return m.flags }

// Caps implements Backend. GSOMaxSize and GSOMaxSegs are the smaller of the
// macvtap's and its lower device's, read at open.
func (m *Macvtap) Caps() Capabilities { return m.caps }

// SetLinkMTU implements MTUSetter. A macvtap's MTU cannot exceed its lower
// device's: the kernel refuses, and the front-end is told.
func (m *Macvtap) SetLinkMTU(mtu int) error {
	h, err := netlink.NewHandleAt(m.link.ns)
	if err != nil {
		return fmt.Errorf("macvtap %s: netlink: %w", m.link.name, err)
	}
	defer h.Close()
	link, err := h.LinkByIndex(m.ifindex)
	if err != nil {
		return fmt.Errorf("macvtap %s: netlink lookup: %w", m.link.name, err)
	}
	if link.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("macvtap %s: set MTU %d: %w (needs CAP_NET_ADMIN, and a macvtap's MTU cannot exceed its lower device %s's)", m.link.name, mtu, err, m.lowerName)
	}
	return nil
}

// Close implements Backend: it closes the queue and, if this was the last
// open queue of a macvtap created by OpenMacvtap/OpenMacvtapQueues, deletes
// the link. Later calls return the first call's result.
func (m *Macvtap) Close() error {
	m.closeOnce.Do(func() {
		m.closeResult = m.closeFile()
		if err := m.link.release(); err != nil && m.closeResult == nil {
			m.closeResult = err
		}
	})
	return m.closeResult
}
