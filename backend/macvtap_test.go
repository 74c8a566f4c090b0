package backend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var _ Backend = (*Macvtap)(nil)

// vethRig is a veth pair between two private namespaces: lower (in ns) is
// the lower device for macvtaps; peer (in peerNS) has peerIP and a static
// neighbour entry for guestIP -> guestMAC, so whatever a macvtap on lower
// writes to peerIP is answered by peer's stack, back through lower, to the
// macvtap with guestMAC. Nothing leaves the test namespaces.
type vethRig struct {
	ns, peerNS      *testNetns
	lower           string
	peer            netlink.Link
	peerMAC         net.HardwareAddr
	peerIP, guestIP net.IP
}

func newVethRig(t testing.TB, ns *testNetns, lower, peer string, subnet byte) *vethRig {
	t.Helper()
	r := &vethRig{
		ns: ns, peerNS: newTestNetns(t), lower: lower,
		peerIP: net.IPv4(10, 99, subnet, 1), guestIP: net.IPv4(10, 99, subnet, 2),
	}
	var peerFd netns.NsHandle
	if err := r.peerNS.run(func() (err error) { peerFd, err = netns.Get(); return err }); err != nil {
		t.Fatalf("peer namespace handle: %v", err)
	}
	defer peerFd.Close()
	if err := ns.run(func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = lower
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: peer, PeerNamespace: netlink.NsFd(int(peerFd))}); err != nil {
			return err
		}
		l, err := netlink.LinkByName(lower)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		t.Fatalf("create veth %s/%s: %v", lower, peer, err)
	}
	if err := r.peerNS.run(func() (err error) {
		if r.peer, err = netlink.LinkByName(peer); err != nil {
			return err
		}
		return netlink.LinkSetUp(r.peer)
	}); err != nil {
		t.Fatalf("veth peer %s: %v", peer, err)
	}
	r.peerMAC = r.peer.Attrs().HardwareAddr
	addAddr(t, r.peerNS, r.peer, r.peerIP.String()+"/24")
	addNeigh(t, r.peerNS, r.peer, r.guestIP, guestMAC)
	return r
}

// openTestMacvtapQueues opens n queues inside ns and closes them at cleanup.
func openTestMacvtapQueues(t testing.TB, ns *testNetns, cfg MacvtapConfig, n int) []*Macvtap {
	t.Helper()
	var qs []*Macvtap
	if err := ns.run(func() (err error) {
		qs, err = OpenMacvtapQueues(cfg, n)
		return err
	}); err != nil {
		t.Fatalf("OpenMacvtapQueues(%+v, %d): %v", cfg, n, err)
	}
	t.Cleanup(func() {
		for _, q := range qs {
			q.Close()
		}
	})
	return qs
}

func openTestMacvtap(t testing.TB, ns *testNetns, cfg MacvtapConfig) *Macvtap {
	t.Helper()
	return openTestMacvtapQueues(t, ns, cfg, 1)[0]
}

// kernelVnetHdrLenFd is TUNGETVNETHDRSZ on a backend's fd.
func kernelVnetHdrLenFd(t *testing.T, f *vnetFile) int {
	t.Helper()
	v := -1
	if err := f.control(func(fd int) (err error) { v, err = unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ); return err }); err != nil {
		t.Fatalf("TUNGETVNETHDRSZ: %v", err)
	}
	return v
}

func TestParseMacvtapMode(t *testing.T) {
	for in, want := range map[string]MacvtapMode{"": MacvtapBridge, "bridge": MacvtapBridge, "VEPA": MacvtapVEPA, "private": MacvtapPrivate, "passthru": MacvtapPassthru} {
		if got, err := ParseMacvtapMode(in); err != nil || got != want {
			t.Errorf("ParseMacvtapMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMacvtapMode("source"); err == nil || !strings.Contains(err.Error(), "bridge, vepa, private or passthru") {
		t.Errorf("ParseMacvtapMode(source) = %v, want an error listing the modes", err)
	}
}

func FuzzParseDevT(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseDevT(b)
		if err != nil {
			return
		}
		// Whatever parses must print back as the same numbers.
		again, err := parseDevT([]byte(fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d))))
		if err != nil || again != d {
			t.Errorf("%q -> %d:%d does not round-trip (%v)", b, unix.Major(d), unix.Minor(d), err)
		}
	})
}

func TestParseDevT(t *testing.T) {
	if d, err := parseDevT([]byte("246:3\n")); err != nil || unix.Major(d) != 246 || unix.Minor(d) != 3 {
		t.Errorf("parseDevT(246:3) = %d:%d, %v", unix.Major(d), unix.Minor(d), err)
	}
	for _, bad := range []string{"", "246", "a:1", "1:b", "1:2:3"} {
		if _, err := parseDevT([]byte(bad)); err == nil {
			t.Errorf("parseDevT(%q) accepted", bad)
		}
	}
}

