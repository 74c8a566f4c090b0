package virtionet

import (
	"fmt"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// rxPort is the receive side of a queue pair joined guest to guest
// (Config.Peers): it implements portlink.Receiver. What a peer guest
// transmits is copied once, straight from its TX buffers into this guest's
// RX buffers, by the sender's TX worker (the way a DPDK vhost port enqueues
// into another vring): no staging buffer, no extra goroutine hop.
// Super-packets cross whole. The header is translated to what this guest
// negotiated: a GSO type it did not accept is segmented in software, and a
// partial checksum it cannot take is completed, each counted here
// (CtrRxSegmented, CtrRxSegments, CtrRxCsumDone).
//
// The RX ring is filled under mu (taken once per batch), so the ring has
// one writer at a time however many peers send (a switch); the pair runs
// no RX worker goroutine of its own. The translation lives here, not in
// the link, because only the device knows its ring, its features and its
// counters.
//
// When the guest has no free buffers, the sender waits up to LinkWait for
// it to post some (its RX kick), then drops the packet, counted under
// rx_ring_full.
type rxPort struct {
	mu sync.Mutex
	rx *rxWorker // the pair's RX ring; nil while stopped

	// waitUntil bounds the wait for RX buffers in one delivered batch.
	waitUntil time.Time

	// Scratch for translation, used under mu.
	hdr    [hdrMax]byte
	gather []byte // contiguous copy of a frame
	arena  []byte // segments
	segs   [][]byte
	iov    [1][]byte
}

var _ portlink.Receiver = (*rxPort)(nil)

// LinkWait bounds how long a sender waits for the receiving guest to post RX
// buffers before dropping.
var LinkWait = time.Millisecond

// peerEgress is where the TX worker of a pair joined guest to guest hands
// its packets: the pair's link or switch port.
type peerEgress struct{ p portlink.Port }

// WritePackets implements egress: every packet is taken; what the receiver
// cannot place is counted there.
func (e *peerEgress) WritePackets(pkts [][][]byte) (int, error) {
	e.p.Send(pkts)
	return len(pkts), nil
}

// Caps implements egress: a link carries every offload whole (the receiver
// translates), so the sender never segments for it.
func (e *peerEgress) Caps() backend.Capabilities { return portlink.Caps }

// attach makes w the filler of this pair's RX ring.
func (e *rxPort) attach(w *rxWorker) {
	e.mu.Lock()
	e.rx = w
	e.mu.Unlock()
}

// detach waits for an in-flight delivery and forgets the RX ring.
func (e *rxPort) detach() *rxWorker {
	e.mu.Lock()
	w := e.rx
	e.rx = nil
	e.mu.Unlock()
	return w
}

// Deliver implements portlink.Receiver: copy a batch from a peer guest's TX
// into this guest's RX ring. pkts[i] is the sender's virtio_net_hdr then the
// frame iovecs. It returns how many packets found no running ring.
func (e *rxPort) Deliver(pkts [][][]byte) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.rx
	if w == nil || !w.q.Enabled.Load() {
		return len(pkts)
	}
	e.waitUntil = time.Time{}
	return len(pkts) - e.deliverBatch(w, pkts)
}

// deliverBatch places pkts into w's ring and returns how many it handled.
// It runs in the sender's TX worker but writes the receiver's memory, so a
// fault there (the receiving front-end shrank its memory file: SIGBUS,
// turned into a panic by SetPanicOnFault) is the receiver's: its RX ring is
// marked broken and detached, and the sender goes on. A fault on the
// sender's own buffers (the frame iovecs) is the sender's and goes up to its
// TX worker (recoverFault).
func (e *rxPort) deliverBatch(w *rxWorker, pkts [][][]byte) (done int) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		fault, ok := r.(interface{ Addr() uintptr })
		if !ok || done < len(pkts) && inIovecs(fault.Addr(), pkts[done][1:]) {
			panic(r)
		}
		w.qp.stats.Add(CtrMemFaults, 1)
		w.broken(fmt.Errorf("guest memory faulted at %#x while receiving from a linked port (did the front-end shrink its memory file?)", fault.Addr()))
		e.rx = nil
	}()
	for ; done < len(pkts); done++ {
		if p := pkts[done]; len(p) > 0 {
			e.deliverOne(w, p[0], p[1:])
		}
	}
	w.flush()
	return done
}

// inIovecs reports whether addr lies in one of the iovecs.
func inIovecs(addr uintptr, iovs [][]byte) bool {
	for _, b := range iovs {
		if len(b) > 0 {
			p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
			if addr >= p && addr-p < uintptr(len(b)) {
				return true
			}
		}
	}
	return false
}

