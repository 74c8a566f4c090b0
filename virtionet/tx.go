package virtionet

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/vdev"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vhostd/vhostd/virtqueue"
)

var errDeadline = os.ErrDeadlineExceeded

// maxIovecs bounds the iovecs of one packet: writev takes at most IOV_MAX
// (1024) entries, one of which is our copy of the header.
const maxIovecs = 1024

// maxTxFrameLen is the longest frame a guest may transmit: Ethernet, two VLAN
// tags and the largest IP packet a 16-bit length field describes. A longer
// chain is no packet any backend takes (a tap refuses it, and gso could not
// describe its segments); passing it on would hand the backend up to 4 GiB.
const maxTxFrameLen = 14 + 8 + 65535

// txWorker drains one transmitq into the backend (guest -> backend).
//
// Per batch: pop up to TxBatch chains, validate each header (a copy of it, so
// the guest cannot change it between our check and the backend's read), hand
// the frames to the backend as iovecs that point straight into guest memory,
// then publish all used entries (len 0, nothing was written) at once (with
// VIRTIO_F_IN_ORDER as one used entry for the batch) and signal per
// EVENT_IDX. Completing TX promptly matters: the guest's TCP Small
// Queues holds a flow back until its skbs are freed, which happens when the
// used entry arrives.
type txWorker struct {
	workerCtl
	// inject is a packet vhostd itself sends on this port (the RARP
	// announce after a migration), handed to the worker so that the
	// backend keeps one writer.
	inject atomic.Pointer[injectReq]
	qp     *QueuePair
	q      *vdev.Queue
	hdrLen int
	acked  uint64

	chains []virtqueue.Chain
	used   []virtqueue.UsedElem
	pkts   [][][]byte // per packet: header copy, then frame iovecs
	iovs   [][]byte   // backing store for pkts
	hdrs   [][hdrMax]byte
	paths  []TxPath
	lens   []int
	failed []bool
	// Per-batch counters, folded into QueueStats once per batch so the
	// datapath does one atomic add per counter per batch, not per packet.
	drops     [numDrops]uint32
	pathPkts  [numTxPaths]uint64
	pathBytes [numTxPaths]uint64
	gsoPkts   uint64
	segs      uint64
	decisions [gso.NumReasons]uint32

	// verdict is what packet() decided for the current chain, for capture.
	verdict txVerdict
	capIov  [][]byte

	// Decision inputs, re-read from the backend once per batch: a tap's
	// limits follow its egress device, which can change while a ring runs.
	feats  vnet.Offloads
	limits gso.Limits

	head    [256]byte // contiguous copy of a frame head whose headers span descriptors
	csums   [][2]byte // completed checksums, spliced into the iovecs
	spare   [][]byte  // scratch for rebuilding iovecs
	arena   []byte    // software segmentation output
	segDst  [][]byte
	segPkts [][][]byte
	segIov  [][][]byte
	reseg   gso.ResegmentOut

	poll   pollWindow
	lookFn func() (bool, error) // w.lookAvail, bound once (no per-poll allocation)
	quitFn func() bool
	budget int
}

// segArenaSize holds 64 KiB of segments with their headers: a 64 KiB
// super-packet at MSS 1448 is 46 segments of 1514 bytes (+12 header).
const segArenaSize = 128 << 10

// maxSegsPerWrite bounds how many segments one Segment call produces.
const maxSegsPerWrite = 128

// maxResegPerWrite bounds how many super-packets one Resegment call produces.
const maxResegPerWrite = 16

const hdrMax = 12

