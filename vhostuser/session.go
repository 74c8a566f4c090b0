package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vdev"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vhostd/vhostd/virtqueue"
)

// maxRings is the most vrings addressable by SET_VRING_KICK/CALL/ERR, whose
// index field is 8 bits wide.
const maxRings = 256

// RingState is a read-only snapshot of one ring, for tests and status output.
type RingState struct {
	Index   int
	Started bool // got its first kick (or NOFD kick) and was handed to the device
	Enabled bool // SET_VRING_ENABLE(1), or SET_FEATURES without PROTOCOL_FEATURES
	Num     uint16
	// Packed: VIRTIO_F_RING_PACKED is acked, the ring is a packed one.
	Packed bool
	// Base is the vring base: the SET_VRING_BASE value, the value
	// recorded when the ring last stopped, or (while started) the value it
	// was started with. Split: the next avail index. Packed: the encoded
	// virtqueue.PackedState (avail index and wrap in bits 0-15, used index
	// and wrap in bits 16-31).
	Base uint32
	// LastAvail is the low half of Base: the next avail index (packed: with
	// the avail wrap counter in bit 15).
	LastAvail uint16
	// Failed: the device gave up on the ring (Queue.Fail) or the ring
	// could not be built; GET_STATUS reports StatusNeedsReset.
	Failed bool
}

// ring is the session's record of one vring (vhost-user.rst, "Ring states":
// started/stopped and enabled/disabled are independent).
type ring struct {
	index int
	num   uint16 // SET_VRING_NUM; 0 until set
	// base is the vring base: SET_VRING_BASE, or VringBase recorded when
	// the ring stopped. A restart continues from it. Split rings: the next
	// avail index (bits 0-15). Packed rings: the encoded PackedState, the
	// form QEMU and DPDK use (bits 0-14 avail index, 15 avail wrap counter,
	// 16-30 used index, 31 used wrap counter); a packed ring cannot read
	// its used position back from guest memory, so it lives here too.
	base    uint32
	addr    VringAddr // SET_VRING_ADDR, front-end virtual addresses
	addrSet bool

	kick      *virtqueue.Kick // nil with NOFD (front-end polls) or when unset
	kickSet   bool            // SET_VRING_KICK seen since the last stop
	call      *virtqueue.Call
	errCall   *virtqueue.Call
	enabled   atomic.Bool // shared with the device through Queue.Enabled
	failed    atomic.Bool // Queue.Fail was called or the ring could not be built
	queue     *vdev.Queue // non-nil while started
	firstKick *kickWaiter // non-nil while waiting for the first kick
	// lostMemory: the ring was running when a memory-table change left
	// its addresses untranslatable (REM_MEM_REG of its region). Every
	// later memory change tries to start it again, as DPDK re-translates
	// every ring after a table change, so ADD_MEM_REG of the same region
	// brings it back without a new SET_VRING_KICK.
	lostMemory bool
}

func (r *ring) started() bool { return r.queue != nil }

// kickWaiter is the goroutine that waits for a ring's first kick
// ("The back-end must start ring upon receiving a kick").
type kickWaiter struct {
	kick *virtqueue.Kick
	done chan struct{} // closed when Wait returned; err is valid then
	err  error
}

// Session serves one front-end connection. All protocol state is owned by
// the goroutine running Serve; RingStates and Features may be called from
// any goroutine.
type Session struct {
	counts *MessageCounts
	conn   *Conn
	dev    Device
	log    *slog.Logger
	mem    *MemoryTable
	rings  []ring

	acked       uint64 // SET_FEATURES value, including bit 30
	featuresSet bool
	protocol    ProtocolFeatures // negotiated by SET_PROTOCOL_FEATURES
	status      uint8            // SET_STATUS
	reply       []byte           // reply payload buffer

	// Dirty logging (live migration): the SET_LOG_BASE mapping, the
	// SET_LOG_FD eventfd (kept, never signalled: QEMU does not use it), and
	// the snapshot the rings get while LOG_ALL is acked (nil otherwise).
	logMap *logMapping
	logFd  int
	dlog   *DirtyLog

	wake chan struct{} // a first-kick waiter finished

	mu   sync.Mutex // guards snap
	snap snapshot
}

type snapshot struct {
	logMap   *logMapping
	logOn    bool
	rings    []RingState
	features uint64
	protocol ProtocolFeatures
	status   uint8
}