func TestMacvtapOpenFlagsAndCaps(t *testing.T) {
	ns := newTestNetns(t)
	rig := newVethRig(t, ns, "vhlow0", "vhpeer0", 10)
	// Lower the veth's limits after creating it: a macvtap created on it
	// keeps 65536/65535 of its own, and Caps must report the veth's.
	lower := tapLink(t, ns, "vhlow0")
	if err := ns.run(func() error {
		if err := netlink.LinkSetGSOMaxSize(lower, 16384); err != nil {
			return err
		}
		return netlink.LinkSetGSOMaxSegs(lower, 32)
	}); err != nil {
		t.Fatalf("set veth GSO limits: %v", err)
	}

	m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmvt0", Lower: "vhlow0", MAC: guestMAC})
	link := tapLink(t, ns, "vhmvt0")
	mvt, ok := link.(*netlink.Macvtap)
	if !ok {
		t.Fatalf("link is a %s, want macvtap", link.Type())
	}
	if mvt.Mode != netlink.MACVLAN_MODE_BRIDGE || m.Mode() != MacvtapBridge {
		t.Errorf("mode %v / %q, want bridge by default", mvt.Mode, m.Mode())
	}
	if m.Name() != "vhmvt0" || !m.Created() || m.Index() != link.Attrs().Index {
		t.Errorf("name %q created %v index %d (link %d)", m.Name(), m.Created(), m.Index(), link.Attrs().Index)
	}
	if ln, li := m.Lower(); ln != "vhlow0" || li != lower.Attrs().Index {
		t.Errorf("lower %q %d, want vhlow0 %d", ln, li, lower.Attrs().Index)
	}
	if !bytes.Equal(m.HardwareAddr(), guestMAC) || !bytes.Equal(link.Attrs().HardwareAddr, guestMAC) {
		t.Errorf("MAC %v (link %v), want %v", m.HardwareAddr(), link.Attrs().HardwareAddr, guestMAC)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("macvtap not up: %v", link.Attrs().Flags)
	}
	want := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if m.Flags() != want {
		t.Errorf("flags %#x, want %#x", m.Flags(), want)
	}
	if got := kernelVnetHdrLenFd(t, &m.vnetFile); got != 12 {
		t.Errorf("vnet header length %d, want 12", got)
	}

	caps := m.Caps()
	t.Logf("caps %+v (%v); macvtap's own gso_max_size %d gso_max_segs %d", caps, caps.Offloads, link.Attrs().GSOMaxSize, link.Attrs().GSOMaxSegs)
	if link.Attrs().GSOMaxSize <= 16384 {
		t.Errorf("the macvtap itself has gso_max_size %d: the test expects it not to follow the lower device", link.Attrs().GSOMaxSize)
	}
	if caps.GSOMaxSize != 16384 || caps.GSOMaxSegs != 32 || caps.MTU != 1500 {
		t.Errorf("caps %+v, want the lower device's gso_max_size 16384, gso_max_segs 32, MTU 1500", caps)
	}
	base := vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6 | vnet.OffloadTSOECN | vnet.OffloadUFO
	if caps.Offloads&base != base {
		t.Errorf("offloads %v, want at least %v", caps.Offloads, base)
	}
	uso := m.ProbeUSO()
	if (caps.Offloads&vnet.OffloadUSO != 0) != uso {
		t.Errorf("offloads %v disagree with ProbeUSO %v", caps.Offloads, uso)
	}

	if m.OffloadFlags() != 0 {
		t.Errorf("offload flags %#x at open, want 0", m.OffloadFlags())
	}
	const gCSUM, gTSO4, gTSO6, gECN, gUSO4, gUSO6 = 1 << 1, 1 << 7, 1 << 8, 1 << 9, 1 << 54, 1 << 55
	if err := m.SetOffload(gCSUM | gTSO4 | gTSO6 | gECN | gUSO4 | gUSO6); err != nil {
		t.Fatal(err)
	}
	wantFlags := uint32(vnet.TunFCsum | vnet.TunFTSO4 | vnet.TunFTSO6 | vnet.TunFTSOECN)
	if uso {
		wantFlags |= vnet.TunFUSO4 | vnet.TunFUSO6
	}
	if got := m.OffloadFlags(); got != wantFlags {
		t.Errorf("offload flags %#x, want %#x", got, wantFlags)
	}
	if err := m.SetOffload(0); err != nil || m.OffloadFlags() != 0 {
		t.Errorf("SetOffload(0): %v, flags %#x", err, m.OffloadFlags())
	}

	if err := m.SetVnetHdrLen(10); err != nil {
		t.Fatal(err)
	}
	if got := kernelVnetHdrLenFd(t, &m.vnetFile); got != 10 || m.VnetHdrLen() != 10 {
		t.Errorf("after SetVnetHdrLen(10): kernel %d, macvtap %d", got, m.VnetHdrLen())
	}
	if err := m.SetVnetHdrLen(11); !errors.Is(err, ErrVnetHdrLen) {
		t.Errorf("SetVnetHdrLen(11) = %v, want ErrVnetHdrLen", err)
	}
	_ = rig
}

func TestMacvtapModesAndExisting(t *testing.T) {
	ns := newTestNetns(t)
	newVethRig(t, ns, "vhlow1", "vhpeer1", 11)
	tapLink(t, ns, "vhlow1")

	for _, mode := range []MacvtapMode{MacvtapVEPA, MacvtapPrivate, MacvtapPassthru} {
		m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhm" + string(mode), Lower: "vhlow1", Mode: mode})
		mvt := tapLink(t, ns, m.Name()).(*netlink.Macvtap)
		if m.Mode() != mode || macvtapModeOf(mvt.Mode) != mode {
			t.Errorf("asked %q: got %q, link %v", mode, m.Mode(), mvt.Mode)
		}
		if err := m.Close(); err != nil {
			t.Errorf("close %s: %v", mode, err)
		}
	}

	// An existing macvtap is opened and left in place.
	if err := ns.run(func() error {
		lower, err := netlink.LinkByName("vhlow1")
		if err != nil {
			return err
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.ParentIndex = "vhmexist", lower.Attrs().Index
		return netlink.LinkAdd(&netlink.Macvtap{Macvlan: netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_VEPA}})
	}); err != nil {
		t.Fatal(err)
	}
	m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmexist"})
	if m.Created() || m.Mode() != MacvtapVEPA {
		t.Errorf("existing: created %v mode %q", m.Created(), m.Mode())
	}
	if ln, _ := m.Lower(); ln != "vhlow1" {
		t.Errorf("existing: lower %q", ln)
	}
	m.Close()
	tapLink(t, ns, "vhmexist") // still there

	open := func(cfg MacvtapConfig) error {
		return ns.run(func() error {
			m, err := OpenMacvtap(cfg)
			if err == nil {
				m.Close()
			}
			return err
		})
	}
	for _, c := range []struct {
		cfg    MacvtapConfig
		advice string
	}{
		{MacvtapConfig{Name: "vhmexist", Mode: MacvtapBridge}, "drop --macvtap-mode"},
		{MacvtapConfig{Name: "vhmexist", Lower: "lo"}, "another lower device"},
		{MacvtapConfig{Name: "vhmexist", MAC: otherMAC}, "drop --macvtap-mac"},
		{MacvtapConfig{Name: "vhlow1"}, "not a macvtap"},
		{MacvtapConfig{Name: "vhmnew"}, "--macvtap-lower"},
		{MacvtapConfig{Name: "vhmnew", Lower: "vhnosuch"}, "lower device"},
		{MacvtapConfig{Name: "vhmnew", Lower: "lo"}, "must be Ethernet"},
		{MacvtapConfig{Name: "vhmnew", Lower: "vhlow1", Mode: "source"}, "unknown mode"},
		{MacvtapConfig{Lower: "vhlow1"}, "no name"},
		{MacvtapConfig{Name: "vhmnew", Lower: "vhlow1", VnetHdrLen: 11}, "10 or 12"},
	} {
		if err := open(c.cfg); err == nil || !strings.Contains(err.Error(), c.advice) {
			t.Errorf("OpenMacvtap(%+v) = %v, want an error mentioning %q", c.cfg, err, c.advice)
		}
	}
	// A passthru macvtap takes its lower device alone: vhmexist is on it.
	if err := open(MacvtapConfig{Name: "vhmpt", Lower: "vhlow1", Mode: MacvtapPassthru}); err == nil || !strings.Contains(err.Error(), "passthru macvtap takes it alone") {
		t.Errorf("passthru macvtap next to another one: %v, want an error explaining passthru", err)
	}
	if _, err := OpenMacvtapQueues(MacvtapConfig{Name: "x", Lower: "y"}, 0); err == nil {
		t.Error("0 queues accepted")
	}
	if err := ns.run(func() error { _, err := netlink.LinkByName("vhmnew"); return err }); err == nil {
		t.Error("a failed open left vhmnew behind")
	}
}