func newTxWorker(qp *QueuePair, q *vdev.Queue, hdrLen int, acked uint64) *txWorker {
	b := qp.dev.cfg.TxBatch
	w := &txWorker{
		workerCtl: newWorkerCtl(),
		qp:        qp, q: q, hdrLen: hdrLen, acked: acked,
		chains: make([]virtqueue.Chain, b),
		used:   make([]virtqueue.UsedElem, 0, b),
		pkts:   make([][][]byte, 0, b),
		iovs:   make([][]byte, 0, b*4),
		hdrs:   make([][hdrMax]byte, b),
		paths:  make([]TxPath, b),
		lens:   make([]int, b),
		failed: make([]bool, max(b, maxSegsPerWrite)),
		csums:  make([][2]byte, b),
		spare:  make([][]byte, 0, 8),
	}
	w.readCaps()
	w.poll = newPollWindow(qp.dev.cfg.PollMax)
	w.lookFn, w.quitFn = w.lookAvail, w.quitPoll
	w.budget = txWeight
	w.arena = make([]byte, segArenaSize)
	w.segDst = make([][]byte, maxSegsPerWrite)
	w.segPkts = make([][][]byte, 0, maxSegsPerWrite)
	w.segIov = make([][][]byte, maxSegsPerWrite)
	for i := range w.segIov {
		w.segIov[i] = make([][]byte, 0, 1)
	}
	w.reseg = gso.ResegmentOut{
		Pkts:       make([][][]byte, maxResegPerWrite),
		Hdrs:       make([][]byte, maxResegPerWrite),
		VnetHdrLen: hdrLen,
	}
	for i := range w.reseg.Hdrs {
		w.reseg.Hdrs[i] = make([]byte, 0, 512)
	}
	for i := range w.chains {
		w.chains[i].Bufs = make([]virtqueue.Buffer, 0, 4)
	}
	return w
}

// injectReq is one packet to inject and where to report the result.
type injectReq struct {
	pkt  [][]byte
	done chan error
}

// writeInjected writes a packet vhostd made itself (not from the guest's
// ring, so it is not in the TX accounting).
func (w *txWorker) writeInjected(pkt [][]byte) error {
	_, err := w.qp.out.WritePackets([][][]byte{pkt})
	return err
}

// readCaps loads the backend's offloads and limits (one atomic load for a
// tap) into the decision inputs.
func (w *txWorker) readCaps() {
	caps := w.qp.out.Caps()
	w.feats = caps.Offloads
	w.limits = gso.Limits{GSOMaxSize: caps.GSOMaxSize, GSOMaxSegs: caps.GSOMaxSegs, MTU: caps.MTU}
}

func (w *txWorker) stop() {
	w.stopping.Store(true)
	w.nudge(w.q.Kick)
	<-w.done
}

func (w *txWorker) run() {
	defer w.qp.recoverFault(w.done, w.q, &w.qp.stats.TxBroken, "transmit")
	beginRun(w.q)
	q := w.q
	st := w.qp.stats
	log := w.qp.dev.log.With("queue", q.Index)
	var idle time.Duration
	q.VQ.DisableNotify()
	for !w.stopping.Load() {
		if r := w.inject.Swap(nil); r != nil {
			r.done <- w.writeInjected(r.pkt)
		}
		seen := time.Now()
		n, err := q.VQ.Pop(w.chains)
		if err != nil {
			// A device error such as the avail index jumping by more than the
			// queue size: the ring is unusable until the front-end resets it.
			st.TxBroken.Store(true)
			log.Error("transmit ring broken; stopping it until the front-end resets the device", "err", err)
			q.Fail() // SET_VRING_ERR and DEVICE_NEEDS_RESET
			return
		}
		if n == 0 {
			// Look for more before sleeping: the driver sees NO_NOTIFY
			// meanwhile, so a packet posted now costs neither side a kick.
			if ok, err := w.poll.poll(w.lookFn, w.quitFn); ok || err != nil {
				continue // Pop again; it reports a broken ring itself
			}
			if q.VQ.EnableNotify() {
				q.VQ.DisableNotify()
				continue
			}
			w.poll.sleeps++
			w.foldPoll()
			if !w.waitKick(q, &idle) {
				return
			}
			st.Add(CtrTxKicks, 1)
			q.VQ.DisableNotify()
			continue
		}
		idle = 0
		w.processBatch(n, seen)
		// Fairness across ports and queues (vhost-net's weight limits):
		// after a round's budget of packets, let the other workers have
		// the CPU before taking more from this ring.
		w.budget -= n
		if w.budget <= 0 {
			w.budget = txWeight
			runtime.Gosched()
		}
	}
}

