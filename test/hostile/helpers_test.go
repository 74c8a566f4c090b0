package hostile_test

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/backend/backendtest"
	"github.com/vhostd/vhostd/internal/testing/devrig"
	"github.com/vhostd/vhostd/virtionet/vnet"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtqueue"
)

// Guest memory layout used by every port in this package:
//
//	region 0  GPA 0        16 MiB  rings, indirect tables, then data areas
//	region 1  GPA 16 MiB    1 MiB  directly after region 0 (straddling tests)
//	region 2  GPA 64 MiB    1 MiB  after a hole of 47 MiB
const (
	region0Size = 16 << 20
	region1GPA  = 16 << 20
	region1Size = 1 << 20
	region2GPA  = 64 << 20
	region2Size = 1 << 20
	holeGPA     = 32 << 20 // inside the hole between regions 1 and 2

	queueSize = 256
	// areaSize is the data area each vring gets in region 0, so that
	// goroutines driving different rings never share buffers.
	areaSize = 2 << 20
)

// Ring numbers of the two queue pairs (virtio spec 5.1.2: receiveq(k) = 2k,
// transmitq(k) = 2k+1).
const (
	victimRx    = 0
	victimTx    = 1
	bystanderRx = 2
	bystanderTx = 3
)

// discardLogger drops every log line: hostile cases log errors on purpose.
var discardLogger = devrig.DiscardLogger

// portConfig shapes one port (a virtionet.Device with two queue pairs, each
// on its own Pipe backend) and its front-end.
type portConfig struct {
	// caps of the victim pair's backend; zero = backend.DefaultNullCaps.
	caps backend.Capabilities
	// policy is the initial GSO policy (auto if empty).
	policy string
	// clearFeatures are virtio features the front-end refuses to ack.
	clearFeatures vnet.Feature
	// noHandshake leaves the front-end set up but silent.
	noHandshake bool
	// queueSize of every ring; 0 = queueSize.
	queueSize uint16
	// victimBackend replaces the victim pair's Pipe (pipes[0] is then
	// unused).
	victimBackend backend.Backend
	// victimPeer joins the victim pair guest to guest instead (a Link or
	// Switch port; virtionet.Config.Peers).
	victimPeer portlink.Port
	// packed and inOrder ack VIRTIO_F_RING_PACKED and VIRTIO_F_IN_ORDER:
	// every ring is packed (frontend.Queue.Packed) or in-order.
	packed, inOrder bool
}

// port is one virtionet.Device served by a vhostuser.Session over a
// socketpair, driven by the Go front-end (internal/testing/devrig).
type port struct {
	rig   *devrig.Rig
	t     testing.TB
	dev   *virtionet.Device
	pipes []*backendtest.Pipe
	sess  *vhostuser.Session
	fe    *frontend.Frontend
	areas [4]*devrig.Area // each ring's data area: the bystander allocates concurrently
}

