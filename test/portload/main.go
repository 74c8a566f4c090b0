// Command portload is the many-ports benchmark's front-end (issue 12,
// scripts/bench/ports.sh): it plays the guest on N vhost-user sockets of a
// running vhostd with the repo's Go front-end (vhostuser/frontend), QEMU's
// handshake order, split rings of -qsize entries and one queue pair per port.
//
//	portload -mode idle  [-d SECS] SOCKET...
//	portload -mode flood [-d SECS] [-s BYTES] [-batch N] SOCKET...
//
// Both modes first complete the handshake on every socket (rings up, kick
// and call fds given, every RX buffer posted and kicked: what a guest with
// its interface up and nothing to send looks like) and print
//
//	READY ports=N
//
// idle then holds still for -d seconds (0: until SIGTERM or SIGINT) and
// closes the connections.
//
// flood then sends -s-byte Ethernet/IPv4/UDP frames (virtio_net_hdr without
// offloads in front) on every port's transmitq as fast as the device takes
// them, one goroutine per port, for -d seconds: it posts up to -batch chains,
// publishes, kicks when the device asks (EVENT_IDX), and reaps used entries.
// When the ring is full and nothing came back it enables the used-buffer
// notification and waits for the call (at most 1 ms), like a guest whose TX
// queue is stopped, instead of spinning against the device for the CPU.
// When the time is up it stops posting, reaps what is in flight, and prints
// one line per port and a summary:
//
//	PORT idx=0 socket=PATH posted=N completed=N pps=R share_pct=S
//	RESULT mode=flood ports=N size=B secs=T total_pps=R mean_pps=R min_pps=R max_pps=R max_dev_pct=D
//	DONE
//
// share_pct is the port's completed packets as % of the mean over ports;
// max_dev_pct is the largest |share_pct - 100|. After DONE the connections
// stay open (so the back-end's counters can still be read) until SIGTERM,
// SIGINT or -hold seconds.
//
// Exit status: 0 when every port handshook (and, in flood mode, every port
// got its in-flight chains back), 1 otherwise.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtqueue"
)

const hdrLen = 12 // virtio_net_hdr with VERSION_1 (num_buffers included)

type port struct {
	idx      int
	path     string
	fe       *frontend.Frontend
	rx, tx   *frontend.Queue
	next     uint64 // bump allocator in the data area
	posted   uint64
	complete uint64
	err      error
}

