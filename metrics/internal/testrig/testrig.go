// Package testrig runs a virtionet.Device behind a real vhost-user session
// on a unix socketpair, driven by the Go front-end in QEMU's place, for the
// metrics and admin tests (the pattern of virtionet/harness_test.go).
package testrig

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vhostd/vhostd/internal/unixpair"
	"github.com/vhostd/vhostd/virtionet/vnet"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtqueue"
)

// Rig is a virtionet.Device served by a vhostuser.Session over a unix
// socketpair, driven by the Go front-end in QEMU's place (the pattern of
// virtionet/harness_test.go).
type Rig struct {
	t         testing.TB
	Dev       *virtionet.Device
	fe        *frontend.Frontend
	sess      *vhostuser.Session
	connected atomic.Bool
	done      chan error
	cancel    context.CancelFunc
	next      uint64
	used      []virtqueue.UsedElem
}

// New starts a rig with one queue pair over be; the front-end acks every
// offered feature but RING_PACKED and IN_ORDER (split rings, as QEMU's
// default). It is torn down at the end of the test.
func New(t testing.TB, name string, be backend.Backend, policy gso.Policy) *Rig {
	t.Helper()
	return NewWith(t, name, be, policy, Options{})
}

// Options choose the ring layout of a rig.
type Options struct {
	Packed  bool // ack VIRTIO_F_RING_PACKED: packed rings
	InOrder bool // ack VIRTIO_F_IN_ORDER
}

// NewWith is New with the ring layout chosen by o.
func NewWith(t testing.TB, name string, be backend.Backend, policy gso.Policy, o Options) *Rig {
	t.Helper()
	offer, _ := virtionet.Offer(virtionet.BackendOffloads{TxUSO: true}, virtionet.Toggles{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dev, err := virtionet.New(virtionet.Config{Name: name, Offer: uint64(offer),
		Backends: []backend.Backend{be}, Logger: log, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	a, b, err := unixpair.New()
	if err != nil {
		t.Fatal(err)
	}
	sess, err := vhostuser.NewSession(a, dev, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Rig{t: t, Dev: dev, sess: sess, done: make(chan error, 1), cancel: cancel,
		used: make([]virtqueue.UsedElem, 1024)}
	r.connected.Store(true)
	go func() {
		err := sess.Serve(ctx)
		r.connected.Store(false)
		r.done <- err
	}()
	r.fe = frontend.New(b)
	if err := r.fe.Handshake(frontend.Options{QueueSize: 256, Regions: []frontend.Region{{GPA: 0, Size: 8 << 20}},
		Packed: o.Packed, InOrder: o.InOrder}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r
}

func (r *Rig) close() {
	r.fe.Close()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		r.t.Error("session did not end after the front-end closed")
	}
	r.cancel()
}

// Port describes the rig's device for the metrics package.
func (r *Rig) Port(kind string) metrics.Port {
	return metrics.Port{Device: r.Dev, Session: metrics.SessionOf(r.sess, r.connected.Load), BackendKind: kind}
}

// Stage copies b into guest memory once; TX buffers are read-only to the
// device, so a staged packet can be posted any number of times.
func (r *Rig) Stage(b []byte) []byte {
	g := r.fe.Buffer(r.next, uint64(len(b)))
	r.next += uint64(len(b)+63) &^ 63
	copy(g, b)
	return g
}

// Packet is a staged TX packet: header buffer then frame buffer.
type Packet [][]byte

// StagePacket stages a header and a frame.
func (r *Rig) StagePacket(hdr []byte, frame []byte) Packet {
	return Packet{r.Stage(hdr), r.Stage(frame)}
}

// Pump posts n TX packets, pkts[pick(i)] for the i-th, reaping completions
// as the ring fills, and returns once every one of them has completed. It
// must be the only user of the transmit queue.
func (r *Rig) Pump(n int, pkts []Packet, pick func(i int) int) error {
	tx := r.fe.Queues[1]
	outstanding := 0
	reap := func() {
		k := tx.Ring.Reap(r.used)
		outstanding -= k
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; i < n; {
		_, err := tx.Ring.Add(pkts[pick(i)], nil)
		if errors.Is(err, virtqueue.ErrDriverFull) {
			r.publish(tx)
			reap()
			if time.Now().After(deadline) {
				return errors.New("transmit ring stayed full for 20s")
			}
			time.Sleep(20 * time.Microsecond)
			continue
		}
		if err != nil {
			return err
		}
		outstanding++
		i++
		if i%16 == 0 {
			r.publish(tx)
			reap()
		}
	}
	r.publish(tx)
	for outstanding > 0 {
		reap()
		if time.Now().After(deadline) {
			return errors.New("TX completions missing after 20s")
		}
		time.Sleep(50 * time.Microsecond)
	}
	return nil
}

func (r *Rig) publish(q *frontend.Queue) {
	if q.Ring.Publish() {
		if err := q.Kick(); err != nil {
			r.t.Error(err)
		}
	}
}

// VnetHdr encodes a 12-byte virtio_net_hdr.
func VnetHdr(flags, gsoType uint8, gsoSize, csumStart, csumOffset uint16) []byte {
	h := vnet.Hdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset}
	b := make([]byte, 12)
	h.Encode(b)
	return b
}

// ipv4Frame lays out Ethernet + IPv4 (protocol proto) for a frame of size
// bytes and returns it with the L4 header at offset 34.
func ipv4Frame(size int, proto byte) []byte {
	f := make([]byte, size)
	copy(f[0:6], []byte{0x52, 0x54, 0, 0, 0, 2})
	copy(f[6:12], []byte{0x52, 0x54, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[6] = 0x40 // DF
	ip[8], ip[9] = 64, proto
	copy(ip[12:], []byte{192, 0, 2, 1})
	copy(ip[16:], []byte{192, 0, 2, 2})
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip, 0))
	for i := 34; i < size; i++ {
		f[i] = byte(i * 13)
	}
	return f
}

// TCPPacket is a TCP/IPv4 frame with payload bytes of data and the
// pseudo-header sum in the checksum field, as a guest sends with
// NEEDS_CSUM (and GSO when payload exceeds the MSS).
func TCPPacket(payload int) []byte {
	size := 14 + 20 + 20 + payload
	f := ipv4Frame(size, 6)
	tcp := f[34:54]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 1)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x10 // ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	binary.BigEndian.PutUint16(tcp[16:], 0)
	binary.BigEndian.PutUint16(tcp[18:], 0)
	binary.BigEndian.PutUint16(tcp[16:], vnet.PseudoHeaderSum(6, f[26:30], f[30:34], uint32(size-34)))
	return f
}

// UDPPacket is a UDP/IPv4 frame; with partial the checksum field holds the
// pseudo-header sum (NEEDS_CSUM), else 0 (no checksum).
func UDPPacket(size int, partial bool) []byte {
	f := ipv4Frame(size, 17)
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], 1234)
	binary.BigEndian.PutUint16(udp[2:], 5678)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-34))
	binary.BigEndian.PutUint16(udp[6:], 0)
	if partial {
		binary.BigEndian.PutUint16(udp[6:], vnet.PseudoHeaderSum(17, f[26:30], f[30:34], uint32(size-34)))
	}
	return f
}

