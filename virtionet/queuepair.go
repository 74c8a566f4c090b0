package virtionet

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/vdev"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtqueue"
)

// QueuePair is the worker of one receiveq/transmitq pair and its backend
// queue. The one code path serves one and many queue pairs.
//
// Why two goroutines: each direction blocks in the Go runtime poller on its
// own fd (TX on the transmitq kick eventfd, RX on the backend fd or the
// receiveq kick eventfd). One goroutine could only wait on all of them with a
// private epoll loop that bypasses the poller, so the pair runs a TX loop and
// an RX loop that share nothing but the backend (whose read and write sides
// are independent) and the counters.
type QueuePair struct {
	dev   *Device
	index int
	be    backend.Backend // nil when the pair is joined guest to guest (peer)
	stats *QueueStats

	// out is where the TX worker hands packets: be, or the link or switch
	// port of a pair joined guest to guest.
	out egress
	// peer is set when the pair's RX ring is fed by other ports' TX workers
	// (Config.Peers) instead of a backend reader.
	peer *rxPort

	mu sync.Mutex // start/stop only
	tx *txWorker
	rx *rxWorker

	// rxState outlives RX worker restarts: packets read from the backend but
	// not yet delivered stay here (backpressure instead of drops).
	rxState rxHeld
}

// egress is what a TX worker writes to: the part of backend.Backend a link
// or switch port can honestly provide.
type egress interface {
	WritePackets(pkts [][][]byte) (int, error)
	Caps() backend.Capabilities
}

// newQueuePair builds a pair on a backend, or, with peer set, joined guest
// to guest: the pair's RX ring is then bound as the port's receiver, so the
// link delivers into it from the moment the device exists.
func newQueuePair(d *Device, index int, be backend.Backend, peer portlink.Port) *QueuePair {
	qp := &QueuePair{dev: d, index: index, be: be, out: be, stats: newQueueStats()}
	if peer != nil {
		qp.peer = &rxPort{}
		qp.out = &peerEgress{p: peer}
		peer.Bind(qp.peer)
	}
	return qp
}

// Index returns the queue pair number.
func (qp *QueuePair) Index() int { return qp.index }

// Stats returns the live counters.
func (qp *QueuePair) Stats() *QueueStats { return qp.stats }

// Backend returns the backend queue; nil when the pair is joined guest to
// guest (Config.Peers).
func (qp *QueuePair) Backend() backend.Backend { return qp.be }

// Caps returns what the pair's TX writes to takes: its backend's
// capabilities, or a link's (portlink.Caps).
func (qp *QueuePair) Caps() backend.Capabilities { return qp.out.Caps() }

// setAttached attaches or detaches the pair's backend queue (see
// Device.SetQueueEnabled) and counts it. Backends without queues to steer
// count as attached.
func (qp *QueuePair) setAttached(on bool) {
	a, ok := qp.be.(backend.QueueAttacher)
	if !ok {
		qp.stats.BackendAttached.Store(true)
		return
	}
	was := a.QueueAttached()
	if err := a.SetQueueAttached(on); err != nil {
		qp.stats.Add(CtrBackendAttachErrors, 1)
		qp.dev.log.Error("cannot attach or detach the backend queue; the host may steer flows to a queue no guest ring reads",
			"queue_pair", qp.index, "attach", on, "err", err)
	}
	now := a.QueueAttached()
	qp.stats.BackendAttached.Store(now)
	switch {
	case now && !was:
		qp.stats.Add(CtrBackendAttaches, 1)
		qp.dev.log.Info("backend queue attached", "queue_pair", qp.index)
	case !now && was:
		qp.stats.Add(CtrBackendDetaches, 1)
		qp.dev.log.Info("backend queue detached", "queue_pair", qp.index)
	}
}

// start replaces the pair's transmit (tx) or receive worker with one that
// serves q.
func (qp *QueuePair) start(tx bool, q *vdev.Queue, hdrLen int, acked uint64) {
	qp.mu.Lock()
	defer qp.mu.Unlock()
	qp.stopLocked(tx)
	if tx {
		qp.tx = newTxWorker(qp, q, hdrLen, acked)
		go qp.tx.run()
		return
	}
	w := newRxWorker(qp, q, hdrLen, acked)
	qp.rx = w
	if qp.peer != nil {
		// Other ports' TX workers fill this ring (Config.Peers); no reader.
		w.peer = qp.peer
		qp.peer.attach(w)
		return
	}
	go w.run()
}

// stop stops the pair's transmit (tx) or receive worker, if any; it returns
// once the worker no longer touches the ring.
func (qp *QueuePair) stop(tx bool) {
	qp.mu.Lock()
	defer qp.mu.Unlock()
	qp.stopLocked(tx)
}

func (qp *QueuePair) stopLocked(tx bool) {
	if tx {
		stopWorker(&qp.tx)
	} else {
		stopWorker(&qp.rx)
	}
}

func (qp *QueuePair) wakeRx() {
	qp.mu.Lock()
	defer qp.mu.Unlock()
	if qp.rx != nil {
		select {
		case qp.rx.wake <- struct{}{}:
		default:
		}
	}
}

