package vhostuser_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtqueue"
)

// Virtio feature bits used by the tests.
const (
	fCSUM      = 1 << 0
	fMTU       = 1 << 3
	fMrgRxbuf  = 1 << 15
	fIndirect  = 1 << 28
	fEventIdx  = 1 << 29
	fVersion1  = 1 << 32
	testDevice = fCSUM | fMTU | fMrgRxbuf | fIndirect | fEventIdx | fVersion1
)

// logBuffer collects log output and forwards it to the test log.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// harness runs a Session over a socketpair (a real unix socket with real fd
// passing) and a Go front-end on the other end.
type harness struct {
	t    *testing.T
	dev  *vhostuser.FakeDevice
	s    *vhostuser.Session
	fe   *frontend.Frontend
	logs *logBuffer

	cancel context.CancelFunc
	done   chan error
	ended  bool
	err    error
}

func socketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conv(fds[0]), conv(fds[1])
}

func newHarness(t *testing.T, dev *vhostuser.FakeDevice) *harness {
	t.Helper()
	a, b := socketPair(t)
	logs := &logBuffer{t: t}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := vhostuser.NewSession(a, dev, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, dev: dev, s: s, fe: frontend.New(b), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		h.fe.Close()
		h.wait()
		if t.Failed() {
			t.Logf("back-end log:\n%s", logs.String())
		}
	})
	return h
}

// wait returns Serve's result once it has returned.
func (h *harness) wait() error {
	if !h.ended {
		select {
		case h.err = <-h.done:
		case <-time.After(10 * time.Second):
			h.t.Fatal("Session.Serve did not return")
		}
		h.ended = true
		h.cancel()
	}
	return h.err
}

