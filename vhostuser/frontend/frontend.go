// Package frontend is a vhost-user front-end written in Go: it plays QEMU's
// role against a back-end for tests and benchmarks. It creates memfd guest
// memory, lays out split rings with virtqueue.Driver (or packed rings with
// virtqueue.PackedDriver when Options.Packed asks for VIRTIO_F_RING_PACKED),
// runs the handshake in QEMU 7.2's order or in DPDK virtio-user's, posts
// buffers, kicks and reaps.
//
// It also lets a test misbehave on purpose: SendRaw and WriteRaw put any
// bytes and fds on the socket, and each Queue's Driver (or Packed) writes
// raw descriptors and ring indices.
package frontend

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/virtqueue"
)

// Order is the sequence of messages Handshake sends.
type Order int

const (
	// OrderQEMU is QEMU 7.2's order (issue 2): GET_FEATURES,
	// GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_OWNER, SET_VRING_CALL,
	// SET_VRING_ERR, SET_VRING_ENABLE, SET_FEATURES, GET/SET_STATUS,
	// SET_MEM_TABLE, then per ring NUM, BASE, ADDR, KICK.
	OrderQEMU Order = iota
	// OrderVirtioUser is DPDK virtio-user's order: SET_OWNER first,
	// SET_VRING_CALL before SET_FEATURES and SET_MEM_TABLE, guest addresses
	// equal to its own virtual addresses, no SET_VRING_ERR.
	OrderVirtioUser
)

// Virtio device status bits (virtio 1.x §2.1).
const (
	StatusAcknowledge = 1
	StatusDriver      = 2
	StatusDriverOK    = 4
	StatusFeaturesOK  = 8
)

// Options configure Handshake. Zero values pick the defaults noted.
type Options struct {
	Order     Order
	NumQueues int    // vrings; default 2 (one queue pair)
	QueueSize uint16 // default 256
	// Features are the virtio features the front-end supports; it acks
	// offered & Features. 0 means every offered feature. RING_PACKED and
	// IN_ORDER are acked only when Packed and InOrder ask for them (as
	// QEMU's packed=on and in_order=on), LOG_ALL only while logging.
	Features uint64
	// Packed acks VIRTIO_F_RING_PACKED when offered: the rings are packed
	// (Queue.Packed). QueueSize may then be any value in 1..32768.
	Packed bool
	// InOrder acks VIRTIO_F_IN_ORDER when offered: the drivers expect the
	// device to use buffers in order, and expand a used entry that stands
	// for a batch.
	InOrder bool
	// ProtocolFeatures the front-end supports; it acks offered & these.
	// 0 means every offered one.
	ProtocolFeatures vhostuser.ProtocolFeatures
	// Legacy leaves PROTOCOL_FEATURES (bit 30) unacked and skips the
	// protocol-feature messages, like a pre-protocol-features front-end.
	Legacy bool
	// Regions lays out guest memory; default one 4 MiB region at GPA 0.
	// The rings live at the start of region 0.
	Regions []Region
	// MemSlots sends ADD_MEM_REG per region instead of SET_MEM_TABLE
	// (needs CONFIGURE_MEM_SLOTS).
	MemSlots bool
	// NoKickFd sends SET_VRING_KICK with NOFD: the back-end must poll.
	NoKickFd bool
	// IndirectMax > 0 reserves indirect tables for Driver.AddIndirect.
	IndirectMax uint16
	// Timeout bounds the wait for each reply; default 5 s.
	Timeout time.Duration
}