func (w *txWorker) foldPoll() { w.qp.stats.foldPoll(CtrTxPoll, CtrTxPollWindow, &w.poll) }

// txWeight is the packets a TX worker handles before it lets other
// goroutines run (vhost-net: VHOST_NET_PKT_WEIGHT, 256).
const txWeight = 256

// lookAvail is the TX poll look: has the driver posted a chain?
func (w *txWorker) lookAvail() (bool, error) { return w.q.VQ.HasAvail() }

// quitPoll stops a poll for a stop or a packet to inject.
func (w *txWorker) quitPoll() bool { return w.stopping.Load() || w.inject.Load() != nil }

func (w *txWorker) processBatch(n int, seen time.Time) {
	st := w.qp.stats
	q := w.q
	enabled := q.Enabled.Load()
	capt := w.qp.dev.capture.Load()
	if capt != nil && !capt.wants(CaptureTX) {
		capt = nil
	}
	w.used = w.used[:0]
	w.pkts = w.pkts[:0]
	w.iovs = w.iovs[:0]
	w.readCaps()
	st.Add(CtrTxPosted, uint64(n))
	for i := 0; i < n; i++ {
		c := &w.chains[i]
		w.used = append(w.used, virtqueue.UsedElem{ID: uint32(c.Head)})
		w.verdict = txVerdict{}
		switch {
		case c.Err != nil:
			w.drop(chainDrop(c.Err))
		case !enabled:
			w.drop(DropRingDisabled)
		case c.WriteLen != 0:
			w.drop(DropTxWritableBuffer)
		case len(c.Bufs) >= maxIovecs || c.ReadLen > uint32(w.hdrLen+maxTxFrameLen):
			w.drop(DropTxTooLarge)
		default:
			w.packet(c)
		}
		if capt != nil {
			w.capture(capt, c)
		}
	}
	w.flushPkts()

	// Every chain of the batch goes back, in pop order: with IN_ORDER
	// that is one used entry (packed: one used descriptor) for the batch,
	// less where a chain was malformed; without it, Push.
	q.VQ.PushInOrder(w.used)
	w.qp.signal(q.Call, q.VQ, st.C.Ptr(CtrTxCalls), st.C.Ptr(CtrTxCallsSupp))
	st.TxLatency.observeLatency(time.Since(seen), uint64(n))
	st.TxBatch.observeBatch(n)
	w.foldStats()
	if w.poll.on() {
		w.foldPoll()
	}
}

// foldStats adds the batch's counters to the shared stats and resets them.
func (w *txWorker) foldStats() {
	st := w.qp.stats
	for d, c := range w.drops {
		if c != 0 {
			st.Add(CtrTxDrops.At(int(d)), uint64(c))
			w.drops[d] = 0
		}
	}
	for p := range w.pathPkts {
		if w.pathPkts[p] != 0 {
			st.Add(CtrTxPackets.At(int(p)), w.pathPkts[p])
			st.Add(CtrTxBytes.At(int(p)), w.pathBytes[p])
			w.pathPkts[p], w.pathBytes[p] = 0, 0
		}
	}
	for r, c := range w.decisions {
		if c != 0 {
			st.Add(CtrTxDecisions.At(int(r)), uint64(c))
			if gso.Reason(r) == gso.ReasonSmallGSO {
				// Also exported on its own (virtio tx_gso_packets_noseg).
				st.Add(CtrTxGSONoseg, uint64(c))
			}
			w.decisions[r] = 0
		}
	}
	if w.gsoPkts != 0 {
		st.Add(CtrTxGSOPackets, w.gsoPkts)
		w.gsoPkts = 0
	}
	if w.segs != 0 {
		st.Add(CtrTxSegments, w.segs)
		w.segs = 0
	}
}

// packet validates one TX chain, decides its path and queues it for the
// backend (or segments it and writes the segments at once).
// txVerdict is the fate of one TX packet, recorded for packet capture.
type txVerdict struct {
	path   TxPath
	dec    gso.Decision
	reason gso.Reason
	drop   Drop
}