// sync makes sure the session handled everything sent so far: a request
// with a mandatory reply is answered only after the ones before it.
func (h *harness) sync() {
	h.t.Helper()
	if _, err := h.fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) ring(i int) vhostuser.RingState {
	return h.s.RingStates()[i]
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// never checks that cond stays false for a short while.
func never(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 50; i++ {
		if cond() {
			t.Fatalf("%s happened", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// post puts n one-buffer chains on queue q and kicks if the device wants it.
func post(t *testing.T, fe *frontend.Frontend, q *frontend.Queue, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		buf := fe.Buffer(uint64(q.Index)<<16+uint64(i)*64, 64)
		if _, err := q.Ring.Add([][]byte{buf}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if q.Ring.Publish() {
		if err := q.Kick(); err != nil {
			t.Fatal(err)
		}
	}
}

// reap waits until n used entries came back on q.
func reap(t *testing.T, q *frontend.Queue, n int) {
	t.Helper()
	used := make([]virtqueue.UsedElem, 64)
	got := 0
	deadline := time.Now().Add(5 * time.Second)
	for got < n {
		got += q.Ring.Reap(used)
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %d: reaped %d of %d used entries", q.Index, got, n)
		}
		q.WaitCall(10 * time.Millisecond)
	}
}

func TestHandshakeQEMUOrder(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	h := newHarness(t, dev)
	err := h.fe.Handshake(frontend.Options{
		Order:   frontend.OrderQEMU,
		Regions: []frontend.Region{{GPA: 0, Size: 4 << 20}, {GPA: 1 << 32, Size: 1 << 20}},
	})
	if err != nil {
		t.Fatal(err)
	}
	fe := h.fe
	if fe.Offered != testDevice|vhostuser.FeatureProtocolFeatures|vhostuser.FeatureLogAll {
		t.Errorf("GET_FEATURES = %#x", fe.Offered)
	}
	wantProto := vhostuser.ProtoMQ | vhostuser.ProtoReplyAck | vhostuser.ProtoMTU | vhostuser.ProtoConfigureMemSlots | vhostuser.ProtoStatus |
		vhostuser.ProtoLogShmfd | vhostuser.ProtoRARP
	if fe.OfferedProtocol != wantProto {
		t.Errorf("GET_PROTOCOL_FEATURES = %v, want %v", fe.OfferedProtocol, wantProto)
	}
	if fe.QueueNum != 1 || fe.MaxMemSlots != 8 {
		t.Errorf("GET_QUEUE_NUM = %d (want 1 pair), GET_MAX_MEM_SLOTS = %d", fe.QueueNum, fe.MaxMemSlots)
	}
	if acked := dev.Acked(); len(acked) != 1 || acked[0] != testDevice {
		t.Errorf("device SetFeatures calls %#x, want [%#x] (without bit 30)", acked, uint64(testDevice))
	}
	features, proto := h.s.Features()
	if features != testDevice|vhostuser.FeatureProtocolFeatures || proto != wantProto {
		t.Errorf("session features %#x / %v", features, proto)
	}
	if !strings.Contains(h.logs.String(), "negotiated features") || !strings.Contains(h.logs.String(), "protocol_features=0x1801f") {
		t.Errorf("no 'negotiated features' log line with protocol_features:\n%s", h.logs.String())
	}
	if st := h.s.Status(); st != frontend.StatusAcknowledge|frontend.StatusDriver|frontend.StatusDriverOK|frontend.StatusFeaturesOK {
		t.Errorf("status %#x", st)
	}
	for i := 0; i < 2; i++ {
		r := h.ring(i)
		if r.Started || !r.Enabled || r.Num != 256 {
			t.Errorf("ring %d after handshake: %+v (want stopped, enabled, num 256)", i, r)
		}
	}

	// Traffic on the TX ring (1): the ring starts on the first kick.
	tx := fe.Queues[1]
	post(t, fe, tx, 5)
	eventually(t, "TX ring start", func() bool { return h.ring(1).Started })
	reap(t, tx, 5)
	if h.ring(0).Started {
		t.Error("RX ring started without a kick")
	}
	if got := dev.Drained(1); got != 5 {
		t.Errorf("drained %d chains", got)
	}

	// QEMU's stop: SET_STATUS 0 then GET_VRING_BASE.
	bases, err := fe.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if bases[0] != 0 || bases[1] != 5 {
		t.Errorf("GET_VRING_BASE = %v, want [0 5]", bases)
	}
	if on, starts, stops := dev.Started(1); on || starts != 1 || stops != 1 {
		t.Errorf("TX ring: started=%t starts=%d stops=%d", on, starts, stops)
	}
	fe.Close()
	if err := h.wait(); err != nil {
		t.Errorf("Serve after disconnect: %v", err)
	}
	if dev.Resets() != 1 {
		t.Errorf("Reset called %d times on disconnect", dev.Resets())
	}
}

func TestHandshakeVirtioUserOrder(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	h := newHarness(t, dev)
	fe := h.fe
	// virtio-user acks no EVENT_IDX and no MTU protocol feature.
	err := fe.Handshake(frontend.Options{
		Order:            frontend.OrderVirtioUser,
		Features:         fVersion1 | fMrgRxbuf | fIndirect,
		ProtocolFeatures: vhostuser.ProtoMQ | vhostuser.ProtoReplyAck | vhostuser.ProtoStatus,
		QueueSize:        1024,
	})
	if err != nil {
		t.Fatal(err)
	}
	if fe.Mem.Regions[0].GPA != fe.Mem.Regions[0].UVA {
		t.Fatal("virtio-user order must use GPA == UVA")
	}
	tx := fe.Queues[1]
	post(t, fe, tx, 3)
	reap(t, tx, 3)
	eventually(t, "drain", func() bool { return dev.Drained(1) == 3 })

	// Reconfigure on the same connection: stop, new SET_FEATURES (adding
	// CSUM), new SET_MEM_TABLE, rings again; no reset in between.
	if err := fe.Reconfigure(fVersion1 | fMrgRxbuf | fIndirect | fCSUM); err != nil {
		t.Fatal(err)
	}
	acked := dev.Acked()
	if len(acked) != 2 || acked[0] != fVersion1|fMrgRxbuf|fIndirect || acked[1] != fVersion1|fMrgRxbuf|fIndirect|fCSUM {
		t.Errorf("SetFeatures calls %#x", acked)
	}
	if dev.Resets() != 0 {
		t.Error("reconfiguration reset the device")
	}
	if r := h.ring(1); r.Started || r.LastAvail != 3 {
		t.Errorf("TX ring after reconfigure: %+v (want stopped, base 3)", r)
	}
	post(t, fe, tx, 4)
	reap(t, tx, 4)
	eventually(t, "drain after reconfigure", func() bool { return dev.Drained(1) == 7 })
	if b, err := fe.GetVringBase(1); err != nil || b != 7 {
		t.Errorf("GET_VRING_BASE after reconfigure = %d, %v; want 7", b, err)
	}
}

func TestReplyAck(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	h := newHarness(t, dev)
	fe := h.fe
	if err := fe.Setup(frontend.Options{}); err != nil {
		t.Fatal(err)
	}
	// Before REPLY_ACK is negotiated nothing asks for replies.
	if _, err := fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetU64(vhostuser.ReqSetProtocolFeatures, uint64(vhostuser.ProtoReplyAck|vhostuser.ProtoMTU)); err != nil {
		t.Fatal(err)
	}
	fe.Protocol = vhostuser.ProtoReplyAck | vhostuser.ProtoMTU
	fe.NeedReply = true

	if err := fe.SetVringState(vhostuser.ReqSetVringNum, 0, 128); err != nil {
		t.Errorf("valid SET_VRING_NUM: %v, want status 0", err)
	}
	if err := fe.SetVringState(vhostuser.ReqSetVringNum, 0, 100); !errors.Is(err, frontend.ErrNack) {
		t.Errorf("SET_VRING_NUM 100 (not a power of two): %v, want a non-zero status", err)
	}
	if err := fe.SetVringState(vhostuser.ReqSetVringNum, 7, 128); !errors.Is(err, frontend.ErrNack) {
		t.Errorf("SET_VRING_NUM on ring 7 of 2: %v, want a non-zero status", err)
	}
	if h.ring(0).Num != 128 {
		t.Errorf("ring 0 num %d, want the accepted 128", h.ring(0).Num)
	}
	if err := fe.SetU64(vhostuser.ReqNetSetMTU, 9000); err != nil || dev.MTU() != 9000 {
		t.Errorf("NET_SET_MTU: %v, device mtu %d", err, dev.MTU())
	}
	dev.FailMTU(errors.New("too big"))
	if err := fe.SetU64(vhostuser.ReqNetSetMTU, 65000); !errors.Is(err, frontend.ErrNack) {
		t.Errorf("NET_SET_MTU refused by the device: %v, want non-zero status", err)
	}
	// NEED_REPLY on a request that already has a reply changes nothing.
	if err := fe.SendRaw(vhostuser.ReqGetFeatures, vhostuser.Version1|vhostuser.FlagNeedReply, nil, nil); err != nil {
		t.Fatal(err)
	}
	hdr, payload, err := fe.ReadReply()
	if err != nil || hdr.Request != vhostuser.ReqGetFeatures || len(payload) != 8 {
		t.Fatalf("GET_FEATURES with NEED_REPLY: %v %v %v", hdr, payload, err)
	}
	var v vhostuser.U64
	v.Decode(payload)
	if uint64(v) != testDevice|vhostuser.FeatureProtocolFeatures|vhostuser.FeatureLogAll {
		t.Errorf("GET_FEATURES with NEED_REPLY returned %#x, a status instead of the features?", uint64(v))
	}
}

// expectStatus reads one reply and checks its request and u64 status.
func expectStatus(t *testing.T, fe *frontend.Frontend, req vhostuser.Request, ok bool) {
	t.Helper()
	h, payload, err := fe.ReadReply()
	if err != nil {
		t.Fatalf("%v: no reply: %v", req, err)
	}
	var v vhostuser.U64
	if h.Request != req || h.Flags != vhostuser.Version1|vhostuser.FlagReply || v.Decode(payload) != nil {
		t.Fatalf("%v: reply %v %v %x", req, h.Request, h.Flags, payload)
	}
	if (v == 0) != ok {
		t.Errorf("%v: status %d, want success=%t", req, uint64(v), ok)
	}
}

func TestUnsupportedRequests(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	h := newHarness(t, dev)
	fe := h.fe
	need := vhostuser.Version1 | vhostuser.FlagNeedReply

	// Not offered, gated: SEND_RARP, RESET_DEVICE. Not implemented:
	// SET_LOG_FD. Unknown id 99. Each gets a non-zero status and the
	// connection stays usable.
	for _, req := range []vhostuser.Request{vhostuser.ReqSendRARP, vhostuser.ReqResetDevice, 99} {
		var payload []byte
		if req == vhostuser.ReqSendRARP {
			payload = vhostuser.U64(0x123456).Encode(nil)
		}
		if err := fe.SendRaw(req, need, payload, nil); err != nil {
			t.Fatal(err)
		}
		expectStatus(t, fe, req, false)
	}
	// Gated by a protocol feature we offer but that was not negotiated.
	if err := fe.SendRaw(vhostuser.ReqSetStatus, need, vhostuser.U64(1).Encode(nil), nil); err != nil {
		t.Fatal(err)
	}
	expectStatus(t, fe, vhostuser.ReqSetStatus, false)
	// Without NEED_REPLY an unsupported request is only logged.
	if err := fe.SendRaw(vhostuser.ReqSendRARP, vhostuser.Version1, vhostuser.U64(1).Encode(nil), nil); err != nil {
		t.Fatal(err)
	}
	// A mandatory status reply is a failure status even without NEED_REPLY.
	if err := fe.SendRaw(vhostuser.ReqIOTLBMsg, vhostuser.Version1, make([]byte, 32), nil); err != nil {
		t.Fatal(err)
	}
	expectStatus(t, fe, vhostuser.ReqIOTLBMsg, false)
	// GET_CONFIG reports failure with an empty payload.
	if err := fe.SendRaw(vhostuser.ReqGetConfig, vhostuser.Version1, vhostuser.Config{Data: make([]byte, 6)}.Encode(nil), nil); err != nil {
		t.Fatal(err)
	}
	if hdr, payload, err := fe.ReadReply(); err != nil || hdr.Request != vhostuser.ReqGetConfig || len(payload) != 0 {
		t.Fatalf("GET_CONFIG: %v %x %v, want an empty reply", hdr, payload, err)
	}
	// Still usable.
	if _, err := fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatalf("connection unusable after unsupported requests: %v", err)
	}
	if !strings.Contains(h.logs.String(), "not implemented") || !strings.Contains(h.logs.String(), "unknown vhost-user request") {
		t.Errorf("no clear log lines:\n%s", h.logs.String())
	}

	// A request whose mandatory reply carries a value we cannot produce
	// (GET_INFLIGHT_FD) closes the connection rather than leave the
	// front-end waiting.
	if err := fe.SendRaw(vhostuser.ReqGetInflightFd, vhostuser.Version1, vhostuser.Inflight{NumQueues: 2, QueueSize: 256}.Encode(nil), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fe.ReadReply(); !errors.Is(err, io.EOF) {
		t.Fatalf("after GET_INFLIGHT_FD: %v, want the connection closed", err)
	}
	if err := h.wait(); err == nil {
		t.Error("Serve returned nil after dropping the connection")
	}
}

func TestSizeAndFdChecksBeforeHandler(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	h := newHarness(t, dev)
	fe := h.fe
	need := vhostuser.Version1 | vhostuser.FlagNeedReply
	if err := fe.SetU64(vhostuser.ReqSetProtocolFeatures, uint64(vhostuser.ProtoReplyAck|vhostuser.ProtoMTU)); err != nil {
		t.Fatal(err)
	}
	efds := make([]int, 10)
	for i := range efds {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		efds[i] = fd
		defer unix.Close(fd)
	}
	before := openFds(t)

	cases := []struct {
		name    string
		req     vhostuser.Request
		payload []byte
		fds     []int
	}{
		{"SET_VRING_NUM 7 bytes", vhostuser.ReqSetVringNum, make([]byte, 7), nil},
		{"SET_VRING_NUM 9 bytes", vhostuser.ReqSetVringNum, make([]byte, 9), nil},
		{"NET_SET_MTU 4 bytes", vhostuser.ReqNetSetMTU, []byte{0, 0x10, 0, 0}, nil},
		{"SET_FEATURES with an fd", vhostuser.ReqSetFeatures, vhostuser.U64(fVersion1).Encode(nil), efds[:1]},
		{"SET_VRING_CALL with 2 fds", vhostuser.ReqSetVringCall, vhostuser.VringFile{Index: 0}.Encode(nil), efds[:2]},
		{"SET_VRING_CALL NOFD with an fd", vhostuser.ReqSetVringCall, vhostuser.VringFile{Index: 0, NoFd: true}.Encode(nil), efds[:1]},
		{"SET_VRING_CALL without fd or NOFD", vhostuser.ReqSetVringCall, vhostuser.VringFile{Index: 0}.Encode(nil), nil},
		{"SET_MEM_TABLE without fds", vhostuser.ReqSetMemTable, vhostuser.MemoryRegions{NRegions: 1, Regions: [8]vhostuser.MemoryRegion{{Size: 4096}}}.Encode(nil), nil},
		{"SET_MEM_TABLE with 2 fds for 1 region", vhostuser.ReqSetMemTable, vhostuser.MemoryRegions{NRegions: 1, Regions: [8]vhostuser.MemoryRegion{{Size: 4096}}}.Encode(nil), efds[:2]},
		{"SET_OWNER with 10 fds", vhostuser.ReqSetOwner, nil, efds},
		{"GET_VRING_BASE short, with NEED_REPLY", vhostuser.ReqSetVringBase, make([]byte, 4), nil},
	}
	for _, c := range cases {
		if err := fe.SendRaw(c.req, need, c.payload, c.fds); err != nil {
			t.Fatal(err)
		}
		expectStatus(t, fe, c.req, false)
		if after := openFds(t); after != before {
			t.Errorf("%s: back-end kept fds: %d -> %d", c.name, before, after)
		}
	}
	if calls := dev.Calls(); len(calls) != 0 {
		t.Errorf("device called for rejected requests: %v", calls)
	}
	if r := h.ring(0); r.Num != 0 {
		t.Errorf("ring 0 num %d after rejected SET_VRING_NUM", r.Num)
	}
	if _, err := fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatalf("connection unusable: %v", err)
	}
}

// openFds counts this process's open fds.
func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1
}

// configure runs the QEMU handshake with 2 regions and no drain worker.
func configure(t *testing.T, h *harness, opts frontend.Options) {
	t.Helper()
	if opts.Regions == nil {
		opts.Regions = []frontend.Region{{GPA: 0, Size: 2 << 20}, {GPA: 1 << 32, Size: 1 << 20}}
	}
	if err := h.fe.Handshake(opts); err != nil {
		t.Fatal(err)
	}
}

func TestRingStartsOnFirstKick(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 4)
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{NumQueues: 4})
	never(t, "a ring start before any kick", func() bool {
		for i := 0; i < 4; i++ {
			if on, _, _ := dev.Started(i); on {
				return true
			}
		}
		return false
	})
	if err := h.fe.Queues[2].Kick(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ring 2 start", func() bool { on, _, _ := dev.Started(2); return on })
	if !h.ring(2).Started || h.ring(0).Started || h.ring(3).Started {
		t.Errorf("ring states %+v", h.s.RingStates())
	}
	// More kicks do not start it again.
	h.fe.Queues[2].Kick()
	never(t, "a second StartQueue", func() bool { _, starts, _ := dev.Started(2); return starts != 1 })
}

func TestRingStartsAtOnceWithNoKickFd(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{NoKickFd: true})
	for i := 0; i < 2; i++ {
		if on, _, _ := dev.Started(i); !on {
			t.Errorf("ring %d not started by SET_VRING_KICK with NOFD", i)
		}
	}
	// The worker polls: no kick needed.
	tx := h.fe.Queues[1]
	for i := 0; i < 3; i++ {
		tx.Driver.Add([][]byte{h.fe.Buffer(uint64(i)*64, 64)}, nil)
	}
	tx.Driver.Publish()
	reap(t, tx, 3)
}

func TestGetVringBase(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{})
	fe := h.fe
	tx := fe.Queues[1]
	post(t, fe, tx, 9)
	reap(t, tx, 9)
	b, err := fe.GetVringBase(1)
	if err != nil || b != 9 {
		t.Fatalf("GET_VRING_BASE(1) = %d, %v; want 9", b, err)
	}
	if on, _, stops := dev.Started(1); on || stops != 1 {
		t.Errorf("GET_VRING_BASE did not stop the ring (stops=%d)", stops)
	}
	// Posting now does nothing: the ring is stopped and its kick fd dropped.
	post(t, fe, tx, 1)
	never(t, "processing on a stopped ring", func() bool { return dev.Drained(1) != 9 })

	// A never-started ring answers with its SET_VRING_BASE value.
	if err := fe.SetVringState(vhostuser.ReqSetVringBase, 0, 17); err != nil {
		t.Fatal(err)
	}
	if b, err := fe.GetVringBase(0); err != nil || b != 17 {
		t.Errorf("GET_VRING_BASE(0) = %d, %v; want 17", b, err)
	}
	// A ring waiting for its first kick: the wait is cancelled.
	if err := fe.SetVringState(vhostuser.ReqSetVringBase, 0, 3); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetVringFd(vhostuser.ReqSetVringKick, 0, fe.Queues[0].KickFd); err != nil {
		t.Fatal(err)
	}
	if b, err := fe.GetVringBase(0); err != nil || b != 3 {
		t.Errorf("GET_VRING_BASE(0) while waiting for a kick = %d, %v; want 3", b, err)
	}
	fe.Queues[0].Kick()
	never(t, "a start after GET_VRING_BASE cancelled the wait", func() bool { on, _, _ := dev.Started(0); return on })
}