func (o *Options) setDefaults() {
	if o.NumQueues == 0 {
		o.NumQueues = 2
	}
	if o.QueueSize == 0 {
		o.QueueSize = 256
	}
	if o.Regions == nil {
		o.Regions = []Region{{GPA: 0, Size: 4 << 20}}
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
}

// ErrNack is returned when the back-end answers a NEED_REPLY request with a
// non-zero status.
var ErrNack = errors.New("frontend: back-end reported failure (non-zero REPLY_ACK status)")

// DriverRing is the driver side of a ring, split (*virtqueue.Driver) or
// packed (*virtqueue.PackedDriver): what a test needs to post, publish and
// reap buffers whatever the layout. Buffer ids are split-ring heads or
// packed-ring buffer ids.
type DriverRing interface {
	Size() uint16
	NumFree() int
	Add(out, in [][]byte) (id uint16, err error)
	AddSegs(out, in []virtqueue.Seg) (id uint16, err error)
	AddIndirect(out, in [][]byte) (id uint16, err error)
	AddIndirectSegs(out, in []virtqueue.Seg) (id uint16, err error)
	Publish() (kick bool)
	Reap(out []virtqueue.UsedElem) int
	EnableInterrupts() (more bool)
	DisableInterrupts()
	GuestAddr(b []byte) (uint64, bool)
	RingAddrs() (desc, driverArea, deviceArea uint64)
}

var (
	_ DriverRing = (*virtqueue.Driver)(nil)
	_ DriverRing = (*virtqueue.PackedDriver)(nil)
	_ DriverRing = splitInOrder{}
)

// splitInOrder is a split driver that reaps with ReapInOrder
// (VIRTIO_F_IN_ORDER: a used entry may stand for a batch of chains).
type splitInOrder struct{ *virtqueue.Driver }

func (d splitInOrder) Reap(out []virtqueue.UsedElem) int { return d.ReapInOrder(out) }

// Queue is the front-end side of one vring.
type Queue struct {
	Index int
	// Ring is the driver, whichever the layout; Driver (split) or Packed
	// (packed) is the same driver with its layout's raw accessors, the
	// other one is nil.
	Ring   DriverRing
	Driver *virtqueue.Driver
	Packed *virtqueue.PackedDriver
	off    uint64 // offset of the ring's area in region 0
	indOff uint64 // offset of its indirect tables (IndirectMax > 0)
	// The front-end's ends of the eventfds; the back-end got duplicates.
	KickFd, CallFd, ErrFd int
	kick                  *virtqueue.Call // signals KickFd
	call                  *virtqueue.Kick // waits on CallFd
}

// Kick signals the kick eventfd.
func (q *Queue) Kick() error { return q.kick.Signal() }

// WaitCall waits up to timeout for the back-end to signal the call eventfd.
func (q *Queue) WaitCall(timeout time.Duration) error {
	q.call.SetDeadline(time.Now().Add(timeout))
	defer q.call.SetDeadline(time.Time{})
	return q.call.Wait()
}

func (q *Queue) close() {
	if q.kick != nil {
		q.kick.Close()
	}
	if q.call != nil {
		q.call.Close()
	}
	if q.ErrFd >= 0 {
		unix.Close(q.ErrFd)
	}
}

// Frontend is one connection to a vhost-user back-end.
type Frontend struct {
	conn *vhostuser.Conn
	msg  vhostuser.Message

	// Timeout bounds the wait for each reply.
	Timeout time.Duration
	// NeedReply makes Request set NEED_REPLY on every request that has no
	// mandatory reply. Handshake turns it on when REPLY_ACK is negotiated.
	NeedReply bool

	Mem    *Memory
	Queues []*Queue
	// DataOffset is where free space starts in Mem.Regions[0] after the
	// rings and indirect tables: buffers may go there.
	DataOffset uint64

	Opts            Options
	Offered         uint64 // GET_FEATURES
	Acked           uint64 // SET_FEATURES
	OfferedProtocol vhostuser.ProtocolFeatures
	Protocol        vhostuser.ProtocolFeatures // SET_PROTOCOL_FEATURES
	QueueNum        uint64                     // GET_QUEUE_NUM, if MQ
	MaxMemSlots     uint64                     // GET_MAX_MEM_SLOTS, if CONFIGURE_MEM_SLOTS

	layout ringLayout // what the drivers were built for
}

// ringLayout is what decides how the drivers are built.
type ringLayout struct {
	eventIdx, packed, inOrder bool
}

// Dial connects to a back-end listening on path.
func Dial(path string) (*Frontend, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("frontend: connecting to %s: %w", path, err)
	}
	return New(c), nil
}

// New uses an established connection (for instance one accepted when the
// back-end runs in client mode).
func New(c *net.UnixConn) *Frontend {
	return &Frontend{conn: vhostuser.NewConn(c), Timeout: 5 * time.Second}
}

// Close closes the connection, the eventfds and the guest memory.
func (f *Frontend) Close() error {
	var err error
	if f.conn != nil {
		err = f.conn.Close()
	}
	f.release()
	return err
}