// MSS is the gso_size of the staged super-packets.
const MSS = 1448

// Typical guest packets.
var (
	HdrPlain   = VnetHdr(0, 0, 0, 0, 0)
	HdrUDPCsum = VnetHdr(vnet.FlagNeedsCsum, 0, 0, 34, 6)
	HdrTSO4    = VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, MSS, 34, 16)
	HdrTSO4ECN = VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4|vnet.GSOECN, MSS, 34, 16)
	HdrBadGSO  = VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, 0, 34, 16) // gso_size 0
	SmallTSO4  = TCPPacket(1000)                                       // fits one segment: small_gso
	TSO4_8K    = TCPPacket(8000)
	TSO4_30K   = TCPPacket(30000)
	UDPSmall   = UDPPacket(200, false)
	UDPPartial = UDPPacket(300, true)
	// CapsLow: every offload but TSO_ECN and UFO, gso_max_size 16384.
	CapsLow = backend.Capabilities{
		Offloads:   vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6 | vnet.OffloadUSO,
		GSOMaxSize: 16384, GSOMaxSegs: 65535, MTU: 1500,
	}
	// CapsNone: no offload at all.
	CapsNone = backend.Capabilities{GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500}
)

// PumpUntil posts TX packets like Pump until stop is closed, then waits for
// every completion, and returns how many it posted.
func (r *Rig) PumpUntil(stop <-chan struct{}, pkts []Packet, pick func(i int) int) (int, error) {
	const chunk = 64
	total := 0
	for {
		select {
		case <-stop:
			return total, nil
		default:
		}
		if err := r.Pump(chunk, pkts, func(i int) int { return pick(total + i) }); err != nil {
			return total, err
		}
		total += chunk
	}
}

// PostRx posts n device-writable receive buffers of size bytes each. It
// must not run concurrently with ReapRx.
func (r *Rig) PostRx(n, size int) error {
	rx := r.fe.Queues[0]
	for i := 0; i < n; i++ {
		b := r.fe.Buffer(r.next, uint64(size))
		r.next += uint64(size+63) &^ 63
		if _, err := rx.Ring.Add(nil, [][]byte{b}); err != nil {
			return err
		}
	}
	r.publish(rx)
	return nil
}

// WaitRx waits until n receive buffers have been used and returns them.
func (r *Rig) WaitRx(n int) ([]virtqueue.UsedElem, error) {
	rx := r.fe.Queues[0]
	buf := make([]virtqueue.UsedElem, 256)
	var got []virtqueue.UsedElem
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n {
		k := rx.Ring.Reap(buf)
		got = append(got, buf[:k]...)
		if k == 0 {
			if time.Now().After(deadline) {
				return got, fmt.Errorf("%d of %d receive buffers used after 10s", len(got), n)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	return got, nil
}