func TestEnableBeforeFeatures(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	h := newHarness(t, dev)
	fe := h.fe
	if err := fe.SetVringEnable(0, true); err != nil {
		t.Fatal(err)
	}
	h.sync()
	if !h.ring(0).Enabled || !dev.Enabled(0) {
		t.Fatal("SET_VRING_ENABLE before SET_FEATURES ignored")
	}
	if err := fe.SetU64(vhostuser.ReqSetFeatures, fVersion1|vhostuser.FeatureProtocolFeatures); err != nil {
		t.Fatal(err)
	}
	h.sync()
	if !h.ring(0).Enabled || h.ring(1).Enabled {
		t.Errorf("with PROTOCOL_FEATURES, SET_FEATURES changed enable states: %+v", h.s.RingStates())
	}
	if err := fe.SetVringEnable(0, false); err != nil {
		t.Fatal(err)
	}
	h.sync()
	if h.ring(0).Enabled || dev.Enabled(0) {
		t.Error("SET_VRING_ENABLE 0 ignored")
	}
}

func TestFeaturesWithoutProtocolFeaturesEnableRings(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{Legacy: true})
	h.sync()
	for i := 0; i < 2; i++ {
		if r := h.ring(i); !r.Enabled || !dev.Enabled(i) {
			t.Errorf("ring %d not enabled by SET_FEATURES without PROTOCOL_FEATURES: %+v", i, r)
		}
	}
	if f, p := h.s.Features(); f&vhostuser.FeatureProtocolFeatures != 0 || p != 0 {
		t.Errorf("features %#x protocol %v", f, p)
	}
}

