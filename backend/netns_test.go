package backend

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
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

// ---- packet construction (internal/testing/testpkt, from guestMAC) ----

var (
	guestMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	otherMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	errNoMatch = errors.New("no matching packet")
)

func ethHeader(dst, src net.HardwareAddr, etherType uint16) []byte {
	b := make([]byte, testpkt.EthLen)
	testpkt.Ethernet{Dst: dst, Src: src, Type: etherType}.Encode(b)
	return b
}

// ipv4Header is an IPv4 header with DF for payloadLen bytes of proto.
func ipv4Header(src, dst net.IP, proto uint8, payloadLen int, id uint16) []byte {
	b := make([]byte, testpkt.IPv4Len)
	testpkt.IPv4{TotalLen: uint16(testpkt.IPv4Len + payloadLen), ID: id, DF: true, Proto: proto, Src: src.To4(), Dst: dst.To4()}.Encode(b)
	return b
}

func arpRequest(srcMAC net.HardwareAddr, srcIP, targetIP net.IP) []byte {
	return testpkt.ARPRequest(srcMAC, srcIP.To4(), targetIP.To4())
}

// frameTo is a frame from guestMAC at src to dstMAC at dst, with DF and
// IPv4 ID id.
func frameTo(dstMAC net.HardwareAddr, src, dst net.IP, id uint16, payload []byte) testpkt.Frame {
	return testpkt.Frame{
		Eth:     testpkt.Ethernet{Dst: dstMAC, Src: guestMAC},
		IPv4:    testpkt.IPv4{ID: id, DF: true, Src: src.To4(), Dst: dst.To4()},
		Payload: payload,
	}
}

func icmpEcho(dstMAC net.HardwareAddr, src, dst net.IP, id, seq uint16, payload []byte) []byte {
	return frameTo(dstMAC, src, dst, seq, payload).ICMPEcho(id, seq)
}

// tcpSegment builds an Ethernet/IPv4/TCP frame. With partial, the TCP checksum
// field holds the pseudo-header sum (CHECKSUM_PARTIAL convention, for a
// NEEDS_CSUM header); otherwise the full checksum.
func tcpSegment(dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, seq, ack uint32, flags uint8, payload []byte, partial bool) []byte {
	f := frameTo(dstMAC, src, dst, uint16(seq), payload)
	f.Csum = testpkt.CsumFull
	if partial {
		f.Csum = testpkt.CsumPartial
	}
	return f.TCP(testpkt.TCP{SrcPort: sport, DstPort: dport, Seq: seq, Ack: ack, Flags: flags, Window: 65535}, 0)
}

// udpDatagram builds an Ethernet/IPv4/UDP frame with a partial checksum.
func udpDatagram(dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	f := frameTo(dstMAC, src, dst, 7, payload)
	f.Csum = testpkt.CsumPartial
	return f.UDP(testpkt.UDP{SrcPort: sport, DstPort: dport}, 0)
}

// vnetHeader encodes a virtio_net_hdr (little-endian, 10 or 12 bytes).
func vnetHeader(n int, flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset uint16) []byte {
	return testpkt.HdrN(n, vnet.Hdr{Flags: flags, GSOType: gsoType, HdrLen: hdrLen, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset})
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
