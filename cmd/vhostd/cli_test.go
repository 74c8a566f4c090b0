package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vhostd/vhostd/virtqueue"
)

// syncBuffer is a bytes.Buffer safe for the daemon's logger goroutines.
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

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// daemon runs `vhostd` in-process with a null backend and the admin API on
// a free port, and connects the Go front-end to it.
type daemon struct {
	addr   string // read-only TCP listener
	ctl    string // control socket
	caps   string // capture directory
	fe     *frontend.Frontend
	log    *syncBuffer
	cancel context.CancelFunc
	done   chan int
	next   uint64
}

func startDaemon(t *testing.T, extra ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "vhost.sock")
	d := &daemon{addr: freeAddr(t), ctl: filepath.Join(dir, "control.sock"), caps: filepath.Join(dir, "captures"), log: &syncBuffer{}, done: make(chan int, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	args := append([]string{"--socket-path", sock, "--backend", "null", "--name", "vm0", "--admin-addr", d.addr,
		"--control-socket", d.ctl, "--capture-dir", d.caps}, extra...)
	go func() { d.done <- runDaemon(ctx, args, &syncBuffer{}, d.log) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fe, err := frontend.Dial(sock)
		if err == nil {
			d.fe = fe
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vhostd did not listen: %v\n%s", err, d.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.fe.Handshake(frontend.Options{Regions: []frontend.Region{{GPA: 0, Size: 8 << 20}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.fe.Close()
		d.cancel()
		select {
		case code := <-d.done:
			if code != 0 {
				t.Errorf("vhostd exited %d:\n%s", code, d.log.String())
			}
		case <-time.After(10 * time.Second):
			t.Error("vhostd did not stop")
		}
	})
	return d
}

// send posts n copies of one packet on the transmitq and waits for them.
func (d *daemon) send(t *testing.T, n int, hdr, frame []byte) {
	t.Helper()
	sendPackets(t, d.fe, &d.next, n, hdr, frame)
}

// sendPackets posts n copies of one packet on fe's transmitq and waits for
// them; next is the guest memory allocation cursor.
func sendPackets(t *testing.T, fe *frontend.Frontend, next *uint64, n int, hdr, frame []byte) {
	t.Helper()
	stage := func(b []byte) []byte {
		g := fe.Buffer(*next, uint64(len(b)))
		*next += uint64(len(b)+63) &^ 63
		copy(g, b)
		return g
	}
	pkt := [][]byte{stage(hdr), stage(frame)}
	tx := fe.Queues[1]
	used := make([]virtqueue.UsedElem, 256)
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for sent := 0; sent < n || got < n; {
		if sent < n {
			if _, err := tx.Driver.Add(pkt, nil); err == nil {
				sent++
				continue
			}
		}
		if tx.Driver.Publish() {
			if err := tx.Kick(); err != nil {
				t.Fatal(err)
			}
		}
		got += tx.Driver.Reap(used)
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d TX completions", got, n)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// tso4 builds a TCP/IPv4 super-packet header and frame with payload bytes.
func tso4(payload int) (hdr, frame []byte) {
	size := 54 + payload
	f := make([]byte, size)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	copy(ip[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(s))
	f[46] = 5 << 4
	f[47] = 0x10
	h := vnet.Hdr{Flags: vnet.FlagNeedsCsum, GSOType: vnet.GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	hdr = make([]byte, 12)
	h.Encode(hdr)
	return hdr, f
}

// vhostd runs a subcommand and returns its exit code, stdout and stderr.
func vhostd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestSubcommandsAgainstARunningDaemon(t *testing.T) {
	d := startDaemon(t, "--gso-max-size", "16384")
	hdr, frame := tso4(30000)
	d.send(t, 300, hdr, frame)

	// status over the control socket, and over the read-only TCP
	// listener as before.
	code, out, errs := vhostd("status", "--control-socket", d.ctl)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	if code, out2, errs := vhostd("status", "--admin-addr", d.addr); code != 0 || out2 != out {
		t.Errorf("status over TCP: %d %s\n%s\nwant\n%s", code, errs, out2, out)
	}
	for _, want := range []string{
		"Port vm0 (null)\n",
		"  Front-end:           connected\n",
		"gso_max_size 16384",
		"300 posted: 0 passthrough, 300 resegmented",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	// Diagnosis lines are wrapped; compare them with spaces collapsed.
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{
		"[warning] gso_max_size 16384 on the null backend is below the guest's 29 KB super-packets: 300 of 300 super-packets (100%) were split",
		"Raise it (vhostd --gso-max-size 65536",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	code, out, errs = vhostd("stats", "--control-socket", d.ctl)
	if code != 0 {
		t.Fatalf("stats: %d %s", code, errs)
	}
	for _, want := range []string{"vm0 queue pair 0 statistics:\n", "     tx_posted: 300\n", "     tx_resegmented_packets: 300\n", "     tx_decision_gso_max_size: 300\n", "     tx_gso_segments: 600\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = vhostd("policy", "--admin-addr", d.addr)
	if code != 0 || out != "vm0: auto\n" {
		t.Errorf("policy: %d %q", code, out)
	}
	// TCP is read-only: the client says so, and so does the server.
	code, _, errs = vhostd("policy", "--admin-addr", d.addr, "software")
	if code != 1 || !strings.Contains(errs, "--admin-addr is the read-only listener (GET /metrics and /status): switching the GSO policy needs the control socket") {
		t.Errorf("policy over TCP: %d %q", code, errs)
	}
	if resp, err := http.Post("http://"+d.addr+"/ports/vm0/policy?policy=software", "text/plain", nil); err != nil || resp.StatusCode != 405 && resp.StatusCode != 403 {
		t.Errorf("PUT policy over TCP: %v %v", resp, err)
	}
	code, out, _ = vhostd("policy", "--control-socket", d.ctl, "--port", "vm0", "software")
	if code != 0 || out != "vm0: policy software (was auto), from the next packet on\n" {
		t.Errorf("policy software: %d %q", code, out)
	}
	code, _, errs = vhostd("policy", "--control-socket", d.ctl, "sideways")
	if code != 1 || !strings.Contains(errs, `unknown GSO policy "sideways": use auto, defer or software`) {
		t.Errorf("bad policy: %d %q", code, errs)
	}
	d.send(t, 10, hdr, frame)
	_, out, _ = vhostd("stats", "--control-socket", d.ctl)
	if !strings.Contains(out, "     tx_segmented_packets: 10\n") {
		t.Errorf("after the switch to software:\n%s", out)
	}

	// Capture TX while the guest sends.
	file := filepath.Join(d.caps, "c.pcap")
	type res struct {
		code      int
		out, errs string
	}
	rc := make(chan res, 1)
	go func() {
		c, o, e := vhostd("capture", "--control-socket", d.ctl, "--dir", "tx", "--count", "5", "--file", "c.pcap", "--timeout", "20s")
		rc <- res{c, o, e}
	}()
	stop := time.After(20 * time.Second)
	var r res
wait:
	for {
		d.send(t, 2, hdr, frame)
		select {
		case r = <-rc:
			break wait
		case <-stop:
			t.Fatal("capture did not finish")
		default:
		}
	}
	if r.code != 0 || !strings.Contains(r.out, "5 packets written to "+file+"\ndecisions: "+file+".decisions.tsv\n") {
		t.Fatalf("capture: %d %q %q", r.code, r.out, r.errs)
	}
	if st, err := os.Stat(file); err != nil || st.Size() < 5*1000 || st.Mode().Perm() != 0o600 {
		t.Errorf("pcap file: %v %v", st, err)
	}
	tsv, err := os.ReadFile(file + ".decisions.tsv")
	if err != nil || !strings.Contains(string(tsv), "\ttx\t0\tsegmented\tsegment\tpolicy\t-\ttcpv4\t1448\t34\t16\t30054\tneeds_csum\n") {
		t.Errorf("decisions file: %v\n%s", err, tsv)
	}

	// /metrics is served by the daemon too.
	resp, err := http.Get("http://" + d.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`vhostd_tx_packets_total{path="resegmented",port="vm0",queue="0"} 300`,
		`vhostd_vhost_user_connected{port="vm0"} 1`,
		`vhostd_gso_policy{policy="software",port="vm0"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestSubcommandErrors(t *testing.T) {
	addr := freeAddr(t)
	code, _, errs := vhostd("status", "--admin-addr", addr)
	if code != 1 || !strings.Contains(errs, "is vhostd running, and with --admin-addr "+addr) {
		t.Errorf("status without daemon: %d %q", code, errs)
	}
	code, _, errs = vhostd("capture", "--admin-addr", addr)
	if code != 2 || !strings.Contains(errs, "give --count N") {
		t.Errorf("capture without count: %d %q", code, errs)
	}
	code, _, errs = vhostd("stats", "extra")
	if code != 2 || !strings.Contains(errs, `unexpected argument "extra"`) {
		t.Errorf("stats extra: %d %q", code, errs)
	}
	code, _, errs = vhostd("statuss")
	if code != 2 || !strings.Contains(errs, "subcommands are capture, policy, port, reload, stats, status") {
		t.Errorf("typo: %d %q", code, errs)
	}
	if code, _, _ := vhostd("status", "-h"); code != 0 {
		t.Errorf("status -h: %d", code)
	}
}

func TestAdminAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock := filepath.Join(t.TempDir(), "s.sock")
	var errb syncBuffer
	// Chosen explicitly: fatal, with advice.
	code := runDaemon(context.Background(), []string{"--socket-path", sock, "--admin-addr", ln.Addr().String()}, &syncBuffer{}, &errb)
	if code != 1 || !strings.Contains(errb.String(), "give this one its own --admin-addr") {
		t.Errorf("explicit address in use: %d\n%s", code, errb.String())
	}
}