// release frees what Setup made: eventfds and guest memory.
func (f *Frontend) release() {
	for _, q := range f.Queues {
		q.close()
	}
	f.Queues = nil
	if f.Mem != nil {
		f.Mem.Close()
		f.Mem = nil
	}
}

// Conn returns the underlying connection.
func (f *Frontend) Conn() *vhostuser.Conn { return f.conn }

// --- raw access ---

// SendRaw sends one message with exactly the given flags, payload and fds;
// the header's size is len(payload). Nothing is validated.
func (f *Frontend) SendRaw(req vhostuser.Request, flags vhostuser.Flags, payload []byte, fds []int) error {
	b := vhostuser.Header{Request: req, Flags: flags, Size: uint32(len(payload))}.Encode(nil)
	return f.conn.WriteRaw(append(b, payload...), fds)
}

// WriteRaw puts arbitrary bytes (for instance a truncated or lying header)
// on the socket, with fds.
func (f *Frontend) WriteRaw(b []byte, fds []int) error { return f.conn.WriteRaw(b, fds) }

// ReadReply reads one message from the back-end, waiting at most
// f.Timeout. The payload is a copy; any fds are closed.
func (f *Frontend) ReadReply() (vhostuser.Header, []byte, error) {
	f.conn.UnixConn().SetReadDeadline(time.Now().Add(f.Timeout))
	defer f.conn.UnixConn().SetReadDeadline(time.Time{})
	if err := f.conn.ReadMessage(&f.msg); err != nil {
		return vhostuser.Header{}, nil, fmt.Errorf("frontend: reading reply: %w", err)
	}
	f.msg.CloseFds()
	return f.msg.Header, append([]byte(nil), f.msg.Payload...), nil
}

// Request sends req with payload and fds and waits for the reply the
// protocol owes: the value for requests with a mandatory reply, the status
// when NEED_REPLY is set (a non-zero status gives ErrNack). It returns the
// reply payload (nil when none was owed).
func (f *Frontend) Request(req vhostuser.Request, payload []byte, fds []int) ([]byte, error) {
	flags := vhostuser.Version1
	mandatory := OwedReply(req) != ReplyNone
	ack := f.NeedReply && !mandatory
	if ack {
		flags |= vhostuser.FlagNeedReply
	}
	if err := f.SendRaw(req, flags, payload, fds); err != nil {
		return nil, fmt.Errorf("frontend: sending %v: %w", req, err)
	}
	if !mandatory && !ack {
		return nil, nil
	}
	h, reply, err := f.ReadReply()
	if err != nil {
		return nil, fmt.Errorf("frontend: %v: %w", req, err)
	}
	if h.Request != req || h.Flags&vhostuser.FlagReply == 0 {
		return nil, fmt.Errorf("frontend: %v: got reply header %v flags %v", req, h.Request, h.Flags)
	}
	if ack {
		var st vhostuser.U64
		if err := st.Decode(reply); err != nil {
			return nil, fmt.Errorf("frontend: %v: REPLY_ACK: %w", req, err)
		}
		if st != 0 {
			return nil, fmt.Errorf("%w: %v status %d", ErrNack, req, uint64(st))
		}
		return nil, nil
	}
	return reply, nil
}

// GetU64 sends a request without payload and decodes its u64 reply.
func (f *Frontend) GetU64(req vhostuser.Request) (uint64, error) {
	reply, err := f.Request(req, nil, nil)
	if err != nil {
		return 0, err
	}
	var v vhostuser.U64
	if err := v.Decode(reply); err != nil {
		return 0, fmt.Errorf("frontend: %v reply: %w", req, err)
	}
	return uint64(v), nil
}

// SetU64 sends a request with a u64 payload.
func (f *Frontend) SetU64(req vhostuser.Request, v uint64) error {
	_, err := f.Request(req, vhostuser.U64(v).Encode(nil), nil)
	return err
}

// SetVringState sends SET_VRING_NUM/BASE/ENABLE-style requests.
func (f *Frontend) SetVringState(req vhostuser.Request, index, num uint32) error {
	_, err := f.Request(req, vhostuser.VringState{Index: index, Num: num}.Encode(nil), nil)
	return err
}