// TestMacvtapARPAndPing writes an ARP request and an ICMP echo into a macvtap
// in bridge mode; they leave through the veth to the peer namespace, whose
// replies come back through the veth to the macvtap.
func TestMacvtapARPAndPing(t *testing.T) {
	ns := newTestNetns(t)
	rig := newVethRig(t, ns, "vhlow2", "vhpeer2", 12)
	m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmvt2", Lower: "vhlow2", MAC: guestMAC})
	m.SetReadDeadline(time.Now().Add(5 * time.Second))

	hdr := vnetHeader(12, 0, 0, 0, 0, 0, 0)
	if n, err := m.WritePackets([][][]byte{{hdr, arpRequest(guestMAC, rig.guestIP, rig.peerIP)}}); n != 1 || err != nil {
		t.Fatalf("write ARP request: %d %v", n, err)
	}
	_, reply, err := readUntil(m, 12, func(_, f []byte) bool {
		return binary.BigEndian.Uint16(f[12:14]) == testpkt.EtherTypeARP && len(f) >= 42 &&
			binary.BigEndian.Uint16(f[20:22]) == 2 && bytes.Equal(f[28:32], rig.peerIP.To4())
	})
	if err != nil {
		t.Fatalf("ARP reply: %v", err)
	}
	if !bytes.Equal(reply[22:28], rig.peerMAC) || !bytes.Equal(reply[0:6], guestMAC) {
		t.Errorf("ARP reply sender %v to %v, want %v to %v", net.HardwareAddr(reply[22:28]), net.HardwareAddr(reply[0:6]), rig.peerMAC, guestMAC)
	}

	echo := icmpEcho(rig.peerMAC, rig.guestIP, rig.peerIP, 0x4321, 1, []byte("vhostd macvtap ping"))
	if n, err := m.WritePackets([][][]byte{{hdr, echo[:20], echo[20:]}}); n != 1 || err != nil {
		t.Fatalf("write echo request: %d %v", n, err)
	}
	rhdr, f, err := readUntil(m, 12, func(_, f []byte) bool {
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:14]) == testpkt.EtherTypeIPv4 && f[23] == testpkt.ProtoICMP && f[34] == 0
	})
	if err != nil {
		t.Fatalf("echo reply: %v", err)
	}
	if id := binary.BigEndian.Uint16(f[38:40]); id != 0x4321 || !bytes.HasSuffix(f, []byte("vhostd macvtap ping")) {
		t.Errorf("echo reply id %#x payload % x", id, f[42:])
	}
	if rhdr[1] != 0 {
		t.Errorf("echo reply vnet header % x: want no GSO", rhdr)
	}
}

// packetCapture is an AF_PACKET socket on one link, read through the poller.
type packetCapture struct{ f *os.File }

func newPacketCapture(t *testing.T, ns *testNetns, link netlink.Link) *packetCapture {
	t.Helper()
	const ethPAll = 0x0300 // htons(ETH_P_ALL)
	var fd int
	if err := ns.run(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, ethPAll)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAll, Ifindex: link.Attrs().Index})
	}); err != nil {
		t.Fatalf("AF_PACKET socket: %v", err)
	}
	c := &packetCapture{f: os.NewFile(uintptr(fd), "packet")}
	t.Cleanup(func() { c.f.Close() })
	return c
}