func TestSetFeaturesRejectsUnoffered(t *testing.T) {
	dev := vhostuser.NewFakeDevice(fVersion1, 2)
	h := newHarness(t, dev)
	fe := h.fe
	if err := fe.SetU64(vhostuser.ReqSetProtocolFeatures, uint64(vhostuser.ProtoReplyAck)); err != nil {
		t.Fatal(err)
	}
	fe.NeedReply = true
	if err := fe.SetU64(vhostuser.ReqSetFeatures, fVersion1|fEventIdx); !errors.Is(err, frontend.ErrNack) {
		t.Errorf("unoffered EVENT_IDX acked: %v", err)
	}
	if err := fe.SetU64(vhostuser.ReqSetProtocolFeatures, uint64(vhostuser.ProtoBackendReq)); !errors.Is(err, frontend.ErrNack) {
		t.Errorf("unoffered BACKEND_REQ acked: %v", err)
	}
}

func TestSetStatusZeroStopsRings(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{})
	post(t, h.fe, h.fe.Queues[1], 2)
	reap(t, h.fe.Queues[1], 2)
	if err := h.fe.SetU64(vhostuser.ReqSetStatus, 0); err != nil {
		t.Fatal(err)
	}
	if on, _, _ := dev.Started(1); on || h.ring(1).Started || h.s.Status() != 0 {
		t.Error("SET_STATUS 0 did not stop the ring")
	}
	if b, err := h.fe.GetVringBase(1); err != nil || b != 2 {
		t.Errorf("GET_VRING_BASE after reset = %d, %v; want 2", b, err)
	}
}

