package virtionet

import (
	"encoding/binary"
	"errors"
	"time"
	"unsafe"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/vdev"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vhostd/vhostd/virtqueue"
)

// rxBufSize holds the largest packet a tap hands over: a 64 KiB GSO
// super-packet (IP total length is 16 bits) plus Ethernet, two VLAN tags and
// the virtio_net_hdr.
const rxBufSize = 12 + 14 + 8 + 65535

// rxHeld are packets read from the backend and not yet delivered to the guest.
// They survive an RX ring restart (memory table change) so nothing read is
// lost: when the guest has no room, vhostd stops reading the backend instead
// of dropping (backpressure; the tap's own queue then fills and the kernel
// applies its qdisc policy).
type rxHeld struct {
	bufs  [][]byte
	sizes []int
	n     int // packets in bufs
	next  int // next packet to deliver
}

// rxWorker fills one receiveq from the backend (backend -> guest).
type rxWorker struct {
	workerCtl
	qp        *QueuePair
	q         *vdev.Queue
	hdrLen    int
	mrg       bool // VIRTIO_NET_F_MRG_RXBUF: a packet may span several chains
	guestCsum bool // VIRTIO_NET_F_GUEST_CSUM: the guest accepts partial checksums
	// inOrder: VIRTIO_F_IN_ORDER, buffers are used in the order they were
	// made available, so a malformed chain never goes back ahead of good
	// chains popped before it (see refill).
	inOrder bool
	acked   uint64

	// cache holds chains popped from the avail ring and not yet used, so a
	// packet that needs several buffers (MRG_RXBUF) is only committed once
	// enough are there. Entries are swapped, never copied, because each owns
	// its Bufs backing array.
	cache []virtqueue.Chain
	cHead int
	cLen  int
	// hole is set when a malformed chain was returned while good chains
	// popped before it were still cached: the cache is then not the tail of
	// what was popped, and on stop it is returned with len 0 instead of
	// unpopped.
	hole   bool
	used   []virtqueue.UsedElem
	qsize  int
	drops  [numDrops]uint32
	oneIov [1][]byte
	peer   *rxPort // set when other ports fill this ring (no run loop)

	// Adaptive polling and RX call coalescing (poll.go), run loop only.
	poll          pollWindow
	pr            backend.PollReader // nil: polling off or a backend that cannot be polled
	polled        int
	lookBackendFn func() (bool, error)
	lookBufsFn    func() (bool, error)
	quitFn        func() bool
	holdCalls     bool // flush leaves the call to callNow
	callPending   bool
	pendingSince  time.Time
	pkts          uint64
	bytes         uint64
	gso           uint64
	nbufs         uint64
	csumOK        uint64
}

func newRxWorker(qp *QueuePair, q *vdev.Queue, hdrLen int, acked uint64) *rxWorker {
	qs := int(q.VQ.Size())
	w := &rxWorker{
		workerCtl: newWorkerCtl(),
		qp:        qp, q: q, hdrLen: hdrLen, acked: acked,
		mrg:       vnet.Feature(acked).Has(vnet.NetMrgRxbuf),
		guestCsum: vnet.Feature(acked).Has(vnet.NetGuestCsum),
		inOrder:   vnet.Feature(acked).Has(vnet.FeatureInOrder),
		cache:     make([]virtqueue.Chain, qs),
		used:      make([]virtqueue.UsedElem, 0, qs),
		qsize:     qs,
	}
	for i := range w.cache {
		w.cache[i].Bufs = make([]virtqueue.Buffer, 0, 2)
	}
	w.poll = newPollWindow(qp.dev.cfg.PollMax)
	if pr, ok := qp.be.(backend.PollReader); ok && w.poll.on() {
		w.pr = pr
		w.holdCalls = true
	}
	w.lookBackendFn, w.lookBufsFn, w.quitFn = w.lookBackend, w.lookBufs, w.quitPoll
	h := &qp.rxState
	if h.bufs == nil {
		b := qp.dev.cfg.RxBatch
		h.bufs = make([][]byte, b)
		h.sizes = make([]int, b)
		for i := range h.bufs {
			h.bufs[i] = make([]byte, rxBufSize)
		}
	}
	return w
}