func (e *rxPort) deliverOne(w *rxWorker, srcHdr []byte, frame [][]byte) {
	sh := vnet.DecodeHdr(srcHdr)
	frameLen := 0
	for _, b := range frame {
		frameLen += len(b)
	}
	hb := e.hdr[:w.hdrLen]
	clear(hb)
	gt := sh.GSOType &^ vnet.GSOECN
	needsCsum := sh.Flags&vnet.FlagNeedsCsum != 0
	switch {
	case gt != vnet.GSONone && !w.gsoAcked(gt, sh.GSOType&vnet.GSOECN != 0):
		e.segmentFor(w, sh, frame, frameLen)
		return
	case needsCsum && !w.guestCsum:
		e.completeFor(w, sh, frame, frameLen)
		return
	}
	// The receiver takes it as sent: copy the header fields it shares
	// (the first 10 bytes; num_buffers is patched by place).
	copy(hb, srcHdr[:min(len(srcHdr), 10)])
	e.place(w, hb, frame, frameLen)
}

// place puts one packet into the receiver's ring, waiting up to LinkWait
// for buffers.
//
// The wait budget is per delivered batch (e.waitUntil, reset by deliver):
// once a batch has waited LinkWait for this receiver, its remaining packets
// to it are dropped at once, so a guest that posts no buffers delays a
// sender by at most LinkWait per batch, not per packet.
func (e *rxPort) place(w *rxWorker, hb []byte, frame [][]byte, frameLen int) {
	for {
		ok, err := w.place(hb, frame, frameLen)
		if err != nil {
			w.broken(err)
			e.rx = nil
			return
		}
		if ok {
			return
		}
		// No room: publish what we have, ask for a kick and wait a little.
		w.flush()
		q := w.q
		if e.waitUntil.IsZero() {
			e.waitUntil = time.Now().Add(LinkWait)
			w.qp.stats.Add(CtrRxStalls, 1)
		}
		deadline := e.waitUntil
		if q.VQ.EnableNotify() {
			q.VQ.DisableNotify()
			continue
		}
		if q.Kick == nil || time.Now().After(deadline) {
			q.VQ.DisableNotify()
			w.drops[DropRxRingFull]++
			return
		}
		_ = q.Kick.SetDeadline(deadline)
		err = q.Kick.Wait()
		_ = q.Kick.SetDeadline(time.Time{})
		q.VQ.DisableNotify()
		if err == nil {
			w.qp.stats.Add(CtrRxKicks, 1)
		}
	}
}

// gatherFrame copies the frame into contiguous scratch (for translation
// paths that rewrite bytes or need the headers in one piece).
func (e *rxPort) gatherFrame(frame [][]byte, frameLen int) []byte {
	if len(e.gather) < frameLen {
		e.gather = make([]byte, max(frameLen, 64<<10+64))
	}
	buf := e.gather[:frameLen]
	n := 0
	for _, b := range frame {
		n += copy(buf[n:], b)
	}
	return buf
}

// completeFor finishes a partial checksum for a receiver without
// GUEST_CSUM (spec 5.1.6.4.1: the device must not hand it NEEDS_CSUM).
func (e *rxPort) completeFor(w *rxWorker, sh vnet.Hdr, frame [][]byte, frameLen int) {
	buf := e.gatherFrame(frame, frameLen)
	m, _ := gso.Parse(buf, sh)
	if !gso.CompleteCsum(buf, &m) {
		w.drops[DropGSOMalformed]++
		return
	}
	w.csumOK++
	hb := e.hdr[:w.hdrLen]
	clear(hb)
	e.iov[0] = buf
	e.place(w, hb, e.iov[:], frameLen)
}

// segmentFor segments a super-packet whose GSO type the receiver did not
// negotiate, leaving checksums partial when it has GUEST_CSUM. The payload
// is read straight from the sender's buffers; each segment is built in the
// arena and copied into the receiver's buffers.
func (e *rxPort) segmentFor(w *rxWorker, sh vnet.Hdr, frame [][]byte, frameLen int) {
	m, r := gso.ParseHead(frame[0], frameLen, sh)
	if r == gso.ReasonHeadTooShort {
		m, _ = gso.Parse(e.gatherFrame(frame, frameLen), sh)
	}
	if m.Malformed != gso.ReasonNone || m.Kind == gso.KindPlain {
		w.drops[DropGSOMalformed]++
		return
	}
	var f vnet.Offloads
	if w.guestCsum {
		f = vnet.OffloadCSUM
	}
	per := m.MaxSegmentLen()
	if len(e.arena) < 2*per {
		e.arena = make([]byte, max(256<<10, 2*per))
	}
	if len(e.segs) == 0 {
		e.segs = make([][]byte, maxSegsPerWrite)
	}
	cnt := min(len(e.arena)/per, len(e.segs))
	vh := m.SegmentVnetHdr(f)
	hb := e.hdr[:w.hdrLen]
	for from := 0; from < m.Segs; {
		for i := 0; i < cnt; i++ {
			e.segs[i] = e.arena[i*per : i*per : (i+1)*per]
		}
		n, _ := gso.Segment(e.segs[:cnt], frame, &m, f, from)
		if n == 0 {
			w.drops[DropGSOUnsupported]++
			return
		}
		for i := 0; i < n; i++ {
			clear(hb)
			vh.Encode(hb)
			e.iov[0] = e.segs[i]
			e.place(w, hb, e.iov[:], len(e.segs[i]))
		}
		w.qp.stats.Add(CtrRxSegments, uint64(n))
		from += n
	}
	w.qp.stats.Add(CtrRxSegmented, 1)
}
