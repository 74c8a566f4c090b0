package backend

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Where a tap's TX limits come from.
//
// A frame written into a tap enters the host stack as if the tap had
// received it (tun_get_user -> netif_rx). The tap's own gso_max_size,
// gso_max_segs and MTU apply to packets the host sends toward the guest, not
// to these. A guest's super-packet is segmented early only where it leaves
// the host: in dev_queue_xmit of the egress device, whose
// netif_skb_features() / gso_features_check() compare it with that device's
// limits. That device is
//   - a port of the bridge (or Open vSwitch datapath) the tap is enslaved to:
//     the smallest limit of the master's other ports counts, since any of
//     them may forward the packet;
//   - otherwise the device of the default route(s) in the tap's namespace,
//     for traffic the host routes on;
//   - otherwise none: locally delivered packets are never segmented, so the
//     tap takes whole 64 KB super-packets.
// --egress-dev names the device instead. The choice is re-read whenever a
// link or route in the tap's namespace changes.

// Egress describes the device whose limits decide for a backend's writes.
type Egress struct {
	// Device is the egress device's name ("" when no device limits).
	Device string
	// Via says how it was found: "bridge br0", "default route",
	// "--egress-dev", "lower device" (macvtap), or "none (local delivery)".
	Via        string
	GSOMaxSize uint32
	GSOMaxSegs uint32
	MTU        int
}

// String describes the egress for status lines, e.g. "eth1 (bridge br0)".
func (e Egress) String() string {
	if e.Device == "" {
		return e.Via
	}
	return e.Device + " (" + e.Via + ")"
}

// Limits with no device in the way: the largest GSO packet virtio carries.
const (
	noLimitGSOMaxSize = 65536
	noLimitGSOMaxSegs = 65535
)

// linkLister is the part of *netlink.Handle that findEgress needs; tests
// give it a fixed set of links and routes.
type linkLister interface {
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	LinkList() ([]netlink.Link, error)
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
}

// findEgress picks the egress device for a tap (see above). named is
// --egress-dev ("" to find it).
func findEgress(h linkLister, tapIndex int, named string) (Egress, error) {
	limitsOf := func(l netlink.Link, via string) Egress {
		a := l.Attrs()
		return Egress{Device: a.Name, Via: via, GSOMaxSize: nonZero(a.GSOMaxSize, noLimitGSOMaxSize),
			GSOMaxSegs: nonZero(a.GSOMaxSegs, noLimitGSOMaxSegs), MTU: a.MTU}
	}
	if named != "" {
		l, err := h.LinkByName(named)
		if err != nil {
			return Egress{}, fmt.Errorf("--egress-dev %q: %w: give a device in the tap's network namespace", named, err)
		}
		return limitsOf(l, "--egress-dev"), nil
	}
	tap, err := h.LinkByIndex(tapIndex)
	if err != nil {
		return Egress{}, err
	}
	none := Egress{Via: "none (local delivery)", GSOMaxSize: noLimitGSOMaxSize, GSOMaxSegs: noLimitGSOMaxSegs}
	if master := tap.Attrs().MasterIndex; master != 0 {
		via := "master"
		if m, err := h.LinkByIndex(master); err == nil {
			via = m.Type() + " " + m.Attrs().Name
		}
		links, err := h.LinkList()
		if err != nil {
			return Egress{}, err
		}
		best := none
		best.Via = via + ", no other port"
		found := false
		for _, l := range links {
			a := l.Attrs()
			if a.MasterIndex != master || a.Index == tapIndex {
				continue
			}
			e := limitsOf(l, via)
			if !found || smaller(e, best) {
				best, found = e, true
			}
		}
		return best, nil
	}
	best, found := none, false
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			continue
		}
		for _, r := range routes {
			if !isDefaultRoute(r) {
				continue
			}
			idx := []int{r.LinkIndex}
			for _, nh := range r.MultiPath {
				idx = append(idx, nh.LinkIndex)
			}
			for _, i := range idx {
				if i == 0 || i == tapIndex {
					continue
				}
				l, err := h.LinkByIndex(i)
				if err != nil {
					continue
				}
				e := limitsOf(l, "default route")
				if !found || smaller(e, best) {
					best, found = e, true
				}
			}
		}
	}
	return best, nil
}

func isDefaultRoute(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// smaller reports whether a limits super-packets more than b.
func smaller(a, b Egress) bool {
	if a.GSOMaxSize != b.GSOMaxSize {
		return a.GSOMaxSize < b.GSOMaxSize
	}
	return a.GSOMaxSegs < b.GSOMaxSegs
}

// capsCell holds a backend's current capabilities, shared by every queue of
// one device and replaced whole when the egress changes. The TX workers read
// it once per batch (one atomic load).
type capsCell struct {
	p atomic.Pointer[Capabilities]
}

func (c *capsCell) load() Capabilities { return *c.p.Load() }
func (c *capsCell) store(v Capabilities) {
	c.p.Store(&v)
}

// egressRecheck is how often the egress limits are re-read without an event:
// the kernel sends no RTM_NEWLINK when only gso_max_size or gso_max_segs
// change (do_setlink marks them DO_SETLINK_MODIFIED, not NOTIFY).
var egressRecheck = 5 * time.Second

// egressWatch re-reads a tap's egress limits when links or routes change in
// the tap's namespace, and every egressRecheck. Updates are coalesced: a
// burst of netlink messages costs one re-read.
type egressWatch struct {
	done     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
}

// watchEgress subscribes to link and route changes in ns and calls update
// (debounced) after each; it returns nil when subscribing fails (the limits
// then stay as read at open).
func watchEgress(ns netns.NsHandle, update func()) *egressWatch {
	w := &egressWatch{done: make(chan struct{}), stopped: make(chan struct{})}
	links := make(chan netlink.LinkUpdate, 16)
	routes := make(chan netlink.RouteUpdate, 16)
	nsl, nsr := ns, ns
	if err := netlink.LinkSubscribeWithOptions(links, w.done, netlink.LinkSubscribeOptions{Namespace: &nsl, ErrorCallback: func(error) {}}); err != nil {
		close(w.stopped)
		return nil
	}
	if err := netlink.RouteSubscribeWithOptions(routes, w.done, netlink.RouteSubscribeOptions{Namespace: &nsr, ErrorCallback: func(error) {}}); err != nil {
		close(w.done)
		close(w.stopped)
		return nil
	}
	go func() {
		defer close(w.stopped)
		var t <-chan time.Time
		tick := time.NewTicker(egressRecheck)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
				update()
			case _, ok := <-links:
				if !ok {
					links = nil
				}
				t = time.After(50 * time.Millisecond)
			case _, ok := <-routes:
				if !ok {
					routes = nil
				}
				t = time.After(50 * time.Millisecond)
			case <-t:
				t = nil
				update()
			}
		}
	}()
	return w
}

func (w *egressWatch) stop() {
	if w == nil {
		return
	}
	w.stopOnce.Do(func() { close(w.done) })
	<-w.stopped
}