// NewSession prepares to serve conn with dev. Serve runs it and always
// closes conn.
func NewSession(conn *net.UnixConn, dev Device, log *slog.Logger) (*Session, error) {
	n := dev.NumQueues()
	if n <= 0 || n > maxRings {
		return nil, fmt.Errorf("vhost-user: device serves %d vrings, want 1..%d", n, maxRings)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Session{
		counts: new(MessageCounts),
		conn:   NewConn(conn),
		dev:    dev,
		log:    log,
		mem:    NewMemoryTable(),
		rings:  make([]ring, n),
		wake:   make(chan struct{}, 1),
		reply:  make([]byte, 0, 64),
		logFd:  -1,
	}
	for i := range s.rings {
		s.rings[i].index = i
	}
	s.publish()
	return s, nil
}

// RingStates returns a snapshot of every ring.
func (s *Session) RingStates() []RingState {
	s.mu.Lock()
	out := append([]RingState(nil), s.snap.rings...)
	s.mu.Unlock()
	// A device marks a ring failed from its worker, between snapshots.
	for i := range out {
		out[i].Failed = s.rings[i].failed.Load()
	}
	return out
}

// Features returns the acked virtio features (including bit 30 when
// negotiated) and the negotiated protocol features.
func (s *Session) Features() (features uint64, protocol ProtocolFeatures) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap.features, s.snap.protocol
}

// Status returns the last SET_STATUS value.
func (s *Session) Status() uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap.status
}

// publish refreshes the snapshot read by RingStates and Features.
func (s *Session) publish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snap.rings = s.snap.rings[:0]
	for i := range s.rings {
		r := &s.rings[i]
		s.snap.rings = append(s.snap.rings, RingState{
			Index: i, Started: r.started(), Enabled: r.enabled.Load(), Num: r.num,
			Packed: s.packed(), Base: r.base, LastAvail: uint16(r.base),
		})
	}
	s.snap.features, s.snap.protocol, s.snap.status = s.acked, s.protocol, s.status
	s.snap.logMap, s.snap.logOn = s.logMap, s.dlog != nil
}

// Serve reads and handles messages until the front-end disconnects (nil),
// ctx is cancelled (ctx.Err()) or the connection must be dropped (the
// error). On return every ring is stopped (Device.Reset), every fd received
// is closed, guest memory is unmapped, and no goroutine is left. Serve may
// be called only once.
func (s *Session) Serve(ctx context.Context) error {
	defer s.shutdown()

	msgs := make(chan *Message)
	next := make(chan struct{})
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.readLoop(msgs, next, readErr, stop)
	}()
	defer func() {
		close(stop)
		s.conn.Close() // unblocks a pending read
		wg.Wait()
	}()
	// A front-end that stops reading could block a reply write forever;
	// closing the socket on cancellation unblocks it.
	defer context.AfterFunc(ctx, func() { s.conn.Close() })()

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-msgs:
			err := s.dispatch(m) // closes m's fds and publishes
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err
			}
			next <- struct{}{}
		case <-s.wake:
			s.reapFirstKicks()
			s.publish()
		case err := <-readErr:
			if ctx.Err() != nil {
				return ctx.Err() // the read failed because cancellation closed the socket
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				s.log.Info("vhost-user front-end disconnected")
				return nil
			}
			return err
		}
	}
}

// readLoop reads messages one at a time and hands each to Serve, waiting
// until it is handled (the message buffers are reused).
func (s *Session) readLoop(msgs chan<- *Message, next <-chan struct{}, readErr chan<- error, stop <-chan struct{}) {
	var m Message
	for {
		if err := s.conn.ReadMessage(&m); err != nil {
			readErr <- err
			return
		}
		select {
		case msgs <- &m:
		case <-stop:
			m.CloseFds()
			return
		}
		select {
		case <-next:
		case <-stop:
			return
		}
	}
}

// shutdown stops everything and releases every resource of the session.
func (s *Session) shutdown() {
	for i := range s.rings {
		s.cancelFirstKick(&s.rings[i])
	}
	s.dev.Reset() // stops every started queue
	for i := range s.rings {
		r := &s.rings[i]
		if r.queue != nil {
			r.base = r.queue.VQ.VringBase()
			r.queue = nil
		}
		s.closeKick(r)
		closeCall(&r.call)
		closeCall(&r.errCall)
	}
	s.mem.Close()
	s.dlog = nil
	s.logMap.close()
	s.logMap = nil
	if s.logFd >= 0 {
		unix.Close(s.logFd)
		s.logFd = -1
	}
	s.publish()
}

