package virtqueue

import (
	"encoding/binary"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestConcurrentDriverDevice runs a driver and a device in two goroutines
// that sleep on real eventfds whenever they run dry, the way a guest and a
// queue worker do. A lost kick or interrupt shows up as a Wait timing out
// (a deadlock detector, not a timing assertion). Run with -race it also
// checks that every shared access is ordered.
func TestConcurrentDriverDevice(t *testing.T) {
	total := 100000
	if testing.Short() {
		total = 20000
	}
	for _, o := range []ringOpts{
		{size: 64},
		{size: 64, eventIdx: true},
		{size: 32, availOdd: true},
		{size: 32, availOdd: true, eventIdx: true, indirect: true},
		{size: 2, eventIdx: true},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			checkNoLeaks(t)
			runConcurrent(t, o, total)
		})
	}
}

func runConcurrent(t *testing.T, o ringOpts, total int) {
	const stuck = 20 * time.Second
	r := newTestRing(t, o)
	devKick, drvKick := eventfdPair(t) // driver -> device
	drvCall, devCall := eventfdPair(t) // device -> driver
	defer devKick.Close()
	defer drvKick.Close()
	defer drvCall.Close()
	defer devCall.Close()

	devErr := make(chan error, 1)
	go func() {
		q := r.dev
		chains := make([]Chain, 16)
		used := make([]UsedElem, 16)
		done := 0
		for done < total {
			n, err := q.Pop(chains)
			if err != nil {
				devErr <- err
				return
			}
			if n == 0 {
				if q.EnableNotify() {
					q.DisableNotify()
					continue
				}
				devKick.SetDeadline(time.Now().Add(stuck))
				if err := devKick.Wait(); err != nil {
					devErr <- fmt.Errorf("device waiting for a kick after %d chains: %w (lost kick?)", done, err)
					return
				}
				q.DisableNotify()
				continue
			}
			for i, c := range chains[:n] {
				if c.Err != nil || len(c.Bufs) != 2 {
					devErr <- fmt.Errorf("chain %d: %v, %d bufs", c.Head, c.Err, len(c.Bufs))
					return
				}
				seq := binary.LittleEndian.Uint32(c.Bufs[0].B)
				binary.LittleEndian.PutUint32(c.Bufs[1].B, ^seq)
				used[i] = UsedElem{ID: uint32(c.Head), Len: 4}
			}
			q.Push(used[:n])
			done += n
			if q.NeedNotify() {
				if err := devCall.Signal(); err != nil {
					devErr <- err
					return
				}
			}
		}
		devErr <- nil
	}()

	d := r.drv
	bufOf := make(map[uint16][]byte)
	reapedElems := make([]UsedElem, 64)
	posted, reaped := 0, 0
	for reaped < total {
		for posted < total && d.NumFree() >= 2 {
			b := r.mem[dataArea+8*(posted%4096) : dataArea+8*(posted%4096)+8]
			binary.LittleEndian.PutUint32(b, uint32(posted))
			var h uint16
			var err error
			if o.indirect && posted%3 == 0 {
				h, err = d.AddIndirect([][]byte{b[:4]}, [][]byte{b[4:]})
			} else {
				h, err = d.Add([][]byte{b[:4]}, [][]byte{b[4:]})
			}
			if err != nil {
				t.Fatal(err)
			}
			bufOf[h] = b
			posted++
		}
		if d.Publish() {
			if err := drvKick.Signal(); err != nil {
				t.Fatal(err)
			}
		}
		n := d.Reap(reapedElems)
		if n > 0 {
			for _, e := range reapedElems[:n] {
				b := bufOf[uint16(e.ID)]
				if e.Len != 4 || binary.LittleEndian.Uint32(b[4:]) != ^binary.LittleEndian.Uint32(b) {
					t.Fatalf("used id %d len %d: wrong answer", e.ID, e.Len)
				}
			}
			reaped += n
			continue
		}
		if d.EnableInterrupts() {
			d.DisableInterrupts()
			continue
		}
		drvCall.SetDeadline(time.Now().Add(stuck))
		if err := drvCall.Wait(); err != nil {
			if err == os.ErrDeadlineExceeded {
				t.Fatalf("driver waited %v for an interrupt after %d of %d chains: lost interrupt", stuck, reaped, total)
			}
			t.Fatal(err)
		}
		d.DisableInterrupts()
	}
	if err := <-devErr; err != nil {
		t.Fatal(err)
	}
}