func (w *rxWorker) stop() {
	if w.peer != nil {
		// Linked: no goroutine; wait out an in-flight delivery, then give
		// back the buffers popped ahead of need. This runs on the session
		// goroutine and may write the used ring, so a guest that shrank
		// its memory file must not kill the daemon here (recoverFault).
		w.peer.detach()
		if !guardFault(w.releaseCache) {
			w.qp.stats.Add(CtrMemFaults, 1)
		}
		return
	}
	w.stopping.Store(true)
	_ = w.qp.be.SetReadDeadline(time.Now())
	w.nudge(w.q.Kick)
	<-w.done
}

func (w *rxWorker) run() {
	// recoverFault is deferred before releaseCache, which writes the used
	// ring, so that it also catches a fault there.
	defer w.qp.recoverFault(w.done, w.q, &w.qp.stats.RxBroken, "receive")
	// Chains popped but not used go back to the avail ring, so that the
	// index GET_VRING_BASE reports covers only buffers we really consumed.
	defer w.releaseCache()
	beginRun(w.q)
	q := w.q
	_ = w.qp.be.SetReadDeadline(time.Time{})
	st := w.qp.stats
	held := &w.qp.rxState
	log := w.qp.dev.log.With("queue", q.Index)
	var idle time.Duration
	q.VQ.DisableNotify()
	for !w.stopping.Load() {
		if !q.Enabled.Load() {
			// Spec "Ring states": a disabled ring must not be supplied with
			// RX; the backend is simply not read meanwhile.
			w.callNow()
			if !w.parkDisabled(q) {
				return
			}
			continue
		}
		if held.next == held.n {
			if w.cLen == 0 {
				// One load on either ring (Pending walks a packed ring).
				avail, err := q.VQ.HasAvail()
				if err != nil {
					w.broken(err)
					return
				}
				if !avail {
					w.callNow()
					if ok, err := w.poll.poll(w.lookBufsFn, w.quitFn); err != nil {
						w.broken(err)
						return
					} else if ok {
						continue
					}
					w.poll.sleeps++
					w.foldPoll()
					if !w.waitBuffers(&idle) {
						return
					}
					continue
				}
			}
			n, err := w.readBackend(held)
			if err != nil {
				if errors.Is(err, errDeadline) {
					continue
				}
				if w.stopping.Load() {
					return
				}
				st.Add(CtrRxReadErrors, 1)
				log.Warn("backend read failed", "err", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			held.n, held.next = n, 0
			st.RxBatch.observeBatch(n)
		}
		stalled := false
		for held.next < held.n {
			ok, err := w.deliver(held.bufs[held.next][:held.sizes[held.next]])
			if err != nil {
				w.flush()
				w.broken(err)
				return
			}
			if !ok {
				stalled = true
				break
			}
			held.next++
		}
		w.flush()
		if w.pr != nil {
			w.foldPoll()
		}
		if stalled {
			w.callNow()
			if !w.waitBuffers(&idle) {
				return
			}
		} else {
			idle = 0
		}
	}
}

// releaseCache gives back the chains popped but not filled when the worker
// stops, so the index GET_VRING_BASE reports covers only buffers really used.
func (w *rxWorker) releaseCache() {
	if w.cLen == 0 {
		return
	}
	if !w.hole {
		w.q.VQ.Unpop(w.cLen)
	} else {
		for i := 0; i < w.cLen; i++ {
			w.used = append(w.used, virtqueue.UsedElem{ID: uint32(w.cache[w.cHead+i].Head)})
		}
		w.q.VQ.Push(w.used)
		w.used = w.used[:0]
	}
	w.cHead, w.cLen = 0, 0
}

func (w *rxWorker) broken(err error) {
	w.qp.stats.RxBroken.Store(true)
	w.qp.dev.log.Error("receive ring broken; stopping it until the front-end resets the device",
		"queue", w.q.Index, "err", err)
	w.q.Fail() // SET_VRING_ERR and DEVICE_NEEDS_RESET
}

// waitBuffers waits for the guest to post RX buffers: it asks for a kick and
// sleeps until it comes. Counted as an RX stall.
func (w *rxWorker) waitBuffers(idle *time.Duration) bool {
	q := w.q
	if q.VQ.EnableNotify() {
		q.VQ.DisableNotify()
		return true
	}
	w.qp.stats.Add(CtrRxStalls, 1)
	if !w.waitKick(q, idle) {
		return false
	}
	w.qp.stats.Add(CtrRxKicks, 1)
	q.VQ.DisableNotify()
	return true
}

// flush publishes used entries, signals the guest and folds local counters.
//
// The entries are in the order the chains were popped whenever IN_ORDER is
// negotiated (refill keeps it so), and Push writes one used entry (packed:
// one used descriptor) per buffer, which IN_ORDER allows. It does not use
// PushInOrder's batching here: the only RX runs it could fold are the
// filled buffers of a multi-buffer packet, and DPDK's virtio drivers read
// every used entry on RX (split in-order reads each entry's len, the packed
// RX path advances one descriptor per used descriptor), so a folded run
// would hand them stale lengths or stall them. TX, where they cope, batches.
func (w *rxWorker) flush() {
	st := w.qp.stats
	if len(w.used) > 0 {
		w.q.VQ.Push(w.used)
		w.used = w.used[:0]
		if w.holdCalls {
			// Signalled by callNow: before the worker waits, or once
			// the coalescing bounds are reached (readBackend).
			if w.callPending {
				st.Add(CtrRxCallsCoalesced, 1)
			} else {
				w.callPending, w.pendingSince = true, time.Now()
			}
		} else {
			w.qp.signal(w.q.Call, w.q.VQ, st.C.Ptr(CtrRxCalls), st.C.Ptr(CtrRxCallsSupp))
		}
	}
	if w.pkts != 0 {
		st.Add(CtrRxPackets, w.pkts)
		st.Add(CtrRxBytes, w.bytes)
		st.Add(CtrRxGSOPackets, w.gso)
		st.Add(CtrRxBuffers, w.nbufs)
		st.Add(CtrRxCsumDone, w.csumOK)
		w.pkts, w.bytes, w.gso, w.nbufs, w.csumOK = 0, 0, 0, 0, 0
	}
	for d, c := range w.drops {
		if c != 0 {
			st.Add(CtrRxDrops.At(int(d)), uint64(c))
			w.drops[d] = 0
		}
	}
}

// callNow sends the used buffer notification held back by flush.
func (w *rxWorker) callNow() {
	if w.callPending {
		w.callPending = false
		st := w.qp.stats
		w.qp.signal(w.q.Call, w.q.VQ, st.C.Ptr(CtrRxCalls), st.C.Ptr(CtrRxCallsSupp))
	}
}

// RX interrupt coalescing bounds: while the backend keeps handing over
// packets the guest's interrupt is held (one call covers several batches;
// "rx coalescing is good for stream throughput"), but never longer than
// rxCoalesceTime after the first held batch, and never once the backend
// runs dry, so a lone request-response packet is signalled at once.
const rxCoalesceTime = 50 * time.Microsecond

// readBackend reads the next batch from the backend. With polling on it
// looks without blocking first; a pending guest notification goes out
// before the worker polls or sleeps, or when it has been held for
// rxCoalesceTime. Without polling it is the plain blocking read.
func (w *rxWorker) readBackend(held *rxHeld) (int, error) {
	if w.pr == nil {
		return w.qp.be.ReadPackets(held.bufs, held.sizes, 0)
	}
	if ok, err := w.lookBackend(); ok || err != nil {
		if w.callPending && time.Since(w.pendingSince) >= rxCoalesceTime {
			w.callNow()
		}
		return w.polled, err
	}
	w.callNow()
	if ok, err := w.poll.poll(w.lookBackendFn, w.quitFn); ok || err != nil {
		return w.polled, err
	}
	w.poll.sleeps++
	w.foldPoll()
	return w.qp.be.ReadPackets(held.bufs, held.sizes, 0)
}

// lookBackend is the RX look at the backend without waiting: it reads what
// is queued into the held buffers (w.polled packets).
func (w *rxWorker) lookBackend() (bool, error) {
	h := &w.qp.rxState
	n, err := w.pr.TryReadPackets(h.bufs, h.sizes, 0)
	w.polled = n
	return n > 0, err
}

// lookBufs is the RX poll look at the avail ring, while the guest has
// posted no buffers.
func (w *rxWorker) lookBufs() (bool, error) { return w.q.VQ.HasAvail() }

func (w *rxWorker) quitPoll() bool { return w.stopping.Load() || !w.q.Enabled.Load() }

func (w *rxWorker) foldPoll() { w.qp.stats.foldPoll(CtrRxPoll, CtrRxPollWindow, &w.poll) }

// refill pops more chains into the cache. It returns false when the avail
// ring has none, and an error when the ring is broken.
//
// With IN_ORDER a malformed chain cannot go back while good chains popped
// before it wait in the cache (the driver takes used entries in order, and
// would read the malformed chain's id as the end of a batch of the good
// ones): those good chains go back first, unused (len 0, which a driver
// drops as a short packet), and the cache starts again after the malformed
// chain. A packet being gathered (place) then starts again too.
func (w *rxWorker) refill() (bool, error) {
	if w.cHead > 0 {
		// Compact by swapping so each slot keeps its own Bufs array.
		for i := 0; i < w.cLen; i++ {
			w.cache[i], w.cache[w.cHead+i] = w.cache[w.cHead+i], w.cache[i]
		}
		w.cHead = 0
	}
	base := w.cLen // free[0] is w.cache[base]
	free := w.cache[w.cLen:]
	if len(free) == 0 {
		return false, nil
	}
	if len(free) > 64 {
		free = free[:64]
	}
	n, err := w.q.VQ.Pop(free)
	if err != nil {
		return false, err
	}
	// Malformed chains go straight back with len 0 and a counted drop.
	kept := 0
	for i := 0; i < n; i++ {
		c := &free[i]
		var d Drop
		switch {
		case c.Err != nil:
			d = chainDrop(c.Err)
		case c.ReadLen != 0:
			d = DropRxReadableBuffer
		}
		if d != DropNone {
			if w.cLen+kept > 0 {
				if w.inOrder {
					w.returnUnused(free[:kept], base)
					kept = 0
				} else {
					w.hole = true
				}
			}
			w.drops[d]++
			w.used = append(w.used, virtqueue.UsedElem{ID: uint32(c.Head)})
			continue
		}
		if kept != i {
			free[kept], free[i] = free[i], free[kept]
		}
		kept++
	}
	w.cLen += kept
	return n > 0, nil
}

// returnUnused gives back, with len 0 and in pop order, every cached chain
// and then the chains of the current refill batch before a malformed one
// (IN_ORDER; see refill). The cache is empty afterwards and starts at base,
// the cache slot of the batch's first chain, where refill keeps the good
// chains after the malformed one.
func (w *rxWorker) returnUnused(batch []virtqueue.Chain, base int) {
	for i := 0; i < w.cLen; i++ {
		w.used = append(w.used, virtqueue.UsedElem{ID: uint32(w.cache[w.cHead+i].Head)})
	}
	for i := range batch {
		w.used = append(w.used, virtqueue.UsedElem{ID: uint32(batch[i].Head)})
	}
	w.qp.stats.Add(CtrRxBuffersUnused, uint64(w.cLen+len(batch)))
	w.cHead, w.cLen = base, 0
}

// deliver copies one packet (virtio_net_hdr + frame, as the backend gave it)
// into guest buffers. ok=false means the guest has too few buffers posted: the
// packet stays held and RX waits for a kick.
func (w *rxWorker) deliver(pkt []byte) (bool, error) {
	if len(pkt) < w.hdrLen {
		w.drops[DropRxNoRoom]++ // cannot happen with a tap; count, never panic
		return true, nil
	}
	gt := pkt[1] &^ vnet.GSOECN
	if gt != vnet.GSONone && !w.gsoAcked(gt, pkt[1]&vnet.GSOECN != 0) {
		w.drops[DropRxGSONotAcked]++
		return true, nil
	}
	if pkt[0]&vnet.FlagNeedsCsum != 0 && !w.guestCsum {
		if completeRxChecksum(pkt, w.hdrLen) {
			w.csumOK++
		}
	}
	w.oneIov[0] = pkt[w.hdrLen:]
	return w.place(pkt[:w.hdrLen], w.oneIov[:], len(pkt)-w.hdrLen)
}

// place copies one packet, given as this guest's virtio_net_hdr (hdr, len
// w.hdrLen, writable: num_buffers is patched in it) and the frame as iovecs,
// into guest buffers. This is the one copy a packet gets on its way to the
// guest, whether it comes from a backend's read buffer or straight from
// another guest's TX buffers (Link). ok=false means the guest has too few
// buffers posted; nothing was consumed.
func (w *rxWorker) place(hdr []byte, frame [][]byte, frameLen int) (bool, error) {
	need := uint32(len(hdr) + frameLen)
	// Gather enough chains: one without MRG_RXBUF, as many as needed with it.
	var have uint32
	cnt := 0
	for {
		if cnt == w.cLen {
			if w.cLen == w.qsize {
				// The whole ring cannot hold this packet: it never will.
				w.drops[DropRxNoRoom]++
				return true, nil
			}
			got, err := w.refill()
			if err != nil {
				return false, err
			}
			if w.cLen < cnt {
				// IN_ORDER: refill gave the cache back (a malformed
				// chain); gather from the start again.
				cnt, have = 0, 0
			}
			if !got {
				return false, nil
			}
			continue
		}
		have += w.cache[w.cHead+cnt].WriteLen
		cnt++
		if have >= need {
			break
		}
		if !w.mrg {
			// One buffer per packet, and it is too small: skip this packet,
			// keep the buffer for the next one.
			w.drops[DropRxBufferTooSmall]++
			return true, nil
		}
	}
	// num_buffers (virtio spec 5.1.6.4): the number of chains this packet
	// uses; 1 when MRG_RXBUF is not negotiated.
	if w.hdrLen >= 12 {
		binary.LittleEndian.PutUint16(hdr[10:12], uint16(cnt))
	}
	// Copy hdr then the frame iovecs across the chains' writable buffers.
	src, rest := hdr, frame
	if len(frame) == 1 && cap(hdr)-len(hdr) >= len(frame[0]) && len(frame[0]) > 0 &&
		unsafe.SliceData(hdr[len(hdr):cap(hdr)]) == unsafe.SliceData(frame[0]) {
		// The frame follows the header in memory (a backend read buffer):
		// one copy for both (num_buffers is patched in place above).
		src, rest = hdr[:len(hdr)+len(frame[0])], nil
	}
	dlog := w.q.Log // non-nil while migrating: mark what we write, after writing it
	for i := 0; i < cnt; i++ {
		c := &w.cache[w.cHead+i]
		var wrote uint32
		for j := range c.Bufs {
			dst := c.Bufs[j].B
			for len(dst) > 0 {
				for len(src) == 0 && len(rest) > 0 {
					src, rest = rest[0], rest[1:]
				}
				if len(src) == 0 {
					break
				}
				k := copy(dst, src)
				src, dst = src[k:], dst[k:]
				wrote += uint32(k)
			}
			if dlog != nil {
				b := c.Bufs[j].B
				dlog.MarkHost(b[:len(b)-len(dst)])
			}
		}
		w.used = append(w.used, virtqueue.UsedElem{ID: uint32(c.Head), Len: wrote})
	}
	w.cHead += cnt
	w.cLen -= cnt
	if w.cLen == 0 {
		w.cHead, w.hole = 0, false
	}
	if c := w.qp.dev.capture.Load(); c != nil && c.wants(CaptureRX) {
		w.captureRx(c, hdr, frame)
	}
	w.pkts++
	w.bytes += uint64(frameLen)
	w.nbufs += uint64(cnt)
	if hdr[1] != vnet.GSONone {
		w.gso++
	}
	if len(w.used) >= 64 {
		w.flush()
	}
	return true, nil
}

// gsoAcked reports whether the guest negotiated this GSO type (spec 5.1.6.4:
// the device MUST NOT send GSO types the driver did not accept).
func (w *rxWorker) gsoAcked(gt uint8, ecn bool) bool {
	a := vnet.Feature(w.acked)
	if ecn && !a.Has(vnet.NetGuestECN) {
		return false
	}
	switch gt {
	case vnet.GSOTCPv4:
		return a.Has(vnet.NetGuestTSO4)
	case vnet.GSOTCPv6:
		return a.Has(vnet.NetGuestTSO6)
	case vnet.GSOUDPL4:
		return a.Has(vnet.NetGuestUSO4) || a.Has(vnet.NetGuestUSO6)
	case vnet.GSOUDP:
		return a.Has(vnet.NetGuestUFO)
	}
	return false
}
