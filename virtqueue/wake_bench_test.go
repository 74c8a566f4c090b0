package virtqueue

import (
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cpuNow is the process's user+system CPU time in ns.
func cpuNow() int64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// benchWake measures one kick -> wake -> call round trip: the benchmark
// goroutine signals ping and waits for pong (through the Go poller), a
// responder waits on ping with wait and signals pong. It reports the
// process CPU per round trip beside the wall time.
func benchWake(b *testing.B, wait func(fd int, k *Kick)) {
	pingFd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	pongFd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	pingDup, _ := unix.Dup(pingFd)
	pongDup, _ := unix.Dup(pongFd)
	pingK, _ := NewKick(pingFd)
	pongK, _ := NewKick(pongFd)
	ping, pong := NewCall(pingDup), NewCall(pongDup)
	defer pingK.Close()
	defer pongK.Close()
	defer ping.Close()
	defer pong.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < b.N; i++ {
			wait(pingFd, pingK)
			_ = pong.Signal()
		}
	}()
	b.ResetTimer()
	c0 := cpuNow()
	for i := 0; i < b.N; i++ {
		_ = ping.Signal()
		if err := pongK.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.ReportMetric(float64(cpuNow()-c0)/float64(b.N), "cpu-ns/op")
}

func BenchmarkWakeNetpoller(b *testing.B) {
	benchWake(b, func(_ int, k *Kick) { _ = k.Wait() })
}

func BenchmarkWakeLockedPpoll(b *testing.B) {
	locked := false
	var buf [8]byte
	benchWake(b, func(fd int, _ *Kick) {
		if !locked {
			runtime.LockOSThread()
			locked = true
		}
		pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, _, e := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd[0])), 1, 0, 0, 0, 0)
			if e == unix.EINTR {
				continue
			}
			r, _, _ := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), 8)
			if int(r) == 8 {
				return
			}
		}
	})
}

func BenchmarkWakeSpin(b *testing.B) {
	var buf [8]byte
	benchWake(b, func(fd int, _ *Kick) {
		for {
			r, _, _ := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), 8)
			if int(r) == 8 {
				return
			}
		}
	})
}
