package virtionet

import (
	"sync/atomic"
	"time"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// CaptureDir selects which direction a Capture records.
type CaptureDir uint8

const (
	CaptureTX   CaptureDir = 1 << iota // guest -> backend
	CaptureRX                          // backend -> guest
	CaptureBoth = CaptureTX | CaptureRX
)

func (d CaptureDir) String() string {
	switch d {
	case CaptureTX:
		return "tx"
	case CaptureRX:
		return "rx"
	case CaptureBoth:
		return "both"
	}
	return "none"
}

// CapturedPacket is one recorded packet: the guest-side virtio_net_hdr, the
// frame (truncated to the snap length) and, for TX, the path vhostd chose
// and why.
type CapturedPacket struct {
	Dir      CaptureDir
	Time     time.Time
	Queue    int
	Hdr      vnet.Hdr
	OrigLen  int    // frame length before truncation
	Data     []byte // frame bytes, len <= snap length; owned by the Capture
	Path     TxPath // TX only
	Reason   gso.Reason
	Decision gso.Decision
	Dropped  Drop // TX only: the packet was dropped for this reason
}

// Capture is a bounded, non-blocking tap on a port's datapath. The datapath
// copies a packet into a pre-allocated slot only if one is free and the
// count is not used up; otherwise the packet is counted in Skipped and goes
// on. Capture can therefore never stall or slow the datapath beyond one copy
// per recorded packet, and it allocates nothing after NewCapture.
type Capture struct {
	dirs      CaptureDir
	snaplen   int
	remaining atomic.Int64
	free      chan *CapturedPacket
	out       chan *CapturedPacket
	// Skipped counts packets not recorded because no slot was free.
	Skipped atomic.Uint64
	done    chan struct{}
	closed  atomic.Bool
}

// NewCapture records up to count packets (0: until stopped) of the given
// directions, each truncated to snaplen bytes, with depth slots of
// buffering between the datapath and the consumer.
func NewCapture(dirs CaptureDir, count int64, snaplen, depth int) *Capture {
	if snaplen <= 0 {
		snaplen = 65535 + 18
	}
	if depth <= 0 {
		depth = 1024
	}
	c := &Capture{
		dirs: dirs, snaplen: snaplen,
		free: make(chan *CapturedPacket, depth),
		out:  make(chan *CapturedPacket, depth),
		done: make(chan struct{}),
	}
	if count <= 0 {
		count = 1<<63 - 1
	}
	c.remaining.Store(count)
	for i := 0; i < depth; i++ {
		c.free <- &CapturedPacket{Data: make([]byte, 0, min(snaplen, 2048))}
	}
	return c
}

// Packets delivers recorded packets; give each back with Release.
func (c *Capture) Packets() <-chan *CapturedPacket { return c.out }

// Release returns a packet's slot for reuse.
func (c *Capture) Release(p *CapturedPacket) {
	select {
	case c.free <- p:
	default:
	}
}

// Done is closed when the count is reached or the capture is stopped.
func (c *Capture) Done() <-chan struct{} { return c.done }

// Stop ends the capture; the datapath stops offering packets at its next
// batch.
func (c *Capture) Stop() {
	if c.closed.CompareAndSwap(false, true) {
		close(c.done)
	}
}

// wants reports whether the capture takes packets of this direction.
func (c *Capture) wants(d CaptureDir) bool { return c.dirs&d != 0 && !c.closed.Load() }

// take reserves a slot; nil if none is free or the count is used up.
func (c *Capture) take() *CapturedPacket {
	if c.remaining.Add(-1) < 0 {
		c.remaining.Store(0)
		c.Stop()
		return nil
	}
	select {
	case p := <-c.free:
		return p
	default:
		c.remaining.Add(1)
		c.Skipped.Add(1)
		return nil
	}
}

// put hands a filled slot to the consumer.
func (c *Capture) put(p *CapturedPacket) {
	select {
	case c.out <- p:
	default:
		c.Skipped.Add(1)
		c.Release(p)
	}
}

// fill copies frame (as iovecs, header excluded) into p, truncated.
func (c *Capture) fill(p *CapturedPacket, frame [][]byte) {
	p.Data = p.Data[:0]
	n := 0
	for _, b := range frame {
		n += len(b)
		if room := c.snaplen - len(p.Data); room > 0 {
			p.Data = append(p.Data, b[:min(len(b), room)]...)
		}
	}
	p.OrigLen = n
}

// StartCapture attaches c to the port, replacing any running capture.
func (d *Device) StartCapture(c *Capture) {
	if old := d.capture.Swap(c); old != nil {
		old.Stop()
	}
}

// StopCapture detaches the running capture, if any.
func (d *Device) StopCapture() {
	if old := d.capture.Swap(nil); old != nil {
		old.Stop()
	}
}

// captureTx records one TX packet after its fate is known.
func (w *txWorker) captureTx(c *Capture, h vnet.Hdr, frame [][]byte, path TxPath, dec gso.Decision, reason gso.Reason, drop Drop) {
	p := c.take()
	if p == nil {
		return
	}
	p.Dir, p.Time, p.Queue, p.Hdr = CaptureTX, time.Now(), w.q.Index, h
	p.Path, p.Decision, p.Reason, p.Dropped = path, dec, reason, drop
	c.fill(p, frame)
	c.put(p)
}

// captureRx records one RX packet as delivered (its virtio_net_hdr and frame).
func (w *rxWorker) captureRx(c *Capture, hdr []byte, frame [][]byte) {
	p := c.take()
	if p == nil {
		return
	}
	p.Dir, p.Time, p.Queue = CaptureRX, time.Now(), w.q.Index
	p.Hdr = vnet.DecodeHdr(hdr)
	p.Path, p.Decision, p.Reason, p.Dropped = 0, 0, 0, DropNone
	c.fill(p, frame)
	c.put(p)
}
