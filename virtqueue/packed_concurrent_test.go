package virtqueue

import (
	"encoding/binary"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestPackedConcurrentDriverDevice runs a packed driver and device in two
// goroutines that sleep on real eventfds whenever they run dry. A lost kick
// or interrupt shows up as a Wait timing out. With -race it also checks that
// every shared access is ordered.
func TestPackedConcurrentDriverDevice(t *testing.T) {
	total := 100000
	if testing.Short() {
		total = 20000
	}
	for _, o := range []packedOpts{
		{size: 64},
		{size: 64, eventIdx: true},
		{size: 50, indirect: true},
		{size: 33, eventIdx: true, indirect: true, inOrder: true},
		{size: 3, inOrder: true},
		{size: 2, eventIdx: true},
		{size: 2, indirect: true, inOrder: true},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			checkNoLeaks(t)
			n := total
			if o.size < 8 {
				n /= 3 // tiny rings sleep on nearly every buffer
			}
			runPackedConcurrent(t, o, n)
		})
	}
}

func runPackedConcurrent(t *testing.T, o packedOpts, total int) {
	const stuck = 20 * time.Second
	r := newPackedTestRing(t, o)
	devKick, drvKick := eventfdPair(t) // driver -> device
	drvCall, devCall := eventfdPair(t) // device -> driver
	defer devKick.Close()
	defer drvKick.Close()
	defer drvCall.Close()
	defer devCall.Close()

	devErr := make(chan error, 1)
	go func() {
		var q Ring = r.dev
		chains := make([]Chain, 16)
		used := make([]UsedElem, 16)
		done := 0
		odd := false
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
					devErr <- fmt.Errorf("device waiting for a kick after %d buffers: %w (lost kick?)", done, err)
					return
				}
				q.DisableNotify()
				continue
			}
			for i, c := range chains[:n] {
				if c.Err != nil || len(c.Bufs) != 2 {
					devErr <- fmt.Errorf("buffer %d: %v, %d elements", c.Head, c.Err, len(c.Bufs))
					return
				}
				seq := binary.LittleEndian.Uint32(c.Bufs[0].B)
				binary.LittleEndian.PutUint32(c.Bufs[1].B, ^seq)
				used[i] = UsedElem{ID: uint32(c.Head), Len: 4}
			}
			switch {
			case o.inOrder:
				q.PushInOrder(used[:n])
			case n > 1 && odd:
				// Out of order: the batch reversed.
				for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
					used[i], used[j] = used[j], used[i]
				}
				q.Push(used[:n])
			default:
				q.Push(used[:n])
			}
			odd = !odd
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
		for posted < total && d.NumFreeIDs() > 0 {
			// Two elements: two descriptors, or one indirect.
			ind := o.indirect && posted%3 == 0
			if need := map[bool]int{false: 2, true: 1}[ind]; d.NumFree() < need {
				break
			}
			b := r.buf(8*(posted%4096), 8)
			binary.LittleEndian.PutUint32(b, uint32(posted))
			var id uint16
			var err error
			if ind {
				id, err = d.AddIndirect([][]byte{b[:4]}, [][]byte{b[4:]})
			} else {
				id, err = d.Add([][]byte{b[:4]}, [][]byte{b[4:]})
			}
			if err != nil {
				t.Fatal(err)
			}
			bufOf[id] = b
			posted++
		}
		if d.Publish() {
			if err := drvKick.Signal(); err != nil {
				t.Fatal(err)
			}
		}
		n := d.Reap(reapedElems)
		if d.Err() != nil {
			t.Fatal(d.Err())
		}
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
				t.Fatalf("driver waited %v for an interrupt after %d of %d buffers: lost interrupt", stuck, reaped, total)
			}
			t.Fatal(err)
		}
		d.DisableInterrupts()
	}
	if err := <-devErr; err != nil {
		t.Fatal(err)
	}
}