// ringFor returns ring i or an error naming the valid range.
// vringState decodes a vring-state payload (SET_VRING_NUM, SET_VRING_BASE,
// GET_VRING_BASE, SET_VRING_ENABLE) and finds the ring it names.
func (s *Session) vringState(m *Message) (VringState, *ring, error) {
	var st VringState
	if err := st.Decode(m.Payload); err != nil {
		return st, nil, err
	}
	r, err := s.ringFor(st.Index)
	return st, r, err
}

func (s *Session) ringFor(i uint32) (*ring, error) {
	if i >= uint32(len(s.rings)) {
		return nil, fmt.Errorf("%w: vring index %d out of range, the device has %d vrings", ErrPayloadValue, i, len(s.rings))
	}
	return &s.rings[i], nil
}

// --- ring state machine ---

// armFirstKick starts waiting for the ring's first kick.
func (s *Session) armFirstKick(r *ring) {
	w := &kickWaiter{kick: r.kick, done: make(chan struct{})}
	r.firstKick = w
	go func() {
		w.err = w.kick.Wait()
		close(w.done)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}()
}

// cancelFirstKick stops a pending first-kick wait and waits for the waiter
// goroutine to end, so the kick is free for its next user.
func (s *Session) cancelFirstKick(r *ring) {
	w := r.firstKick
	if w == nil {
		return
	}
	r.firstKick = nil
	w.kick.SetDeadline(time.Unix(1, 0))
	<-w.done
	w.kick.SetDeadline(time.Time{})
}

// reapFirstKicks starts every ring whose first kick arrived.
func (s *Session) reapFirstKicks() {
	for i := range s.rings {
		r := &s.rings[i]
		w := r.firstKick
		if w == nil {
			continue
		}
		select {
		case <-w.done:
		default:
			continue
		}
		r.firstKick = nil
		if w.err != nil {
			s.log.Error("waiting for the first kick failed; the ring stays stopped until the next SET_VRING_KICK", "ring", r.index, "err", w.err)
			continue
		}
		s.startRing(r) // logs its own failure
	}
}

// ringMemory translates the ring's addresses through the current table.
func (s *Session) ringMemory(r *ring) (desc, avail, used []byte, err error) {
	if r.num == 0 || !r.addrSet {
		return nil, nil, nil, fmt.Errorf("ring %d is not configured: SET_VRING_NUM and SET_VRING_ADDR must come before SET_VRING_KICK", r.index)
	}
	if s.mem.Len() == 0 {
		return nil, nil, nil, fmt.Errorf("ring %d: no guest memory yet: SET_MEM_TABLE or ADD_MEM_REG must come before SET_VRING_KICK", r.index)
	}
	// Packed rings: SET_VRING_ADDR's desc, avail and used addresses are the
	// descriptor ring (16*num bytes), the driver event suppression area and
	// the device event suppression area (4 bytes each).
	packed := s.packed()
	names := [3]string{"descriptor table", "avail ring", "used ring"}
	if packed {
		names = [3]string{"packed descriptor ring", "driver event suppression area", "device event suppression area"}
	}
	dn, an, un := virtqueue.RingAreaSizes(r.num, packed)
	var ok bool
	if desc, ok = s.mem.UVA(r.addr.Desc, dn); !ok {
		return nil, nil, nil, fmt.Errorf("ring %d: %s at %#x (%d entries) is outside the front-end's memory regions", r.index, names[0], r.addr.Desc, r.num)
	}
	if avail, ok = s.mem.UVA(r.addr.Avail, an); !ok {
		return nil, nil, nil, fmt.Errorf("ring %d: %s at %#x is outside the front-end's memory regions", r.index, names[1], r.addr.Avail)
	}
	if used, ok = s.mem.UVA(r.addr.Used, un); !ok {
		return nil, nil, nil, fmt.Errorf("ring %d: %s at %#x is outside the front-end's memory regions", r.index, names[2], r.addr.Used)
	}
	return desc, avail, used, nil
}

// packed reports whether VIRTIO_F_RING_PACKED is acked: rings are packed.
func (s *Session) packed() bool { return vnet.Feature(s.acked)&vnet.FeatureRingPacked != 0 }

// startRing builds the ring over the current memory, continuing from
// r.base, and hands it to the device. On failure the ring stays stopped,
// the error is logged and the ring's error eventfd (if any) is signalled.
func (s *Session) startRing(r *ring) error {
	desc, avail, used, err := s.ringMemory(r)
	var vq virtqueue.Ring
	if err == nil {
		vq, err = s.newRing(r, desc, avail, used)
	}
	if err == nil {
		err = s.handOver(r, vq)
	}
	if err != nil {
		s.log.Error("cannot start ring; it stays stopped", "ring", r.index, "err", err)
		r.failed.Store(true)
		r.errCall.Signal()
		return err
	}
	s.log.Debug("ring started", "ring", r.index, "num", r.num, "packed", s.packed(), "base", fmt.Sprintf("%#x", r.base), "enabled", r.enabled.Load())
	return nil
}