func TestMemSlotsWhileRunning(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{MemSlots: true, Regions: []frontend.Region{{GPA: 0, Size: 2 << 20}, {GPA: 1 << 32, Size: 1 << 20}, {GPA: 2 << 32, Size: 1 << 20}}})
	fe := h.fe
	tx := fe.Queues[1]
	post(t, fe, tx, 4)
	reap(t, tx, 4)

	// REM_MEM_REG of region 2 with a (tolerated) fd: the running ring is
	// stopped, memory changed, and the ring rebuilt and restarted from
	// avail index 4.
	before := openFds(t)
	p := vhostuser.SingleMemRegion{Region: fe.Mem.Regions[2].Desc()}
	if _, err := fe.Request(vhostuser.ReqRemMemReg, p.Encode(nil), []int{fe.Mem.Fd()}); err != nil {
		t.Fatal(err)
	}
	if after := openFds(t); after != before {
		t.Errorf("REM_MEM_REG fd not closed: %d -> %d", before, after)
	}
	if on, starts, stops := dev.Started(1); !on || starts != 2 || stops != 1 {
		t.Errorf("TX ring not restarted around REM_MEM_REG: on=%t starts=%d stops=%d", on, starts, stops)
	}
	// A buffer in region 1 (GPA 1<<32) still works after the rebuild.
	if _, err := tx.Driver.AddSegs([]virtqueue.Seg{{Addr: 1<<32 + 128, Len: 64}}, nil); err != nil {
		t.Fatal(err)
	}
	if tx.Driver.Publish() {
		tx.Kick()
	}
	reap(t, tx, 1)
	eventually(t, "drain", func() bool { return dev.Drained(1) == 5 })
	// Removing an unknown region fails; adding it back works.
	if err := fe.RemMemReg(2); !errors.Is(err, frontend.ErrNack) {
		t.Errorf("removing an absent region: %v", err)
	}
	if err := fe.AddMemReg(2); err != nil {
		t.Errorf("re-adding region 2: %v", err)
	}
	// QEMU 7.2 sends ADD_MEM_REG once per queue pair: the same region again
	// is counted (TestMemoryAddSameRegionTwice checks a different,
	// overlapping region is still refused), and needs two removals.
	if err := fe.AddMemReg(2); err != nil {
		t.Errorf("adding region 2 a second time: %v", err)
	}
	if err := fe.RemMemReg(2); err != nil {
		t.Errorf("first removal of the twice-added region: %v", err)
	}
	if b, err := fe.GetVringBase(1); err != nil || b != 5 {
		t.Errorf("GET_VRING_BASE = %d, %v; want 5", b, err)
	}
}