// nudge wakes the worker: a blocked kick wait returns (deadline) and a
// timer or park wait sees the wake channel.
func (c *workerCtl) nudge(k *virtqueue.Kick) {
	if k != nil {
		_ = k.SetDeadline(time.Now())
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// workerCtl is the start/stop handshake shared by both loops.
type workerCtl struct {
	stopping atomic.Bool
	done     chan struct{}
	wake     chan struct{}
}

func newWorkerCtl() workerCtl {
	return workerCtl{done: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// waitKick blocks until the front-end kicks, the worker is told to stop, or
// (front-ends that poll and gave no kick fd) a short backoff passes. It
// returns false when the loop must exit.
func (c *workerCtl) waitKick(q *vdev.Queue, idle *time.Duration) bool {
	if c.stopping.Load() {
		return false
	}
	if q.Kick == nil {
		// NOFD: the front-end polls and never kicks; poll the ring with a
		// bounded backoff so an idle port costs little CPU.
		if *idle < time.Millisecond {
			*idle += 20 * time.Microsecond
		}
		t := time.NewTimer(*idle)
		select {
		case <-t.C:
		case <-c.wake:
			t.Stop()
		}
		return !c.stopping.Load()
	}
	err := q.Kick.Wait()
	if c.stopping.Load() {
		return false
	}
	if errors.Is(err, errDeadline) {
		// A wake-up without a kick (inject): clear it so the next wait
		// blocks again. stop sets stopping before the deadline, so a stop
		// is never lost: the loop checks stopping before waiting again.
		_ = q.Kick.SetDeadline(time.Time{})
		return true
	}
	return err == nil
}

// inject writes pkt to the pair's backend from the TX worker, the backend's
// one writer, or directly when no TX worker runs. It waits up to a second.
func (qp *QueuePair) inject(pkt [][]byte) error {
	qp.mu.Lock()
	defer qp.mu.Unlock()
	w := qp.tx
	if w == nil {
		_, err := qp.out.WritePackets([][][]byte{pkt})
		return err
	}
	r := &injectReq{pkt: pkt, done: make(chan error, 1)}
	w.inject.Store(r)
	w.nudge(w.q.Kick)
	select {
	case err := <-r.done:
		return err
	case <-time.After(time.Second):
		w.inject.CompareAndSwap(r, nil)
		return errors.New("the transmit worker did not take the packet within 1 s")
	}
}

// parkDisabled waits while the ring is disabled.
func (c *workerCtl) parkDisabled(q *vdev.Queue) bool {
	for !q.Enabled.Load() {
		if c.stopping.Load() {
			return false
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-c.wake:
		case <-t.C:
		}
		t.Stop()
	}
	return !c.stopping.Load()
}

// signal sends a used buffer notification if the driver wants one for what
// was pushed since the last call (vq.NeedNotify: EVENT_IDX or the
// NO_INTERRUPT/event suppression flags), else counts it as suppressed.
func (qp *QueuePair) signal(call *virtqueue.Call, vq virtqueue.Ring, calls, supp *atomic.Uint64) {
	if call != nil && vq.NeedNotify() {
		if err := call.Signal(); err == nil {
			calls.Add(1)
			return
		}
	}
	supp.Add(1)
}

// recoverFault turns a fault on guest memory into a broken ring; the worker
// defers it after calling debug.SetPanicOnFault(true) (beginRun). A front-end may shrink
// (ftruncate) the file behind a region after vhostd mapped it; touching the
// lost pages raises SIGBUS, which would otherwise kill the whole daemon. The
// worker's state is unknown after the fault, so the ring is not used again
// until the front-end sets it up anew. Any other panic is a bug and goes on.
//
// It is deferred by workerRun; it closes done last, whatever happened.
func (qp *QueuePair) recoverFault(done chan struct{}, q *vdev.Queue, broken *atomic.Bool, dir string) {
	defer close(done)
	r := recover()
	if r == nil {
		return
	}
	fault, ok := r.(interface{ Addr() uintptr })
	if !ok {
		panic(r)
	}
	broken.Store(true)
	qp.stats.Add(CtrMemFaults, 1)
	qp.dev.log.Error(dir+" ring broken: guest memory faulted (did the front-end shrink its memory file?); stopping the ring until the front-end resets the device",
		"queue", q.Index, "addr", fmt.Sprintf("%#x", fault.Addr()))
	q.Fail()
}

// beginRun starts a worker loop on its goroutine: guest memory can vanish
// under it (SIGBUS, see recoverFault, which the loop defers), and the kick
// deadline a stop of an earlier worker left set is cleared.
func beginRun(q *vdev.Queue) {
	debug.SetPanicOnFault(true)
	if q.Kick != nil {
		_ = q.Kick.SetDeadline(time.Time{})
	}
}

// stopWorker stops the worker *w, if any, and forgets it.
func stopWorker[T any, W interface {
	*T
	stop()
}](w *W) {
	if *w != nil {
		(*w).stop()
		*w = nil
	}
}

// guardFault runs f, which touches guest memory outside a worker goroutine,
// with a fault on that memory turned into a false result (see recoverFault).
func guardFault(f func()) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			ok = false
		}
	}()
	f()
	return true
}

// chainDrops maps the virtqueue chain errors to their drop reasons.
var chainDrops = [...]struct {
	err  error
	drop Drop
}{
	{virtqueue.ErrDescIndex, DropDescIndex},
	{virtqueue.ErrChainTooLong, DropChainTooLong},
	{virtqueue.ErrDescAddress, DropDescAddress},
	{virtqueue.ErrIndirectLen, DropIndirectLen},
	{virtqueue.ErrNestedIndirect, DropNestedIndirect},
	{virtqueue.ErrIndirectNext, DropIndirectNext},
	{virtqueue.ErrIndirectNotNegotiated, DropIndirectNotNegotiated},
	{virtqueue.ErrWriteBeforeRead, DropWriteBeforeRead},
	{virtqueue.ErrZeroLen, DropZeroLen},
}

// chainDrop maps a virtqueue chain error to its drop reason.
func chainDrop(err error) Drop {
	for _, c := range chainDrops {
		if errors.Is(err, c.err) {
			return c.drop
		}
	}
	return DropChainOther
}
