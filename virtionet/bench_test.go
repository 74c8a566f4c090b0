package virtionet_test

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vhostd/vhostd/virtqueue"
	"golang.org/x/sys/unix"
)

// The benchmarks drive a real vhostd device over a unix socket with the Go
// front-end in the same process. b.N counts packets. allocs/op covers the
// whole process (device workers and front-end): 0 means the hot path does
// not allocate per packet.

const benchBatch = 32

// txBench posts TX chains (header + frame, pre-built in guest memory) in
// batches and reaps them; the device writes to be.
func txBench(b *testing.B, be backend.Backend, frame []byte, hdr []byte) {
	txBenchRing(b, be, frame, hdr, rigOpts{})
}

// txBenchRing is txBench over the ring layout o asks for (packed, in-order).
func txBenchRing(b *testing.B, be backend.Backend, frame []byte, hdr []byte, o rigOpts) {
	o.queueSize = 256
	r := newRig(b, be, o)
	const slots = 128
	type chain struct{ out [][]byte }
	chains := make([]chain, slots)
	for i := range chains {
		chains[i].out = [][]byte{r.copyIn(hdr), r.copyIn(frame)}
	}
	used := make([]virtqueue.UsedElem, 256)
	d := r.tx.Ring
	inflight, next := 0, 0
	// The front-end (this goroutine) keeps one OS thread, so its CPU can
	// be taken out of the process's: what is left is the device's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fe0 := threadCPUTime()
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	start := time.Now()
	for done := 0; done < b.N; {
		for inflight < slots/2 && done+inflight < b.N {
			if _, err := d.Add(chains[next].out, nil); err != nil {
				b.Fatal(err)
			}
			next = (next + 1) % slots
			inflight++
		}
		if d.Publish() {
			r.tx.Kick()
		}
		n := d.Reap(used)
		inflight -= n
		done += n
	}
	el := time.Since(start)
	b.StopTimer()
	cpu, fe := cpuTime()-cpu0, threadCPUTime()-fe0
	reportRates(b, el, cpu, len(frame))
	if dev := cpu - fe; dev > 0 {
		b.ReportMetric(float64(b.N)*float64(len(frame))*8/1e9/dev.Seconds(), "dev-Gbit/s/core")
	}
}

// threadCPUTime is the calling OS thread's CPU time.
func threadCPUTime() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

func reportRates(b *testing.B, wall, cpu time.Duration, size int) {
	b.ReportMetric(float64(b.N)/wall.Seconds()/1e6, "Mpps")
	gbits := float64(b.N) * float64(size) * 8 / 1e9
	b.ReportMetric(gbits/wall.Seconds(), "Gbit/s")
	if cpu > 0 {
		b.ReportMetric(gbits/cpu.Seconds(), "Gbit/s/core")
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkTxNull(b *testing.B) {
	for _, size := range []int{64, 1518} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			txBench(b, backend.NewNull(backend.NullConfig{}), testpkt.UDP4(size, testpkt.CsumNone), testpkt.VnetHdr(0, 0, 0, 0, 0))
		})
	}
	b.Run("64KB-TSO-passthrough", func(b *testing.B) {
		txBench(b, backend.NewNull(backend.NullConfig{}), testpkt.TCP4Super(65000), testpkt.VnetHdr(1, vnet.GSOTCPv4, 1448, 34, 16))
	})
	b.Run("64KB-TSO-software-segmented", func(b *testing.B) {
		caps := backend.Capabilities{Offloads: vnet.OffloadCSUM, GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500}
		txBench(b, backend.NewNull(backend.NullConfig{Caps: caps}), testpkt.TCP4Super(65000), testpkt.VnetHdr(1, vnet.GSOTCPv4, 1448, 34, 16))
	})
	b.Run("64KB-TSO-resegmented-16K", func(b *testing.B) {
		caps := backend.DefaultNullCaps
		caps.GSOMaxSize = 16384
		txBench(b, backend.NewNull(backend.NullConfig{Caps: caps}), testpkt.TCP4Super(65000), testpkt.VnetHdr(1, vnet.GSOTCPv4, 1448, 34, 16))
	})
}

// BenchmarkRxNull: the null backend produces packets as fast as the device
// asks; the front-end posts 2 KB buffers and reaps them.
func BenchmarkRxNull(b *testing.B) {
	for _, size := range []int{64, 1518} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			rxBench(b, size, rigOpts{})
		})
	}
}