func TestSetMemTableWhileRunningRebuilds(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{})
	fe := h.fe
	tx := fe.Queues[1]
	post(t, fe, tx, 2)
	reap(t, tx, 2)
	if err := fe.SetMemTable(); err != nil {
		t.Fatal(err)
	}
	if on, starts, _ := dev.Started(1); !on || starts != 2 {
		t.Errorf("ring not rebuilt after SET_MEM_TABLE: on=%t starts=%d", on, starts)
	}
	post(t, fe, tx, 3)
	reap(t, tx, 3)
	if b, err := fe.GetVringBase(1); err != nil || b != 5 {
		t.Errorf("GET_VRING_BASE = %d, %v; want 5 (LastAvail kept across the rebuild)", b, err)
	}
}

func TestSetVringCallWhileRunning(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{})
	fe := h.fe
	tx := fe.Queues[1]
	post(t, fe, tx, 1)
	reap(t, tx, 1)
	// QEMU swaps the call fd of a running ring when the guest masks its
	// interrupt. The ring keeps running with the new fd.
	if err := fe.SetVringFd(vhostuser.ReqSetVringCall, 1, -1); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetVringFd(vhostuser.ReqSetVringCall, 1, tx.CallFd); err != nil {
		t.Fatal(err)
	}
	if on, starts, _ := dev.Started(1); !on || starts != 3 {
		t.Errorf("ring after call fd changes: on=%t starts=%d", on, starts)
	}
	tx.Driver.EnableInterrupts() // EVENT_IDX: ask for the next interrupt
	post(t, fe, tx, 2)
	if err := tx.WaitCall(5 * time.Second); err != nil {
		t.Fatalf("no interrupt on the new call fd: %v", err)
	}
	reap(t, tx, 2)
}