// SetVringEnable sends SET_VRING_ENABLE.
func (f *Frontend) SetVringEnable(index int, on bool) error {
	n := uint32(0)
	if on {
		n = 1
	}
	return f.SetVringState(vhostuser.ReqSetVringEnable, uint32(index), n)
}

// SetVringFd sends SET_VRING_KICK/CALL/ERR for ring index with fd, or with
// NOFD when fd < 0.
func (f *Frontend) SetVringFd(req vhostuser.Request, index int, fd int) error {
	v := vhostuser.VringFile{Index: uint8(index), NoFd: fd < 0}
	var fds []int
	if fd >= 0 {
		fds = []int{fd}
	}
	_, err := f.Request(req, v.Encode(nil), fds)
	return err
}

// GetVringBase stops ring index and returns its vring base: the next avail
// index of a split ring, the encoded virtqueue.PackedState of a packed one.
func (f *Frontend) GetVringBase(index int) (uint32, error) {
	reply, err := f.Request(vhostuser.ReqGetVringBase, vhostuser.VringState{Index: uint32(index)}.Encode(nil), nil)
	if err != nil {
		return 0, err
	}
	var st vhostuser.VringState
	if err := st.Decode(reply); err != nil {
		return 0, fmt.Errorf("frontend: GET_VRING_BASE reply: %w", err)
	}
	if st.Index != uint32(index) || !f.layout.packed && st.Num > 0xffff {
		return 0, fmt.Errorf("frontend: GET_VRING_BASE(%d) answered %+v", index, st)
	}
	return st.Num, nil
}

// SetMemTable sends the whole memory table with one fd per region.
func (f *Frontend) SetMemTable() error {
	t := f.Mem.Table()
	fds := make([]int, t.NRegions)
	for i := range fds {
		fds[i] = f.Mem.Fd()
	}
	_, err := f.Request(vhostuser.ReqSetMemTable, t.Encode(nil), fds)
	return err
}

// AddMemReg sends ADD_MEM_REG for region i.
func (f *Frontend) AddMemReg(i int) error {
	p := vhostuser.SingleMemRegion{Region: f.Mem.Regions[i].Desc()}
	_, err := f.Request(vhostuser.ReqAddMemReg, p.Encode(nil), []int{f.Mem.Fd()})
	return err
}

// RemMemReg sends REM_MEM_REG for region i (no fd).
func (f *Frontend) RemMemReg(i int) error {
	p := vhostuser.SingleMemRegion{Region: f.Mem.Regions[i].Desc()}
	_, err := f.Request(vhostuser.ReqRemMemReg, p.Encode(nil), nil)
	return err
}

// SetVringAddr sends ring q's addresses: the UVAs of its rings (the
// back-end translates SET_VRING_ADDR by user address). For a packed ring
// they are the descriptor ring and the driver and device event areas.
func (f *Frontend) SetVringAddr(q *Queue) error {
	desc, avail, used := q.Ring.RingAddrs()
	r0 := f.Mem.Regions[0]
	toUVA := func(gpa uint64) uint64 { return gpa - r0.GPA + r0.UVA }
	a := vhostuser.VringAddr{Index: uint32(q.Index), Desc: toUVA(desc), Used: toUVA(used), Avail: toUVA(avail)}
	_, err := f.Request(vhostuser.ReqSetVringAddr, a.Encode(nil), nil)
	return err
}

// --- setup and handshakes ---

