package backend

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	_ Backend = (*Null)(nil)
)

func TestCheckTapFlags(t *testing.T) {
	want := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := checkTapFlags("t", want|unix.IFF_PERSIST, want); err != nil {
		t.Errorf("persist must not matter: %v", err)
	}
	for _, got := range []uint16{
		want &^ unix.IFF_VNET_HDR,              // lost the vnet header
		want | unix.IFF_MULTI_QUEUE,            // a queue of a multiqueue device
		unix.IFF_TUN | unix.IFF_NO_PI | 0x4000, // a tun, not a tap
	} {
		err := checkTapFlags("t", got, want)
		if err == nil || !strings.Contains(err.Error(), "ip link del t") {
			t.Errorf("flags %#x: %v", got, err)
		}
	}
}

func TestPacketError(t *testing.T) {
	err := error(&PacketError{Index: 3, Err: unix.EINVAL})
	var errno unix.Errno
	if !errors.As(err, &errno) || errno != unix.EINVAL || !errors.Is(err, unix.EINVAL) {
		t.Errorf("PacketError does not unwrap to the errno")
	}
	if !strings.Contains(err.Error(), "packet 3") {
		t.Errorf("message %q lacks the index", err)
	}
}

func TestNullWriteCounts(t *testing.T) {
	n := NewNull(NullConfig{})
	if n.Caps() != DefaultNullCaps {
		t.Errorf("caps %+v", n.Caps())
	}
	pkts := [][][]byte{{make([]byte, 12), make([]byte, 100)}, {make([]byte, 12), make([]byte, 50), nil}}
	if k, err := n.WritePackets(pkts); k != 2 || err != nil {
		t.Fatalf("WritePackets = %d %v", k, err)
	}
	if p, b := n.Written(); p != 2 || b != 174 {
		t.Errorf("Written = %d packets %d bytes, want 2, 174", p, b)
	}
	allocs := testing.AllocsPerRun(100, func() { n.WritePackets(pkts) })
	if allocs != 0 {
		t.Errorf("Null.WritePackets allocates %.1f", allocs)
	}
	if err := n.SetVnetHdrLen(10); err != nil || n.VnetHdrLen() != 10 {
		t.Errorf("SetVnetHdrLen(10): %v %d", err, n.VnetHdrLen())
	}
	if err := n.SetVnetHdrLen(14); !errors.Is(err, ErrVnetHdrLen) {
		t.Errorf("SetVnetHdrLen(14): %v", err)
	}
	n.SetOffload(0x82)
	if n.GuestFeatures() != 0x82 {
		t.Errorf("GuestFeatures %#x", n.GuestFeatures())
	}
	n.Close()
	if _, err := n.WritePackets(pkts); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
}

func TestNullReadBlocksUntilDeadlineOrClose(t *testing.T) {
	n := NewNull(NullConfig{})
	bufs, sizes := [][]byte{make([]byte, 64)}, []int{0}
	errc := make(chan error, 1)
	go func() { _, err := n.ReadPackets(bufs, sizes, 0); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	n.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after deadline: %v", err)
	}
	n.SetReadDeadline(time.Time{})
	go func() { _, err := n.ReadPackets(bufs, sizes, 0); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	n.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadPackets")
	}
}

func TestNullReadTemplate(t *testing.T) {
	tmpl := append(make([]byte, 12), []byte("frame bytes")...)
	n := NewNull(NullConfig{RXTemplate: tmpl})
	bufs := [][]byte{make([]byte, 64), make([]byte, 64), make([]byte, 10)}
	sizes := make([]int, 3)
	k, err := n.ReadPackets(bufs, sizes, 2)
	if k != 3 || err != nil {
		t.Fatalf("ReadPackets = %d %v", k, err)
	}
	if sizes[0] != len(tmpl) || !bytes.Equal(bufs[1][2:2+sizes[1]], tmpl) || sizes[2] != 8 {
		t.Errorf("sizes %v", sizes)
	}
	if n.ReadCount() != 3 {
		t.Errorf("ReadCount %d", n.ReadCount())
	}
	allocs := testing.AllocsPerRun(100, func() { n.ReadPackets(bufs, sizes, 0) })
	if allocs != 0 {
		t.Errorf("template read allocates %.1f", allocs)
	}
	n.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := n.ReadPackets(bufs, sizes, 0); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("past deadline: %v", err)
	}
}
