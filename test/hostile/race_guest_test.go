package hostile_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtqueue"
)

// TestGuestRewritesMemoryWhileDeviceReads plays a guest that keeps
// scribbling over its descriptor table and packet buffers while the device
// walks, validates, parses and segments them (time-of-check/time-of-use:
// the device must copy what it checks, and whatever it reads later may be
// anything). The policy is software segmentation on a backend without TSO,
// so every super-packet is parsed and then read again by the segmenter.
// Every chain must come back, the accounting must hold, the ring must stay
// usable, and the second queue pair must keep working.
func TestGuestRewritesMemoryWhileDeviceReads(t *testing.T) {
	p := newPort(t, portConfig{caps: noTSO, policy: "software"})
	by := startBystander(t, p)
	drv := p.queue(victimTx).Driver
	const slots = 32
	const slotSize = 4096
	area := p.buf(victimTx, slots*slotSize)
	base := p.gpa(area)
	hdr, frame := testpkt.TSO4Hdr(1000), testpkt.TCP4Super(3000)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Flip bytes in the headers, where parsing looks.
			s := rng.IntN(slots) * slotSize
			area[s+rng.IntN(12+80)] = byte(rng.Uint32())
			if i%16 == 0 {
				// Rewrite a descriptor: into the area or anywhere.
				d := virtqueue.Desc{Len: rng.Uint32N(9000), Flags: uint16(rng.UintN(8)), Next: uint16(rng.UintN(2 * slots))}
				if rng.IntN(2) == 0 {
					d.Addr = base + rng.Uint64N(slots*slotSize)
				} else {
					d.Addr = rng.Uint64()
				}
				drv.SetDesc(uint16(rng.IntN(2*slots)), d)
			}
		}
	}()

	st := p.stats(0)
	used := make([]virtqueue.UsedElem, slots)
	deadline := time.Now().Add(2 * time.Second)
	rounds := 0
	for time.Now().Before(deadline) {
		for k := 0; k < slots; k++ {
			s := area[k*slotSize:]
			copy(s, hdr)
			copy(s[64:], frame)
			a := base + uint64(k*slotSize)
			drv.SetDesc(uint16(2*k), virtqueue.Desc{Addr: a, Len: 12, Flags: fNext, Next: uint16(2*k + 1)})
			drv.SetDesc(uint16(2*k+1), virtqueue.Desc{Addr: a + 64, Len: uint32(len(frame))})
			drv.PostRaw(uint16(2 * k))
		}
		want := drv.LastUsed() + slots
		p.publishKick(victimTx)
		wait := time.Now().Add(10 * time.Second)
		for drv.UsedIdx() != want {
			if time.Now().After(wait) || st.TxBroken.Load() {
				t.Fatalf("round %d: used.idx %d, want %d, broken %v", rounds, drv.UsedIdx(), want, st.TxBroken.Load())
			}
			time.Sleep(50 * time.Microsecond)
		}
		if n := drv.Reap(used); n != slots {
			t.Fatalf("reaped %d", n)
		}
		p.pipes[0].TakeWritten()
		rounds++
	}
	close(stop)
	wg.Wait()
	if !eventually(func() bool { return st.Load(virtionet.CtrTxPosted) == st.TxWritten()+st.TxDropTotal() }) {
		t.Errorf("accounting: posted %d, written %d, dropped %d", st.Load(virtionet.CtrTxPosted), st.TxWritten(), st.TxDropTotal())
	}
	t.Logf("%d rounds, %d chains: written %d (%d segments), drops %v, header reasons %v",
		rounds, st.Load(virtionet.CtrTxPosted), st.TxWritten(), st.Load(virtionet.CtrTxSegments), dropList(st, virtionet.CtrTxDrops), hdrList(st))
	checkTxStillWorks(t, p)
	by.finish(t)
}
