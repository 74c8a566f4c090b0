package vhostuser

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketPair returns two connected unix stream sockets.
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

// eventfds returns n fresh eventfds, closed at the end of the test.
func eventfds(t testing.TB, n int) []int {
	t.Helper()
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
		t.Cleanup(func() { unix.Close(fd) })
	}
	return fds
}

// openFds counts this process's open fds.
func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory fd ReadDir itself held
}

func TestConnRoundTrip(t *testing.T) {
	a, b := socketPair(t)
	ca, cb := NewConn(a), NewConn(b)
	defer ca.Close()
	defer cb.Close()
	efds := eventfds(t, 2)
	before := openFds(t)

	payload := VringFile{Index: 3}.Encode(nil)
	if err := ca.WriteMessage(Header{Request: ReqSetVringCall, Flags: Version1}, payload, efds[:1]); err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteMessage(Header{Request: ReqGetFeatures, Flags: Version1}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var m Message
	if err := cb.ReadMessage(&m); err != nil {
		t.Fatal(err)
	}
	if m.Header.Request != ReqSetVringCall || m.Header.Size != 8 || len(m.Fds) != 1 || m.TooManyFds {
		t.Fatalf("got %+v", m)
	}
	if openFds(t) != before+1 {
		t.Errorf("received fd not counted: %d -> %d", before, openFds(t))
	}
	m.CloseFds()
	if openFds(t) != before {
		t.Errorf("CloseFds leaked")
	}
	// The next message must not pick up fds from the previous one.
	if err := cb.ReadMessage(&m); err != nil {
		t.Fatal(err)
	}
	if m.Header.Request != ReqGetFeatures || len(m.Fds) != 0 || len(m.Payload) != 0 {
		t.Fatalf("got %+v", m)
	}
	ca.Close()
	if err := cb.ReadMessage(&m); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v, want io.EOF", err)
	}
}

func TestConnTooManyFds(t *testing.T) {
	a, b := socketPair(t)
	ca, cb := NewConn(a), NewConn(b)
	defer ca.Close()
	defer cb.Close()
	efds := eventfds(t, MaxFds+3)
	before := openFds(t)
	if err := ca.WriteMessage(Header{Request: ReqSetMemTable, Flags: Version1}, make([]byte, 8), efds); err != nil {
		t.Fatal(err)
	}
	var m Message
	if err := cb.ReadMessage(&m); err != nil {
		t.Fatal(err)
	}
	if !m.TooManyFds || len(m.Fds) != MaxFds {
		t.Fatalf("TooManyFds=%t with %d fds kept", m.TooManyFds, len(m.Fds))
	}
	m.CloseFds()
	if after := openFds(t); after != before {
		t.Errorf("fds leaked: %d -> %d", before, after)
	}
}

// TestConnBadInputClosesFds: every error path closes the fds received with
// the message.
func TestConnBadInputClosesFds(t *testing.T) {
	hdr := func(req Request, flags Flags, size uint32) []byte {
		return Header{Request: req, Flags: flags, Size: size}.Encode(nil)
	}
	tests := []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"truncated header", hdr(ReqGetFeatures, Version1, 0)[:7], io.ErrUnexpectedEOF},
		{"truncated payload", append(hdr(ReqSetFeatures, Version1, 8), 1, 2, 3), io.ErrUnexpectedEOF},
		{"oversized payload", hdr(ReqSetConfig, Version1, MaxPayloadSize+1), ErrHeader},
		{"bad version", hdr(ReqGetFeatures, 2, 0), ErrHeader},
		{"reserved flags", hdr(ReqGetFeatures, Version1|0x100, 0), ErrHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := socketPair(t)
			ca, cb := NewConn(a), NewConn(b)
			defer cb.Close()
			efds := eventfds(t, 2)
			before := openFds(t)
			if err := ca.WriteRaw(tt.bytes, efds); err != nil {
				t.Fatal(err)
			}
			ca.Close()
			var m Message
			err := cb.ReadMessage(&m)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if after := openFds(t); after != before-1 { // ca is closed
				t.Errorf("fds leaked on error: %d -> %d", before, after)
			}
		})
	}
}

// TestConnShortHeaderReads: a header split over several writes is
// reassembled.
func TestConnShortHeaderReads(t *testing.T) {
	a, b := socketPair(t)
	ca, cb := NewConn(a), NewConn(b)
	defer ca.Close()
	defer cb.Close()
	msg := append(Header{Request: ReqSetFeatures, Flags: Version1, Size: 8}.Encode(nil), U64(42).Encode(nil)...)
	efds := eventfds(t, 1)
	go func() {
		ca.WriteRaw(msg[:5], efds)
		time.Sleep(10 * time.Millisecond)
		ca.WriteRaw(msg[5:14], nil)
		time.Sleep(10 * time.Millisecond)
		ca.WriteRaw(msg[14:], nil)
	}()
	var m Message
	if err := cb.ReadMessage(&m); err != nil {
		t.Fatal(err)
	}
	var v U64
	if err := v.Decode(m.Payload); err != nil || v != 42 || len(m.Fds) != 1 {
		t.Fatalf("got %v %v fds=%d", v, err, len(m.Fds))
	}
	m.CloseFds()
}
