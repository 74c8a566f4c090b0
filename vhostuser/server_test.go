package vhostuser_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
)

func serve(t *testing.T, srv *vhostuser.Server, dev vhostuser.Device) (cancel func() error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, func() vhostuser.Device { return dev }) }()
	var err error
	ended := false
	cancel = func() error {
		if !ended {
			stop()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Server.Serve did not return after cancel")
			}
			ended = true
		}
		return err
	}
	t.Cleanup(func() { cancel() })
	return cancel
}

func TestServerListen(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	fds := openFds(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "vhu.sock")

	// A stale socket file from a crashed run is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	logs := &logBuffer{t: t}
	srv, err := vhostuser.Listen(path, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != vhostuser.SocketMode || fi.Mode()&fs.ModeSocket == 0 {
		t.Fatalf("socket file: %v %v", fi.Mode(), err)
	}
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	dev.Drain = true
	cancel := serve(t, srv, dev)

	fe, err := frontend.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := fe.Handshake(frontend.Options{}); err != nil {
		t.Fatal(err)
	}
	post(t, fe, fe.Queues[1], 2)
	reap(t, fe.Queues[1], 2)
	eventually(t, "session visible", func() bool { return srv.Session() != nil })

	// vhost-user is 1:1: a second front-end is refused while one is attached.
	second, err := frontend.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	second.Timeout = 2 * time.Second
	if _, err := second.GetU64(vhostuser.ReqGetFeatures); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Errorf("second connection: %v, want it closed", err)
	}
	second.Close()
	if !strings.Contains(logs.String(), "refusing a second vhost-user connection") {
		t.Errorf("no log line for the refused connection:\n%s", logs.String())
	}
	// A live socket is not taken over by a second back-end.
	if _, err := vhostuser.Listen(path, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	// The probe connection of that Listen is refused like any second one.
	eventually(t, "refusal of the probe connection", func() bool {
		return strings.Count(logs.String(), "refusing a second vhost-user connection") == 2
	})
	// The first front-end still works.
	if _, err := fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatalf("first connection broken by the second: %v", err)
	}

	// After the front-end leaves, a new one is served (device reset).
	fe.Close()
	eventually(t, "session end", func() bool { return srv.Session() == nil })
	if dev.Resets() != 1 {
		t.Errorf("Reset called %d times", dev.Resets())
	}
	fe2, err := frontend.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := fe2.Handshake(frontend.Options{}); err != nil {
		t.Fatalf("reconnect: %v", err)
	}

	// Cancel with a session running: everything is cleaned up.
	if err := cancel(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	fe2.Close()
	if err := srv.Close(); err != nil {
		t.Errorf("Close after Serve: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file left behind: %v", err)
	}
	settle(t, goroutines)
	if after := openFds(t); after != fds {
		t.Errorf("fds: %d before, %d after", fds, after)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	os.WriteFile(path, []byte("keep me"), 0o600)
	if _, err := vhostuser.Listen(path, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatal("regular file clobbered")
	}
}

func TestServerFromFD(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inherited.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.File() // a dup, as an inherited fd would be
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd())) // FromFD takes ownership of the number
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := vhostuser.FromFD(fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	cancel := serve(t, srv, dev)
	fe, err := frontend.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fe.Close()
	if err := fe.Handshake(frontend.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := cancel(); err != nil {
		t.Error(err)
	}

	// Not a listening socket.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	if _, err := vhostuser.FromFD(p[0], nil); err == nil {
		t.Error("FromFD accepted a pipe")
	}
}

func TestServerClientMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qemu-server.sock")
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	srv := vhostuser.Dial(path, nil)
	cancel := serve(t, srv, dev)

	// The front-end (QEMU with server=on) appears later; the back-end retries.
	time.Sleep(250 * time.Millisecond)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatalf("back-end did not connect: %v", err)
	}
	fe := frontend.New(c)
	defer fe.Close()
	if err := fe.Handshake(frontend.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := cancel(); err != nil {
		t.Error(err)
	}
	// Cancelling while still dialling returns too.
	srv2 := vhostuser.Dial(filepath.Join(t.TempDir(), "never.sock"), nil)
	cancel2 := serve(t, srv2, dev)
	time.Sleep(150 * time.Millisecond)
	if err := cancel2(); err != nil {
		t.Error(err)
	}
}

func TestServerMessageCounts(t *testing.T) {
	dir := t.TempDir()
	sock := dir + "/c.sock"
	srv, err := vhostuser.Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	dev := vhostuser.NewFakeDevice(testDevice, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, func() vhostuser.Device { return dev }) }()
	fe, err := frontend.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := fe.Handshake(frontend.Options{}); err != nil {
		t.Fatal(err)
	}
	fe.Close()
	cancel()
	<-done
	got := map[string]uint64{}
	srv.MessageCounts(func(req string, n uint64) { got[req] = n })
	if got["GET_FEATURES"] != 1 || got["SET_VRING_ADDR"] != 2 || got["SET_VRING_KICK"] != 2 {
		t.Errorf("counts %v", got)
	}
}

func TestListenWithModeAndGroup(t *testing.T) {
	sock := t.TempDir() + "/m.sock"
	srv, err := vhostuser.ListenWith(sock, vhostuser.ListenOptions{Mode: 0o660, Group: 65534, SetGroup: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && st.Gid != 65534 {
		t.Errorf("group %d, want 65534", st.Gid)
	}
}
