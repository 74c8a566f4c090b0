package backend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// skipOrFail skips when a privilege or device is missing, unless CI is set,
// where a missing prerequisite is a failure.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func requireTapPrivileges(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (CAP_NET_ADMIN) for taps and network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		skipOrFail(t, "needs /dev/net/tun: %v", err)
	}
}

// testNetns is a private network namespace owned by one locked OS thread.
// Everything that must happen inside it (creating taps, sockets, addresses)
// runs through run; the resulting fds work from any goroutine.
type testNetns struct {
	calls chan func()
	done  chan struct{}
}

func newTestNetns(t testing.TB) *testNetns { t.Helper(); return newTestNetnsOpt(t, false) }

// newTestNetnsWithSysfs is newTestNetns whose thread also has a private mount
// namespace with a sysfs of the new network namespace on /sys, as `ip netns
// exec` sets up: /sys/class/net then shows the namespace's own links.
func newTestNetnsWithSysfs(t testing.TB) *testNetns { t.Helper(); return newTestNetnsOpt(t, true) }

func newTestNetnsOpt(t testing.TB, privateSysfs bool) *testNetns {
	t.Helper()
	requireTapPrivileges(t)
	ns := &testNetns{calls: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(ns.done)
		// Never unlocked: when this goroutine returns, the runtime ends the
		// thread and the namespace goes with the last fd that uses it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		if privateSysfs {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				ready <- fmt.Errorf("unshare(CLONE_NEWNS): %w", err)
				return
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				ready <- fmt.Errorf("make mounts private: %w", err)
				return
			}
			if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
				ready <- fmt.Errorf("mount sysfs: %w", err)
				return
			}
		}
		// Keep taps quiet: no IPv6 router solicitations or MLD reports.
		for _, p := range []string{"default", "all"} {
			_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+p+"/disable_ipv6", []byte("1"), 0)
		}
		if lo, err := netlink.LinkByName("lo"); err == nil {
			_ = netlink.LinkSetUp(lo)
		}
		ready <- nil
		for f := range ns.calls {
			f()
		}
	}()
	if err := <-ready; err != nil {
		skipOrFail(t, "cannot create a network namespace: %v", err)
	}
	t.Cleanup(func() {
		close(ns.calls)
		<-ns.done
	})
	return ns
}

// run executes f on the namespace's thread. f must not call t.Fatal.
func (ns *testNetns) run(f func() error) error {
	errc := make(chan error, 1)
	ns.calls <- func() { errc <- f() }
	return <-errc
}

// openTestTap opens a tap inside ns and closes it at cleanup.
func openTestTap(t testing.TB, ns *testNetns, cfg TapConfig) *Tap {
	t.Helper()
	var tap *Tap
	if err := ns.run(func() (err error) {
		tap, err = OpenTap(cfg)
		return err
	}); err != nil {
		t.Fatalf("OpenTap(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { tap.Close() })
	return tap
}

// tapLink looks up the tap's link inside ns.
func tapLink(t testing.TB, ns *testNetns, name string) netlink.Link {
	t.Helper()
	var link netlink.Link
	if err := ns.run(func() (err error) {
		link, err = netlink.LinkByName(name)
		return err
	}); err != nil {
		t.Fatalf("LinkByName(%s): %v", name, err)
	}
	return link
}

// addAddr assigns cidr to the link inside ns.
func addAddr(t testing.TB, ns *testNetns, link netlink.Link, cidr string) {
	t.Helper()
	if err := ns.run(func() error {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		return netlink.AddrAdd(link, a)
	}); err != nil {
		t.Fatalf("add address %s: %v", cidr, err)
	}
}

// addNeigh adds a permanent neighbour entry so the kernel sends to ip without ARP.
func addNeigh(t testing.TB, ns *testNetns, link netlink.Link, ip net.IP, mac net.HardwareAddr) {
	t.Helper()
	if err := ns.run(func() error {
		return netlink.NeighAdd(&netlink.Neigh{
			LinkIndex:    link.Attrs().Index,
			IP:           ip,
			HardwareAddr: mac,
			State:        netlink.NUD_PERMANENT,
		})
	}); err != nil {
		t.Fatalf("add neighbour %s: %v", ip, err)
	}
}

// createPersistentTap makes a persistent tap the way `ip tuntap add` does.
func createPersistentTap(name string, flags uint16) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return err
	}
	return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1)
}

// ---- packet construction (hand-built so tests control every byte) ----

var (
	guestMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	otherMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	broadcast  = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	errNoMatch = errors.New("no matching packet")
)

const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
)

func ethHeader(dst, src net.HardwareAddr, etherType uint16) []byte {
	b := make([]byte, 14)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etherType)
	return b
}

func pseudoHeaderSum(src, dst net.IP, proto uint8, length int) uint16 {
	return vnet.PseudoHeaderSum(proto, src.To4(), dst.To4(), uint32(length))
}

