package virtionet

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/virtqueue"
)

var errDeadline = os.ErrDeadlineExceeded

// maxIovecs bounds the iovecs of one packet: writev takes at most IOV_MAX
// (1024) entries, one of which is our copy of the header.
const maxIovecs = 1024

// txWorker drains one transmitq into the backend (guest -> backend).
//
// Per batch: pop up to TxBatch chains, validate each header (a copy of it, so
// the guest cannot change it between our check and the backend's read), hand
// the frames to the backend as iovecs that point straight into guest memory,
// then publish all used entries (len 0, nothing was written) at once and
// signal per EVENT_IDX. Completing TX promptly matters: the guest's TCP Small
// Queues holds a flow back until its skbs are freed, which happens when the
// used entry arrives.
type txWorker struct {
	workerCtl
	qp     *QueuePair
	q      *vhostuser.Queue
	hdrLen int
	acked  uint64

	chains []virtqueue.Chain
	used   []virtqueue.UsedElem
	pkts   [][][]byte // per packet: header copy, then frame iovecs
	iovs   [][]byte   // backing store for pkts
	hdrs   [][hdrMax]byte
	paths  []TxPath
	lens   []int
}

const hdrMax = 12

func newTxWorker(qp *QueuePair, q *vhostuser.Queue, hdrLen int, acked uint64) *txWorker {
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
	}
	for i := range w.chains {
		w.chains[i].Bufs = make([]virtqueue.Buffer, 0, 4)
	}
	return w
}

func (w *txWorker) stop() {
	w.stopping.Store(true)
	if w.q.Kick != nil {
		_ = w.q.Kick.SetDeadline(time.Now())
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
}

func (w *txWorker) run() {
	defer close(w.done)
	q := w.q
	if q.Kick != nil {
		_ = q.Kick.SetDeadline(time.Time{})
	}
	st := w.qp.stats
	log := w.qp.dev.log.With("queue", q.Index)
	var idle time.Duration
	q.VQ.DisableNotify()
	for !w.stopping.Load() {
		seen := time.Now()
		n, err := q.VQ.Pop(w.chains)
		if err != nil {
			// A device error such as the avail index jumping by more than the
			// queue size: the ring is unusable until the front-end resets it.
			st.TxBroken.Store(true)
			log.Error("transmit ring broken; stopping it until the front-end resets the device", "err", err)
			if q.Err != nil {
				_ = q.Err.Signal()
			}
			return
		}
		if n == 0 {
			if q.VQ.EnableNotify() {
				q.VQ.DisableNotify()
				continue
			}
			if !w.waitKick(q, &idle) {
				return
			}
			st.TxKicks.Add(1)
			q.VQ.DisableNotify()
			continue
		}
		idle = 0
		w.processBatch(n, seen)
	}
}

func (w *txWorker) processBatch(n int, seen time.Time) {
	st := w.qp.stats
	q := w.q
	enabled := q.Enabled.Load()
	w.used = w.used[:0]
	w.pkts = w.pkts[:0]
	w.iovs = w.iovs[:0]
	var drops [numDrops]uint32
	st.TxPosted.Add(uint64(n))
	for i := 0; i < n; i++ {
		c := &w.chains[i]
		w.used = append(w.used, virtqueue.UsedElem{ID: uint32(c.Head)})
		if c.Err != nil {
			drops[chainDrop(c.Err)]++
			continue
		}
		if !enabled {
			drops[DropRingDisabled]++
			continue
		}
		if c.WriteLen != 0 {
			drops[DropTxWritableBuffer]++
			continue
		}
		if len(c.Bufs) >= maxIovecs {
			drops[DropTxTooLarge]++
			continue
		}
		k := len(w.pkts)
		hb := w.hdrs[k][:w.hdrLen]
		if copyHeader(hb, c.Bufs) < w.hdrLen {
			drops[DropHdrInvalid]++
			st.HdrInvalid[HdrShort].Add(1)
			continue
		}
		frameLen := int(c.ReadLen) - w.hdrLen
		h := DecodeHdr(hb)
		if r := h.Validate(frameLen); r != HdrOK {
			drops[DropHdrInvalid]++
			st.HdrInvalid[r].Add(1)
			continue
		}
		// The kernel reads only the 10 bytes it knows; num_buffers is
		// meaningless on TX (the driver sets 0), keep it zero.
		if w.hdrLen == 12 {
			hb[10], hb[11] = 0, 0
		}
		start := len(w.iovs)
		w.iovs = append(w.iovs, hb)
		w.iovs = appendFrameIovecs(w.iovs, c.Bufs, w.hdrLen)
		w.pkts = append(w.pkts, w.iovs[start:len(w.iovs):len(w.iovs)])
		w.lens[k] = frameLen
		switch {
		case h.GSOType != GSONone:
			w.paths[k] = PathPassthrough
			st.TxGSOPkts.Add(1)
		default:
			w.paths[k] = PathPlain
		}
	}

	// Hand the batch to the backend; a packet it refuses is counted by errno
	// and under backend_write, and the rest of the batch still goes out.
	for done := 0; done < len(w.pkts); {
		k, err := w.qp.be.WritePackets(w.pkts[done:])
		for j := done; j < done+k; j++ {
			p := w.paths[j]
			st.TxPackets[p].Add(1)
			st.TxBytes[p].Add(uint64(w.lens[j]))
		}
		done += k
		if err != nil {
			if done >= len(w.pkts) {
				break
			}
			drops[DropBackendWrite]++
			var errno syscall.Errno
			if errors.As(err, &errno) && int(errno) < len(st.TxWriteErrno) {
				st.TxWriteErrno[errno].Add(1)
			} else {
				st.TxWriteErrno[0].Add(1)
			}
			if w.qp.dev.log.Enabled(context.Background(), slog.LevelDebug) {
				w.qp.dev.log.Debug("backend refused a packet", "queue", q.Index, "err", err)
			}
			done++
		}
	}

	q.VQ.Push(w.used)
	w.qp.signal(q.Call, q.VQ, &st.TxCalls, &st.TxCallsSupp)
	lat := time.Since(seen)
	st.TxLatency.observeLatency(lat, uint64(n))
	st.TxBatch.observeBatch(n)
	for d, c := range drops {
		if c != 0 {
			st.TxDrops[d].Add(uint64(c))
		}
	}
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