// TestMacvtapGSOWrite sends one TSO super-packet through a macvtap: it leaves
// through the veth (passed whole: veth offloads TSO) and a TCP listener in
// the peer namespace must receive every byte. An AF_PACKET socket on the
// peer shows what arrived.
func TestMacvtapGSOWrite(t *testing.T) {
	ns := newTestNetns(t)
	rig := newVethRig(t, ns, "vhlow3", "vhpeer3", 13)
	m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmvt3", Lower: "vhlow3", MAC: guestMAC})
	capture := newPacketCapture(t, rig.peerNS, rig.peer)

	var ln *net.TCPListener
	if err := rig.peerNS.run(func() error {
		l, err := net.Listen("tcp4", rig.peerIP.String()+":5001")
		ln, _ = l.(*net.TCPListener)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(5 * time.Second)
	m.SetReadDeadline(deadline)
	ln.SetDeadline(deadline)
	capture.f.SetReadDeadline(deadline)

	const sport, dport, iss = 40000, 5001, 1000
	plain := vnetHeader(12, 0, 0, 0, 0, 0, 0)
	syn := tcpSegment(rig.peerMAC, rig.guestIP, rig.peerIP, sport, dport, iss, 0, testpkt.TCPFlagSYN, nil, false)
	if _, err := m.WritePackets([][][]byte{{plain, syn}}); err != nil {
		t.Fatalf("write SYN: %v", err)
	}
	_, synack, err := readUntil(m, 12, func(_, f []byte) bool {
		return binary.BigEndian.Uint16(f[12:14]) == testpkt.EtherTypeIPv4 && f[23] == testpkt.ProtoTCP &&
			binary.BigEndian.Uint16(f[36:38]) == sport && f[47]&(testpkt.TCPFlagSYN|testpkt.TCPFlagACK) == testpkt.TCPFlagSYN|testpkt.TCPFlagACK
	})
	if err != nil {
		t.Fatalf("SYN-ACK: %v", err)
	}
	serverSeq := binary.BigEndian.Uint32(synack[38:42])
	ack := tcpSegment(rig.peerMAC, rig.guestIP, rig.peerIP, sport, dport, iss+1, serverSeq+1, testpkt.TCPFlagACK, nil, false)

	const mss = 1448
	payload := make([]byte, 3*mss)
	for i := range payload {
		payload[i] = byte(i * 13)
	}
	super := tcpSegment(rig.peerMAC, rig.guestIP, rig.peerIP, sport, dport, iss+1, serverSeq+1, testpkt.TCPFlagACK|testpkt.TCPFlagPSH, payload, true)
	gsoHdr := vnetHeader(12, 1, 1, 54, mss, 34, 16) // NEEDS_CSUM, GSO_TCPV4
	if n, err := m.WritePackets([][][]byte{{plain, ack}, {gsoHdr, super[:54], super[54:]}}); n != 2 || err != nil {
		t.Fatalf("write ACK + TSO super-packet: %d %v", n, err)
	}
	conn, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer conn.Close()
	conn.SetReadDeadline(deadline)
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("read super-packet payload: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("payload differs")
	}

	// What crossed the veth: the data frames from guestMAC to the listener.
	buf := make([]byte, 70000)
	var frames []int
	seen := 0
	for seen < len(payload) {
		n, err := capture.f.Read(buf)
		if err != nil {
			t.Fatalf("capture after %d of %d payload bytes (frames %v): %v", seen, len(payload), frames, err)
		}
		f := buf[:n]
		if n < 54 || !bytes.Equal(f[6:12], guestMAC) || f[23] != testpkt.ProtoTCP || binary.BigEndian.Uint16(f[36:38]) != dport {
			continue
		}
		if data := n - 54; data > 0 {
			frames = append(frames, n)
			seen += data
		}
	}
	t.Logf("data frames seen on the peer veth: %v (one frame = passed whole)", frames)
	if seen != len(payload) {
		t.Errorf("peer saw %d payload bytes, want %d", seen, len(payload))
	}
}

// TestMacvtapQueues opens two queues: both get checked flags, both write,
// replies arrive on either, and the link goes away only with the last.
func TestMacvtapQueues(t *testing.T) {
	ns := newTestNetns(t)
	rig := newVethRig(t, ns, "vhlow4", "vhpeer4", 14)
	qs := openTestMacvtapQueues(t, ns, MacvtapConfig{Name: "vhmvt4", Lower: "vhlow4", MAC: guestMAC}, 2)
	want := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	for i, q := range qs {
		if q.Flags() != want || !q.Created() || q.Index() != qs[0].Index() {
			t.Errorf("queue %d: flags %#x created %v index %d", i, q.Flags(), q.Created(), q.Index())
		}
		if name, flags, err := q.queryIff(); err != nil || name != "vhmvt4" || flags&tapCheckedFlags != want {
			t.Errorf("queue %d TUNGETIFF: %q %#x %v", i, name, flags, err)
		}
		if q.Caps() != qs[0].Caps() {
			t.Errorf("queue %d caps %+v differ from queue 0's %+v", i, q.Caps(), qs[0].Caps())
		}
	}
	// TUNSETVNETHDRSZ is per queue on a macvtap.
	if err := qs[1].SetVnetHdrLen(10); err != nil {
		t.Fatal(err)
	}
	if a, b := kernelVnetHdrLenFd(t, &qs[0].vnetFile), kernelVnetHdrLenFd(t, &qs[1].vnetFile); a != 12 || b != 10 {
		t.Errorf("vnet header lengths %d %d, want 12 10", a, b)
	}
	qs[1].SetVnetHdrLen(12)

	// Both queues write: echo requests (one ICMP id each) from both; every
	// reply must come back on one queue or the other. Then 16 UDP flows from
	// the peer (16 source ports): the macvtap spreads flows over its queues
	// by flow hash (tap_get_queue), so both queues must receive some (all on
	// one queue has probability 2^-15).
	const perQueue, udpFlows = 8, 16
	replies := map[uint16]int{} // ICMP id -> queue that got the reply
	udpSeen := map[uint16]int{} // UDP source port -> queue
	readers := readFromQueues([]Backend{qs[0], qs[1]}, time.Now().Add(5*time.Second), func(qi int, f []byte) bool {
		switch {
		case len(f) > 42 && f[23] == testpkt.ProtoICMP && f[34] == 0:
			replies[binary.BigEndian.Uint16(f[38:40])] = qi
		case len(f) > 42 && f[23] == testpkt.ProtoUDP && binary.BigEndian.Uint16(f[36:38]) == 5005:
			udpSeen[binary.BigEndian.Uint16(f[34:36])] = qi
		}
		return len(replies) == 2*perQueue && len(udpSeen) == udpFlows
	})
	hdr := vnetHeader(12, 0, 0, 0, 0, 0, 0)
	for qi, q := range qs {
		for k := 0; k < perQueue; k++ {
			id := uint16(0x100*(qi+1) + k)
			echo := icmpEcho(rig.peerMAC, rig.guestIP, rig.peerIP, id, 1, []byte("mq"))
			if _, err := q.WritePackets([][][]byte{{hdr, echo}}); err != nil {
				t.Fatalf("queue %d write: %v", qi, err)
			}
		}
	}
	if err := rig.peerNS.run(func() error {
		for k := 0; k < udpFlows; k++ {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: rig.peerIP, Port: 42000 + k}, &net.UDPAddr{IP: rig.guestIP, Port: 5005})
			if err != nil {
				return err
			}
			_, err = c.Write([]byte("flow"))
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("peer UDP flows: %v", err)
	}
	readers.Wait()
	var echoPerQ, udpPerQ [2]int
	for _, qi := range replies {
		echoPerQ[qi]++
	}
	for _, qi := range udpSeen {
		udpPerQ[qi]++
	}
	t.Logf("echo replies per queue %v, UDP flows per queue %v", echoPerQ, udpPerQ)
	if len(replies) != 2*perQueue || len(udpSeen) != udpFlows {
		t.Errorf("got %d of %d echo replies and %d of %d UDP flows", len(replies), 2*perQueue, len(udpSeen), udpFlows)
	}
	if udpPerQ[0] == 0 || udpPerQ[1] == 0 {
		t.Errorf("UDP flows per queue %v: one queue received nothing", udpPerQ)
	}

	if err := qs[0].Close(); err != nil {
		t.Fatal(err)
	}
	tapLink(t, ns, "vhmvt4") // the other queue still holds it
	if err := qs[1].Close(); err != nil {
		t.Fatal(err)
	}
	err := ns.run(func() error { _, err := netlink.LinkByName("vhmvt4"); return err })
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		t.Errorf("created macvtap still present after its last queue closed: %v", err)
	}
}

func TestMacvtapCloseReleasesEverything(t *testing.T) {
	ns := newTestNetns(t)
	newVethRig(t, ns, "vhlow5", "vhpeer5", 15)
	// Warm up: the runtime's epoll fds and netlink's lazily opened sockets.
	openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmwarm", Lower: "vhlow5"}).Close()
	before := fdCount(t)
	var m *Macvtap
	if err := ns.run(func() (err error) { m, err = OpenMacvtap(MacvtapConfig{Name: "vhmgone", Lower: "vhlow5"}); return err }); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if after := fdCount(t); after != before {
		t.Errorf("fds before open %d, after close %d", before, after)
	}
	err := ns.run(func() error { _, err := netlink.LinkByName("vhmgone"); return err })
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		t.Errorf("created macvtap still present after Close: %v", err)
	}
	if _, err := m.WritePackets([][][]byte{{make([]byte, 60)}}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after close: %v, want os.ErrClosed", err)
	}
	if _, err := m.ReadPackets([][]byte{make([]byte, 100)}, []int{0}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("read after close: %v, want os.ErrClosed", err)
	}
	if err := m.SetOffload(0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("SetOffload after close: %v, want os.ErrClosed", err)
	}
	if left, _ := filepath.Glob("/dev/.vhostd-*"); len(left) != 0 {
		t.Errorf("private device nodes left behind: %v", left)
	}
}

