package hostile_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/backend/backendtest"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
)

// Front-end protocol abuse (issue 6). A vhostuser.Server listens on a socket
// with one virtionet.Device behind it, as vhostd runs. Each case connects,
// misbehaves, and expects an error reply (a non-zero REPLY_ACK status) or
// the connection closed by the back-end. Afterwards the process has exactly
// the fds and memfd mappings it had before, and the server serves a new,
// well-behaved front-end whose packet reaches the backend.

// server is vhostd's serving loop in-process.
type server struct {
	t      testing.TB
	path   string
	srv    *vhostuser.Server
	dev    *virtionet.Device
	pipe   *backendtest.Pipe
	cancel context.CancelFunc
	done   chan error
}

func newServer(t testing.TB) *server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vu.sock")
	srv, err := vhostuser.Listen(path, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	offer, _ := virtionet.Offer(virtionet.BackendOffloads{TxUSO: true}, virtionet.Toggles{})
	pipe := backendtest.NewPipe(backend.Capabilities{})
	dev, err := virtionet.New(virtionet.Config{Name: "abuse", Offer: uint64(offer), Backends: []backend.Backend{pipe}, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{t: t, path: path, srv: srv, dev: dev, pipe: pipe, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ctx, func() vhostuser.Device { return dev }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("Server.Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Server.Serve did not return after cancel")
		}
		pipe.Close()
	})
	return s
}

// waitIdle waits until no session runs (the previous front-end is gone).
func (s *server) waitIdle() error {
	deadline := time.Now().Add(10 * time.Second)
	for s.srv.Session() != nil {
		if time.Now().After(deadline) {
			return errors.New("session still running 10 s after the front-end left")
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// dial connects once the previous session has ended and this connection's
// session has started (so a refusal of a second front-end cannot race).
func (s *server) dial() (*frontend.Frontend, error) {
	if err := s.waitIdle(); err != nil {
		return nil, err
	}
	fe, err := frontend.Dial(s.path)
	if err != nil {
		return nil, err
	}
	fe.Timeout = 5 * time.Second
	deadline := time.Now().Add(5 * time.Second)
	for s.srv.Session() == nil {
		if time.Now().After(deadline) {
			fe.Close()
			return nil, errors.New("no session started for the new connection")
		}
		time.Sleep(100 * time.Microsecond)
	}
	return fe, nil
}

// healthy runs a whole well-behaved session: handshake, one packet to the
// backend, disconnect.
func (s *server) healthy() error {
	fe, err := s.dial()
	if err != nil {
		return err
	}
	defer fe.Close()
	if err := fe.Handshake(frontend.Options{}); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	before := len(s.pipe.Written())
	tx := fe.Queues[1]
	hb, fb := fe.Buffer(0, 12), fe.Buffer(64, 100)
	copy(fb, testpkt.UDP4(100, testpkt.CsumNone))
	if _, err := tx.Driver.Add([][]byte{hb, fb}, nil); err != nil {
		return err
	}
	tx.Driver.Publish()
	tx.Kick()
	if _, ok := s.pipe.WaitWritten(before+1, 5*time.Second); !ok {
		return errors.New("packet did not reach the backend")
	}
	return nil
}

// negotiated returns a front-end with memory and rings set up locally and
// with features, protocol features (REPLY_ACK: every request is answered
// with a status) and SET_OWNER done.
func (s *server) negotiated(t *testing.T) *frontend.Frontend {
	t.Helper()
	fe, err := s.dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fe.Close() })
	if err := fe.Setup(frontend.Options{}); err != nil {
		t.Fatal(err)
	}
	if fe.Offered, err = fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatal(err)
	}
	p, err := fe.GetU64(vhostuser.ReqGetProtocolFeatures)
	if err != nil {
		t.Fatal(err)
	}
	if err := fe.SetU64(vhostuser.ReqSetProtocolFeatures, p); err != nil {
		t.Fatal(err)
	}
	fe.Protocol = vhostuser.ProtocolFeatures(p)
	fe.NeedReply = true
	if err := fe.SetU64Empty(vhostuser.ReqSetOwner); err != nil {
		t.Fatal(err)
	}
	// No EVENT_IDX, RING_PACKED or IN_ORDER: the local rings were laid out
	// split and without EVENT_IDX.
	if err := fe.SetU64(vhostuser.ReqSetFeatures, fe.Offered&^(1<<29|1<<34|1<<35)); err != nil {
		t.Fatal(err)
	}
	return fe
}