// newRing builds the device side of ring r over its translated areas: a
// split ring, or a packed one when RING_PACKED is acked, continuing from
// r.base either way. Both read guest memory (the split ring its used.idx,
// the packed ring its device event area), so a fault there is turned into
// an error: a front-end may shrink the file behind a region after we mapped
// it, and the SIGBUS would otherwise kill the daemon from the session
// goroutine.
func (s *Session) newRing(r *ring, desc, avail, used []byte) (vq virtqueue.Ring, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if rec := recover(); rec != nil {
			fault, ok := rec.(interface{ Addr() uintptr })
			if !ok {
				panic(rec)
			}
			vq, err = nil, fmt.Errorf("guest memory at host address %#x faults: the front-end shrank or truncated the file behind its memory region", fault.Addr())
		}
	}()
	eventIdx := vnet.Feature(s.acked)&vnet.FeatureEventIdx != 0
	indirect := vnet.Feature(s.acked)&vnet.FeatureIndirectDesc != 0
	inOrder := vnet.Feature(s.acked)&vnet.FeatureInOrder != 0
	if s.packed() {
		p, err := virtqueue.NewPacked(virtqueue.PackedConfig{
			Size:     r.num,
			Desc:     desc,
			Driver:   avail,
			Device:   used,
			EventIdx: eventIdx,
			Indirect: indirect,
			InOrder:  inOrder,
			State:    virtqueue.DecodePackedState(r.base),
			Log:      s.ringLog(),
		}, s.mem.GPA())
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	sp, err := virtqueue.NewSplit(virtqueue.Config{
		Size:      r.num,
		Desc:      desc,
		Avail:     avail,
		Used:      used,
		EventIdx:  eventIdx,
		Indirect:  indirect,
		InOrder:   inOrder,
		LastAvail: uint16(r.base),
		Log:       s.ringLog(),
	}, s.mem.GPA())
	if err != nil {
		return nil, err
	}
	return sp, nil
}

// handOver gives a built ring to the device.
func (s *Session) handOver(r *ring, vq virtqueue.Ring) error {
	if r.kick != nil {
		r.kick.SetDeadline(time.Time{}) // a previous worker may have left one set
	}
	q := &vdev.Queue{Index: r.index, VQ: vq, Kick: r.kick, Call: r.call, Err: r.errCall, Enabled: &r.enabled, Failed: &r.failed, Log: s.ringLog()}
	if err := s.dev.StartQueue(q); err != nil {
		return fmt.Errorf("device refused the ring: %w", err)
	}
	r.queue = q
	return nil
}

// stopRing stops a started ring (recording its next avail index) or cancels
// its first-kick wait. The ring keeps its configuration.
func (s *Session) stopRing(r *ring) {
	s.cancelFirstKick(r)
	if r.queue != nil {
		s.dev.StopQueue(r.index)
		r.base = r.queue.VQ.VringBase()
		r.queue = nil
		s.log.Debug("ring stopped", "ring", r.index, "base", fmt.Sprintf("%#x", r.base))
	}
}

// reconfigure runs change with every started ring stopped, then rebuilds
// those rings from their stored addresses and avail index and starts them
// again. It is how memory and feature changes reach running rings
// (docs/design.md: "Memory changes while rings run").
//
// A ring that was running before a change that broke it (lostMemory) is
// started again by the next change that makes its addresses valid.
func (s *Session) reconfigure(change func() error) error {
	var running []*ring
	for i := range s.rings {
		r := &s.rings[i]
		switch {
		case r.started():
			s.stopRing(r)
			running = append(running, r)
		case r.lostMemory && r.kickSet && r.firstKick == nil:
			running = append(running, r)
		}
	}
	err := change()
	s.refreshLog()
	for _, r := range running {
		if s.startRing(r) != nil { // logs its own failure
			r.lostMemory = true
			continue
		}
		if r.lostMemory {
			r.lostMemory = false
			r.failed.Store(false)
			s.log.Info("ring started again: its memory is back", "ring", r.index)
		}
	}
	return err
}

