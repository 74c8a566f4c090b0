// Package daemontest builds the project's commands and runs a real vhostd
// for tests that talk to it from outside (the CNI plugin, the dashboards'
// metric names).
package daemontest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{}
)

// Build compiles the command in pkg (an import path such as
// "github.com/vhostd/vhostd/cmd/vhostd") once per test binary and returns
// the executable. The name is the package's last element.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "vhostd-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, filepath.Base(pkg))
	// go test puts its own GOROOT/bin first in PATH.
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}

// Cleanup removes the built binaries; call it from TestMain after m.Run.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// Daemon is a running vhostd.
type Daemon struct {
	Cmd           *exec.Cmd
	ControlSocket string
	// AdminAddr is the read-only listener's address, when the daemon was
	// started with --admin-addr 127.0.0.1:0.
	AdminAddr string
	log       *syncBuffer
	done      chan struct{}
}

// Log returns what the daemon logged so far.
func (d *Daemon) Log() string { return d.log.String() }

// Start runs vhostd (the binary bin) with a control socket in dir and the
// given extra flags, and waits for the control socket to answer. The
// read-only listener is off unless args set --admin-addr; with
// --admin-addr 127.0.0.1:0 the chosen port is read from the log. The
// daemon gets SIGTERM at the end of the test.
func Start(t testing.TB, bin, dir string, args ...string) *Daemon {
	t.Helper()
	sock := filepath.Join(dir, "control.sock")
	full := []string{"--control-socket", sock, "--capture-dir", filepath.Join(dir, "captures"), "--log-level", "debug"}
	hasAdmin := false
	for _, a := range args {
		if a == "--admin-addr" || len(a) > 13 && a[:13] == "--admin-addr=" {
			hasAdmin = true
		}
	}
	if !hasAdmin {
		full = append(full, "--admin-addr", "")
	}
	full = append(full, args...)
	d := &Daemon{ControlSocket: sock, log: &syncBuffer{}, done: make(chan struct{})}
	d.Cmd = exec.Command(bin, full...)
	d.Cmd.Stdout, d.Cmd.Stderr = d.log, d.log
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.Cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.Stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-d.done:
			t.Fatalf("vhostd %v exited early: %v\n%s", full, d.Cmd.ProcessState, d.Log())
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vhostd's control socket %s did not come up in 30 s\n%s", sock, d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if hasAdmin {
		re := regexp.MustCompile(`read-only admin listener.* addr=(\S+)`)
		for {
			if m := re.FindStringSubmatch(d.Log()); m != nil {
				d.AdminAddr = m[1]
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("vhostd did not log its admin address\n%s", d.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return d
}

// Stop sends SIGTERM and waits (10 s, then SIGKILL).
func (d *Daemon) Stop(t testing.TB) {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.Cmd.Process.Kill()
		<-d.done
		t.Errorf("vhostd did not stop within 10 s of SIGTERM\n%s", d.Log())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