// settle waits for the goroutine count to drop to want.
func settle(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, want %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCleanShutdown: a session with mapped memory, started rings, a ring
// waiting for its first kick and a drain worker leaves no fd, mapping or
// goroutine behind, whether the front-end disconnects or the context is
// cancelled.
func TestCleanShutdown(t *testing.T) {
	for _, how := range []string{"disconnect", "cancel"} {
		t.Run(how, func(t *testing.T) {
			goroutines := runtime.NumGoroutine()
			fds := openFds(t)
			maps := countMaps(t)

			dev := vhostuser.NewFakeDevice(testDevice, 4)
			dev.Drain = true
			a, b := socketPair(t)
			s, err := vhostuser.NewSession(a, dev, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx) }()
			fe := frontend.New(b)
			if err := fe.Handshake(frontend.Options{NumQueues: 4, Regions: []frontend.Region{{Size: 2 << 20}, {GPA: 1 << 32, Size: 1 << 20}}}); err != nil {
				t.Fatal(err)
			}
			post(t, fe, fe.Queues[1], 3)
			reap(t, fe.Queues[1], 3)
			fe.Queues[3].Kick()
			eventually(t, "ring 3 start", func() bool { on, _, _ := dev.Started(3); return on })
			// Ring 0 and 2 wait for their first kick.

			var serveErr error
			if how == "disconnect" {
				fe.Close()
				serveErr = <-done
				cancel()
			} else {
				cancel()
				serveErr = <-done
				fe.Close()
			}
			if how == "disconnect" && serveErr != nil {
				t.Errorf("Serve: %v", serveErr)
			}
			if how == "cancel" && !errors.Is(serveErr, context.Canceled) {
				t.Errorf("Serve: %v, want context.Canceled", serveErr)
			}
			if dev.Resets() != 1 {
				t.Errorf("Reset called %d times", dev.Resets())
			}
			for _, r := range s.RingStates() {
				if r.Started {
					t.Errorf("ring %d still started", r.Index)
				}
			}
			settle(t, goroutines)
			if after := openFds(t); after != fds {
				t.Errorf("fds: %d before, %d after", fds, after)
			}
			if after := countMaps(t); after > maps {
				t.Errorf("mappings: %d before, %d after", maps, after)
			}
		})
	}
}

