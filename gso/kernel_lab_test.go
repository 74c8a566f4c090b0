//go:build linux

package gso

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelLab is a throw-away network namespace in which packets written into
// a tap are bridged out through a veth whose TSO/GSO is off, so that the
// kernel segments them in software (validate_xmit_skb -> skb_gso_segment),
// and captured on the veth peer with an AF_PACKET socket:
//
//	write(tapfd) -> gsotap0 -> bridge gsobr0 -> gsov0 (tso/gso off) -> gsov1 -> AF_PACKET
//
// A bridge rather than routing keeps the frames byte for byte (no TTL
// decrement, no MAC rewrite). IPv6 is disabled on every interface so that
// the kernel sends nothing of its own (no DAD, RS or MLD), br_netfilter
// hooks are turned off, and captures are filtered by source MAC anyway.
//
// Checksums: with "tx" (tx-checksumming) off on gsov0, harmonize_features()
// leaves the segments no checksum offload, so skb_segment()/tcp_gso_segment
// compute complete checksums in software (gso_make_checksum) and the
// captured bytes are final: TP_STATUS_CSUMNOTREADY must then be clear, which
// the capture asserts. With "tx" on (SetTxCsum(true)) the kernel instead
// leaves CHECKSUM_PARTIAL segments with the pseudo-header sum in the field
// (the capture reports TP_STATUS_CSUMNOTREADY), which is what Segment with
// vnet.OffloadCSUM must produce. Either way the comparison is like for like.
//
// VLAN: the kernel moves the outermost tag into skb metadata on receive
// (skb_vlan_untag) and AF_PACKET reports it in PACKET_AUXDATA instead of
// the frame; the capture re-inserts it, as libpcap does.
type kernelLab struct {
	tapFD, pktFD int
	run          chan func() // executed on the namespace's locked thread
	quit         chan struct{}
}

const (
	labTap    = "gsotap0"
	labBridge = "gsobr0"
	labVeth   = "gsov0"
	labPeer   = "gsov1"
	labMTU    = 9000
	labHdrLen = vnet.HdrLenV1
)

// needRoot skips (or, with CI set, fails) a test that needs root, netns,
// /dev/net/tun and ethtool.
func needRoot(t *testing.T) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "not root"
	case !fileExists("/dev/net/tun"):
		why = "no /dev/net/tun"
	default:
		if _, err := exec.LookPath("ethtool"); err != nil {
			why = "no ethtool binary"
		}
	}
	if why == "" {
		return
	}
	msg := "kernel comparison test needs root, network namespaces, /dev/net/tun and ethtool (run the tests as root to compare with the kernel): " + why
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// newKernelLab builds the namespace; t.Cleanup tears it down.
func newKernelLab(t *testing.T) *kernelLab {
	t.Helper()
	needRoot(t)
	k := &kernelLab{tapFD: -1, pktFD: -1, run: make(chan func()), quit: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		// The namespace belongs to this thread alone. The goroutine never
		// unlocks: when it returns, the runtime ends the thread, and the
		// namespace goes once the fds opened in it are closed.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		ready <- k.setup()
		for {
			select {
			case f := <-k.run:
				f()
			case <-k.quit:
				return
			}
		}
	}()
	err := <-ready
	t.Cleanup(k.close)
	if err != nil {
		t.Fatalf("kernel lab setup: %v", err)
	}
	return k
}

func (k *kernelLab) close() {
	if k.tapFD >= 0 {
		unix.Close(k.tapFD)
	}
	if k.pktFD >= 0 {
		unix.Close(k.pktFD)
	}
	close(k.quit)
}

// do runs f on the namespace thread.
func (k *kernelLab) do(f func() error) error {
	ch := make(chan error, 1)
	k.run <- func() { ch <- f() }
	return <-ch
}

func writeSysctl(path, val string) error {
	if !fileExists(path) {
		return nil
	}
	return os.WriteFile(path, []byte(val), 0o644)
}

