package backendtest

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/vhostd/vhostd/backend"
	"golang.org/x/sys/unix"
)

var _ backend.Backend = (*Pipe)(nil)

func TestPipe(t *testing.T) {
	p := NewPipe(backend.Capabilities{MTU: 9000})
	if p.Caps().MTU != 9000 {
		t.Errorf("caps %+v", p.Caps())
	}
	hdr := make([]byte, 12)
	k, err := p.WritePackets([][][]byte{{hdr, []byte("ab"), []byte("cd")}, {hdr, []byte("ef")}})
	if k != 2 || err != nil {
		t.Fatalf("WritePackets = %d %v", k, err)
	}
	w := p.Written()
	if len(w) != 2 || !bytes.Equal(w[0][12:], []byte("abcd")) || !bytes.Equal(w[1][12:], []byte("ef")) {
		t.Errorf("written %q", w)
	}

	p.SetWriteError(func(pkt []byte) error {
		if bytes.HasSuffix(pkt, []byte("bad")) {
			return unix.EINVAL
		}
		return nil
	})
	k, err = p.WritePackets([][][]byte{{hdr, []byte("ok")}, {hdr, []byte("bad")}, {hdr, []byte("never")}})
	var pe *backend.PacketError
	if k != 1 || !errors.As(err, &pe) || pe.Index != 1 || !errors.Is(err, unix.EINVAL) {
		t.Errorf("failing write = %d %v", k, err)
	}
	if got := p.TakeWritten(); len(got) != 3 {
		t.Errorf("TakeWritten %d packets, want 3", len(got))
	}
	if len(p.Written()) != 0 {
		t.Errorf("TakeWritten did not clear")
	}
	p.SetWriteError(nil)

	done := make(chan bool)
	go func() { _, ok := p.WaitWritten(2, 5*time.Second); done <- ok }()
	p.WritePackets([][][]byte{{hdr}})
	p.WritePackets([][][]byte{{hdr}})
	if !<-done {
		t.Errorf("WaitWritten did not see 2 packets")
	}
	if _, ok := p.WaitWritten(5, 10*time.Millisecond); ok {
		t.Errorf("WaitWritten(5) succeeded with 2 packets")
	}

	// Reads: the first blocks, the rest of the queue comes in the same call.
	bufs := [][]byte{make([]byte, 32), make([]byte, 32), make([]byte, 32)}
	sizes := make([]int, 3)
	go func() {
		time.Sleep(10 * time.Millisecond)
		p.Inject([]byte("one"))
	}()
	if k, err := p.ReadPackets(bufs, sizes, 1); k != 1 || err != nil || string(bufs[0][1:1+sizes[0]]) != "one" {
		t.Errorf("blocking read = %d %v %q", k, err, bufs[0][:sizes[0]+1])
	}
	for _, s := range []string{"a", "b", "c", "d"} {
		p.Inject([]byte(s))
	}
	if k, _ := p.ReadPackets(bufs, sizes, 0); k != 3 || string(bufs[2][:sizes[2]]) != "c" {
		t.Errorf("batched read = %d", k)
	}
	if k, _ := p.ReadPackets(bufs, sizes, 0); k != 1 || string(bufs[0][:sizes[0]]) != "d" {
		t.Errorf("last read = %d", k)
	}
	p.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := p.ReadPackets(bufs, sizes, 0); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("empty pipe with deadline: %v", err)
	}
	p.SetReadDeadline(time.Time{})
	p.Close()
	if _, err := p.ReadPackets(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
	if err := p.Inject([]byte("x")); !errors.Is(err, ErrPipeClosed) {
		t.Errorf("inject after close: %v", err)
	}
}