// TestMacvtapDeviceNode covers finding the device number through both sysfs
// views and opening it through a private node when /dev has none for it.
func TestMacvtapDeviceNode(t *testing.T) {
	// With this namespace's sysfs on /sys, class/net shows the macvtap.
	ns := newTestNetnsWithSysfs(t)
	newVethRig(t, ns, "vhlow6", "vhpeer6", 16)
	m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmvt6", Lower: "vhlow6"})
	var fromClass, fromChar uint64
	if err := ns.run(func() (err error) {
		if !sysfsShowsLink("/sys/class/net/vhmvt6", m.Index(), m.HardwareAddr()) {
			return errors.New("private sysfs does not show the macvtap")
		}
		fromClass, err = macvtapDevT("vhmvt6", m.Index(), m.HardwareAddr())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The test process's own sysfs shows another namespace: /sys/dev/char.
	if sysfsShowsLink("/sys/class/net/vhmvt6", m.Index(), m.HardwareAddr()) {
		t.Fatal("host sysfs claims to show the test namespace's macvtap")
	}
	fromChar, err := macvtapDevT("vhmvt6", m.Index(), m.HardwareAddr())
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(m.file.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if fromClass != st.Rdev || fromChar != st.Rdev {
		t.Errorf("device numbers: class/net %d:%d, dev/char %d:%d, open fd %d:%d", unix.Major(fromClass), unix.Minor(fromClass),
			unix.Major(fromChar), unix.Minor(fromChar), unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}

	// No node at the path, or a node of another device there: a private
	// node is made, opened and removed.
	for _, path := range []string{"/dev/vhostd-test-missing-tap", "/dev/null"} {
		fd, err := openCharDev(path, st.Rdev)
		if err != nil {
			t.Fatalf("openCharDev(%s): %v", path, err)
		}
		name, _, err := getIff(fd)
		unix.Close(fd)
		if err != nil || name != "vhmvt6" {
			t.Errorf("openCharDev(%s): TUNGETIFF %q %v", path, name, err)
		}
	}
	if _, err := os.Stat("/dev/vhostd-test-missing-tap"); !os.IsNotExist(err) {
		t.Errorf("openCharDev created the node at the path: %v", err)
	}
	if left, _ := filepath.Glob("/dev/.vhostd-*"); len(left) != 0 {
		t.Errorf("private device nodes left behind: %v", left)
	}
}

// TestTapQueues opens a two-queue tap with OpenTapQueues and checks that a
// failed open of more queues closes the ones it opened.
func TestTapQueues(t *testing.T) {
	ns := newTestNetns(t)
	var qs []*Tap
	if err := ns.run(func() (err error) { qs, err = OpenTapQueues(TapConfig{}, 2); return err }); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, q := range qs {
			q.Close()
		}
	}()
	want := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE)
	for i, q := range qs {
		name, flags, err := q.queryIff()
		if err != nil || name != qs[0].Name() || flags&tapCheckedFlags != want || q.Flags()&tapCheckedFlags != want {
			t.Errorf("queue %d: TUNGETIFF %q %#x %v, Flags %#x; want %s %#x", i, name, flags, err, q.Flags(), qs[0].Name(), want)
		}
	}
	if !qs[0].Created() || qs[1].Created() || qs[0].Index() != qs[1].Index() {
		t.Errorf("created %v %v, index %d %d", qs[0].Created(), qs[1].Created(), qs[0].Index(), qs[1].Index())
	}
	// Both queues carry traffic: an echo request written on each is
	// answered, the replies arriving on either queue.
	link := tapLink(t, ns, qs[0].Name())
	addAddr(t, ns, link, "10.99.22.1/24")
	hostIP, peerIP := net.IPv4(10, 99, 22, 1), net.IPv4(10, 99, 22, 2)
	addNeigh(t, ns, link, peerIP, guestMAC)
	replies := map[uint16]int{}
	readers := readFromQueues([]Backend{qs[0], qs[1]}, time.Now().Add(5*time.Second), func(qi int, f []byte) bool {
		if len(f) > 42 && f[23] == testpkt.ProtoICMP && f[34] == 0 {
			replies[binary.BigEndian.Uint16(f[38:40])] = qi
		}
		return len(replies) == 2
	})
	for qi, q := range qs {
		echo := icmpEcho(link.Attrs().HardwareAddr, peerIP, hostIP, uint16(qi+1), 1, []byte("tap mq"))
		if _, err := q.WritePackets([][][]byte{{vnetHeader(12, 0, 0, 0, 0, 0, 0), echo}}); err != nil {
			t.Fatalf("queue %d write: %v", qi, err)
		}
	}
	readers.Wait()
	if len(replies) != 2 {
		t.Errorf("echo replies %v, want ids 1 and 2", replies)
	}
	t.Logf("echo reply id -> queue: %v", replies)

	// On a tap, TUNSETVNETHDRSZ on one queue sets the whole device.
	if err := qs[1].SetVnetHdrLen(10); err != nil {
		t.Fatal(err)
	}
	if got := kernelVnetHdrLenFd(t, &qs[0].vnetFile); got != 10 {
		t.Errorf("queue 0 vnet header length %d after setting queue 1 to 10: want 10 (tun keeps it per device)", got)
	}
	qs[1].SetVnetHdrLen(12)

	// A persistent single-queue tap cannot take two queues: the second open
	// fails and the first queue must be closed again.
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := ns.run(func() error { return createPersistentTap("vhsq", flags) }); err != nil {
		t.Fatal(err)
	}
	warm := fdCount(t)
	err := ns.run(func() error { _, err := OpenTapQueues(TapConfig{Name: "vhsq"}, 2); return err })
	if err == nil || !strings.Contains(err.Error(), "queue 0 of 2") {
		t.Errorf("two queues of a single-queue tap: %v, want a queue 0 error", err)
	}
	if after := fdCount(t); after != warm {
		t.Errorf("fds %d before, %d after the failed open", warm, after)
	}
	// A single queue of it still opens.
	var q *Tap
	if err := ns.run(func() error {
		qs, err := OpenTapQueues(TapConfig{Name: "vhsq"}, 1)
		if err == nil {
			q = qs[0]
		}
		return err
	}); err != nil {
		t.Fatalf("one queue: %v", err)
	}
	q.Close()
	if _, err := OpenTapQueues(TapConfig{}, 0); err == nil {
		t.Error("0 queues accepted")
	}
}

func newMacvtapPingRig(t testing.TB) *pingRig {
	ns := newTestNetns(t)
	rig := newVethRig(t, ns, "vhlow7", "vhpeer7", 17)
	m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmping", Lower: "vhlow7", MAC: guestMAC})
	echo := icmpEcho(rig.peerMAC, rig.guestIP, rig.peerIP, 7, 1, make([]byte, 56))
	return &pingRig{
		be:    m,
		echo:  [][][]byte{{vnetHeader(12, 0, 0, 0, 0, 0, 0), echo}},
		bufs:  [][]byte{make([]byte, 2048), make([]byte, 2048)},
		sizes: make([]int, 2),
	}
}

func TestMacvtapZeroAllocs(t *testing.T) {
	r := newMacvtapPingRig(t)
	r.be.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < 10; i++ { // warm up: poller registration, iovec capacity
		if err := r.roundTrip(); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		if e := r.roundTrip(); e != nil {
			err = e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("write+read round trip allocates %.2f times", allocs)
	}
}

// TestMacvtapReadOffloads sends a UDP GSO super-packet (UDP_SEGMENT, three
// datagrams of 1000 bytes) from the peer namespace to the guest. With the
// offloads off, the macvtap must hand the reader three plain datagrams
// (tap_handle_frame segments in software what tap_features lacks); with the
// guest's CSUM and USO acked, what arrives is logged (whole or segmented
// depends on the kernel) and must carry the same bytes.
func TestMacvtapReadOffloads(t *testing.T) {
	ns := newTestNetns(t)
	rig := newVethRig(t, ns, "vhlow8", "vhpeer8", 18)
	m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmvt8", Lower: "vhlow8", MAC: guestMAC})
	m.SetReadDeadline(time.Now().Add(5 * time.Second))
	lowerCapture := newPacketCapture(t, ns, tapLink(t, ns, "vhlow8"))
	lowerCapture.f.SetReadDeadline(time.Now().Add(5 * time.Second))
	// lowerSaw drains the capture: the lengths of the UDP frames to port
	// 5003 that reached the lower device, i.e. before the macvtap.
	lowerSaw := func() (lens []int) {
		buf := make([]byte, 70000)
		for seen := 0; seen < 3000; {
			n, err := lowerCapture.f.Read(buf)
			if err != nil {
				t.Fatalf("capture on the lower device: %v", err)
			}
			if f := buf[:n]; n > 42 && f[23] == testpkt.ProtoUDP && binary.BigEndian.Uint16(f[36:38]) == 5003 {
				lens = append(lens, n)
				seen += n - 42
			}
		}
		return lens
	}

	var uc *net.UDPConn
	if err := rig.peerNS.run(func() (err error) {
		uc, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: rig.guestIP, Port: 5003})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, 1000) }); err != nil || serr != nil {
		t.Skipf("UDP_SEGMENT (Linux 4.18+): %v %v", err, serr)
	}
	payload := make([]byte, 3000)
	for i := range payload {
		payload[i] = byte(i / 1000)
	}

	// receive reads until 3000 payload bytes to port 5003 arrived and
	// returns the vnet headers and frame lengths seen.
	receive := func() (gsoTypes []byte, lens []int) {
		t.Helper()
		if _, err := uc.Write(payload); err != nil {
			t.Fatalf("send UDP GSO: %v", err)
		}
		bufs := [][]byte{make([]byte, 70000), make([]byte, 70000), make([]byte, 70000), make([]byte, 70000)}
		sizes := make([]int, len(bufs))
		got := 0
		for got < len(payload) {
			n, err := m.ReadPackets(bufs, sizes, 0)
			if err != nil {
				t.Fatalf("after %d of %d bytes: %v", got, len(payload), err)
			}
			for i := 0; i < n; i++ {
				hdr, f := bufs[i][:12], bufs[i][12:sizes[i]]
				if len(f) < 42 || binary.BigEndian.Uint16(f[12:14]) != testpkt.EtherTypeIPv4 || f[23] != testpkt.ProtoUDP ||
					binary.BigEndian.Uint16(f[36:38]) != 5003 {
					continue
				}
				if !bytes.Equal(f[42:], payload[got:got+len(f)-42]) {
					t.Errorf("datagram at payload offset %d differs", got)
				}
				gsoTypes = append(gsoTypes, hdr[1])
				lens = append(lens, len(f))
				got += len(f) - 42
			}
		}
		if got != len(payload) {
			t.Errorf("received %d payload bytes, want %d", got, len(payload))
		}
		return gsoTypes, lens
	}

	types, lens := receive()
	t.Logf("offloads off: gso types %v, frame lengths %v; the lower device saw %v", types, lens, lowerSaw())
	if len(lens) != 3 || !bytes.Equal(types, []byte{0, 0, 0}) {
		t.Errorf("with offloads off the reader got %d frames (gso types %v), want 3 plain datagrams", len(lens), types)
	}

	const gCSUM, gTSO4, gTSO6, gUSO4, gUSO6 = 1 << 1, 1 << 7, 1 << 8, 1 << 54, 1 << 55
	if err := m.SetOffload(gCSUM | gTSO4 | gTSO6 | gUSO4 | gUSO6); err != nil {
		t.Fatal(err)
	}
	types, lens = receive()
	t.Logf("CSUM|TSO|USO on (USO accepted: %v): gso types %v, frame lengths %v; the lower device saw %v", m.Caps().Offloads&vnet.OffloadUSO != 0, types, lens, lowerSaw())
}

