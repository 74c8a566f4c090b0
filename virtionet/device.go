package virtionet

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/vdev"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Config describes one virtio-net device (one vhost-user port).
type Config struct {
	Name     string            // port name, for logs and metrics
	Offer    uint64            // virtio feature bits offered to the front-end
	MTU      int               // reported with VIRTIO_NET_F_MTU; 0 = backend MTU
	Backends []backend.Backend // one per queue pair; nil for a pair in Peers
	// Peers joins queue pairs guest to guest: Peers[i], when set, is the
	// Link or Switch port of queue pair i, which then has no backend. The
	// pair's TX goes to the port, and its RX ring is bound as the port's
	// portlink.Receiver: peers' TX workers fill it, no reader runs.
	Peers  []portlink.Port
	Logger *slog.Logger

	// TxBatch and RxBatch bound the chains handled per ring pass. 0 = default.
	TxBatch int
	RxBatch int

	// PollMax bounds the adaptive busy-poll window of each queue worker
	// (poll.go): after work a worker keeps looking for more for up to
	// this long before it sleeps. 0 turns polling off.
	PollMax time.Duration

	// Policy is the initial GSO policy (auto, defer or software).
	Policy gso.Policy
}

const (
	defaultTxBatch = 64
	defaultRxBatch = 32
)

// Device is a virtio-net device. It implements vdev.Device: the transport's
// session (vhost-user) tells it when rings start, stop and change state,
// and one QueuePair worker per queue pair moves the packets.
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
	mtu     MTUState
	rarps   atomic.Uint64
}

// MTUState is what became of the front-end's VHOST_USER_NET_SET_MTU, for
// status: the guest's MTU, and whether the backend carries it.
type MTUState struct {
	Requested uint16 `json:"requested"`        // 0: never asked
	Applied   bool   `json:"applied"`          // the backend carries it (or has no MTU to mind)
	Detail    string `json:"detail,omitempty"` // what was done, or why it was refused
}

var (
	_ vdev.Device    = (*Device)(nil)
	_ vdev.Announcer = (*Device)(nil)
)

// New builds a device. It does not touch the backends until features are set.
func New(cfg Config) (*Device, error) {
	n := max(len(cfg.Backends), len(cfg.Peers))
	if n == 0 {
		return nil, errors.New("virtionet: no backend: give one backend per queue pair")
	}
	for i := 0; i < n; i++ {
		be, peer := pairSource(cfg, i)
		if (be == nil) == (peer == nil) {
			return nil, fmt.Errorf("virtionet: queue pair %d: give either a backend or a peer port", i)
		}
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
	for i := 0; i < n; i++ {
		be, peer := pairSource(cfg, i)
		d.pairs = append(d.pairs, newQueuePair(d, i, be, peer))
	}
	// Only pair 0 is attached until the guest enables more (see
	// SetQueueEnabled): before that no one reads the other queues.
	for _, qp := range d.pairs {
		qp.setAttached(qp.index == 0)
	}
	return d, nil
}

// pairSource returns queue pair i's backend or peer port (one is nil).
func pairSource(cfg Config, i int) (backend.Backend, portlink.Port) {
	var be backend.Backend
	var peer portlink.Port
	if i < len(cfg.Backends) {
		be = cfg.Backends[i]
	}
	if i < len(cfg.Peers) {
		peer = cfg.Peers[i]
	}
	return be, peer
}

// SetPolicy switches the port's GSO policy at run time. TX workers read it
// per packet, so the next packet takes the new path and none is lost.
func (d *Device) SetPolicy(p gso.Policy) { d.policy.Store(uint32(p)) }

// Policy returns the port's GSO policy.
func (d *Device) Policy() gso.Policy { return gso.Policy(d.policy.Load()) }

// DeviceFeatures implements vdev.Device.
func (d *Device) DeviceFeatures() uint64 { return d.cfg.Offer }

// Acked returns the features the front-end acked.
func (d *Device) Acked() uint64 { return d.acked.Load() }

// HdrLen returns the virtio_net_hdr length in use (10 or 12).
func (d *Device) HdrLen() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hdrLen
}