// running is negotiated plus the memory table and every ring configured.
func (s *server) running(t *testing.T) *frontend.Frontend {
	t.Helper()
	fe := s.negotiated(t)
	if err := fe.SetMemTable(); err != nil {
		t.Fatal(err)
	}
	for _, q := range fe.Queues {
		i := uint32(q.Index)
		must(t, fe.SetVringState(vhostuser.ReqSetVringNum, i, uint32(fe.Opts.QueueSize)))
		must(t, fe.SetVringState(vhostuser.ReqSetVringBase, i, 0))
		must(t, fe.SetVringAddr(q))
		must(t, fe.SetVringFd(vhostuser.ReqSetVringCall, q.Index, q.CallFd))
		must(t, fe.SetVringFd(vhostuser.ReqSetVringKick, q.Index, q.KickFd))
		must(t, fe.SetVringEnable(q.Index, true))
	}
	return fe
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// expectNack checks err is the back-end's failure status.
func expectNack(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, frontend.ErrNack) {
		t.Fatalf("got %v, want an error reply (non-zero REPLY_ACK status)", err)
	}
}

// expectClosed reads until the back-end closes the connection.
func expectClosed(t *testing.T, fe *frontend.Frontend) {
	t.Helper()
	c := fe.Conn().UnixConn()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue // a reply sent before closing
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return
		}
		t.Fatalf("connection not closed by the back-end: %v", err)
	}
}

// expectServing checks the session still answers after a refused request.
func expectServing(t *testing.T, fe *frontend.Frontend) {
	t.Helper()
	if _, err := fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatalf("session stopped answering after the refused request: %v", err)
	}
}