// rxBench: the null backend produces size-byte packets as fast as the
// device asks; the front-end keeps its RX ring (of the layout o asks for)
// full of 2 KB buffers and reaps them.
func rxBench(b *testing.B, size int, o rigOpts) {
	tmpl := append(make([]byte, 12), testpkt.UDP4(size, testpkt.CsumNone)...)
	be := backend.NewNull(backend.NullConfig{RXTemplate: tmpl})
	o.queueSize = 256
	r := newRig(b, be, o)
	const slots = 256
	bufs := make([][][]byte, slots)
	for i := range bufs {
		bufs[i] = [][]byte{r.buf(2048)}
	}
	used := make([]virtqueue.UsedElem, 256)
	d := r.rx.Ring
	next := 0
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for done := 0; done < b.N; {
		for d.NumFree() > 0 {
			if _, err := d.Add(nil, bufs[next]); err != nil {
				b.Fatal(err)
			}
			next = (next + 1) % slots
		}
		if d.Publish() {
			r.rx.Kick()
		}
		done += d.Reap(used)
	}
	el := time.Since(start)
	b.StopTimer()
	reportRates(b, el, cpuTime()-cpu0, size)
}

// BenchmarkRingModesNull runs the TX and RX benchmarks over every ring
// layout (split, packed, each with and without IN_ORDER), so the layouts
// compare in one run: BenchmarkRingModesNull/packed-inorder/tx/64B.
func BenchmarkRingModesNull(b *testing.B) {
	for _, m := range ringModes {
		o := rigOpts{packed: m.packed, inOrder: m.inOrder}
		for _, size := range []int{64, 1518} {
			b.Run(fmt.Sprintf("%s/tx/%dB", m.name, size), func(b *testing.B) {
				txBenchRing(b, backend.NewNull(backend.NullConfig{}), testpkt.UDP4(size, testpkt.CsumNone), testpkt.VnetHdr(0, 0, 0, 0, 0), o)
			})
			b.Run(fmt.Sprintf("%s/rx/%dB", m.name, size), func(b *testing.B) { rxBench(b, size, o) })
		}
	}
}

// BenchmarkTx64KTap: 64 KB TSO super-packets from the Go front-end through
// vhostd into a real tap, against the baseline of writing the same packet
// to a tap directly (writev from one buffer, no vhost-user, no ring) in the
// same run. Needs root; the taps live in the current network namespace,
// are down-to-up without addresses, and vanish when closed.
func BenchmarkTx64KTap(b *testing.B) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			b.Fatal("BenchmarkTx64KTap needs root (taps)")
		}
		b.Skip("needs root to create taps")
	}
	frame := testpkt.TCP4Super(65000)
	hdr := testpkt.VnetHdr(1, vnet.GSOTCPv4, 1448, 34, 16)
	b.Run("direct-writev-baseline", func(b *testing.B) {
		tap, err := backend.OpenTap(backend.TapConfig{Name: fmt.Sprintf("vhbd%d", os.Getpid()%10000)})
		if err != nil {
			b.Fatal(err)
		}
		defer tap.Close()
		pkt := [][][]byte{{hdr, frame}}
		cpu0 := cpuTime()
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if _, err := tap.WritePackets(pkt); err != nil {
				b.Fatal(err)
			}
		}
		el := time.Since(start)
		b.StopTimer()
		reportRates(b, el, cpuTime()-cpu0, len(frame))
	})
	// vhostd without polling (a wake-up per kick), and with it.
	for _, poll := range []time.Duration{0, 50 * time.Microsecond} {
		b.Run(fmt.Sprintf("vhostd-poll%dus", poll/time.Microsecond), func(b *testing.B) {
			tap, err := backend.OpenTap(backend.TapConfig{Name: fmt.Sprintf("vhbv%d", os.Getpid()%10000)})
			if err != nil {
				b.Fatal(err)
			}
			defer tap.Close()
			txBenchRing(b, tap, frame, hdr, rigOpts{pollMax: poll})
		})
	}
}

var _ = unix.Getpid

// BenchmarkPollNull compares the workers with adaptive polling off (a
// sleep and a kick whenever the ring runs dry) and on (--poll-us 50), in
// one run: BenchmarkPollNull/on/tx/64B.
func BenchmarkPollNull(b *testing.B) {
	for _, m := range []struct {
		name string
		poll time.Duration
	}{{"off", 0}, {"on", 50 * time.Microsecond}} {
		o := rigOpts{pollMax: m.poll}
		for _, size := range []int{64, 1518} {
			b.Run(fmt.Sprintf("%s/tx/%dB", m.name, size), func(b *testing.B) {
				txBenchRing(b, backend.NewNull(backend.NullConfig{}), testpkt.UDP4(size, testpkt.CsumNone), testpkt.VnetHdr(0, 0, 0, 0, 0), o)
			})
			b.Run(fmt.Sprintf("%s/rx/%dB", m.name, size), func(b *testing.B) { rxBench(b, size, o) })
		}
	}
}