// restartWithNewFds hands a started ring back to the device with the
// current call/err eventfds (QEMU changes the call fd while running when
// the guest masks or unmasks the queue interrupt).
func (s *Session) restartWithNewFds(r *ring) {
	if !r.started() {
		return
	}
	vq := r.queue.VQ
	s.dev.StopQueue(r.index)
	r.queue = nil
	r.base = vq.VringBase()
	if err := s.handOver(r, vq); err != nil {
		s.log.Error("cannot restart ring with its new eventfd; it stays stopped", "ring", r.index, "err", err)
	}
}

// stopForReconfig stops a ring whose layout the front-end changes while it
// runs; it starts again on the next SET_VRING_KICK.
func (s *Session) stopForReconfig(r *ring, req Request) {
	if r.started() || r.firstKick != nil {
		s.log.Info("ring reconfigured while running; stopped until the next SET_VRING_KICK", "ring", r.index, "request", req.String())
		s.stopRing(r)
		s.closeKick(r)
	}
	r.lostMemory = false
}

func (s *Session) closeKick(r *ring) {
	s.cancelFirstKick(r)
	if r.kick != nil {
		r.kick.Close()
		r.kick = nil
	}
	r.kickSet = false
}

func closeCall(c **virtqueue.Call) {
	if *c != nil {
		(*c).Close()
		*c = nil
	}
}

func (s *Session) setAllEnabled(on bool) {
	for i := range s.rings {
		s.rings[i].enabled.Store(on)
		s.dev.SetQueueEnabled(i, on)
	}
}

// --- handlers (one per supported request; see requestTable) ---

// sessionFeatures are the bits the session serves itself on top of the
// device's: PROTOCOL_FEATURES and LOG_ALL (the session owns the dirty log;
// the device marks what it writes through Queue.Log).
const sessionFeatures = FeatureProtocolFeatures | FeatureLogAll

func (s *Session) getFeatures(*Message) ([]byte, error) {
	return U64(s.dev.DeviceFeatures() | sessionFeatures).Encode(s.reply[:0]), nil
}

func (s *Session) setFeatures(m *Message) ([]byte, error) {
	var v U64
	if err := v.Decode(m.Payload); err != nil {
		return nil, err
	}
	acked := uint64(v)
	offered := s.dev.DeviceFeatures() | sessionFeatures
	if extra := acked &^ offered; extra != 0 {
		return nil, fmt.Errorf("%w: front-end acked feature bits %#x that were not offered (offered %#x)", ErrPayloadValue, extra, offered)
	}
	// RING_PACKED changes what every ring's addresses and base mean: rings
	// are stopped until the front-end sets them up again, and a base not
	// set again is the new layout's initial one.
	if vnet.Feature(acked^s.acked)&vnet.FeatureRingPacked != 0 {
		base := uint32(0)
		if vnet.Feature(acked)&vnet.FeatureRingPacked != 0 {
			base = virtqueue.InitialPackedState.Encode()
		}
		for i := range s.rings {
			s.stopForReconfig(&s.rings[i], m.Header.Request)
			s.rings[i].base = base
		}
	}
	// Features shape the rings (EVENT_IDX, INDIRECT_DESC, IN_ORDER), so
	// running rings are rebuilt from their recorded state. DPDK virtio-user
	// sends SET_FEATURES again on the same connection when it reconfigures.
	err := s.reconfigure(func() error {
		if err := s.dev.SetFeatures(acked &^ sessionFeatures); err != nil {
			return fmt.Errorf("device refused features %#x: %w", acked, err)
		}
		s.acked, s.featuresSet = acked, true
		return nil
	})
	if err != nil {
		return nil, err
	}
	// "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring
	// starts directly in the enabled state." With it, rings keep what
	// SET_VRING_ENABLE said (QEMU 7.2 may have sent it already).
	if acked&FeatureProtocolFeatures == 0 {
		s.setAllEnabled(true)
	}
	s.log.Info("negotiated features",
		"features", fmt.Sprintf("%#x", acked),
		"protocol_features", fmt.Sprintf("%#x", uint64(s.protocol)),
		"protocol", s.protocol.String())
	return nil, nil
}

func (s *Session) setOwner(*Message) ([]byte, error) { return nil, nil }

// resetOwner is deprecated; the spec recommends ignoring it or disabling all
// rings. Disabling is the safe reading.
func (s *Session) resetOwner(*Message) ([]byte, error) {
	s.setAllEnabled(false)
	return nil, nil
}

func (s *Session) getProtocolFeatures(*Message) ([]byte, error) {
	return U64(offeredProtocolFeatures).Encode(s.reply[:0]), nil
}