func (w *txWorker) drop(d Drop) {
	w.drops[d]++
	w.verdict.drop = d
}

func (w *txWorker) packet(c *virtqueue.Chain) {
	st := w.qp.stats
	k := len(w.pkts)
	hb := w.hdrs[k][:w.hdrLen]
	if copyHeader(hb, c.Bufs) < w.hdrLen {
		w.drop(DropHdrInvalid)
		st.Add(CtrTxHdrErrors.At(int(vnet.HdrShort)), 1)
		return
	}
	frameLen := int(c.ReadLen) - w.hdrLen
	h := vnet.DecodeHdr(hb)
	if r := txHeaderCheck(h, frameLen); r != vnet.HdrOK {
		w.drop(DropHdrInvalid)
		st.Add(CtrTxHdrErrors.At(int(r)), 1)
		return
	}
	// num_buffers is meaningless on TX (the driver sets 0); the tap reads
	// only the first 10 bytes anyway.
	if w.hdrLen == 12 {
		hb[10], hb[11] = 0, 0
		h.NumBuffers = 0
	}
	start := len(w.iovs)
	w.iovs = append(w.iovs, hb)
	w.iovs = appendFrameIovecs(w.iovs, c.Bufs, w.hdrLen)
	frame := w.iovs[start+1:]

	plain := h.GSOType == vnet.GSONone
	if plain {
		if h.Flags&vnet.FlagNeedsCsum == 0 || w.feats&vnet.OffloadCSUM != 0 {
			// The common small-packet case: nothing to decide, the backend
			// takes the packet as it is (a partial checksum included).
			w.queue(start, frameLen, PathPlain)
			return
		}
	} else {
		w.gsoPkts++
	}
	policy := gso.Policy(w.qp.dev.policy.Load())
	if policy == gso.PolicyDefer {
		// Defer: hand everything over whole and let the kernel segment, as
		// vhost-net would; the kernel validates again on write.
		w.decisions[gso.ReasonPolicy]++
		w.verdict.reason = gso.ReasonPolicy
		w.queue(start, frameLen, pathWhole(plain))
		return
	}
	m, r := gso.ParseHead(frame[0], frameLen, h)
	if r == gso.ReasonHeadTooShort {
		// The headers span descriptors: parse a contiguous copy of the head.
		nh := 0
		for _, b := range frame {
			nh += copy(w.head[nh:], b)
			if nh == len(w.head) {
				break
			}
		}
		m, _ = gso.ParseHead(w.head[:nh], frameLen, h)
	}
	dec, reason := gso.Decide(m, w.feats, w.limits, policy)
	w.decisions[reason]++
	w.verdict.dec, w.verdict.reason = dec, reason
	switch dec {
	case gso.DecisionPassWhole:
		w.queue(start, frameLen, pathWhole(plain))
	case gso.DecisionPassPlain:
		ph := m.PlainVnetHdr()
		ph.Encode(hb)
		w.queue(start, frameLen, PathPlain)
	case gso.DecisionCompleteCsum:
		w.completeCsum(start, &m)
	case gso.DecisionSegment:
		w.iovs = w.iovs[:start]
		w.segment(frame, &m)
	case gso.DecisionResegment:
		w.iovs = w.iovs[:start]
		w.resegment(frame, &m)
	default:
		w.iovs = w.iovs[:start]
		w.gsoDrop(reason)
	}
}

// txHeaderCheck is the device's policy on a guest's TX header: the kernel's
// virtio_net_hdr_to_skb rules plus the spec's driver MUSTs (5.1.6.2), so a
// GSO header without NEEDS_CSUM is dropped and counted as gso_no_csum,
// where gso.Parse (vnet.KernelRules, mirroring the kernel) would let
// Decide segment it in software. TestTxHeaderCheckAgreesWithGSO pins the
// difference.
func txHeaderCheck(h vnet.Hdr, frameLen int) vnet.HdrReason {
	return h.Check(frameLen, vnet.DeviceRules)
}

func pathWhole(plain bool) TxPath {
	if plain {
		return PathPlain
	}
	return PathPassthrough
}

