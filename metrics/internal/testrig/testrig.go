// Package testrig is internal/testing/devrig with the staged guest packets
// and the TX pump of the metrics and admin tests.
package testrig

import (
	"errors"
	"testing"
	"time"

	"github.com/vhostd/vhostd/internal/testing/devrig"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet/vnet"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtqueue"
)

// Rig is an internal/testing/devrig rig with one queue pair, for the
// metrics tests.
type Rig struct {
	*devrig.Rig
	area *devrig.Area
	used []virtqueue.UsedElem
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
	cfg := devrig.Config(name)
	cfg.Backends, cfg.Policy = []backend.Backend{be}, policy
	r := devrig.New(t, cfg, devrig.Options{Frontend: frontend.Options{QueueSize: 256,
		Regions: []frontend.Region{{GPA: 0, Size: 8 << 20}}, Packed: o.Packed, InOrder: o.InOrder}})
	return &Rig{Rig: r, area: r.NewArea(0, 0), used: make([]virtqueue.UsedElem, 1024)}
}

// Port describes the rig's device for the metrics package.
func (r *Rig) Port(kind string) metrics.Port {
	return metrics.Port{Device: r.Dev, Session: metrics.SessionOf(r.Sess, r.Connected), BackendKind: kind}
}

// Stage copies b into guest memory once; TX buffers are read-only to the
// device, so a staged packet can be posted any number of times.
func (r *Rig) Stage(b []byte) []byte { return r.area.CopyIn(b) }

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
	tx := r.Queue(1)
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
	if err := r.PublishKick(q); err != nil {
		r.T.Error(err)
	}
}

// VnetHdr encodes a 12-byte virtio_net_hdr.
var VnetHdr = testpkt.VnetHdr

// frame is the rig's guest: 52:54:00:00:00:01 at 192.0.2.1, DF, to
// 52:54:00:00:00:02 at 192.0.2.2; payload byte(offset*13).
var frame = testpkt.Frame{
	Eth:  testpkt.Ethernet{Dst: []byte{0x52, 0x54, 0, 0, 0, 2}, Src: []byte{0x52, 0x54, 0, 0, 0, 1}},
	IPv4: testpkt.IPv4{DF: true, Src: []byte{192, 0, 2, 1}, Dst: []byte{192, 0, 2, 2}},
	Fill: testpkt.IndexFill(13),
}

// TCPPacket is a TCP/IPv4 frame with payload bytes of data and the
// pseudo-header sum in the checksum field, as a guest sends with
// NEEDS_CSUM (and GSO when payload exceeds the MSS).
func TCPPacket(payload int) []byte {
	f := frame
	f.Csum = testpkt.CsumPartial
	return f.TCP(testpkt.TCP{SrcPort: 40000, DstPort: 5201, Seq: 1, Ack: 1, Flags: testpkt.TCPFlagACK, Window: 65535}, payload)
}

// UDPPacket is a UDP/IPv4 frame of size bytes; with partial the checksum
// field holds the pseudo-header sum (NEEDS_CSUM), else 0 (no checksum).
func UDPPacket(size int, partial bool) []byte {
	f := frame
	if partial {
		f.Csum = testpkt.CsumPartial
	}
	return f.UDP(testpkt.GuestUDP, size-testpkt.EthLen-testpkt.IPv4Len-testpkt.UDPLen)
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
	_, err := r.Rig.PostRx(r.Queue(0), r.area, n, size)
	return err
}

// WaitRx waits until n receive buffers have been used and returns them.
func (r *Rig) WaitRx(n int) ([]virtqueue.UsedElem, error) {
	return devrig.Reap(r.Queue(0), n, 10*time.Second, 100*time.Microsecond, nil)
}