// Setup creates guest memory, the rings and the eventfds without sending
// anything. Handshake calls it; tests that send their own sequence call it
// directly.
func (f *Frontend) Setup(opts Options) error {
	if f.Mem != nil {
		return errors.New("frontend: already set up")
	}
	opts.setDefaults()
	f.Opts = opts
	f.Timeout = opts.Timeout
	mem, err := NewMemory(opts.Regions, opts.Order == OrderVirtioUser)
	if err != nil {
		return err
	}
	f.Mem = mem
	r0 := mem.Regions[0]
	// Each ring's area holds either layout, so the rings stay where they
	// are when negotiation picks the other one (buildDrivers).
	stride := alignUp(max(virtqueue.LayoutRings(0, opts.QueueSize).End, virtqueue.LayoutPacked(0, opts.QueueSize).End), 4096)
	off := uint64(0)
	indirectSize := virtqueue.IndirectAreaSize(opts.QueueSize, opts.IndirectMax)
	for i := 0; i < opts.NumQueues; i++ {
		q := &Queue{Index: i, off: off, KickFd: -1, CallFd: -1, ErrFd: -1}
		off += stride
		if opts.IndirectMax > 0 {
			q.indOff = off
			off = alignUp(off+indirectSize, 4096)
		}
		if off > uint64(len(r0.B)) {
			f.release()
			return fmt.Errorf("frontend: %d rings of size %d need %d bytes, region 0 has %d", opts.NumQueues, opts.QueueSize, off, len(r0.B))
		}
		if err := q.openFds(); err != nil {
			q.close()
			f.release()
			return err
		}
		f.Queues = append(f.Queues, q)
	}
	f.DataOffset = off
	// EVENT_IDX and IN_ORDER are set by the handshake once features are
	// known; the layout the options ask for is the likely outcome.
	if err := f.buildDrivers(ringLayout{packed: opts.Packed}); err != nil {
		f.release()
		return err
	}
	return nil
}

// buildDrivers (re)builds every ring's driver for l at the ring's place,
// zeroing the ring: EVENT_IDX makes the layout's event fields live or dead,
// RING_PACKED changes the layout, IN_ORDER how used entries are read.
func (f *Frontend) buildDrivers(l ringLayout) error {
	r0 := f.Mem.Regions[0]
	for _, q := range f.Queues {
		var indOff uint64
		var indMax uint16
		if f.Opts.IndirectMax > 0 {
			indOff, indMax = q.indOff, f.Opts.IndirectMax
		}
		if l.packed {
			d, err := virtqueue.NewPackedDriver(virtqueue.PackedDriverConfig{
				Size: f.Opts.QueueSize, Mem: r0.B, Base: r0.GPA,
				Rings:    virtqueue.LayoutPacked(q.off, f.Opts.QueueSize),
				EventIdx: l.eventIdx, InOrder: l.inOrder,
				IndirectOff: indOff, IndirectMax: indMax,
			})
			if err != nil {
				return err
			}
			q.Ring, q.Driver, q.Packed = d, nil, d
			continue
		}
		d, err := virtqueue.NewDriver(virtqueue.DriverConfig{
			Size: f.Opts.QueueSize, Mem: r0.B, Base: r0.GPA,
			Rings:       virtqueue.LayoutRings(q.off, f.Opts.QueueSize),
			EventIdx:    l.eventIdx,
			IndirectOff: indOff, IndirectMax: indMax,
		})
		if err != nil {
			return err
		}
		q.Ring, q.Driver, q.Packed = d, d, nil
		if l.inOrder {
			q.Ring = splitInOrder{d}
		}
	}
	f.layout = l
	return nil
}

// Layout reports what the rings were built for: packed or split, and
// whether EVENT_IDX and IN_ORDER are in use.
func (f *Frontend) Layout() (packed, eventIdx, inOrder bool) {
	return f.layout.packed, f.layout.eventIdx, f.layout.inOrder
}

func (q *Queue) openFds() error {
	var err error
	efd := func() (int, error) { return unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK) }
	if q.KickFd, err = efd(); err != nil {
		return fmt.Errorf("frontend: eventfd: %w", err)
	}
	q.kick = virtqueue.NewCall(q.KickFd)
	if q.CallFd, err = efd(); err != nil {
		return fmt.Errorf("frontend: eventfd: %w", err)
	}
	if q.call, err = virtqueue.NewKick(q.CallFd); err != nil {
		return err
	}
	if q.ErrFd, err = efd(); err != nil {
		return fmt.Errorf("frontend: eventfd: %w", err)
	}
	return nil
}

// setLayout rebuilds the drivers (zeroing the rings) when the acked
// features change what they are built for (EVENT_IDX, RING_PACKED,
// IN_ORDER). It reports whether it did.
func (f *Frontend) setLayout() (bool, error) {
	l := ringLayout{
		eventIdx: f.Acked&(1<<29) != 0,
		packed:   f.Acked&featRingPacked != 0,
		inOrder:  f.Acked&featInOrder != 0,
	}
	if l == f.layout {
		return false, nil
	}
	return true, f.buildDrivers(l)
}

// Virtio bits the front-end acks only on request (Options.Packed, InOrder).
const (
	featRingPacked = 1 << 34
	featInOrder    = 1 << 35
)