func (s *Session) setProtocolFeatures(m *Message) ([]byte, error) {
	var v U64
	if err := v.Decode(m.Payload); err != nil {
		return nil, err
	}
	p := ProtocolFeatures(v)
	if extra := p &^ offeredProtocolFeatures; extra != 0 {
		return nil, fmt.Errorf("%w: front-end acked protocol features %v that were not offered (offered %v)", ErrPayloadValue, extra, offeredProtocolFeatures)
	}
	s.protocol = p
	return nil, nil
}

// getQueueNum answers with queue pairs: QEMU's vhost-user-net compares it
// with queues= (pairs) and refuses to start when that is larger.
func (s *Session) getQueueNum(*Message) ([]byte, error) {
	return U64(max(len(s.rings)/2, 1)).Encode(s.reply[:0]), nil
}

func (s *Session) getMaxMemSlots(*Message) ([]byte, error) {
	return U64(MaxMemSlots).Encode(s.reply[:0]), nil
}

func (s *Session) setMemTable(m *Message) ([]byte, error) {
	var t MemoryRegions
	if err := t.Decode(m.Payload); err != nil {
		return nil, err
	}
	if int(t.NRegions) != len(m.Fds) {
		return nil, fmt.Errorf("%w: SET_MEM_TABLE has %d regions but %d fds", errFdCount, t.NRegions, len(m.Fds))
	}
	regions := t.Regions[:t.NRegions]
	err := s.reconfigure(func() error { return s.mem.Set(regions, m.Fds) })
	if err != nil {
		return nil, err
	}
	s.log.Debug("memory table set", "regions", fmt.Sprint(regions))
	return nil, nil
}

func (s *Session) addMemReg(m *Message) ([]byte, error) {
	var r SingleMemRegion
	if err := r.Decode(m.Payload); err != nil {
		return nil, err
	}
	return nil, s.reconfigure(func() error { return s.mem.Add(r.Region, m.Fds[0]) })
}

func (s *Session) remMemReg(m *Message) ([]byte, error) {
	var r SingleMemRegion
	if err := r.Decode(m.Payload); err != nil {
		return nil, err
	}
	return nil, s.reconfigure(func() error { return s.mem.Remove(r.Region) })
}

func (s *Session) setVringNum(m *Message) ([]byte, error) {
	st, r, err := s.vringState(m)
	if err != nil {
		return nil, err
	}
	// A packed ring may have any size (virtio 1.2 §2.8); a split ring's is
	// a power of two.
	if st.Num == 0 || st.Num > virtqueue.MaxSize {
		return nil, fmt.Errorf("%w: ring %d size %d is not in 1..%d", ErrPayloadValue, st.Index, st.Num, virtqueue.MaxSize)
	}
	if !s.packed() && st.Num&(st.Num-1) != 0 {
		return nil, fmt.Errorf("%w: ring %d size %d is not a power of two (split ring; only a packed ring, VIRTIO_F_RING_PACKED, may have any size)", ErrPayloadValue, st.Index, st.Num)
	}
	s.stopForReconfig(r, m.Header.Request)
	r.num = uint16(st.Num)
	return nil, nil
}

func (s *Session) setVringBase(m *Message) ([]byte, error) {
	st, r, err := s.vringState(m)
	if err != nil {
		return nil, err
	}
	if s.packed() {
		// bits 0-14 avail index, 15 avail wrap, 16-30 used index, 31 used
		// wrap (QEMU, DPDK); DecodePackedState takes a used half of 0 as
		// "same as avail", as DPDK's virtio-user sends.
		ps := virtqueue.DecodePackedState(st.Num)
		if r.num != 0 && (ps.AvailIdx >= r.num || ps.UsedIdx >= r.num) {
			return nil, fmt.Errorf("%w: ring %d packed base %#x (avail %d, used %d) is outside a ring of %d descriptors", ErrPayloadValue, st.Index, st.Num, ps.AvailIdx, ps.UsedIdx, r.num)
		}
	} else if st.Num > 0xffff {
		// Split rings use bits 0-15; the upper bits only mean something
		// for packed rings.
		return nil, fmt.Errorf("%w: ring %d base %#x does not fit a split ring's 16-bit avail index", ErrPayloadValue, st.Index, st.Num)
	}
	s.stopForReconfig(r, m.Header.Request)
	r.base = st.Num
	return nil, nil
}