func eventfd(t *testing.T) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// memfdOf creates a memfd of size bytes; closed at cleanup.
func memfdOf(t *testing.T, size int64) int {
	fd, err := unix.MemfdCreate("hostile-region", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	return fd
}

func memTable(regions ...vhostuser.MemoryRegion) []byte {
	var mt vhostuser.MemoryRegions
	for i, r := range regions {
		mt.Regions[i] = r
	}
	mt.NRegions = uint32(len(regions))
	return mt.Encode(nil)
}

func region(gpa, size, uva, off uint64) vhostuser.MemoryRegion {
	return vhostuser.MemoryRegion{GuestPhysAddr: gpa, Size: size, UserAddr: uva, MmapOffset: off}
}

func u64(v uint64) []byte { return vhostuser.U64(v).Encode(nil) }

func state(i, n uint32) []byte { return vhostuser.VringState{Index: i, Num: n}.Encode(nil) }

func rawHeader(req vhostuser.Request, flags vhostuser.Flags, size uint32) []byte {
	return vhostuser.Header{Request: req, Flags: flags, Size: size}.Encode(nil)
}

const v1 = vhostuser.Version1

type abuseCase struct {
	name  string
	abuse func(t *testing.T, s *server)
}

func abuseCases() []abuseCase {
	return []abuseCase{
		// --- framing ---
		{"header_truncated_then_eof", func(t *testing.T, s *server) {
			fe, err := s.dial()
			must(t, err)
			defer fe.Close()
			must(t, fe.WriteRaw(rawHeader(vhostuser.ReqGetFeatures, v1, 0)[:5], nil))
			must(t, fe.Conn().UnixConn().CloseWrite())
			expectClosed(t, fe)
		}},
		{"header_truncated_with_fds_then_eof", func(t *testing.T, s *server) {
			fe, err := s.dial()
			must(t, err)
			defer fe.Close()
			must(t, fe.WriteRaw(rawHeader(vhostuser.ReqSetMemTable, v1, 40)[:7], []int{eventfd(t), eventfd(t)}))
			must(t, fe.Conn().UnixConn().CloseWrite())
			expectClosed(t, fe)
		}},
		{"payload_size_above_max", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			must(t, fe.WriteRaw(rawHeader(vhostuser.ReqSetFeatures, v1, vhostuser.MaxPayloadSize+1), nil))
			expectClosed(t, fe)
		}},
		{"payload_size_4GiB", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			must(t, fe.WriteRaw(rawHeader(vhostuser.ReqSetMemTable, v1, 0xffffffff), []int{eventfd(t)}))
			expectClosed(t, fe)
		}},
		{"version_0_in_flags", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			must(t, fe.WriteRaw(rawHeader(vhostuser.ReqGetFeatures, 0, 0), nil))
			expectClosed(t, fe)
		}},
		{"reserved_flag_bits", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			must(t, fe.WriteRaw(rawHeader(vhostuser.ReqGetFeatures, v1|0x100, 0), nil))
			expectClosed(t, fe)
		}},
		{"unknown_request_with_need_reply", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.Request(9999), u64(1), nil)
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"unknown_request_with_fds", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.Request(0x7fffffff), nil, []int{eventfd(t), eventfd(t), eventfd(t)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"payload_shorter_than_request", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetVringNum, make([]byte, 4), nil)
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"payload_longer_than_request", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetFeatures, make([]byte, 16), nil)
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"peer_disconnects_mid_payload", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			fd := memfdOf(t, 1<<20)
			b := append(rawHeader(vhostuser.ReqSetMemTable, v1, 8+32), memTable(region(0, 1<<20, 1<<30, 0))[:20]...)
			must(t, fe.WriteRaw(b, []int{fd}))
			fe.Close()
		}},
		{"peer_disconnects_between_messages_with_rings_running", func(t *testing.T, s *server) {
			fe := s.running(t)
			tx := fe.Queues[1]
			hb, fb := fe.Buffer(0, 12), fe.Buffer(64, 100)
			copy(fb, testpkt.UDP4(100, testpkt.CsumNone))
			if _, err := tx.Driver.Add([][]byte{hb, fb}, nil); err != nil {
				t.Fatal(err)
			}
			tx.Driver.Publish()
			tx.Kick()
			fe.Close()
		}},

		// --- file descriptors ---
		{"mem_table_fewer_fds_than_regions", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			fd := memfdOf(t, 2<<20)
			_, err := fe.Request(vhostuser.ReqSetMemTable, memTable(region(0, 1<<20, 1<<30, 0), region(1<<20, 1<<20, 2<<30, 1<<20)), []int{fd})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"mem_table_more_fds_than_regions", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			fd := memfdOf(t, 1<<20)
			_, err := fe.Request(vhostuser.ReqSetMemTable, memTable(region(0, 1<<20, 1<<30, 0)), []int{fd, fd, fd})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"mem_table_without_fds", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetMemTable, memTable(region(0, 1<<20, 1<<30, 0)), nil)
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"forty_fds_on_one_message", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			fds := make([]int, 40)
			for i := range fds {
				fds[i] = eventfd(t)
			}
			_, err := fe.Request(vhostuser.ReqSetVringCall, u64(0), fds)
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"fds_on_a_request_that_takes_none", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetOwner, nil, []int{eventfd(t), eventfd(t)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"fd_on_get_features_reply_owed", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			must(t, fe.SendRaw(vhostuser.ReqGetFeatures, v1, nil, []int{eventfd(t)}))
			expectClosed(t, fe)
		}},
		{"kick_with_nofd_flag_and_an_fd", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetVringKick, u64(1|1<<8), []int{eventfd(t)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"kick_without_fd_and_without_nofd", func(t *testing.T, s *server) {
			fe := s.running(t)
			_, err := fe.Request(vhostuser.ReqSetVringKick, u64(1), nil)
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"kick_fd_is_not_pollable", func(t *testing.T, s *server) {
			fe := s.running(t)
			_, err := fe.Request(vhostuser.ReqSetVringKick, u64(1), []int{memfdOf(t, 4096)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"fds_attached_to_payload_bytes", func(t *testing.T, s *server) {
			// SCM_RIGHTS on the payload rather than on the header: the
			// back-end reads the payload with read(2), so the kernel
			// discards those fds; the request itself is fine.
			fe := s.negotiated(t)
			must(t, fe.WriteRaw(rawHeader(vhostuser.ReqSetVringEnable, v1|vhostuser.FlagNeedReply, 8), nil))
			must(t, fe.WriteRaw(state(0, 1), []int{eventfd(t), eventfd(t)}))
			h, reply, err := fe.ReadReply()
			must(t, err)
			if h.Request != vhostuser.ReqSetVringEnable || len(reply) != 8 || reply[0] != 0 {
				t.Fatalf("reply %v % x", h, reply)
			}
			expectServing(t, fe)
		}},

		// --- memory regions ---
		{"region_mmap_offset_beyond_file", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetMemTable, memTable(region(0, 1<<20, 1<<30, 8<<20)), []int{memfdOf(t, 1<<20)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"region_size_beyond_file", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetMemTable, memTable(region(0, 64<<20, 1<<30, 0)), []int{memfdOf(t, 1<<20)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"regions_overlap_in_guest_physical_space", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			fd := memfdOf(t, 4<<20)
			_, err := fe.Request(vhostuser.ReqSetMemTable,
				memTable(region(0, 2<<20, 1<<30, 0), region(1<<20, 2<<20, 2<<30, 2<<20)), []int{fd, fd})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"region_gpa_plus_size_wraps", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetMemTable, memTable(region(^uint64(0)-4095, 1<<20, 1<<30, 0)), []int{memfdOf(t, 1<<20)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"region_size_zero", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetMemTable, memTable(region(0, 0, 1<<30, 0)), []int{memfdOf(t, 1<<20)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"region_fd_is_an_eventfd", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetMemTable, memTable(region(0, 1<<20, 1<<30, 0)), []int{eventfd(t)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"region_fd_is_read_only", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			mfd := memfdOf(t, 1<<20)
			ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", mfd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			must(t, err)
			defer unix.Close(ro)
			_, err = fe.Request(vhostuser.ReqSetMemTable, memTable(region(0, 1<<20, 1<<30, 0)), []int{ro})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"mem_table_nine_regions", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			b := memTable(region(0, 1<<20, 1<<30, 0))
			b[0] = 9
			_, err := fe.Request(vhostuser.ReqSetMemTable, b, []int{memfdOf(t, 1<<20)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"add_mem_reg_overlapping", func(t *testing.T, s *server) {
			fe := s.running(t)
			r := fe.Mem.Regions[0].Desc()
			r.GuestPhysAddr += 4096
			r.UserAddr = 1 << 40
			_, err := fe.Request(vhostuser.ReqAddMemReg, vhostuser.SingleMemRegion{Region: r}.Encode(nil), []int{fe.Mem.Fd()})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"add_mem_reg_beyond_eight_slots", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			fd := memfdOf(t, 9<<20)
			var err error
			for i := uint64(0); i < 9 && err == nil; i++ {
				r := region(i<<30, 1<<20, (i+1)<<32, i<<20)
				_, err = fe.Request(vhostuser.ReqAddMemReg, vhostuser.SingleMemRegion{Region: r}.Encode(nil), []int{fd})
			}
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"rem_mem_reg_unknown_region", func(t *testing.T, s *server) {
			fe := s.running(t)
			_, err := fe.Request(vhostuser.ReqRemMemReg, vhostuser.SingleMemRegion{Region: region(1<<40, 1<<20, 1<<41, 0)}.Encode(nil), nil)
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"rem_mem_reg_under_running_rings", func(t *testing.T, s *server) {
			// Memory hot-unplug of the region holding the rings: the
			// request itself is fine, but the rings cannot be rebuilt,
			// so they stay stopped and are marked failed.
			fe, err := s.dial()
			must(t, err)
			defer fe.Close()
			must(t, fe.Handshake(frontend.Options{MemSlots: true}))
			must(t, fe.Queues[1].Kick())
			if !eventually(func() bool { return s.srv.Session().RingStates()[1].Started }) {
				t.Fatal("ring 1 did not start")
			}
			must(t, fe.RemMemReg(0))
			if rs := s.srv.Session().RingStates()[1]; rs.Started || !rs.Failed {
				t.Fatalf("ring 1 after its memory went away: %+v", rs)
			}
			st, err := fe.GetU64(vhostuser.ReqGetStatus)
			must(t, err)
			if st&vhostuser.StatusNeedsReset == 0 {
				t.Errorf("GET_STATUS %#x lacks NEEDS_RESET", st)
			}
		}},
		{"mem_table_replaced_1000_times_while_running", func(t *testing.T, s *server) {
			fe := s.running(t)
			must(t, fe.Queues[1].Kick())
			for i := 0; i < 1000; i++ {
				must(t, fe.SetMemTable())
			}
			expectServing(t, fe)
		}},

		// --- rings ---
		{"vring_num_zero", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetVringState(vhostuser.ReqSetVringNum, 0, 0))
			expectServing(t, fe)
		}},
		{"vring_num_not_power_of_two", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetVringState(vhostuser.ReqSetVringNum, 0, 3))
			expectServing(t, fe)
		}},
		{"vring_num_above_32768", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetVringState(vhostuser.ReqSetVringNum, 0, 65536))
			expectServing(t, fe)
		}},
		{"vring_index_out_of_range", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetVringState(vhostuser.ReqSetVringNum, 200, 256))
			expectServing(t, fe)
		}},
		{"get_vring_base_index_out_of_range", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.GetVringBase(77)
			if err == nil {
				t.Fatal("GET_VRING_BASE of a ring that does not exist answered")
			}
			expectClosed(t, fe)
		}},
		{"vring_addr_not_mapped", func(t *testing.T, s *server) {
			fe := s.running(t)
			a := vhostuser.VringAddr{Index: 1, Desc: 0x1000, Avail: 0x2000, Used: 0x3000}
			_, err := fe.Request(vhostuser.ReqSetVringAddr, a.Encode(nil), nil)
			must(t, err)
			expectNack(t, fe.SetVringFd(vhostuser.ReqSetVringKick, 1, fe.Queues[1].KickFd))
			expectServing(t, fe)
		}},
		{"kick_before_mem_table", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			q := fe.Queues[1]
			must(t, fe.SetVringState(vhostuser.ReqSetVringNum, 1, 256))
			must(t, fe.SetVringAddr(q))
			expectNack(t, fe.SetVringFd(vhostuser.ReqSetVringKick, 1, q.KickFd))
			expectServing(t, fe)
		}},
		{"kick_before_vring_num_and_addr", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			must(t, fe.SetMemTable())
			expectNack(t, fe.SetVringFd(vhostuser.ReqSetVringKick, 1, fe.Queues[1].KickFd))
			expectServing(t, fe)
		}},
		{"vring_base_above_16_bits", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetVringState(vhostuser.ReqSetVringBase, 0, 1<<16))
			expectServing(t, fe)
		}},
		{"vring_enable_value_2", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetVringState(vhostuser.ReqSetVringEnable, 0, 2))
			expectServing(t, fe)
		}},
		{"call_fd_replaced_10000_times_while_running", func(t *testing.T, s *server) {
			fe := s.running(t)
			must(t, fe.Queues[1].Kick())
			fe.NeedReply = false
			fd := eventfd(t)
			for i := 0; i < 10000; i++ {
				must(t, fe.SetVringFd(vhostuser.ReqSetVringCall, 1, fd))
			}
			fe.NeedReply = true
			expectServing(t, fe)
		}},

		// --- negotiation and order ---
		{"features_not_offered", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetU64(vhostuser.ReqSetFeatures, 1<<63))
			expectServing(t, fe)
		}},
		{"protocol_features_not_offered", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetU64(vhostuser.ReqSetProtocolFeatures, 1<<5))
			expectServing(t, fe)
		}},
		{"gated_request_before_protocol_features", func(t *testing.T, s *server) {
			fe, err := s.dial()
			must(t, err)
			defer fe.Close()
			if _, err := fe.GetU64(vhostuser.ReqGetQueueNum); err == nil {
				t.Fatal("GET_QUEUE_NUM answered without MQ negotiated")
			}
			expectClosed(t, fe)
		}},
		// --- dirty log (live migration) ---
		// A log that cannot be mapped closes the connection: SET_LOG_BASE's
		// reply carries no status QEMU looks at, and a migration must not
		// run on with no pages logged.
		{"log_base_without_fd", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetLogBase, vhostuser.Log{Size: 64}.Encode(nil), nil)
			if err == nil {
				t.Fatal("SET_LOG_BASE without its fd answered")
			}
			expectClosed(t, fe)
		}},
		{"log_base_larger_than_its_file", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetLogBase, vhostuser.Log{Size: 8192}.Encode(nil), []int{memfdOf(t, 4096)})
			if err == nil {
				t.Fatal("a log past the end of its file was accepted")
			}
			expectClosed(t, fe)
		}},
		{"log_base_offset_past_end", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetLogBase, vhostuser.Log{Size: 16, Offset: 1 << 40}.Encode(nil), []int{memfdOf(t, 4096)})
			if err == nil {
				t.Fatal("a log offset past the end of its file was accepted")
			}
			expectClosed(t, fe)
		}},
		{"log_base_without_log_shmfd", func(t *testing.T, s *server) {
			fe, err := s.dial()
			must(t, err)
			defer fe.Close()
			must(t, fe.SetU64(vhostuser.ReqSetProtocolFeatures, uint64(vhostuser.ProtoReplyAck|vhostuser.ProtoMQ)))
			if _, err := fe.Request(vhostuser.ReqSetLogBase, vhostuser.Log{Size: 16}.Encode(nil), []int{memfdOf(t, 4096)}); err == nil {
				t.Fatal("SET_LOG_BASE answered without LOG_SHMFD negotiated")
			}
			expectClosed(t, fe)
		}},
		{"log_all_without_a_log", func(t *testing.T, s *server) {
			fe := s.running(t)
			must(t, fe.Queues[1].Kick())
			must(t, fe.SetU64(vhostuser.ReqSetFeatures, fe.Offered&^(1<<29)|vhostuser.FeatureLogAll))
			expectServing(t, fe)
		}},
		{"log_base_replaced_while_running", func(t *testing.T, s *server) {
			fe := s.running(t)
			must(t, fe.Queues[1].Kick())
			must(t, fe.SetU64(vhostuser.ReqSetFeatures, fe.Offered&^(1<<29)|vhostuser.FeatureLogAll))
			for i := 0; i < 20; i++ {
				_, err := fe.Request(vhostuser.ReqSetLogBase, vhostuser.Log{Size: uint64(64 + i)}.Encode(nil), []int{memfdOf(t, 4096)})
				must(t, err)
			}
			expectServing(t, fe)
		}},

		{"unsupported_request_with_fd", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			_, err := fe.Request(vhostuser.ReqSetInflightFd, make([]byte, vhostuser.InflightSize), []int{memfdOf(t, 4096)})
			expectNack(t, err)
			expectServing(t, fe)
		}},
		{"set_status_above_8_bits", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetU64(vhostuser.ReqSetStatus, 0x100))
			expectServing(t, fe)
		}},
		{"mtu_below_68", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			expectNack(t, fe.SetU64(vhostuser.ReqNetSetMTU, 10))
			expectServing(t, fe)
		}},
		{"flood_of_100k_messages", func(t *testing.T, s *server) {
			fe := s.negotiated(t)
			// SET_VRING_ENABLE without NEED_REPLY: nothing is answered, so
			// the front-end can write as fast as the back-end reads.
			one := append(rawHeader(vhostuser.ReqSetVringEnable, v1, 8), state(0, 1)...)
			batch := make([]byte, 0, 1000*len(one))
			for i := 0; i < 1000; i++ {
				batch = append(batch, one...)
			}
			for i := 0; i < 100; i++ {
				must(t, fe.WriteRaw(batch, nil))
			}
			expectServing(t, fe)
		}},
	}
}

