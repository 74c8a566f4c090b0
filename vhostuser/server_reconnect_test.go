package vhostuser_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
)

// Once Session() reports no session, a new front-end is served, never
// refused as a second one: the listening loop may see the old session end
// and the new connection at the same moment.
func TestServerServesNextFrontEndOnceIdle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vhu.sock")
	logs := &logBuffer{t: t}
	srv, err := vhostuser.Listen(path, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv, vhostuser.NewFakeDevice(testDevice, 2))
	for i := 0; i < 300; i++ {
		deadline := time.Now().Add(5 * time.Second)
		for srv.Session() != nil {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: session did not end", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		fe, err := frontend.Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		fe.Timeout = 5 * time.Second
		if _, err := fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		fe.Close()
	}
	if strings.Contains(logs.String(), "refusing a second") {
		t.Errorf("a front-end was refused although the previous one had left:\n%s", logs.String())
	}
}