func (s *Session) setVringAddr(m *Message) ([]byte, error) {
	var a VringAddr
	if err := a.Decode(m.Payload); err != nil {
		return nil, err
	}
	r, err := s.ringFor(a.Index)
	if err != nil {
		return nil, err
	}
	// Same addresses with only the LOG flag toggled is how QEMU switches
	// dirty logging on a running ring; nothing to rebuild.
	same := r.addrSet && r.addr.Desc == a.Desc && r.addr.Avail == a.Avail && r.addr.Used == a.Used
	if !same {
		s.stopForReconfig(r, m.Header.Request)
	}
	r.addr, r.addrSet = a, true
	return nil, nil
}

func (s *Session) getVringBase(m *Message) ([]byte, error) {
	st, r, err := s.vringState(m)
	if err != nil {
		return nil, err
	}
	// "stop ring upon receiving VHOST_USER_GET_VRING_BASE"; the ring needs a
	// new SET_VRING_KICK to start again.
	s.stopRing(r)
	s.closeKick(r)
	r.lostMemory = false
	return VringState{Index: st.Index, Num: r.base}.Encode(s.reply[:0]), nil
}

// vringFile decodes a SET_VRING_KICK/CALL/ERR payload and checks that an fd
// came with it exactly when NOFD is clear.
func (s *Session) vringFile(m *Message) (*ring, VringFile, error) {
	var f VringFile
	if err := f.Decode(m.Payload); err != nil {
		return nil, f, err
	}
	r, err := s.ringFor(uint32(f.Index))
	if err != nil {
		return nil, f, err
	}
	if want := 1 - b2i(f.NoFd); len(m.Fds) != want {
		return nil, f, fmt.Errorf("%w: %s for ring %d with NOFD=%t needs %d fd, got %d", errFdCount, m.Header.Request, f.Index, f.NoFd, want, len(m.Fds))
	}
	return r, f, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *Session) setVringKick(m *Message) ([]byte, error) {
	r, f, err := s.vringFile(m)
	if err != nil {
		return nil, err
	}
	if _, _, _, err := s.ringMemory(r); err != nil {
		return nil, err
	}
	if r.started() || r.firstKick != nil {
		s.stopRing(r)
	}
	s.closeKick(r)
	r.lostMemory = false
	r.failed.Store(false) // set up anew: a new chance
	if !f.NoFd {
		k, err := virtqueue.NewKick(m.TakeFd(0))
		if err != nil {
			return nil, err
		}
		r.kick = k
	}
	r.kickSet = true
	if f.NoFd {
		// No fd: the front-end will not kick, the back-end polls. Start now.
		return nil, s.startRing(r)
	}
	s.armFirstKick(r)
	return nil, nil
}

func (s *Session) setVringCall(m *Message) ([]byte, error) {
	return s.setCallFd(m, func(r *ring) **virtqueue.Call { return &r.call })
}

func (s *Session) setVringErr(m *Message) ([]byte, error) {
	return s.setCallFd(m, func(r *ring) **virtqueue.Call { return &r.errCall })
}

func (s *Session) setCallFd(m *Message, field func(*ring) **virtqueue.Call) ([]byte, error) {
	r, f, err := s.vringFile(m)
	if err != nil {
		return nil, err
	}
	var c *virtqueue.Call
	if !f.NoFd {
		c = virtqueue.NewCall(m.TakeFd(0))
	}
	p := field(r)
	old := *p
	*p = c
	s.restartWithNewFds(r) // the device stops using old before this returns
	if old != nil {
		old.Close()
	}
	return nil, nil
}

func (s *Session) setVringEnable(m *Message) ([]byte, error) {
	st, r, err := s.vringState(m)
	if err != nil {
		return nil, err
	}
	if st.Num > 1 {
		return nil, fmt.Errorf("%w: SET_VRING_ENABLE ring %d with %d, want 0 or 1", ErrPayloadValue, st.Index, st.Num)
	}
	on := st.Num == 1
	r.enabled.Store(on)
	s.dev.SetQueueEnabled(r.index, on)
	return nil, nil
}

func (s *Session) netSetMTU(m *Message) ([]byte, error) {
	var v U64
	if err := v.Decode(m.Payload); err != nil {
		return nil, err
	}
	if v > 0xffff {
		return nil, fmt.Errorf("%w: MTU %d does not fit virtio-net's 16-bit mtu field", ErrPayloadValue, uint64(v))
	}
	return nil, s.dev.SetMTU(uint16(v))
}