// TestFrontEndAbuse runs every case against one server, checking fds,
// mappings and service after each.
func TestFrontEndAbuse(t *testing.T) {
	s := newServer(t)
	// Warm up: the runtime's own fds (epoll, timers) exist from here on.
	if err := s.healthy(); err != nil {
		t.Fatal(err)
	}
	must(t, s.waitIdle())
	for _, c := range abuseCases() {
		t.Run(c.name, func(t *testing.T) {
			must(t, s.waitIdle())
			fds, maps := fdCount(t), memfdMappings(t)
			func() {
				// The case's own cleanups (its fds, its front-end) run
				// before the accounting below.
				t.Run("abuse", func(t *testing.T) { c.abuse(t, s) })
			}()
			if err := s.waitIdle(); err != nil {
				t.Fatal(err)
			}
			if got := fdCount(t); got != fds {
				t.Errorf("fds: %d before, %d after", fds, got)
				listFds(t)
			}
			if got := memfdMappings(t); got != maps {
				t.Errorf("memfd mappings: %d before, %d after", maps, got)
			}
			if err := s.healthy(); err != nil {
				t.Fatalf("server does not serve a new front-end: %v", err)
			}
		})
	}
}

func listFds(t *testing.T) {
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		t.Logf("fd %s -> %s", e.Name(), l)
	}
}
