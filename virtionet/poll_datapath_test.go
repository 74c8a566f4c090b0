package virtionet_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/vhostd/vhostd/backend/backendtest"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet"

	"github.com/vhostd/vhostd/backend"
)

// TestPollingDatapath runs traffic both ways with polling on: every packet
// arrives, TX polls find the chains posted while the worker looked (no kick
// needed), the RX call that coalescing held back is sent before the worker
// sleeps, and the counters say so.
func TestPollingDatapath(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	r := newRig(t, pipe, rigOpts{pollMax: 200 * time.Microsecond})
	st := r.stats()
	frame := testpkt.UDP4(100, testpkt.CsumNone)
	for i := 0; i < 20; i++ {
		r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), frame)
		if _, ok := pipe.WaitWritten(i+1, 5e9); !ok {
			t.Fatalf("packet %d not written", i)
		}
	}
	r.reap(r.tx, 20)
	eventually(t, "tx poll counters", func() bool {
		tx := virtionet.CtrTxPoll
		return st.Load(tx.At(0))+st.Load(tx.At(1))+st.Load(tx.At(2)) > 0 && st.Load(tx.At(3)) > 0
	})
	bufs := r.postRx(16, 2048)
	pkt := append(make([]byte, 12), frame...)
	for i := 0; i < 8; i++ {
		if err := pipe.Inject(pkt); err != nil {
			t.Fatal(err)
		}
	}
	used := r.reap(r.rx, 8)
	for _, u := range used {
		if !bytes.Equal(bufs[u.ID][12:u.Len], frame) {
			t.Fatal("frame corrupted")
		}
	}
	eventually(t, "rx counters", func() bool {
		return st.Load(virtionet.CtrRxPackets) == 8 && st.Load(virtionet.CtrRxPoll.At(3)) > 0 && st.Load(virtionet.CtrRxCalls)+st.Load(virtionet.CtrRxCallsSupp) > 0
	})
	if w := st.Load(virtionet.CtrTxPollWindow); w == 0 || w > 200 {
		t.Errorf("TX window gauge %d µs outside [floor, max]", w)
	}
}