func (s *Session) setStatus(m *Message) ([]byte, error) {
	var v U64
	if err := v.Decode(m.Payload); err != nil {
		return nil, err
	}
	if v > 0xff {
		return nil, fmt.Errorf("%w: device status %#x does not fit the 8-bit virtio status", ErrPayloadValue, uint64(v))
	}
	s.status = uint8(v)
	if v == 0 {
		// Writing 0 resets the device (virtio 1.x §2.1). QEMU sends it
		// before GET_VRING_BASE on stop; the bases recorded here answer
		// those requests.
		for i := range s.rings {
			s.stopRing(&s.rings[i])
			s.rings[i].failed.Store(false)
			s.rings[i].lostMemory = false
		}
	}
	return nil, nil
}

// getStatus reports the last SET_STATUS value, with DEVICE_NEEDS_RESET added
// while any ring has failed (virtio 1.x §2.1.2: the device sets it when it
// enters an error state that needs a reset).
func (s *Session) getStatus(*Message) ([]byte, error) {
	st := uint64(s.status)
	for i := range s.rings {
		if s.rings[i].failed.Load() {
			st |= StatusNeedsReset
		}
	}
	return U64(st).Encode(s.reply[:0]), nil
}

// --- dirty logging and the announce (live migration) ---

// ringLog is the logger a ring built now gets: nil unless logging is on
// (a nil *DirtyLog must not become a non-nil interface).
func (s *Session) ringLog() virtqueue.DirtyLogger {
	if s.dlog == nil {
		return nil
	}
	return s.dlog
}

// refreshLog rebuilds the dirty-log snapshot from the current log mapping,
// memory regions and features. Called with every ring stopped (reconfigure).
func (s *Session) refreshLog() {
	if s.logMap == nil || s.acked&FeatureLogAll == 0 {
		if s.dlog != nil {
			s.log.Info("dirty logging stopped")
		}
		s.dlog = nil
		return
	}
	if s.dlog == nil {
		s.log.Info("dirty logging started (live migration)", "log_bytes", len(s.logMap.bitmap))
	}
	s.dlog = s.mem.dirtyLog(s.logMap)
}

// setLogBase maps the dirty log (LOG_SHMFD: the fd comes with the message)
// and rebuilds the rings so they use it. QEMU sends it again with a larger
// log when guest memory grows; the old mapping is released once no ring
// uses it.
func (s *Session) setLogBase(m *Message) ([]byte, error) {
	var l Log
	if err := l.Decode(m.Payload); err != nil {
		return nil, err
	}
	lm, err := openLog(l, m.Fds[0])
	if err != nil {
		return nil, err
	}
	old := s.logMap
	_ = s.reconfigure(func() error {
		s.logMap = lm
		return nil
	})
	old.close()
	s.log.Info("dirty log set", "bytes", l.Size, "offset", l.Offset, "logging", s.dlog != nil)
	// The reply carries a u64 0 (libvhost-user's form; QEMU reads and
	// ignores the payload, DPDK sends none).
	return U64(0).Encode(s.reply[:0]), nil
}

// setLogFd keeps the log eventfd (the back-end may signal it after writing
// the log; QEMU neither sends nor waits for it, so it is never signalled).
func (s *Session) setLogFd(m *Message) ([]byte, error) {
	if s.logFd >= 0 {
		unix.Close(s.logFd)
	}
	s.logFd = m.TakeFd(0)
	return nil, nil
}

// sendRARP asks the device to announce the guest's MAC (first 6 bytes of the
// u64 payload) on its backend. QEMU sends it after a migration to a guest
// that did not negotiate GUEST_ANNOUNCE.
func (s *Session) sendRARP(m *Message) ([]byte, error) {
	if len(m.Payload) < 6 {
		return nil, fmt.Errorf("%w: SEND_RARP payload of %d bytes", ErrPayloadSize, len(m.Payload))
	}
	var mac [6]byte
	copy(mac[:], m.Payload[:6])
	a, ok := s.dev.(Announcer)
	if !ok {
		return nil, fmt.Errorf("%w: SEND_RARP: the device cannot inject packets", errUnsupported)
	}
	if err := a.SendRARP(mac); err != nil {
		return nil, fmt.Errorf("SEND_RARP for %x: %w", mac, err)
	}
	s.log.Info("announced the guest after migration (RARP)", "mac", fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]))
	return nil, nil
}

// LogStats reports the dirty log. Safe from any goroutine.
func (s *Session) LogStats() LogStats {
	s.mu.Lock()
	m, on := s.snap.logMap, s.snap.logOn
	s.mu.Unlock()
	st := LogStats{Active: on}
	if m != nil {
		st.Size = uint64(len(m.bitmap))
		st.Pages = m.pages.Load()
		st.Overflows = m.over.Load()
	}
	return st
}