func countMaps(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "vhostd-frontend-guest")
}

// TestRingComesBackWithItsMemory: REM_MEM_REG of the region holding a
// running ring breaks it; ADD_MEM_REG of the same region brings it back from
// the same avail index, without a new SET_VRING_KICK (DPDK re-translates
// every ring after a table change). On main the ring stayed broken for good.
func TestRingComesBackWithItsMemory(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	h := newHarness(t, dev)
	configure(t, h, frontend.Options{MemSlots: true, Regions: []frontend.Region{{GPA: 0, Size: 2 << 20}, {GPA: 1 << 32, Size: 1 << 20}}})
	fe := h.fe
	tx := fe.Queues[1]
	post(t, fe, tx, 3)
	reap(t, tx, 3)

	if err := fe.RemMemReg(0); err != nil {
		t.Fatalf("REM_MEM_REG of the rings' region: %v", err)
	}
	if r := h.ring(1); r.Started || !r.Failed {
		t.Fatalf("ring 1 after losing its memory: %+v, want stopped and failed", r)
	}
	if err := fe.AddMemReg(0); err != nil {
		t.Fatalf("ADD_MEM_REG: %v", err)
	}
	if r := h.ring(1); !r.Started || r.Failed || r.LastAvail != 3 {
		t.Fatalf("ring 1 after its memory came back: %+v, want started at avail 3, not failed", r)
	}
	post(t, fe, tx, 2)
	reap(t, tx, 2)
	eventually(t, "drain", func() bool { return dev.Drained(1) == 5 })
	if b, err := fe.GetVringBase(1); err != nil || b != 5 {
		t.Errorf("GET_VRING_BASE = %d, %v; want 5", b, err)
	}
}

// TestFailedRequestWithoutReplyClosesSession: a request that fails without
// NEED_REPLY closes the connection (as DPDK does), so the front-end does not
// run on with state the back-end refused. On main it was only logged.
// Requests the back-end does not implement change nothing and are still
// only logged.
func TestFailedRequestWithoutReplyClosesSession(t *testing.T) {
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	h := newHarness(t, dev)
	fe := h.fe
	// Not implemented, no reply asked: logged, connection kept.
	if err := fe.SendRaw(vhostuser.ReqSendRARP, vhostuser.Version1, vhostuser.U64(1).Encode(nil), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatalf("connection closed after an unsupported request: %v", err)
	}
	// SET_VRING_NUM 100 (not a power of two), no reply asked: closed.
	if err := fe.SendRaw(vhostuser.ReqSetVringNum, vhostuser.Version1, vhostuser.VringState{Index: 0, Num: 100}.Encode(nil), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fe.ReadReply(); !errors.Is(err, io.EOF) {
		t.Fatalf("after a failed SET_VRING_NUM without NEED_REPLY: %v, want the connection closed", err)
	}
	err := h.wait()
	if err == nil || !strings.Contains(err.Error(), "asked for no reply") {
		t.Errorf("Serve returned %v, want the reason", err)
	}
}
