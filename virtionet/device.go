package virtionet

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/vhostuser"
)

// Config describes one virtio-net device (one vhost-user port).
type Config struct {
	Name     string            // port name, for logs and metrics
	Offer    uint64            // virtio feature bits offered to the front-end
	MTU      int               // reported with VIRTIO_NET_F_MTU; 0 = backend MTU
	Backends []backend.Backend // one per queue pair
	Logger   *slog.Logger

	// TxBatch and RxBatch bound the chains handled per ring pass. 0 = default.
	TxBatch int
	RxBatch int

	// Policy is the initial GSO policy (auto, defer or software).
	Policy gso.Policy
}

const (
	defaultTxBatch = 64
	defaultRxBatch = 32
)

// Device is a virtio-net device served over vhost-user. It implements
// vhostuser.Device: the session tells it when rings start, stop and change
// state, and one QueuePair worker per queue pair moves the packets.
type Device struct {
	cfg Config
	log *slog.Logger

	// mu serialises control-path calls (they come from the one session
	// goroutine, but Stats/Status may be read from others).
	mu      sync.Mutex
	acked   atomic.Uint64
	capture atomic.Pointer[Capture]
	policy  atomic.Uint32 // gso.Policy, read per packet: switching takes effect on the next packet
	hdrLen  int
	pairs   []*QueuePair
}

var _ vhostuser.Device = (*Device)(nil)

// New builds a device. It does not touch the backends until features are set.
func New(cfg Config) (*Device, error) {
	if len(cfg.Backends) == 0 {
		return nil, errors.New("virtionet: no backend: give one backend per queue pair")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TxBatch <= 0 {
		cfg.TxBatch = defaultTxBatch
	}
	if cfg.RxBatch <= 0 {
		cfg.RxBatch = defaultRxBatch
	}
	d := &Device{cfg: cfg, log: cfg.Logger.With("port", cfg.Name), hdrLen: 12}
	d.policy.Store(uint32(cfg.Policy))
	for i, be := range cfg.Backends {
		d.pairs = append(d.pairs, newQueuePair(d, i, be))
	}
	return d, nil
}

// SetPolicy switches the port's GSO policy at run time. TX workers read it
// per packet, so the next packet takes the new path and none is lost.
func (d *Device) SetPolicy(p gso.Policy) { d.policy.Store(uint32(p)) }

// Policy returns the port's GSO policy.
func (d *Device) Policy() gso.Policy { return gso.Policy(d.policy.Load()) }

// DeviceFeatures implements vhostuser.Device.
func (d *Device) DeviceFeatures() uint64 { return d.cfg.Offer }

// Acked returns the features the front-end acked.
func (d *Device) Acked() uint64 { return d.acked.Load() }

// HdrLen returns the virtio_net_hdr length in use (10 or 12).
func (d *Device) HdrLen() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hdrLen
}

// SetFeatures implements vhostuser.Device. It programs every backend with the
// header length and the offloads the guest can receive (TUNSETOFFLOAD follows
// the guest's acked GUEST_* bits: what the tap may hand us on read must be
// what the guest accepts on its RX ring).
func (d *Device) SetFeatures(acked uint64) error {
	if unknown := acked &^ d.cfg.Offer; unknown != 0 {
		return fmt.Errorf("virtionet: front-end acked features 0x%x that were not offered", unknown)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	hl := HdrLen(acked)
	for i, be := range d.cfg.Backends {
		if err := be.SetVnetHdrLen(hl); err != nil {
			return fmt.Errorf("virtionet: queue pair %d: set vnet header length %d: %w", i, hl, err)
		}
		if err := be.SetOffload(acked); err != nil {
			return fmt.Errorf("virtionet: queue pair %d: set offloads for guest features 0x%x: %w", i, acked, err)
		}
	}
	d.hdrLen = hl
	d.acked.Store(acked)
	return nil
}

// NumQueues implements vhostuser.Device: two vrings (RX, TX) per queue pair.
func (d *Device) NumQueues() int { return 2 * len(d.pairs) }

// StartQueue implements vhostuser.Device. Vring 2k is receiveq(k), 2k+1 is
// transmitq(k) (virtio spec 5.1.2).
func (d *Device) StartQueue(q *vhostuser.Queue) error {
	qp, isTx, err := d.pairFor(q.Index)
	if err != nil {
		return err
	}
	d.mu.Lock()
	hl := d.hdrLen
	acked := d.acked.Load()
	d.mu.Unlock()
	if isTx {
		qp.startTx(q, hl, acked)
	} else {
		qp.startRx(q, hl, acked)
	}
	return nil
}

// StopQueue implements vhostuser.Device. It returns once the worker no longer
// touches the ring.
func (d *Device) StopQueue(index int) {
	qp, isTx, err := d.pairFor(index)
	if err != nil {
		return
	}
	if isTx {
		qp.stopTx()
	} else {
		qp.stopRx()
	}
}

// SetQueueEnabled implements vhostuser.Device. The worker reads the Queue's
// Enabled flag per batch; this only wakes an RX worker parked while disabled.
func (d *Device) SetQueueEnabled(index int, on bool) {
	qp, isTx, err := d.pairFor(index)
	if err != nil || isTx {
		return
	}
	qp.wakeRx()
}

// SetMTU implements vhostuser.Device (VHOST_USER_NET_SET_MTU).
func (d *Device) SetMTU(mtu uint16) error {
	if mtu < 68 {
		return fmt.Errorf("virtionet: MTU %d below the IPv4 minimum of 68", mtu)
	}
	d.log.Info("front-end set MTU", "mtu", mtu)
	return nil
}

// Reset implements vhostuser.Device: stop every worker and forget features.
func (d *Device) Reset() {
	for _, qp := range d.pairs {
		qp.stopTx()
		qp.stopRx()
	}
	d.acked.Store(0)
}

// QueuePairs returns the queue pairs (for stats and status).
func (d *Device) QueuePairs() []*QueuePair { return d.pairs }

// Name returns the port name.
func (d *Device) Name() string { return d.cfg.Name }

func (d *Device) pairFor(index int) (*QueuePair, bool, error) {
	if index < 0 || index >= 2*len(d.pairs) {
		return nil, false, fmt.Errorf("virtionet: vring %d out of range (device has %d)", index, 2*len(d.pairs))
	}
	return d.pairs[index/2], index%2 == 1, nil
}