func newPort(t testing.TB, cfg portConfig) *port {
	t.Helper()
	p, err := openPort(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.t = t
	t.Cleanup(p.close)
	return p
}

// openPort builds a port; the caller sets p.t and closes it.
func openPort(cfg portConfig) (*port, error) {
	pipes := []*backendtest.Pipe{backendtest.NewPipe(cfg.caps), backendtest.NewPipe(backend.Capabilities{})}
	dcfg := devrig.Config("victim")
	dcfg.Policy = gso.PolicyAuto
	if cfg.policy != "" {
		p, err := gso.ParsePolicy(cfg.policy)
		if err != nil {
			return nil, err
		}
		dcfg.Policy = p
	}
	dcfg.Backends = []backend.Backend{pipes[0], pipes[1]}
	if cfg.victimBackend != nil {
		dcfg.Backends[0] = cfg.victimBackend
	}
	if cfg.victimPeer != nil {
		dcfg.Backends[0], dcfg.Peers = nil, []portlink.Port{cfg.victimPeer}
	}
	closePipes := func() {
		for _, pp := range pipes {
			pp.Close()
		}
	}
	r, err := devrig.Open(dcfg, devrig.Options{
		NoHandshake: cfg.noHandshake,
		AlwaysKick:  true,
		Frontend: frontend.Options{
			NumQueues:   4,
			QueueSize:   cmp.Or(cfg.queueSize, queueSize),
			IndirectMax: 16,
			Features:    ^uint64(cfg.clearFeatures),
			Packed:      cfg.packed,
			InOrder:     cfg.inOrder,
			Regions: []frontend.Region{
				{GPA: 0, Size: region0Size},
				{GPA: region1GPA, Size: region1Size},
				{GPA: region2GPA, Size: region2Size},
			},
		},
	})
	if err != nil {
		closePipes()
		return nil, err
	}
	p := &port{rig: r, dev: r.Dev, pipes: pipes, sess: r.Sess, fe: r.FE}
	for i := range p.areas {
		p.areas[i] = r.NewArea(uint64(i)*areaSize, areaSize)
	}
	if r.FE.DataOffset+4*areaSize > region0Size {
		p.close()
		return nil, fmt.Errorf("data areas do not fit: rings end at %d", r.FE.DataOffset)
	}
	return p, nil
}

func (p *port) close() {
	p.rig.T = p.t
	p.rig.Close()
	for _, pp := range p.pipes {
		pp.Close()
	}
}

func (p *port) queue(i int) *frontend.Queue          { return p.rig.Queue(i) }
func (p *port) stats(pair int) *virtionet.QueueStats { return p.rig.Stats(pair) }

// buf returns n bytes of ring ring's data area (a bump allocator that wraps).
func (p *port) buf(ring int, n int) []byte { return p.areas[ring].Buf(n) }

// gpa returns the guest-physical address of b (a slice of region 0).
func (p *port) gpa(b []byte) uint64 {
	a, ok := p.queue(0).Ring.GuestAddr(b)
	if !ok {
		p.t.Fatal("buffer is not in region 0")
	}
	return a
}

func (p *port) copyIn(ring int, b []byte) []byte { return p.areas[ring].CopyIn(b) }

// publishKick publishes ring's new avail entries and kicks; it kicks even if
// the device asked not to be, as a hostile guest may.
func (p *port) publishKick(ring int) {
	if err := p.rig.PublishKick(p.queue(ring)); err != nil {
		p.t.Fatal(err)
	}
}

// sendTx posts one TX packet on ring (header, then the frame parts, each in
// its own descriptor) and kicks. It returns the head.
func (p *port) sendTx(ring int, hdr []byte, parts ...[]byte) uint16 {
	p.t.Helper()
	head, err := p.rig.SendTx(p.queue(ring), p.areas[ring], hdr, parts...)
	if err != nil {
		p.t.Fatal(err)
	}
	return head
}

// reap waits up to 5 s for n used entries on ring.
func (p *port) reap(ring int, n int) ([]virtqueue.UsedElem, error) {
	return devrig.Reap(p.queue(ring), n, 5*time.Second, 100*time.Microsecond, make([]virtqueue.UsedElem, 64))
}

// readEventfd reports whether the eventfd was signalled, resetting it.
func readEventfd(fd int) bool {
	var b [8]byte
	n, err := unix.Read(fd, b[:])
	return err == nil && n == 8 && binary.NativeEndian.Uint64(b[:]) > 0
}

// waitEventfd polls fd for up to timeout.
func waitEventfd(fd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if readEventfd(fd) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// eventually polls cond for up to 5 s.
var eventually = devrig.Eventually

// --- process resources ---

// fdCount is the number of open fds of this process.
func fdCount(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory fd ReadDir itself held
}

// memfdMappings counts the lines of /proc/self/maps that map a memfd.
func memfdMappings(t testing.TB) int {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "/memfd:") {
			n++
		}
	}
	return n
}

// rssBytes is the resident set size of this process.
func rssBytes(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var size, rss int64
	if _, err := fmt.Sscan(string(b), &size, &rss); err != nil {
		t.Fatal(err)
	}
	return rss * int64(os.Getpagesize())
}

// --- frames (built with internal/testing/pkt) ---

func concat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
