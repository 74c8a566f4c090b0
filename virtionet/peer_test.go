package virtionet

import (
	"io"
	"log/slog"
	"testing"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/virtionet/portlink"
)

// recordingPort is a portlink.Port test double: it keeps what it is bound to
// and what is sent through it.
type recordingPort struct {
	bound portlink.Receiver
	sent  int
}

func (p *recordingPort) Send(pkts [][][]byte)     { p.sent += len(pkts) }
func (p *recordingPort) Bind(r portlink.Receiver) { p.bound = r }

// TestPeerPairIsToldExplicitly: a queue pair in Config.Peers has no backend,
// binds its RX ring as the port's receiver when the device is built, takes
// a link's capabilities, and its TX (here a RARP announce) goes to the port.
// A pair with both or neither source is refused.
func TestPeerPairIsToldExplicitly(t *testing.T) {
	p := &recordingPort{}
	d, err := New(Config{Name: "peer", Peers: []portlink.Port{p}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	qp := d.QueuePairs()[0]
	if qp.Backend() != nil || p.bound != portlink.Receiver(qp.peer) || qp.Caps() != portlink.Caps {
		t.Fatalf("backend %v, bound %v (want %p), caps %+v", qp.Backend(), p.bound, qp.peer, qp.Caps())
	}
	if err := d.SetFeatures(0); err != nil {
		t.Fatal(err)
	}
	if err := d.SendRARP([6]byte{2, 0, 0, 0, 0, 1}); err != nil || p.sent != 1 {
		t.Fatalf("announce: err %v, sent %d", err, p.sent)
	}
	// No ring runs: a delivery is refused whole, for the link to count.
	if n := qp.peer.Deliver(make([][][]byte, 3)); n != 3 {
		t.Errorf("delivery to a stopped ring: refused %d, want 3", n)
	}
	if st := d.MTU(); d.SetMTU(9000) != nil || !d.MTU().Applied {
		t.Errorf("MTU on a peer port: %+v (before %+v)", d.MTU(), st)
	}

	null := backend.NewNull(backend.NullConfig{})
	if _, err := New(Config{Backends: []backend.Backend{null}, Peers: []portlink.Port{p}}); err == nil {
		t.Error("a pair with a backend and a peer was accepted")
	}
	if _, err := New(Config{Backends: []backend.Backend{nil}}); err == nil {
		t.Error("a pair with neither a backend nor a peer was accepted")
	}
}
