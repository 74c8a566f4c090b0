package vhostuser

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/vhostd/vhostd/vdev"
	"github.com/vhostd/vhostd/virtqueue"
)

// FakeDevice is a Device test double that records every call. With Drain
// set, a started ring gets a worker that pops every chain, returns it with
// length 0 and signals the call eventfd, like the TX sink of issue 2.
// Exported so the external tests (package vhostuser_test) can use it.
type FakeDevice struct {
	Feats    uint64
	Queues   int
	Drain    bool
	MTUErr   error
	StartErr error

	mu       sync.Mutex
	calls    []string
	acked    []uint64
	started  map[int]*vdev.Queue
	starts   map[int]int
	stops    map[int]int
	enabled  map[int]bool
	mtu      uint16
	resets   int
	workers  map[int]*fakeWorker
	drained  map[int]int
	badChain map[int]int
}

func NewFakeDevice(features uint64, queues int) *FakeDevice {
	return &FakeDevice{
		Feats: features, Queues: queues,
		started: map[int]*vdev.Queue{}, starts: map[int]int{}, stops: map[int]int{},
		enabled: map[int]bool{}, workers: map[int]*fakeWorker{}, drained: map[int]int{}, badChain: map[int]int{},
	}
}

func (d *FakeDevice) record(format string, args ...any) {
	d.calls = append(d.calls, fmt.Sprintf(format, args...))
}

func (d *FakeDevice) DeviceFeatures() uint64 { return d.Feats }
func (d *FakeDevice) NumQueues() int         { return d.Queues }

func (d *FakeDevice) SetFeatures(acked uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("SetFeatures(%#x)", acked)
	d.acked = append(d.acked, acked)
	return nil
}

func (d *FakeDevice) StartQueue(q *vdev.Queue) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("StartQueue(%d)", q.Index)
	if d.StartErr != nil {
		return d.StartErr
	}
	if _, dup := d.started[q.Index]; dup {
		return fmt.Errorf("fake device: queue %d started twice", q.Index)
	}
	d.started[q.Index] = q
	d.starts[q.Index]++
	if d.Drain {
		w := &fakeWorker{q: q, dev: d, stop: make(chan struct{}), done: make(chan struct{})}
		d.workers[q.Index] = w
		go w.run()
	}
	return nil
}

func (d *FakeDevice) StopQueue(index int) {
	d.mu.Lock()
	w := d.workers[index]
	delete(d.workers, index)
	d.record("StopQueue(%d)", index)
	d.stops[index]++
	delete(d.started, index)
	d.mu.Unlock()
	if w != nil {
		w.halt()
	}
}

func (d *FakeDevice) SetQueueEnabled(index int, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("SetQueueEnabled(%d,%t)", index, on)
	d.enabled[index] = on
}

func (d *FakeDevice) SetMTU(mtu uint16) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("SetMTU(%d)", mtu)
	if d.MTUErr != nil {
		return d.MTUErr
	}
	d.mtu = mtu
	return nil
}

func (d *FakeDevice) Reset() {
	d.mu.Lock()
	workers := d.workers
	d.workers = map[int]*fakeWorker{}
	d.started = map[int]*vdev.Queue{}
	d.record("Reset")
	d.resets++
	d.mu.Unlock()
	for _, w := range workers {
		w.halt()
	}
}

// FailMTU makes SetMTU fail with err (nil: succeed).
func (d *FakeDevice) FailMTU(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.MTUErr = err
}

// Calls returns the recorded calls.
func (d *FakeDevice) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

// Acked returns every SetFeatures argument.
func (d *FakeDevice) Acked() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]uint64(nil), d.acked...)
}

// Started reports whether queue i is started, and how often it was started
// and stopped so far.
func (d *FakeDevice) Started(i int) (on bool, starts, stops int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, on = d.started[i]
	return on, d.starts[i], d.stops[i]
}

// Queue returns the Queue handed to StartQueue for ring i while it runs.
func (d *FakeDevice) Queue(i int) *vdev.Queue {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started[i]
}

// Enabled reports the last SetQueueEnabled for queue i.
func (d *FakeDevice) Enabled(i int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.enabled[i]
}

// Resets counts Reset calls.
func (d *FakeDevice) Resets() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.resets
}

// Drained counts chains the drain worker returned on queue i.
func (d *FakeDevice) Drained(i int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.drained[i]
}

// MTU is the last accepted SetMTU value.
func (d *FakeDevice) MTU() uint16 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mtu
}

type fakeWorker struct {
	q    *vdev.Queue
	dev  *FakeDevice
	stop chan struct{}
	done chan struct{}
}

func (w *fakeWorker) halt() {
	close(w.stop)
	if w.q.Kick != nil {
		w.q.Kick.SetDeadline(time.Unix(1, 0))
	}
	<-w.done
}

func (w *fakeWorker) run() {
	defer close(w.done)
	chains := make([]virtqueue.Chain, 16)
	used := make([]virtqueue.UsedElem, 0, 16)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		n, err := w.q.VQ.Pop(chains)
		if err != nil {
			return // ring broken
		}
		if n > 0 {
			used = used[:0]
			bad := 0
			for _, c := range chains[:n] {
				if c.Err != nil {
					bad++
				}
				used = append(used, virtqueue.UsedElem{ID: uint32(c.Head)})
			}
			w.q.VQ.Push(used)
			if w.q.VQ.NeedNotify() {
				w.q.Call.Signal()
			}
			w.dev.mu.Lock()
			w.dev.drained[w.q.Index] += n
			w.dev.badChain[w.q.Index] += bad
			w.dev.mu.Unlock()
			continue
		}
		if w.q.Kick == nil { // NOFD: the back-end polls
			time.Sleep(time.Millisecond)
			continue
		}
		if w.q.VQ.EnableNotify() {
			continue
		}
		if err := w.q.Kick.Wait(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				select {
				case <-w.stop:
					return
				default:
				}
			}
			return
		}
	}
}