// TestMacvtapReadTSO has the peer namespace send TCP data to the guest over
// a hand-made connection: with the offloads off the reader must get plain
// segments only; with GUEST_CSUM|TSO4 acked the kernel may hand it whole TSO
// super-packets (logged).
func TestMacvtapReadTSO(t *testing.T) {
	ns := newTestNetns(t)
	rig := newVethRig(t, ns, "vhlow9", "vhpeer9", 19)
	m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmvt9", Lower: "vhlow9", MAC: guestMAC})
	var ln *net.TCPListener
	if err := rig.peerNS.run(func() error {
		l, err := net.Listen("tcp4", rig.peerIP.String()+":5004")
		ln, _ = l.(*net.TCPListener)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// connectAndReceive opens a connection from the guest side (no TCP
	// options: the peer sends 536-byte segments), makes the peer write 16
	// segments' worth, and reads until 4 segments' worth of data arrived.
	connectAndReceive := func(sport uint16) (gsoTypes []byte, lens []int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		m.SetReadDeadline(deadline)
		ln.SetDeadline(deadline)
		plain := vnetHeader(12, 0, 0, 0, 0, 0, 0)
		const iss = 5000
		syn := tcpSegment(rig.peerMAC, rig.guestIP, rig.peerIP, sport, 5004, iss, 0, testpkt.TCPFlagSYN, nil, false)
		if _, err := m.WritePackets([][][]byte{{plain, syn}}); err != nil {
			t.Fatalf("write SYN: %v", err)
		}
		_, synack, err := readUntil(m, 12, func(_, f []byte) bool {
			return binary.BigEndian.Uint16(f[12:14]) == testpkt.EtherTypeIPv4 && f[23] == testpkt.ProtoTCP &&
				binary.BigEndian.Uint16(f[36:38]) == sport && f[47]&(testpkt.TCPFlagSYN|testpkt.TCPFlagACK) == testpkt.TCPFlagSYN|testpkt.TCPFlagACK
		})
		if err != nil {
			t.Fatalf("SYN-ACK: %v", err)
		}
		serverSeq := binary.BigEndian.Uint32(synack[38:42])
		ack := tcpSegment(rig.peerMAC, rig.guestIP, rig.peerIP, sport, 5004, iss+1, serverSeq+1, testpkt.TCPFlagACK, nil, false)
		if _, err := m.WritePackets([][][]byte{{plain, ack}}); err != nil {
			t.Fatalf("write ACK: %v", err)
		}
		conn, err := ln.AcceptTCP()
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		defer conn.Close()
		if _, err := conn.Write(make([]byte, 16*536)); err != nil {
			t.Fatalf("peer write: %v", err)
		}
		bufs := [][]byte{make([]byte, 70000), make([]byte, 70000)}
		sizes := make([]int, len(bufs))
		got := 0
		for got < 4*536 {
			n, err := m.ReadPackets(bufs, sizes, 0)
			if err != nil {
				t.Fatalf("after %d bytes: %v", got, err)
			}
			for i := 0; i < n; i++ {
				hdr, f := bufs[i][:12], bufs[i][12:sizes[i]]
				if len(f) <= 54 || f[23] != testpkt.ProtoTCP || binary.BigEndian.Uint16(f[36:38]) != sport {
					continue
				}
				gsoTypes = append(gsoTypes, hdr[1])
				lens = append(lens, len(f))
				got += len(f) - 54
			}
		}
		return gsoTypes, lens
	}

	types, lens := connectAndReceive(41000)
	t.Logf("offloads off: gso types %v, frame lengths %v", types, lens)
	for i, l := range lens {
		if types[i] != 0 || l > 54+536 {
			t.Errorf("offloads off: frame %d is %d bytes with gso type %d, want plain segments of at most 536 bytes of data", i, l, types[i])
		}
	}
	const gCSUM, gTSO4 = 1 << 1, 1 << 7
	if err := m.SetOffload(gCSUM | gTSO4); err != nil {
		t.Fatal(err)
	}
	types, lens = connectAndReceive(41001)
	t.Logf("CSUM|TSO4 on: gso types %v, frame lengths %v", types, lens)
	if !bytes.Contains(types, []byte{1}) {
		t.Errorf("with GUEST_TSO4 acked no TCP super-packet reached the reader (gso types %v)", types)
	}
}

// TestMacvtapUSOWrite writes one USO super-packet (GSO_UDP_L4) into the
// macvtap; the peer namespace's UDP socket must get three datagrams.
func TestMacvtapUSOWrite(t *testing.T) {
	ns := newTestNetns(t)
	rig := newVethRig(t, ns, "vhlow10", "vhpeer10", 20)
	m := openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmvt10", Lower: "vhlow10", MAC: guestMAC})
	if m.Caps().Offloads&vnet.OffloadUSO == 0 {
		t.Skip("kernel without USO (Linux < 6.2)")
	}
	var uc *net.UDPConn
	if err := rig.peerNS.run(func() (err error) {
		uc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: rig.peerIP, Port: 5002})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	const seg = 1000
	payload := make([]byte, 3*seg)
	for i := range payload {
		payload[i] = byte(i / seg)
	}
	frame := udpDatagram(rig.peerMAC, rig.guestIP, rig.peerIP, 40001, 5002, payload)
	hdr := vnetHeader(12, 1, 5, 42, seg, 34, 6) // NEEDS_CSUM, GSO_UDP_L4
	if _, err := m.WritePackets([][][]byte{{hdr, frame}}); err != nil {
		t.Fatalf("write USO super-packet: %v", err)
	}
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4000)
	for i := 0; i < 3; i++ {
		n, err := uc.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if n != seg || buf[0] != byte(i) || buf[n-1] != byte(i) {
			t.Errorf("datagram %d: %d bytes starting %d", i, n, buf[0])
		}
	}
}

// TestMacvtapSameNameInTwoNamespaces opens macvtaps of the same name in two
// namespaces built alike (so they usually get the same ifindex, and
// /sys/dev/char lists two tapN of that name): each must open its own, and
// traffic must flow on both.
func TestMacvtapSameNameInTwoNamespaces(t *testing.T) {
	var ms [2]*Macvtap
	var rigs [2]*vethRig
	for i := range ms {
		ns := newTestNetns(t)
		rigs[i] = newVethRig(t, ns, "vhlowdup", "vhpeerdup", 21)
		ms[i] = openTestMacvtap(t, ns, MacvtapConfig{Name: "vhmdup", Lower: "vhlowdup", MAC: guestMAC})
	}
	ents, _ := os.ReadDir("/sys/dev/char")
	listed := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/sys/dev/char", e.Name())); err == nil && strings.Contains(l, "/net/vhmdup/macvtap/") {
			listed++
		}
	}
	t.Logf("ifindexes %d and %d; /sys/dev/char lists %d vhmdup devices", ms[0].Index(), ms[1].Index(), listed)
	if ms[0].Index() == ms[1].Index() && listed < 2 {
		t.Errorf("same ifindex but /sys/dev/char lists %d devices: the ambiguous case was not exercised", listed)
	}
	var st [2]unix.Stat_t
	for i, m := range ms {
		if err := unix.Fstat(int(m.file.Fd()), &st[i]); err != nil {
			t.Fatal(err)
		}
	}
	if st[0].Rdev == st[1].Rdev {
		t.Fatalf("both macvtaps opened device %d:%d", unix.Major(st[0].Rdev), unix.Minor(st[0].Rdev))
	}
	for i, m := range ms {
		r := &pingRig{
			be:    m,
			echo:  [][][]byte{{vnetHeader(12, 0, 0, 0, 0, 0, 0), icmpEcho(rigs[i].peerMAC, rigs[i].guestIP, rigs[i].peerIP, 9, 1, []byte("dup"))}},
			bufs:  [][]byte{make([]byte, 2048)},
			sizes: make([]int, 1),
		}
		m.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := r.roundTrip(); err != nil {
			t.Errorf("namespace %d: ping through its macvtap: %v", i, err)
		}
	}
}

// readFromQueues reads from every queue in its own goroutine until visit
// reports done or the deadline passes; visit sees each frame (after the
// 12-byte vnet header) with its queue index, one call at a time. Wait
// returns once all readers stopped.
func readFromQueues(qs []Backend, deadline time.Time, visit func(qi int, frame []byte) (done bool)) *sync.WaitGroup {
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := func() {
		for _, q := range qs {
			q.SetReadDeadline(time.Now())
		}
	}
	for qi, q := range qs {
		q.SetReadDeadline(deadline)
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs := [][]byte{make([]byte, 2048), make([]byte, 2048)}
			sizes := make([]int, len(bufs))
			for {
				n, err := q.ReadPackets(bufs, sizes, 0)
				if err != nil {
					return
				}
				mu.Lock()
				done := false
				for i := 0; i < n && !done; i++ {
					if sizes[i] > 12 {
						done = visit(qi, bufs[i][12:sizes[i]])
					}
				}
				mu.Unlock()
				if done {
					stop()
					return
				}
			}
		}()
	}
	return &wg
}