func main() {
	mode := flag.String("mode", "idle", "idle (handshake, post RX buffers, hold still) or flood (transmit as fast as possible)")
	secs := flag.Float64("d", 10, "seconds to hold still (idle; 0: until SIGTERM) or to transmit (flood)")
	size := flag.Int("s", 64, "flood: Ethernet frame bytes (60..9000)")
	batch := flag.Int("batch", 32, "flood: chains posted per publish")
	qsize := flag.Int("qsize", 256, "ring size (power of two)")
	hold := flag.Float64("hold", 0, "flood: after DONE keep the connections open this many seconds (0: until SIGTERM)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: portload -mode idle|flood [-d SECS] [-s BYTES] [-batch N] [-qsize N] [-hold SECS] SOCKET...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 || (*mode != "idle" && *mode != "flood") || *size < 60 || *size > 9000 ||
		*batch < 1 || *qsize < 2 || *qsize > 32768 || *qsize&(*qsize-1) != 0 || *secs < 0 {
		flag.Usage()
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)

	ports := make([]*port, flag.NArg())
	for i, path := range flag.Args() {
		p, err := attach(i, path, uint16(*qsize))
		if err != nil {
			fmt.Fprintf(os.Stderr, "portload: port %d (%s): %v\n", i, path, err)
			for _, q := range ports[:i] {
				q.fe.Close()
			}
			os.Exit(1)
		}
		ports[i] = p
	}
	defer func() {
		for _, p := range ports {
			p.fe.Close()
		}
	}()
	fmt.Printf("READY ports=%d\n", len(ports))

	if *mode == "idle" {
		wait(sig, *secs)
		return
	}
	rc := flood(ports, *size, *batch, time.Duration(*secs*float64(time.Second)))
	fmt.Println("DONE")
	wait(sig, *hold)
	if rc != 0 {
		for _, p := range ports {
			p.fe.Close()
		}
		os.Exit(rc)
	}
}

// wait returns after secs seconds (0: never) or on a signal.
func wait(sig <-chan os.Signal, secs float64) {
	if secs <= 0 {
		<-sig
		return
	}
	select {
	case <-sig:
	case <-time.After(time.Duration(secs * float64(time.Second))):
	}
}

// attach connects, handshakes and fills the RX ring with 2 KB buffers.
func attach(i int, path string, qsize uint16) (*port, error) {
	var fe *frontend.Frontend
	var err error
	// The socket may appear a little after vhostd starts.
	for try := 0; try < 50; try++ {
		if fe, err = frontend.Dial(path); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	// Rings at the start of region 0, then RX buffers (qsize x 2 KB) and
	// the TX chains (qsize/2 x (header + frame)).
	mem := uint64(4<<20) + uint64(qsize)*(2048+9216)
	if err := fe.Handshake(frontend.Options{Order: frontend.OrderQEMU, QueueSize: qsize,
		Regions: []frontend.Region{{GPA: 0, Size: mem}}}); err != nil {
		fe.Close()
		return nil, err
	}
	p := &port{idx: i, path: path, fe: fe, rx: fe.Queues[0], tx: fe.Queues[1]}
	d := p.rx.Ring
	for d.NumFree() > 0 {
		if _, err := d.Add(nil, [][]byte{p.buf(2048)}); err != nil {
			fe.Close()
			return nil, fmt.Errorf("posting RX buffers: %w", err)
		}
	}
	d.Publish()
	// Kick regardless of what the ring says: the worker learns of the
	// buffers now, as a guest bringing its interface up does.
	if err := p.rx.Kick(); err != nil {
		fe.Close()
		return nil, err
	}
	return p, nil
}

func (p *port) buf(n int) []byte {
	b := p.fe.Buffer(p.next, uint64(n))
	p.next += uint64(n+63) &^ 63
	return b
}

// flood runs every port's sender for dur and prints the per-port lines and
// the summary.
func flood(ports []*port, size, batch int, dur time.Duration) int {
	hdr := make([]byte, hdrLen)
	frame := testpkt.UDP4(size, testpkt.CsumNone)
	var stop atomic.Bool
	var start, ready sync.WaitGroup
	start.Add(1)
	var wg sync.WaitGroup
	for _, p := range ports {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			p.send(hdr, frame, batch, &stop, &start, &ready)
		}()
	}
	ready.Wait() // every chain built
	t0 := time.Now()
	start.Done()
	time.Sleep(dur)
	stop.Store(true)
	el := time.Since(t0)
	wg.Wait()

	rc := 0
	var total, minP, maxP float64
	minP = math.Inf(1)
	for _, p := range ports {
		if p.err != nil {
			fmt.Fprintf(os.Stderr, "portload: port %d (%s): %v\n", p.idx, p.path, p.err)
			rc = 1
		}
		c := float64(p.complete)
		total += c
		minP, maxP = math.Min(minP, c), math.Max(maxP, c)
	}
	mean := total / float64(len(ports))
	maxDev := 0.0
	for _, p := range ports {
		share := 0.0
		if mean > 0 {
			share = 100 * float64(p.complete) / mean
		}
		maxDev = math.Max(maxDev, math.Abs(share-100))
		fmt.Printf("PORT idx=%d socket=%s posted=%d completed=%d pps=%.0f share_pct=%.1f\n",
			p.idx, p.path, p.posted, p.complete, float64(p.complete)/el.Seconds(), share)
	}
	fmt.Printf("RESULT mode=flood ports=%d size=%d secs=%.3f total_pps=%.0f mean_pps=%.0f min_pps=%.0f max_pps=%.0f max_dev_pct=%.1f\n",
		len(ports), size, el.Seconds(), total/el.Seconds(), mean/el.Seconds(), minP/el.Seconds(), maxP/el.Seconds(), maxDev)
	return rc
}

// send is one port's transmit loop.
func (p *port) send(hdr, frame []byte, batch int, stop *atomic.Bool, start, ready *sync.WaitGroup) {
	d := p.tx.Ring
	slots := int(d.Size()) / 2
	chains := make([][][]byte, slots)
	for i := range chains {
		h, f := p.buf(len(hdr)), p.buf(len(frame))
		copy(h, hdr)
		copy(f, frame)
		chains[i] = [][]byte{h, f}
	}
	used := make([]virtqueue.UsedElem, d.Size())
	inflight, next := 0, 0
	ready.Done()
	start.Wait()
	for !stop.Load() {
		added := 0
		for inflight < slots && added < batch {
			if _, err := d.Add(chains[next], nil); err != nil {
				p.err = err
				return
			}
			next = (next + 1) % slots
			inflight++
			added++
		}
		if added > 0 {
			p.posted += uint64(added)
			if d.Publish() {
				if err := p.tx.Kick(); err != nil {
					p.err = err
					return
				}
			}
		}
		n := d.Reap(used)
		inflight -= n
		p.complete += uint64(n)
		if added == 0 && n == 0 {
			// Ring full and nothing back: wait for the device's call.
			if !d.EnableInterrupts() {
				if err := p.tx.WaitCall(time.Millisecond); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					p.err = err
					return
				}
			}
			d.DisableInterrupts()
		}
	}
	// Get back what is in flight.
	deadline := time.Now().Add(2 * time.Second)
	for inflight > 0 && time.Now().Before(deadline) {
		n := d.Reap(used)
		inflight -= n
		p.complete += uint64(n)
		if n == 0 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	if inflight > 0 && p.err == nil {
		p.err = fmt.Errorf("%d chains still in flight 2 s after the flood stopped", inflight)
	}
}
