package virtionet

import (
	"runtime"
	"time"
)

// Adaptive busy-polling (issue 12). A real guest posts about 1.2 packets per
// kick, so a worker that goes to sleep after every batch pays a wake-up (the
// eventfd, the Go poller, a goroutine hand-off: several microseconds of CPU)
// per packet. After work, a worker instead keeps looking for more (the avail
// ring on TX; the backend and the avail ring on RX) for a window, the way
// vhost-net's busy_poll does, and the window adapts the way the KVM work list
// asks ("make busy_poll dynamic like the dynamic PLE window"): it doubles
// each time polling finds work before it runs out and halves each time it
// runs out empty, between pollFloor and the configured maximum (--poll-us).
//
// Polling must not steal the CPU from anything else ("exit the busy loop
// when another process is runnable"). Userspace has no need_resched(), and
// sched_yield(2) is no probe: on a busy machine it hands the CPU away for a
// whole time slice (measured: a 64-byte TX poll went from 0.45 µs to 47 µs
// per packet with a compiler running). The probe is free instead: the loop
// reads the clock for its window anyway, and two looks further apart than
// pollGap mean the kernel ran another task on this CPU in between (CFS
// preempts a busy-polling thread for a waiting task within its wake-up
// granularity, so the gap shows up on the next look). That ends the poll at
// once and halves the window, so on a contended CPU the worker quickly goes
// back to sleeping on kicks. A first version also read the thread's
// involuntary context switches (getrusage(RUSAGE_THREAD)); in a guest
// iperf3 profile that syscall was 5% of vhostd's CPU and caught nothing
// the gap does not. The window itself (at most --poll-us, 50 µs by
// default) bounds how long a task the kernel has not yet preempted us for
// can wait. Between looks the loop lets other goroutines run
// (runtime.Gosched), so a port's other worker sharing the P is not held up.
//
// pollWindow is owned by one worker goroutine; it does not allocate.
type pollWindow struct {
	max time.Duration // 0: polling off (today's sleep-after-every-batch)
	cur time.Duration

	// Events since the last take(), folded into the queue's counters once
	// per batch.
	hits      uint64 // polling found work before the window ran out
	misses    uint64 // the window ran out empty
	contended uint64 // left early: another task wanted this CPU
	sleeps    uint64 // the worker went to sleep (blocked for a kick or the backend)
}

// Poll outcomes, the values of the poll counter families.
const (
	pollHit = iota
	pollMiss
	pollContended
	pollSleep
	numPollOutcomes
)

var pollOutcomeNames = [numPollOutcomes]string{"hit", "miss", "contended", "sleep"}

const (
	// pollFloor keeps a minimum window once polling is on: a kick costs
	// more than this, so looking this long after a batch is never a loss
	// worth stopping for.
	pollFloor = 4 * time.Microsecond
	// pollGap: two looks further apart than this mean the thread was
	// descheduled in between.
	pollGap = 20 * time.Microsecond
	// pollGoschedEvery: looks between two runtime.Gosched calls.
	pollGoschedEvery = 16
)

func newPollWindow(max time.Duration) pollWindow {
	if max < 0 {
		max = 0
	}
	p := pollWindow{max: max}
	if max > 0 {
		p.cur = min(max, pollFloor)
	}
	return p
}

// on reports whether polling is enabled.
func (p *pollWindow) on() bool { return p.max > 0 }

func (p *pollWindow) grow() {
	p.cur = min(p.max, max(2*p.cur, pollFloor))
}

func (p *pollWindow) shrink() {
	p.cur = max(min(p.max, pollFloor), p.cur/2)
}

// poll calls look until it reports work, the window runs out, another task
// wants the CPU, or quit reports true. It returns what look last returned
// (and its error); the window adapts to the outcome.
func (p *pollWindow) poll(look func() (bool, error), quit func() bool) (bool, error) {
	if p.max == 0 {
		return false, nil
	}
	start := time.Now()
	last := start
	for i := 1; ; i++ {
		ok, err := look()
		if ok || err != nil {
			p.hits++
			p.grow()
			return ok, err
		}
		if quit() {
			return false, nil
		}
		now := time.Now()
		if now.Sub(start) >= p.cur {
			p.misses++
			p.shrink()
			return false, nil
		}
		if now.Sub(last) > pollGap {
			p.contended++
			p.shrink()
			return false, nil
		}
		last = now
		if i%pollGoschedEvery == 0 {
			runtime.Gosched()
			last = time.Now() // another goroutine's turn is not contention
		}
	}
}

// take returns the events since the last call and clears them.
func (p *pollWindow) take() (hits, misses, contended, sleeps uint64) {
	hits, misses, contended, sleeps = p.hits, p.misses, p.contended, p.sleeps
	p.hits, p.misses, p.contended, p.sleeps = 0, 0, 0, 0
	return
}