// SetFeatures implements vdev.Device. It programs every backend with the
// header length and the offloads the guest can receive (TUNSETOFFLOAD follows
// the guest's acked GUEST_* bits: what the tap may hand us on read must be
// what the guest accepts on its RX ring).
func (d *Device) SetFeatures(acked uint64) error {
	if unknown := acked &^ d.cfg.Offer; unknown != 0 {
		return fmt.Errorf("virtionet: front-end acked features 0x%x that were not offered", unknown)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	hl := vnet.HdrLen(acked)
	for i, qp := range d.pairs {
		be := qp.be
		if be == nil {
			// Joined guest to guest: the receiving side reads the guest's
			// features from its RX worker; nothing to program.
			continue
		}
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

// NumQueues implements vdev.Device: two vrings (RX, TX) per queue pair.
func (d *Device) NumQueues() int { return 2 * len(d.pairs) }

// StartQueue implements vdev.Device. Vring 2k is receiveq(k), 2k+1 is
// transmitq(k) (virtio spec 5.1.2).
func (d *Device) StartQueue(q *vdev.Queue) error {
	qp, isTx, err := d.pairFor(q.Index)
	if err != nil {
		return err
	}
	d.mu.Lock()
	hl := d.hdrLen
	acked := d.acked.Load()
	d.mu.Unlock()
	qp.start(isTx, q, hl, acked)
	return nil
}

// StopQueue implements vdev.Device. It returns once the worker no longer
// touches the ring.
func (d *Device) StopQueue(index int) {
	qp, isTx, err := d.pairFor(index)
	if err != nil {
		return
	}
	qp.stop(isTx)
}

// SetQueueEnabled implements vdev.Device. The worker reads the Queue's
// Enabled flag per batch; this wakes an RX worker parked while disabled and
// attaches or detaches the pair's backend queue.
//
// Why detach: a guest often enables fewer pairs than the port has (Linux
// enables min(queues, vCPUs); `ethtool -L eth0 combined 1`; firmware uses
// pair 0 only). A multiqueue tap spreads flows it has no steering entry for
// (new connections, ARP, flows idle for a while) over every attached queue
// (tun_automq_select_queue), so a queue nobody reads blackholes a share of
// the inbound flows. QEMU's own tap backend detaches the queues of disabled
// pairs the same way (tap_disable). Pair 0 stays attached: every driver uses
// it, and a tap with no attached queue drops everything.
func (d *Device) SetQueueEnabled(index int, on bool) {
	qp, isTx, err := d.pairFor(index)
	if err != nil || isTx {
		return
	}
	if qp.index > 0 {
		qp.setAttached(on)
	}
	qp.wakeRx()
}

// SetMTU implements vdev.Device (VHOST_USER_NET_SET_MTU, sent by QEMU
// when the NIC has host_mtu=N, libvirt <mtu size='N'/>). A tap or macvtap is
// set to the guest's MTU, so the host neither drops the guest's large frames
// at a bridge nor fragments or drops what goes back to the guest. When that
// is refused (no CAP_NET_ADMIN, a macvtap above its lower device's MTU, an
// MTU pinned with --mtu) the request fails and QEMU stops the NIC with
// "MTU not supported by the backend": better than a guest whose large frames
// vanish. Backends without a link MTU (null, guest-to-guest) accept any.
func (d *Device) SetMTU(mtu uint16) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	refuse := func(detail string) error {
		d.mtu = MTUState{Requested: mtu, Detail: detail}
		d.log.Error("front-end MTU refused: QEMU reports \"MTU not supported by the backend\"", "mtu", mtu, "reason", detail)
		return errors.New("virtionet: " + detail)
	}
	if mtu < 68 {
		return refuse(fmt.Sprintf("MTU %d is below the IPv4 minimum of 68", mtu))
	}
	if d.cfg.MTU > 0 && int(mtu) != d.cfg.MTU {
		return refuse(fmt.Sprintf("the guest asked for MTU %d but vhostd was started with --mtu %d: start the guest with host_mtu=%d (libvirt <mtu size='%d'/>) or change --mtu", mtu, d.cfg.MTU, d.cfg.MTU, d.cfg.MTU))
	}
	setter, ok := d.pairs[0].be.(backend.MTUSetter)
	if !ok {
		d.mtu = MTUState{Requested: mtu, Applied: true, Detail: "the backend has no link MTU"}
		d.log.Info("front-end set MTU", "mtu", mtu, "backend", "no link MTU")
		return nil
	}
	// One link for every queue pair: setting it once is enough.
	if err := setter.SetLinkMTU(int(mtu)); err != nil {
		return refuse(fmt.Sprintf("MTU %d not supported by the backend: %v", mtu, err))
	}
	d.mtu = MTUState{Requested: mtu, Applied: true, Detail: fmt.Sprintf("backend link MTU set to %d", mtu)}
	d.log.Info("front-end set MTU; backend link follows", "mtu", mtu)
	return nil
}

// SendRARP implements vdev.Announcer: after a live migration QEMU asks
// the destination's back-end to announce the guest (for guests without
// GUEST_ANNOUNCE), so that bridges and switches learn its new port. The
// announce is what QEMU's own backends send (qemu_announce_self): a RARP
// request broadcast from the guest's MAC, padded to 60 bytes, written to
// the backend of queue pair 0 as if the guest had sent it.
func (d *Device) SendRARP(mac [6]byte) error {
	pkt := make([]byte, d.HdrLen()+60)
	BuildRARP(pkt[d.HdrLen():], mac)
	if err := d.pairs[0].inject([][]byte{pkt}); err != nil {
		return fmt.Errorf("virtionet: RARP announce on port %s: %w", d.cfg.Name, err)
	}
	d.rarps.Add(1)
	return nil
}

// RARPsSent counts announces sent.
func (d *Device) RARPsSent() uint64 { return d.rarps.Load() }

// BuildRARP writes a 60-byte RARP request (RFC 903, op 3) broadcast from mac
// into b, which must hold 60 bytes.
func BuildRARP(b []byte, mac [6]byte) {
	b = b[:60]
	clear(b)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], mac[:])
	b[12], b[13] = 0x80, 0x35 // ETH_P_RARP
	b[14], b[15] = 0, 1       // htype Ethernet
	b[16], b[17] = 0x08, 0    // ptype IPv4
	b[18], b[19] = 6, 4       // hlen, plen
	b[20], b[21] = 0, 3       // op: reverse request
	copy(b[22:28], mac[:])    // sender hardware address
	copy(b[32:38], mac[:])    // target hardware address; IPs stay 0
}

// MTU reports what became of the front-end's MTU request.
func (d *Device) MTU() MTUState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mtu
}

// Reset implements vdev.Device: stop every worker, forget features and
// detach every backend queue but pair 0's (no guest reads them now).
func (d *Device) Reset() {
	for _, qp := range d.pairs {
		qp.stop(true)
		qp.stop(false)
		if qp.index > 0 {
			qp.setAttached(false)
		}
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