func (k *kernelLab) setup() error {
	for _, p := range []string{
		"/proc/sys/net/ipv6/conf/all/disable_ipv6",
		"/proc/sys/net/ipv6/conf/default/disable_ipv6",
	} {
		if err := writeSysctl(p, "1"); err != nil {
			return err
		}
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	k.tapFD = fd
	ifr, err := unix.NewIfreq(labTap)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, labHdrLen); err != nil {
		return fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
	}

	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: labVeth, MTU: labMTU}, PeerName: labPeer}); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: labBridge, MTU: labMTU}}); err != nil {
		return fmt.Errorf("add bridge: %w", err)
	}
	// Per-namespace br_netfilter switches: keep bridged frames away from
	// iptables (which would, e.g., trim or defragment).
	for _, n := range []string{"iptables", "ip6tables", "arptables"} {
		if err := writeSysctl("/proc/sys/net/bridge/bridge-nf-call-"+n, "0"); err != nil {
			return err
		}
	}
	links := map[string]netlink.Link{}
	for _, n := range []string{labBridge, labTap, labVeth, labPeer} {
		l, err := h.LinkByName(n)
		if err != nil {
			return fmt.Errorf("link %s: %w", n, err)
		}
		if err := h.LinkSetMTU(l, labMTU); err != nil {
			return fmt.Errorf("mtu %s: %w", n, err)
		}
		links[n] = l
	}
	for _, n := range []string{labTap, labVeth} {
		if err := h.LinkSetMaster(links[n], links[labBridge]); err != nil {
			return fmt.Errorf("enslave %s: %w", n, err)
		}
	}
	if err := k.ethtool(labVeth, "tx", "off", "tso", "off", "gso", "off", "tx-udp-segmentation", "off"); err != nil {
		return err
	}
	if err := k.ethtool(labPeer, "gro", "off"); err != nil {
		return err
	}
	for _, n := range []string{labBridge, labTap, labVeth, labPeer} {
		if err := h.LinkSetUp(links[n]); err != nil {
			return fmt.Errorf("up %s: %w", n, err)
		}
	}

	pfd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return fmt.Errorf("AF_PACKET socket: %w", err)
	}
	k.pktFD = pfd
	if err := unix.Bind(pfd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: links[labPeer].Attrs().Index}); err != nil {
		return fmt.Errorf("bind AF_PACKET: %w", err)
	}
	if err := unix.SetsockoptInt(pfd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(pfd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20); err != nil {
		return err
	}
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	return unix.SetsockoptTimeval(pfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// ethtool runs "ethtool -K dev args..." on the calling (namespace) thread:
// a child forked from a thread inherits that thread's network namespace.
func (k *kernelLab) ethtool(dev string, args ...string) error {
	out, err := exec.Command("ethtool", append([]string{"-K", dev}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ethtool -K %s %s: %v: %s", dev, strings.Join(args, " "), err, out)
	}
	return nil
}

// SetTxCsum turns checksum offload on gsov0 on or off (TSO stays off).
func (k *kernelLab) SetTxCsum(on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	return k.do(func() error {
		return k.ethtool(labVeth, "tx", v, "tso", "off", "gso", "off", "tx-udp-segmentation", "off")
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send writes one packet (virtio_net_hdr + frame) into the tap.
func (k *kernelLab) send(vh vnet.Hdr, frame []byte) error {
	buf := make([]byte, labHdrLen+len(frame))
	vh.Encode(buf[:labHdrLen])
	copy(buf[labHdrLen:], frame)
	n, err := unix.Write(k.tapFD, buf)
	if err != nil {
		return fmt.Errorf("tap write: %w", err)
	}
	if n != len(buf) {
		return fmt.Errorf("tap write: short write %d of %d", n, len(buf))
	}
	return nil
}

// captured is one frame seen on gsov1.
type captured struct {
	frame  []byte
	status uint32 // tpacket_auxdata.tp_status
}

// drain discards whatever is queued on the capture socket.
func (k *kernelLab) drain() {
	buf := make([]byte, 65536)
	for {
		if _, _, err := unix.Recvfrom(k.pktFD, buf, unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

// capture returns up to want frames whose source MAC ends in mac, waiting
// at most timeout for each.
func (k *kernelLab) capture(want int, mac byte, timeout time.Duration) ([]captured, error) {
	var out []captured
	buf := make([]byte, 65536+4)
	oob := make([]byte, 256)
	deadline := time.Now().Add(timeout)
	for len(out) < want && time.Now().Before(deadline) {
		n, oobn, _, from, err := unix.Recvmsg(k.pktFD, buf[4:], oob, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("recvmsg: %w", err)
		}
		if sll, ok := from.(*unix.SockaddrLinklayer); ok && sll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		frame := buf[4 : 4+n]
		var status uint32
		var tci, tpid uint16
		cms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return out, err
		}
		for _, cm := range cms {
			if cm.Header.Level == unix.SOL_PACKET && cm.Header.Type == unix.PACKET_AUXDATA && len(cm.Data) >= 20 {
				status = binary.NativeEndian.Uint32(cm.Data[0:])
				tci = binary.NativeEndian.Uint16(cm.Data[16:])
				tpid = binary.NativeEndian.Uint16(cm.Data[18:])
			}
		}
		if status&unix.TP_STATUS_VLAN_VALID != 0 {
			if status&unix.TP_STATUS_VLAN_TPID_VALID == 0 {
				tpid = EtherTypeVLAN
			}
			// Re-insert the tag: move the MACs 4 bytes left into the
			// spare room in front of the frame.
			frame = buf[:4+n]
			copy(frame[0:12], frame[4:16])
			binary.BigEndian.PutUint16(frame[12:], tpid)
			binary.BigEndian.PutUint16(frame[14:], tci)
		}
		if len(frame) < 12 || frame[11] != mac|1 || frame[6] != 0x02 {
			continue
		}
		out = append(out, captured{frame: append([]byte(nil), frame...), status: status})
	}
	return out, nil
}