// queue adds the packet whose iovecs start at w.iovs[start] to the batch.
func (w *txWorker) queue(start, frameLen int, path TxPath) {
	w.verdict.path = path
	k := len(w.pkts)
	w.pkts = append(w.pkts, w.iovs[start:len(w.iovs):len(w.iovs)])
	w.lens[k] = frameLen
	w.paths[k] = path
}

// completeCsum finishes the partial checksum of a non-GSO packet for a
// backend without checksum offload. Guest TX buffers are read-only to the
// device, so the two checksum bytes come from our own scratch: the iovec
// holding them is split around a 2-byte slice of w.csums.
func (w *txWorker) completeCsum(start int, m *gso.Meta) {
	frame := w.iovs[start+1:]
	csum, at, ok := gso.FinishCsum(frame, m)
	if !ok {
		w.iovs = w.iovs[:start]
		w.drop(DropGSOMalformed)
		return
	}
	k := len(w.pkts)
	cs := w.csums[k][:]
	cs[0], cs[1] = byte(csum>>8), byte(csum)
	// Rebuild the frame iovecs with the two bytes [at, at+2) replaced by
	// cs; the field may straddle two buffers.
	tail := append(w.spare[:0], frame...)
	w.iovs = w.iovs[:start+1]
	off := 0
	for _, b := range tail {
		lo, hi := off, off+len(b)
		if at > lo {
			w.iovs = append(w.iovs, b[:min(at, hi)-lo])
		}
		if at >= lo && at < hi {
			w.iovs = append(w.iovs, cs)
		}
		if at+2 < hi {
			w.iovs = append(w.iovs, b[max(at+2, lo)-lo:])
		}
		off = hi
	}
	w.spare = tail[:0]
	hb := w.iovs[start]
	clear(hb)
	w.queue(start, m.FrameLen, PathCsumCompleted)
}

// segment cuts a super-packet to MSS-sized packets into the worker's arena
// and writes them. The batch queued so far goes first, so that packet order
// on the backend is the ring's order.
func (w *txWorker) segment(frame [][]byte, m *gso.Meta) {
	w.flushPkts()
	per := w.hdrLen + m.MaxSegmentLen()
	cnt := min(len(w.arena)/per, len(w.segDst))
	if cnt == 0 {
		w.drop(DropTxTooLarge)
		return
	}
	sh := m.SegmentVnetHdr(w.feats)
	failed := false
	written := 0
	for from := 0; from < m.Segs && !failed; {
		for i := 0; i < cnt; i++ {
			w.segDst[i] = w.arena[i*per+w.hdrLen : i*per+w.hdrLen : (i+1)*per]
		}
		n, r := gso.Segment(w.segDst[:cnt], frame, m, w.feats, from)
		if n == 0 {
			w.gsoDrop(r)
			return
		}
		w.segPkts = w.segPkts[:0]
		for i := 0; i < n; i++ {
			hb := w.arena[i*per : i*per+w.hdrLen]
			sh.Encode(hb)
			w.segPkts = append(w.segPkts, w.segIov[i][:0])
			w.segPkts[i] = append(w.segPkts[i], w.arena[i*per:i*per+w.hdrLen+len(w.segDst[i])])
		}
		k, bad := w.writeAll(w.segPkts)
		written, failed = written+k, bad
		from += n
	}
	w.splitDone(PathSegmented, written, failed, m.FrameLen)
}

// resegment splits a super-packet that exceeds gso_max_size/gso_max_segs
// into the fewest super-packets that fit. Only headers are copied; payload
// iovecs still point into guest memory.
func (w *txWorker) resegment(frame [][]byte, m *gso.Meta) {
	w.flushPkts()
	total := gso.ResegmentCount(m, w.limits)
	for i := range w.reseg.Pkts {
		if cap(w.reseg.Pkts[i]) < 1+len(frame) {
			w.reseg.Pkts[i] = make([][]byte, 0, 2*len(frame)+2)
		}
	}
	failed := false
	written := 0
	for from := 0; from < total && !failed; {
		n, r := gso.Resegment(&w.reseg, frame, m, w.limits, from)
		if n == 0 {
			w.gsoDrop(r)
			return
		}
		k, bad := w.writeAll(w.reseg.Pkts[:n])
		written, failed = written+k, bad
		from += n
	}
	w.splitDone(PathResegmented, written, failed, m.FrameLen)
}