// wantFeatures is what the front-end would ack of an offer: features (0:
// every one) less LOG_ALL, and less RING_PACKED and IN_ORDER unless the
// options ask for them.
func (f *Frontend) wantFeatures(features uint64) uint64 {
	if features == 0 {
		features = ^uint64(0)
	}
	features &^= vhostuser.FeatureLogAll
	if !f.Opts.Packed {
		features &^= featRingPacked
	}
	if !f.Opts.InOrder {
		features &^= featInOrder
	}
	return features
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// Handshake sets up memory and rings and runs the whole handshake in
// opts.Order. Afterwards every ring is configured; rings with a kick fd
// start on their first Kick.
func (f *Frontend) Handshake(opts Options) error {
	if err := f.Setup(opts); err != nil {
		return err
	}
	switch f.Opts.Order {
	case OrderQEMU:
		return f.handshakeQEMU()
	case OrderVirtioUser:
		return f.handshakeVirtioUser()
	}
	return fmt.Errorf("frontend: unknown order %d", f.Opts.Order)
}

// negotiateFeatures: GET_FEATURES and the protocol-feature exchange.
func (f *Frontend) negotiateFeatures() error {
	var err error
	if f.Offered, err = f.GetU64(vhostuser.ReqGetFeatures); err != nil {
		return err
	}
	// LOG_ALL is acked only while migrating (StartLogging).
	want := f.wantFeatures(f.Opts.Features)
	f.Acked = f.Offered & want &^ vhostuser.FeatureProtocolFeatures
	if f.Opts.Legacy {
		return nil
	}
	if f.Offered&vhostuser.FeatureProtocolFeatures == 0 {
		return errors.New("frontend: back-end does not offer PROTOCOL_FEATURES (bit 30)")
	}
	f.Acked |= vhostuser.FeatureProtocolFeatures
	p, err := f.GetU64(vhostuser.ReqGetProtocolFeatures)
	if err != nil {
		return err
	}
	f.OfferedProtocol = vhostuser.ProtocolFeatures(p)
	wantP := f.Opts.ProtocolFeatures
	if wantP == 0 {
		wantP = ^vhostuser.ProtocolFeatures(0)
	}
	f.Protocol = f.OfferedProtocol & wantP
	if err := f.SetU64(vhostuser.ReqSetProtocolFeatures, uint64(f.Protocol)); err != nil {
		return err
	}
	f.NeedReply = f.Protocol&vhostuser.ProtoReplyAck != 0
	return nil
}

func (f *Frontend) setCallFds(withErr bool) error {
	for _, q := range f.Queues {
		if err := f.SetVringFd(vhostuser.ReqSetVringCall, q.Index, q.CallFd); err != nil {
			return err
		}
		if withErr {
			if err := f.SetVringFd(vhostuser.ReqSetVringErr, q.Index, q.ErrFd); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *Frontend) setMemory() error {
	if !f.Opts.MemSlots {
		return f.SetMemTable()
	}
	for i := range f.Mem.Regions {
		if err := f.AddMemReg(i); err != nil {
			return err
		}
	}
	return nil
}

// setRings sends NUM, BASE, ADDR and KICK for every ring. A fresh packed
// ring's base is InitialPackedState (both wrap counters 1), as QEMU sends.
func (f *Frontend) setRings(bases []uint32) error {
	for _, q := range f.Queues {
		i := uint32(q.Index)
		if err := f.SetVringState(vhostuser.ReqSetVringNum, i, uint32(f.Opts.QueueSize)); err != nil {
			return err
		}
		base := uint32(0)
		if f.layout.packed {
			base = virtqueue.InitialPackedState.Encode()
		}
		if bases != nil {
			base = bases[q.Index]
		}
		if err := f.SetVringState(vhostuser.ReqSetVringBase, i, base); err != nil {
			return err
		}
		if err := f.SetVringAddr(q); err != nil {
			return err
		}
		kick := q.KickFd
		if f.Opts.NoKickFd {
			kick = -1
		}
		if err := f.SetVringFd(vhostuser.ReqSetVringKick, q.Index, kick); err != nil {
			return err
		}
	}
	return nil
}

func (f *Frontend) hasProtocol(p vhostuser.ProtocolFeatures) bool { return f.Protocol&p != 0 }

// addStatus is QEMU's vhost_user_add_status: GET_STATUS, then SET_STATUS
// with the bits added.
func (f *Frontend) addStatus(bits uint64) error {
	if !f.hasProtocol(vhostuser.ProtoStatus) {
		return nil
	}
	st, err := f.GetU64(vhostuser.ReqGetStatus)
	if err != nil {
		return err
	}
	return f.SetU64(vhostuser.ReqSetStatus, st|bits)
}

func (f *Frontend) handshakeQEMU() error {
	if err := f.negotiateFeatures(); err != nil {
		return err
	}
	if f.hasProtocol(vhostuser.ProtoMQ) {
		n, err := f.GetU64(vhostuser.ReqGetQueueNum)
		if err != nil {
			return err
		}
		f.QueueNum = n
		// QEMU: "The maximum number of queue pairs supported by the back-end is smaller than requested".
		if uint64(len(f.Queues)/2) > n {
			return fmt.Errorf("frontend: back-end serves %d queue pairs, %d wanted", n, len(f.Queues)/2)
		}
	}
	if f.hasProtocol(vhostuser.ProtoConfigureMemSlots) {
		n, err := f.GetU64(vhostuser.ReqGetMaxMemSlots)
		if err != nil {
			return err
		}
		f.MaxMemSlots = n
	}
	if err := f.SetU64Empty(vhostuser.ReqSetOwner); err != nil {
		return err
	}
	if err := f.setCallFds(true); err != nil {
		return err
	}
	// QEMU 7.2 enables the first queue pair before SET_FEATURES.
	if !f.Opts.Legacy {
		for _, q := range f.Queues[:min(2, len(f.Queues))] {
			if err := f.SetVringEnable(q.Index, true); err != nil {
				return err
			}
		}
	}
	if _, err := f.setFeatures(); err != nil {
		return err
	}
	if err := f.addStatus(StatusFeaturesOK); err != nil {
		return err
	}
	if err := f.setMemory(); err != nil {
		return err
	}
	if err := f.setRings(nil); err != nil {
		return err
	}
	if !f.Opts.Legacy {
		for _, q := range f.Queues {
			if err := f.SetVringEnable(q.Index, true); err != nil {
				return err
			}
		}
	}
	return f.addStatus(StatusAcknowledge | StatusDriver | StatusDriverOK)
}

// setFeatures sends SET_FEATURES with f.Acked. It reports whether the rings
// were rebuilt from scratch (EVENT_IDX, RING_PACKED or IN_ORDER changed).
func (f *Frontend) setFeatures() (bool, error) {
	rebuilt, err := f.setLayout()
	if err != nil {
		return false, err
	}
	return rebuilt, f.SetU64(vhostuser.ReqSetFeatures, f.Acked)
}

// SetU64Empty sends a request without payload (SET_OWNER, RESET_OWNER...).
func (f *Frontend) SetU64Empty(req vhostuser.Request) error {
	_, err := f.Request(req, nil, nil)
	return err
}

const virtioUserStatusConfigured = StatusAcknowledge | StatusDriver | StatusFeaturesOK // 0x0b

func (f *Frontend) handshakeVirtioUser() error {
	if err := f.SetU64Empty(vhostuser.ReqSetOwner); err != nil {
		return err
	}
	if err := f.negotiateFeatures(); err != nil {
		return err
	}
	return f.virtioUserStart(nil)
}

// virtioUserStart is virtio-user's device start, also used when it
// reconfigures on the same connection.
func (f *Frontend) virtioUserStart(bases []uint32) error {
	if err := f.setCallFds(false); err != nil {
		return err
	}
	rebuilt, err := f.setFeatures()
	if err != nil {
		return err
	}
	if rebuilt {
		bases = nil // fresh rings start at 0
	}
	if f.hasProtocol(vhostuser.ProtoStatus) {
		if err := f.SetU64(vhostuser.ReqSetStatus, virtioUserStatusConfigured); err != nil {
			return err
		}
		for range 2 {
			if _, err := f.GetU64(vhostuser.ReqGetStatus); err != nil {
				return err
			}
		}
	}
	if err := f.SetMemTable(); err != nil {
		return err
	}
	if err := f.setRings(bases); err != nil {
		return err
	}
	for _, q := range f.Queues {
		if err := f.SetVringEnable(q.Index, true); err != nil {
			return err
		}
	}
	if f.hasProtocol(vhostuser.ProtoStatus) {
		return f.SetU64(vhostuser.ReqSetStatus, virtioUserStatusConfigured|StatusDriverOK)
	}
	return nil
}

// Reconfigure does what virtio-user does when the application changes
// offloads: stop every ring (SET_VRING_ENABLE 0, GET_VRING_BASE), then a new
// SET_FEATURES, SET_MEM_TABLE and ring setup on the same connection, with
// no reset in between. features replaces Options.Features.
func (f *Frontend) Reconfigure(features uint64) error {
	bases := make([]uint32, len(f.Queues))
	for _, q := range f.Queues {
		if err := f.SetVringEnable(q.Index, false); err != nil {
			return err
		}
		b, err := f.GetVringBase(q.Index)
		if err != nil {
			return err
		}
		bases[q.Index] = b
	}
	f.Acked = f.Offered&f.wantFeatures(features)&^vhostuser.FeatureProtocolFeatures | f.Acked&vhostuser.FeatureProtocolFeatures
	return f.virtioUserStart(bases)
}

// Stop is QEMU's device stop: SET_STATUS 0 (with STATUS), then
// GET_VRING_BASE for every ring. It returns the bases.
func (f *Frontend) Stop() ([]uint32, error) {
	if f.hasProtocol(vhostuser.ProtoStatus) {
		if err := f.SetU64(vhostuser.ReqSetStatus, 0); err != nil {
			return nil, err
		}
	}
	bases := make([]uint32, len(f.Queues))
	for _, q := range f.Queues {
		b, err := f.GetVringBase(q.Index)
		if err != nil {
			return nil, err
		}
		bases[q.Index] = b
	}
	return bases, nil
}

// Buffer returns n bytes of region 0 at offset off past DataOffset, for
// posting as a buffer.
func (f *Frontend) Buffer(off, n uint64) []byte {
	start := f.DataOffset + off
	return f.Mem.Regions[0].B[start : start+n : start+n]
}

// DirtyLog is a dirty-page log the front-end gave the back-end (QEMU's
// vhost log: a memfd, one bit per 4 KiB guest page).
type DirtyLog struct {
	Fd     int
	Bitmap []byte // mapped MAP_SHARED: what the back-end marks
}

// Marked reports whether the page holding gpa is marked.
func (l *DirtyLog) Marked(gpa uint64) bool {
	p := gpa / vhostuser.LogPageSize
	return p/8 < uint64(len(l.Bitmap)) && l.Bitmap[p/8]&(1<<(p%8)) != 0
}

// Close unmaps and closes the log.
func (l *DirtyLog) Close() {
	if l.Bitmap != nil {
		unix.Munmap(l.Bitmap)
		l.Bitmap = nil
	}
	if l.Fd >= 0 {
		unix.Close(l.Fd)
		l.Fd = -1
	}
}

// StartLogging does what QEMU does when a migration starts: SET_LOG_BASE
// with a memfd log of logBytes bytes (LOG_SHMFD, whose reply it waits for),
// then SET_FEATURES with VHOST_F_LOG_ALL added.
func (f *Frontend) StartLogging(logBytes uint64) (*DirtyLog, error) {
	fd, err := unix.MemfdCreate("vhostd-frontend-log", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	l := &DirtyLog{Fd: fd}
	if err := unix.Ftruncate(fd, int64(logBytes)); err != nil {
		l.Close()
		return nil, err
	}
	if l.Bitmap, err = unix.Mmap(fd, 0, int(logBytes), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		l.Close()
		return nil, err
	}
	if _, err := f.Request(vhostuser.ReqSetLogBase, vhostuser.Log{Size: logBytes}.Encode(nil), []int{fd}); err != nil {
		l.Close()
		return nil, err
	}
	f.Acked |= vhostuser.FeatureLogAll
	if err := f.SetU64(vhostuser.ReqSetFeatures, f.Acked); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// StopLogging acks the features again without VHOST_F_LOG_ALL.
func (f *Frontend) StopLogging() error {
	f.Acked &^= vhostuser.FeatureLogAll
	return f.SetU64(vhostuser.ReqSetFeatures, f.Acked)
}