func ipv4Header(src, dst net.IP, proto uint8, payloadLen int, id uint16) []byte {
	b := make([]byte, 20)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(20+payloadLen))
	binary.BigEndian.PutUint16(b[4:6], id)
	binary.BigEndian.PutUint16(b[6:8], 0x4000) // DF
	b[8] = 64
	b[9] = proto
	copy(b[12:16], src.To4())
	copy(b[16:20], dst.To4())
	binary.BigEndian.PutUint16(b[10:12], ^vnet.Checksum(b, 0))
	return b
}

func arpRequest(srcMAC net.HardwareAddr, srcIP, targetIP net.IP) []byte {
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], 1) // request
	copy(a[8:14], srcMAC)
	copy(a[14:18], srcIP.To4())
	copy(a[24:28], targetIP.To4())
	return append(ethHeader(broadcast, srcMAC, etherTypeARP), a...)
}

func icmpEcho(dstMAC net.HardwareAddr, src, dst net.IP, id, seq uint16, payload []byte) []byte {
	icmp := make([]byte, 8, 8+len(payload))
	icmp[0] = 8 // echo request
	binary.BigEndian.PutUint16(icmp[4:6], id)
	binary.BigEndian.PutUint16(icmp[6:8], seq)
	icmp = append(icmp, payload...)
	binary.BigEndian.PutUint16(icmp[2:4], ^vnet.Checksum(icmp, 0))
	f := ethHeader(dstMAC, guestMAC, etherTypeIPv4)
	f = append(f, ipv4Header(src, dst, protoICMP, len(icmp), seq)...)
	return append(f, icmp...)
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpPSH = 0x08
	tcpACK = 0x10
)

// tcpSegment builds an Ethernet/IPv4/TCP frame. With partial, the TCP checksum
// field holds the pseudo-header sum (CHECKSUM_PARTIAL convention, for a
// NEEDS_CSUM header); otherwise the full checksum.
func tcpSegment(dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, seq, ack uint32, flags uint8, payload []byte, partial bool) []byte {
	th := make([]byte, 20)
	binary.BigEndian.PutUint16(th[0:2], sport)
	binary.BigEndian.PutUint16(th[2:4], dport)
	binary.BigEndian.PutUint32(th[4:8], seq)
	binary.BigEndian.PutUint32(th[8:12], ack)
	th[12] = 5 << 4
	th[13] = flags
	binary.BigEndian.PutUint16(th[14:16], 65535)
	sum := pseudoHeaderSum(src, dst, protoTCP, len(th)+len(payload))
	if partial {
		binary.BigEndian.PutUint16(th[16:18], sum)
	} else {
		sum = vnet.Checksum(payload, vnet.Checksum(th, sum))
		binary.BigEndian.PutUint16(th[16:18], ^sum)
	}
	f := ethHeader(dstMAC, guestMAC, etherTypeIPv4)
	f = append(f, ipv4Header(src, dst, protoTCP, len(th)+len(payload), uint16(seq))...)
	f = append(f, th...)
	return append(f, payload...)
}

// udpDatagram builds an Ethernet/IPv4/UDP frame with a partial checksum.
func udpDatagram(dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	uh := make([]byte, 8)
	binary.BigEndian.PutUint16(uh[0:2], sport)
	binary.BigEndian.PutUint16(uh[2:4], dport)
	binary.BigEndian.PutUint16(uh[4:6], uint16(8+len(payload)))
	binary.BigEndian.PutUint16(uh[6:8], pseudoHeaderSum(src, dst, protoUDP, 8+len(payload)))
	f := ethHeader(dstMAC, guestMAC, etherTypeIPv4)
	f = append(f, ipv4Header(src, dst, protoUDP, 8+len(payload), 7)...)
	f = append(f, uh...)
	return append(f, payload...)
}

// vnetHeader encodes a virtio_net_hdr (little-endian, 10 or 12 bytes).
func vnetHeader(n int, flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset uint16) []byte {
	b := make([]byte, n)
	b[0], b[1] = flags, gsoType
	binary.LittleEndian.PutUint16(b[2:4], hdrLen)
	binary.LittleEndian.PutUint16(b[4:6], gsoSize)
	binary.LittleEndian.PutUint16(b[6:8], csumStart)
	binary.LittleEndian.PutUint16(b[8:10], csumOffset)
	return b
}

// readUntil reads packets from tap (header of hdrLen bytes, then the frame)
// until match accepts a frame or the deadline passes.
func readUntil(tap Backend, hdrLen int, match func(hdr, frame []byte) bool) ([]byte, []byte, error) {
	bufs := [][]byte{make([]byte, 70000), make([]byte, 70000), make([]byte, 70000), make([]byte, 70000)}
	sizes := make([]int, len(bufs))
	for {
		n, err := tap.ReadPackets(bufs, sizes, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", errNoMatch, err)
		}
		for i := 0; i < n; i++ {
			p := bufs[i][:sizes[i]]
			if len(p) < hdrLen+14 {
				continue
			}
			if match(p[:hdrLen], p[hdrLen:]) {
				return append([]byte(nil), p[:hdrLen]...), append([]byte(nil), p[hdrLen:]...), nil
			}
		}
	}
}