// gsoDrop counts a packet gso refused: malformed, or not something vhostd
// can segment.
func (w *txWorker) gsoDrop(r gso.Reason) {
	if r.Malformed() {
		w.drop(DropGSOMalformed)
	} else {
		w.drop(DropGSOUnsupported)
	}
}

// splitDone accounts a super-packet written as several packets: under its
// path when every piece went out, else as one backend_write drop (its
// pieces that did go out still count in CtrTxSegments).
func (w *txWorker) splitDone(path TxPath, written int, failed bool, frameLen int) {
	w.segs += uint64(written)
	if failed {
		w.drop(DropBackendWrite)
		return
	}
	w.verdict.path = path
	w.pathPkts[path]++
	w.pathBytes[path] += uint64(frameLen)
}

// writeAll writes pkts, counting each refused one by errno. It returns how
// many were written and whether any failed.
func (w *txWorker) writeAll(pkts [][][]byte) (int, bool) {
	st := w.qp.stats
	written := 0
	for done := 0; done < len(pkts); {
		k, err := w.qp.out.WritePackets(pkts[done:])
		written += k
		done += k
		if err == nil {
			continue
		}
		if done >= len(pkts) {
			break
		}
		var errno syscall.Errno
		if errors.As(err, &errno) && int(errno) < maxErrno {
			st.Add(CtrTxWriteErrno.At(int(errno)), 1)
		} else {
			st.Add(CtrTxWriteErrno, 1)
		}
		if w.qp.dev.log.Enabled(context.Background(), slog.LevelDebug) {
			w.qp.dev.log.Debug("backend refused a packet", "queue", w.q.Index, "err", err)
		}
		w.failed[done] = true
		done++
	}
	return written, written < len(pkts)
}

// flushPkts writes the queued batch and counts each packet under its path,
// or as a backend_write drop if the backend refused it.
func (w *txWorker) flushPkts() {
	if len(w.pkts) == 0 {
		return
	}
	clear(w.failed[:len(w.pkts)])
	w.writeAll(w.pkts)
	for j := range w.pkts {
		if w.failed[j] {
			w.drops[DropBackendWrite]++
			continue
		}
		p := w.paths[j]
		w.pathPkts[p]++
		w.pathBytes[p] += uint64(w.lens[j])
	}
	w.pkts = w.pkts[:0]
	// Header copies and iovecs are reused from the start: every queued
	// packet has been handed over.
	w.iovs = w.iovs[:0]
}

// capture records the current chain and its verdict.
func (w *txWorker) capture(c *Capture, ch *virtqueue.Chain) {
	var hb [hdrMax]byte
	copyHeader(hb[:w.hdrLen], ch.Bufs)
	w.capIov = appendFrameIovecs(w.capIov[:0], ch.Bufs, w.hdrLen)
	v := w.verdict
	w.captureTx(c, vnet.DecodeHdr(hb[:w.hdrLen]), w.capIov, v.path, v.dec, v.reason, v.drop)
}

// copyHeader copies the first len(dst) bytes of the chain's readable buffers
// into dst and returns how many it got. The header may span descriptors
// (VIRTIO_F_ANY_LAYOUT is implied by VERSION_1, spec 2.7.4).
func copyHeader(dst []byte, bufs []virtqueue.Buffer) int {
	n := 0
	for i := range bufs {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], bufs[i].B)
	}
	return n
}

// appendFrameIovecs appends the chain's readable bytes after the first skip
// bytes (the header) as iovecs into guest memory.
func appendFrameIovecs(iovs [][]byte, bufs []virtqueue.Buffer, skip int) [][]byte {
	for i := range bufs {
		b := bufs[i].B
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		iovs = append(iovs, b[skip:])
		skip = 0
	}
	return iovs
}
