package virtionet_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/vhostd/vhostd/internal/unixpair"
	"github.com/vhostd/vhostd/virtionet/vnet"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtqueue"
)

// rig is a virtionet.Device served over a real unix socketpair to the Go
// front-end (QEMU's role), with a test-double backend.
type rig struct {
	t      testing.TB
	dev    *virtionet.Device
	be     backend.Backend
	fe     *frontend.Frontend
	cancel context.CancelFunc
	done   chan error
	rx, tx *frontend.Queue
	sess   *vhostuser.Session
	used   []virtqueue.UsedElem
	next   uint64 // next free byte in the front-end's data area
}

type rigOpts struct {
	features  uint64 // acked by the front-end (0: everything offered)
	queueSize uint16
	policy    string
	memSize   uint64
	order     frontend.Order
	packed    bool // ack RING_PACKED: packed rings
	inOrder   bool // ack IN_ORDER
	// peer joins the rig's one queue pair guest to guest (Config.Peers)
	// instead of a backend.
	peer    portlink.Port
	pollMax time.Duration
}

// newPeerRig is a rig whose queue pair is joined to a Link or Switch port.
func newPeerRig(t testing.TB, p portlink.Port, o rigOpts) *rig {
	t.Helper()
	o.peer = p
	return newRig(t, nil, o)
}

func newRig(t testing.TB, be backend.Backend, o rigOpts) *rig {
	t.Helper()
	offer, _ := virtionet.Offer(virtionet.BackendOffloads{TxUSO: true}, virtionet.Toggles{})
	cfg := virtionet.Config{Name: "test", Offer: uint64(offer), Backends: []backend.Backend{be},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), PollMax: o.pollMax}
	if o.peer != nil {
		cfg.Backends, cfg.Peers = nil, []portlink.Port{o.peer}
	}
	if o.policy != "" {
		p, err := parsePolicy(o.policy)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Policy = p
	}
	dev, err := virtionet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	sess, err := vhostuser.NewSession(fds[0], dev, cfg.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{t: t, dev: dev, be: be, cancel: cancel, done: make(chan error, 1),
		used: make([]virtqueue.UsedElem, 1024)}
	r.sess = sess
	go func() { r.done <- sess.Serve(ctx) }()
	r.fe = frontend.New(fds[1])
	if o.memSize == 0 {
		o.memSize = 16 << 20
	}
	err = r.fe.Handshake(frontend.Options{
		Order:     o.order,
		QueueSize: o.queueSize,
		Features:  o.features,
		Packed:    o.packed,
		InOrder:   o.inOrder,
		Regions:   []frontend.Region{{GPA: 0, Size: o.memSize}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.rx, r.tx = r.fe.Queues[0], r.fe.Queues[1]
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	r.fe.Close()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		r.t.Error("session did not end after the front-end closed")
	}
	r.cancel()
}

func socketpair() ([2]*net.UnixConn, error) {
	var out [2]*net.UnixConn
	a, b, err := unixpair.New()
	if err != nil {
		return out, err
	}
	out[0], out[1] = a, b
	return out, nil
}

// buf allocates n bytes in guest memory (a bump allocator; tests are short).
func (r *rig) buf(n int) []byte {
	b := r.fe.Buffer(r.next, uint64(n))
	r.next += uint64(n+63) &^ 63
	return b
}

// sendTx posts one TX packet: a header buffer and the frame in one or more
// buffers, then kicks.
func (r *rig) sendTx(hdr []byte, frameParts ...[]byte) uint16 {
	r.t.Helper()
	out := [][]byte{r.copyIn(hdr)}
	for _, p := range frameParts {
		out = append(out, r.copyIn(p))
	}
	head, err := r.tx.Ring.Add(out, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.publishKick(r.tx)
	return head
}

func (r *rig) copyIn(b []byte) []byte {
	g := r.buf(len(b))
	copy(g, b)
	return g
}

func (r *rig) publishKick(q *frontend.Queue) {
	if q.Ring.Publish() {
		if err := q.Kick(); err != nil {
			r.t.Fatal(err)
		}
	}
}

// postRx posts n RX buffers of size bytes each.
func (r *rig) postRx(n, size int) [][]byte {
	r.t.Helper()
	var bufs [][]byte
	for i := 0; i < n; i++ {
		b := r.buf(size)
		if _, err := r.rx.Ring.Add(nil, [][]byte{b}); err != nil {
			r.t.Fatal(err)
		}
		bufs = append(bufs, b)
	}
	r.publishKick(r.rx)
	return bufs
}

// reap waits until n used entries arrive on q and returns them.
func (r *rig) reap(q *frontend.Queue, n int) []virtqueue.UsedElem {
	r.t.Helper()
	var got []virtqueue.UsedElem
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < n {
		k := q.Ring.Reap(r.used)
		got = append(got, r.used[:k]...)
		if k == 0 {
			if time.Now().After(deadline) {
				r.t.Fatalf("queue %d: %d of %d used entries after 5s", q.Index, len(got), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return got
}

func (r *rig) stats() *virtionet.QueueStats { return r.dev.QueuePairs()[0].Stats() }

// eventually polls cond for up to 5 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// vnetHdr encodes a 12-byte virtio_net_hdr.
func vnetHdr(flags, gsoType uint8, gsoSize, csumStart, csumOffset uint16) []byte {
	h := vnet.Hdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset}
	b := make([]byte, 12)
	h.Encode(b)
	return b
}

// udpFrame builds an Ethernet/IPv4/UDP frame of size bytes with a valid IPv4
// header checksum; the UDP checksum field holds the pseudo-header sum when
// partial is set (for NEEDS_CSUM), else 0.
func udpFrame(size int, partial bool) []byte {
	f := make([]byte, size)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8], ip[9] = 64, 17
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip, 0))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], 1234)
	binary.BigEndian.PutUint16(udp[2:], 5678)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-34))
	for i := 42; i < size; i++ {
		f[i] = byte(i)
	}
	if partial {
		binary.BigEndian.PutUint16(udp[6:], vnet.PseudoHeaderSum(17, ip[12:16], ip[16:20], uint32(size-34)))
	}
	return f
}

// tcpSuper builds an Ethernet/IPv4/TCP super-packet with payload bytes of
// payload and the pseudo-header checksum in the TCP checksum field (what a
// guest sends with NEEDS_CSUM + GSO_TCPV4).
func tcpSuper(payload int) []byte {
	size := 14 + 20 + 20 + payload
	f := make([]byte, size)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	binary.BigEndian.PutUint16(ip[4:], 0x1000)
	ip[6] = 0x40 // DF
	ip[8], ip[9] = 64, 6
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip, 0))
	tcp := f[34:54]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // PSH|ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	for i := 54; i < size; i++ {
		f[i] = byte(i * 7)
	}
	binary.BigEndian.PutUint16(tcp[16:], vnet.PseudoHeaderSum(6, ip[12:16], ip[16:20], uint32(size-34)))
	return f
}
