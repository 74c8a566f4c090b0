package backend

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// addDummy creates an up device (one end of a veth pair: the dummy module
// is not everywhere) with the given gso_max_size inside ns, optionally
// enslaved to master.
func addDummy(t *testing.T, ns *testNetns, name string, gsoMaxSize int, master string) {
	t.Helper()
	if err := ns.run(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetGSOMaxSize(l, gsoMaxSize); err != nil {
			return err
		}
		if master != "" {
			m, err := netlink.LinkByName(master)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetMaster(l, m); err != nil {
				return err
			}
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		t.Fatalf("dummy %s: %v", name, err)
	}
}

func addBridge(t *testing.T, ns *testNetns, name string) {
	t.Helper()
	if err := ns.run(func() error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return err
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		t.Fatalf("bridge %s: %v", name, err)
	}
}

// waitCaps polls Caps until ok or a few seconds pass (the egress watch
// re-reads on netlink events, debounced by 50 ms).
func waitCaps(t *testing.T, tap *Tap, ok func(Capabilities) bool) Capabilities {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := tap.Caps()
		if ok(c) || time.Now().After(deadline) {
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTapLimitsNotFromTheTap: the tap's own gso_max_size limits only what the
// host sends toward the guest. With no device for the guest's packets to
// leave through (local delivery), whole 64 KB super-packets go in, even when
// the tap's own gso_max_size is small. On main the tap's value was used.
func TestTapLimitsNotFromTheTap(t *testing.T) {
	ns := newTestNetns(t)
	tap := openTestTap(t, ns, TapConfig{Name: "vhegr0"})
	if err := ns.run(func() error {
		l, err := netlink.LinkByName("vhegr0")
		if err != nil {
			return err
		}
		return netlink.LinkSetGSOMaxSize(l, 16384)
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the watch see the change
	c := tap.Caps()
	if c.GSOMaxSize != 65536 || c.GSOMaxSegs != 65535 {
		t.Errorf("caps %+v: want 65536/65535 (the tap's own 16384 does not apply to writes)", c)
	}
	if !strings.Contains(c.LimitsFrom, "local delivery") {
		t.Errorf("LimitsFrom %q, want local delivery", c.LimitsFrom)
	}
}

// TestTapLimitsFromBridgePorts: a tap on a bridge takes the smallest limit of
// the bridge's other ports, and follows changes while open.
func TestTapLimitsFromBridgePorts(t *testing.T) {
	defer func(d time.Duration) { egressRecheck = d }(egressRecheck)
	egressRecheck = 200 * time.Millisecond // gso_max_size changes send no netlink event
	ns := newTestNetns(t)
	addBridge(t, ns, "vhbr0")
	addDummy(t, ns, "vhport1", 32768, "vhbr0")
	addDummy(t, ns, "vhport2", 16384, "vhbr0")
	tap := openTestTap(t, ns, TapConfig{Name: "vhegr1"})
	if err := ns.run(func() error {
		l, err := netlink.LinkByName("vhegr1")
		if err != nil {
			return err
		}
		m, err := netlink.LinkByName("vhbr0")
		if err != nil {
			return err
		}
		return netlink.LinkSetMaster(l, m)
	}); err != nil {
		t.Fatal(err)
	}
	c := waitCaps(t, tap, func(c Capabilities) bool { return c.GSOMaxSize == 16384 })
	if c.GSOMaxSize != 16384 || !strings.Contains(c.LimitsFrom, "vhport2") || !strings.Contains(c.LimitsFrom, "bridge vhbr0") {
		t.Fatalf("caps %+v: want 16384 from vhport2 (bridge vhbr0)", c)
	}
	// Raise the small port: the next smallest decides.
	if err := ns.run(func() error {
		l, err := netlink.LinkByName("vhport2")
		if err != nil {
			return err
		}
		return netlink.LinkSetGSOMaxSize(l, 65536)
	}); err != nil {
		t.Fatal(err)
	}
	c = waitCaps(t, tap, func(c Capabilities) bool { return c.GSOMaxSize == 32768 })
	if c.GSOMaxSize != 32768 || !strings.Contains(c.LimitsFrom, "vhport1") {
		t.Errorf("after raising vhport2: caps %+v, want 32768 from vhport1", c)
	}
}

// TestTapLimitsFromDefaultRoute: without a master, the default route's
// device decides; --egress-dev names one instead; the flags still win.
func TestTapLimitsFromDefaultRoute(t *testing.T) {
	ns := newTestNetns(t)
	addDummy(t, ns, "vhup0", 8192, "")
	addDummy(t, ns, "vhother", 24576, "")
	if err := ns.run(func() error {
		l, err := netlink.LinkByName("vhup0")
		if err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("0.0.0.0/0")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK})
	}); err != nil {
		t.Fatal(err)
	}
	tap := openTestTap(t, ns, TapConfig{Name: "vhegr2"})
	if c := tap.Caps(); c.GSOMaxSize != 8192 || !strings.Contains(c.LimitsFrom, "vhup0 (default route)") {
		t.Errorf("caps %+v: want 8192 from vhup0 (default route)", c)
	}
	named := openTestTap(t, ns, TapConfig{Name: "vhegr3", EgressDev: "vhother"})
	if c := named.Caps(); c.GSOMaxSize != 24576 || !strings.Contains(c.LimitsFrom, "--egress-dev") {
		t.Errorf("--egress-dev: caps %+v, want 24576 from vhother", c)
	}
	flags := openTestTap(t, ns, TapConfig{Name: "vhegr4", GSOMaxSize: 4096})
	if c := flags.Caps(); c.GSOMaxSize != 4096 || !strings.Contains(c.LimitsFrom, "--gso-max-size") {
		t.Errorf("--gso-max-size: caps %+v", c)
	}
	if err := ns.run(func() error {
		_, err := OpenTap(TapConfig{Name: "vhegr5", EgressDev: "nosuchdev"})
		if err == nil || !strings.Contains(err.Error(), "--egress-dev") {
			t.Errorf("unknown --egress-dev: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestTapOffloadGuestWithoutCsum: a guest started with
// csum=off,guest_csum=off acks GUEST_TSO4/6/ECN without GUEST_CSUM. On main
// the tap was asked for TSO without CSUM, the kernel answered EINVAL and
// SET_FEATURES failed: no network at all.
func TestTapOffloadGuestWithoutCsum(t *testing.T) {
	ns := newTestNetns(t)
	tap := openTestTap(t, ns, TapConfig{Name: "vhcsum0"})
	const gTSO4, gTSO6, gECN = 1 << 7, 1 << 8, 1 << 9
	if err := tap.SetOffload(gTSO4 | gTSO6 | gECN); err != nil {
		t.Fatalf("SetOffload(GUEST_TSO4|TSO6|ECN without GUEST_CSUM) = %v, want success with no offloads", err)
	}
	if f := tap.OffloadFlags(); f != 0 {
		t.Errorf("flags %#x, want 0", f)
	}
}

// TestTapQueueAttachDetach: the queue of a disabled pair is detached, so the
// kernel stops steering flows to it, and attached again.
func TestTapQueueAttachDetach(t *testing.T) {
	ns := newTestNetns(t)
	var qs []*Tap
	if err := ns.run(func() (err error) {
		qs, err = OpenTapQueues(TapConfig{Name: "vhmq0"}, 2)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, q := range qs {
			q.Close()
		}
	}()
	if !qs[1].QueueAttached() {
		t.Fatal("queue 1 not attached after open")
	}
	if err := qs[1].SetQueueAttached(false); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if qs[1].QueueAttached() {
		t.Error("still attached after detach")
	}
	// The kernel agrees: it refuses to detach a detached queue.
	if err := rawSetQueue(qs[1], unix.IFF_DETACH_QUEUE); !errors.Is(err, unix.EINVAL) {
		t.Errorf("kernel detach of the detached queue: %v, want EINVAL", err)
	}
	// Detaching twice is a no-op, not an error.
	if err := qs[1].SetQueueAttached(false); err != nil {
		t.Errorf("second detach: %v", err)
	}
	if err := qs[1].SetQueueAttached(true); err != nil || !qs[1].QueueAttached() {
		t.Fatalf("attach: %v attached=%v", err, qs[1].QueueAttached())
	}
	if err := rawSetQueue(qs[1], unix.IFF_ATTACH_QUEUE); !errors.Is(err, unix.EINVAL) {
		t.Errorf("kernel attach of the attached queue: %v, want EINVAL", err)
	}
	// A single-queue tap has nothing to detach.
	single := openTestTap(t, ns, TapConfig{Name: "vhsq0"})
	if err := single.SetQueueAttached(false); err != nil || !single.QueueAttached() {
		t.Errorf("single-queue detach: %v attached=%v", err, single.QueueAttached())
	}
}

// rawSetQueue is TUNSETQUEUE behind the tap's back.
func rawSetQueue(tap *Tap, flag uint16) error {
	return tap.control(func(fd int) error {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return err
		}
		ifr.SetUint16(flag)
		return unix.IoctlIfreq(fd, unix.TUNSETQUEUE, ifr)
	})
}

// TestTapSetLinkMTU: the guest's MTU reaches the tap.
func TestTapSetLinkMTU(t *testing.T) {
	ns := newTestNetns(t)
	tap := openTestTap(t, ns, TapConfig{Name: "vhmtu0"})
	if err := tap.SetLinkMTU(9000); err != nil {
		t.Fatal(err)
	}
	if mtu := tapLink(t, ns, "vhmtu0").Attrs().MTU; mtu != 9000 || tap.LinkMTU() != 9000 {
		t.Errorf("link MTU %d (LinkMTU %d), want 9000", mtu, tap.LinkMTU())
	}
	if err := tap.SetLinkMTU(70000); err == nil {
		t.Error("MTU 70000 accepted")
	}
}
