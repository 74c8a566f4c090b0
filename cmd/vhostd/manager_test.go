package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/metrics/admin"
	"github.com/vhostd/vhostd/vhostuser/frontend"
)

// feGuest is a Go front-end attached to one port.
type feGuest struct {
	fe   *frontend.Frontend
	next uint64
}

func attachGuest(t *testing.T, sock string) *feGuest {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fe, err := frontend.Dial(sock)
		if err == nil {
			if err := fe.Handshake(frontend.Options{Regions: []frontend.Region{{GPA: 0, Size: 8 << 20}}}); err != nil {
				t.Fatal(err)
			}
			g := &feGuest{fe: fe}
			t.Cleanup(func() { fe.Close() })
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("no vhost-user socket at %s: %v", sock, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (g *feGuest) send(t *testing.T, n int) {
	t.Helper()
	hdr, frame := tso4(1000)
	sendPackets(t, g.fe, &g.next, n, hdr, frame)
}

// runningDaemon is an in-process vhostd with a control socket.
type runningDaemon struct {
	dir, ctl string
	log      *syncBuffer
	cancel   context.CancelFunc
	done     chan int
}

func startRunning(t *testing.T, dir string, args ...string) *runningDaemon {
	t.Helper()
	d := &runningDaemon{dir: dir, ctl: filepath.Join(dir, "control.sock"), log: &syncBuffer{}, done: make(chan int, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	args = append([]string{"--admin-addr", "", "--control-socket", d.ctl, "--capture-dir", filepath.Join(dir, "captures")}, args...)
	go func() { d.done <- runDaemon(ctx, args, &syncBuffer{}, d.log) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(d.ctl); err == nil {
			break
		}
		select {
		case code := <-d.done:
			t.Fatalf("vhostd exited %d:\n%s", code, d.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no control socket:\n%s", d.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(d.stop)
	return d
}

func (d *runningDaemon) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		panic("vhostd did not stop:\n" + d.log.String())
	}
}

// cli runs a subcommand against the daemon's control socket; the socket
// flag goes after the action words.
func (d *runningDaemon) cli(args ...string) (int, string, string) {
	i := 1
	if args[0] == "port" {
		i = 2
		if (args[1] == "add" || args[1] == "del") && len(args) > 2 && !strings.HasPrefix(args[2], "-") {
			i = 3
		}
	}
	full := append(append(append([]string{}, args[:i]...), "--control-socket", d.ctl), args[i:]...)
	return vhostd(full...)
}

func (d *runningDaemon) ports(t *testing.T) map[string]admin.PortInfo {
	t.Helper()
	code, out, errs := d.cli("port", "list", "--json")
	if code != 0 {
		t.Fatalf("port list: %d %s", code, errs)
	}
	var list []admin.PortInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	m := map[string]admin.PortInfo{}
	for _, p := range list {
		m[p.Name] = p
	}
	return m
}

// TestPortsAtRuntime: a daemon started with an empty config file gets a
// port from the CLI; a guest attaches and sends; a second port comes and
// goes meanwhile without the first guest noticing; the config file follows
// every change; a reload applies an edited file leaving untouched ports
// alone; a restart recreates the ports from the file.
func TestPortsAtRuntime(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ports.conf")
	os.WriteFile(conf, []byte("# vhostd ports\n"), 0o644)
	d := startRunning(t, dir, "--config", conf)
	if p := d.ports(t); len(p) != 0 {
		t.Fatalf("ports at start: %v", p)
	}
	code, out, errs := d.cli("port", "list")
	if code != 0 || !strings.Contains(out, "no ports") {
		t.Errorf("port list, empty: %d %q %q", code, out, errs)
	}

	s1 := filepath.Join(dir, "vm1.sock")
	code, out, errs = d.cli("port", "add", "vm1", "--socket", s1, "--null")
	if code != 0 || out != "port vm1 added: name=vm1,socket="+s1+",null\nwritten to the config file: a restart recreates it\n" {
		t.Fatalf("port add vm1: %d %q %q", code, out, errs)
	}
	g1 := attachGuest(t, s1)
	g1.send(t, 20)

	// Errors say what to do.
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"port", "add", "vm1", "--socket", filepath.Join(dir, "x.sock"), "--null"}, 1, "port vm1 already exists (name=vm1,socket=" + s1 + ",null): remove it first (vhostd port del vm1)"},
		{[]string{"port", "add", "vmx", "--socket", s1, "--null"}, 1, "port vm1 already uses socket " + s1},
		{[]string{"port", "add", "vmx", "--socket", filepath.Join(dir, "x.sock")}, 2, "port vmx has no backend: give --tap IF, --macvtap NAME --lower DEV, or --null"},
		{[]string{"port", "add", "vmx", "--socket", filepath.Join(dir, "x.sock"), "--link", "vm1"}, 2, "guest-to-guest ports are joined when vhostd starts"},
		{[]string{"port", "add", "vmx", "--socket", filepath.Join(dir, "x.sock"), "--tap", "t0", "--null"}, 2, "more than one backend"},
		{[]string{"port", "add", "vmx", "--socket", filepath.Join(dir, "x.sock"), "--null", "--queues", "0"}, 2, "--queues 0: give the number of queue pairs"},
		{[]string{"port", "add", "--spec", "name=vmx,socket=/tmp/x.sock,tap=x,null"}, 2, "tap=x and null both choose the backend"},
		{[]string{"port", "add", "vmx", "--socket", "/nonexistent-dir/x.sock", "--null"}, 1, "/nonexistent-dir/x.sock"},
		{[]string{"port", "del", "nope"}, 1, `no port "nope": this vhostd serves [vm1]`},
		{[]string{"port", "frob"}, 2, `unknown action "frob"`},
	} {
		code, _, errs := d.cli(c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: %d %q; want %d with %q", c.args, code, errs, c.code, c.want)
		}
	}

	// A second port comes and goes; the first guest keeps sending.
	s2 := filepath.Join(dir, "vm2.sock")
	if code, out, errs := d.cli("port", "add", "--spec", "name=vm2,socket="+s2+",queues=2,null"); code != 0 || !strings.Contains(out, "port vm2 added") {
		t.Fatalf("port add vm2: %d %q %q", code, out, errs)
	}
	g1.send(t, 20)
	g2 := attachGuest(t, s2)
	g2.send(t, 5)
	ports := d.ports(t)
	if !ports["vm1"].Connected || !ports["vm2"].Connected || ports["vm2"].Queues != 2 || ports["vm1"].Source != "config" || !ports["vm1"].Persistent {
		t.Errorf("ports: %+v", ports)
	}
	if code, out, _ := d.cli("port", "list"); code != 0 || !strings.Contains(out, "vm1   running  connected  config  name=vm1,socket="+s1+",null") {
		t.Errorf("port list:\n%s", out)
	}
	conf1, _ := os.ReadFile(conf)
	if string(conf1) != "# vhostd ports\nname=vm1,socket="+s1+",null\nname=vm2,socket="+s2+",queues=2,null\n" {
		t.Errorf("config after two adds:\n%s", conf1)
	}
	if code, out, errs := d.cli("port", "del", "vm2"); code != 0 || out != "port vm2 removed (and from "+conf+")\n" {
		t.Fatalf("port del vm2: %d %q %q", code, out, errs)
	}
	if _, err := os.Stat(s2); err == nil {
		t.Error("vm2's socket file is still there")
	}
	g1.send(t, 20)
	if p := d.ports(t); len(p) != 1 || !p["vm1"].Connected {
		t.Errorf("after del vm2: %+v", p)
	}
	conf2, _ := os.ReadFile(conf)
	if string(conf2) != "# vhostd ports\nname=vm1,socket="+s1+",null\n" {
		t.Errorf("config after del:\n%s", conf2)
	}
	if !strings.Contains(d.log.String(), `msg="port stats" port=vm2`) {
		t.Error("no final stats line for vm2")
	}

	// An edited file, applied by reload: vm3 added, vm1 untouched (its
	// guest stays attached).
	s3 := filepath.Join(dir, "vm3.sock")
	os.WriteFile(conf, []byte(string(conf2)+"name=vm3,socket="+s3+",null\n"), 0o644)
	code, out, errs = d.cli("reload")
	if code != 0 || out != conf+" reloaded: added vm3; removed none; changed none; 1 unchanged\n" {
		t.Errorf("reload: %d %q %q", code, out, errs)
	}
	g1.send(t, 20)
	// vm3 changed: restarted; a bad line changes nothing.
	os.WriteFile(conf, []byte(string(conf2)+"name=vm3,socket="+s3+",queues=2,null\n"), 0o644)
	if code, out, errs := d.cli("reload"); code != 0 || !strings.Contains(out, "changed vm3; 1 unchanged") {
		t.Errorf("reload with vm3 changed: %d %q %q", code, out, errs)
	}
	if p := d.ports(t); p["vm3"].Queues != 2 {
		t.Errorf("vm3 after change: %+v", p["vm3"])
	}
	os.WriteFile(conf, []byte(string(conf2)+"name=vm3,socket="+s3+",tap=x,null\n"), 0o644)
	if code, _, errs := d.cli("reload"); code != 1 || !strings.Contains(errs, "config file not applied, every port keeps running as it was: "+conf+":3: tap=x and null both choose the backend") {
		t.Errorf("reload of a bad file: %d %q", code, errs)
	}
	if p := d.ports(t); len(p) != 2 {
		t.Errorf("after a bad reload: %+v", p)
	}
	// SIGHUP does what reload does: vm3's line gone, vm3 gone.
	os.WriteFile(conf, conf2, 0o644)
	if code, out, _ := d.cli("reload"); code != 0 || !strings.Contains(out, "removed vm3") {
		t.Errorf("reload removing vm3: %d %q", code, out)
	}
	g1.send(t, 20)

	// The TCP listener cannot change ports; the daemon without a config
	// file cannot reload.
	d.stop()
	g1.fe.Close()

	// Restart from the config file: vm1 comes back.
	d = startRunning(t, dir, "--config", conf)
	if p := d.ports(t); len(p) != 1 || p["vm1"].State != "running" || p["vm1"].Spec != "name=vm1,socket="+s1+",null" {
		t.Fatalf("after restart: %+v", p)
	}
	g1 = attachGuest(t, s1)
	g1.send(t, 5)
}

// TestPortsWithoutConfig: ports added at run time without a config file are
// "runtime" ports; guest-to-guest ports given at start cannot be removed.
func TestPortsWithoutConfig(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	d := startRunning(t, dir, "--port", "name=a,socket="+a, "--port", "name=b,socket="+b)
	s := filepath.Join(dir, "r.sock")
	code, out, errs := d.cli("port", "add", "r", "--socket", s, "--null")
	if code != 0 || !strings.Contains(out, "not persistent: vhostd runs without --config, so it is gone after a restart") {
		t.Errorf("add: %d %q %q", code, out, errs)
	}
	p := d.ports(t)
	if p["r"].Source != "runtime" || p["r"].Persistent || p["a"].Source != "flags" || p["a"].Backend != "peer" {
		t.Errorf("ports %+v", p)
	}
	if code, _, errs := d.cli("port", "del", "a"); code != 1 || !strings.Contains(errs, "cannot be added, changed or removed at run time") {
		t.Errorf("del a peer port: %d %q", code, errs)
	}
	if code, _, errs := d.cli("reload"); code != 1 || !strings.Contains(errs, "vhostd runs without --config") {
		t.Errorf("reload without config: %d %q", code, errs)
	}
	if code, out, _ := d.cli("port", "del", "r"); code != 0 || out != "port r removed\n" {
		t.Errorf("del r: %d %q", code, out)
	}
}

// TestConfigPortThatFailsIsListed: a config port that cannot start does not
// stop the daemon; it is listed as failed, and a reload tries again.
func TestConfigPortThatFailsIsListed(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ports.conf")
	bad := filepath.Join(dir, "missing", "bad.sock")
	good := filepath.Join(dir, "good.sock")
	os.WriteFile(conf, []byte("name=bad,socket="+bad+",null\nname=good,socket="+good+",null\n"), 0o644)
	d := startRunning(t, dir, "--config", conf)
	p := d.ports(t)
	if p["bad"].State != "failed" || !strings.Contains(p["bad"].Error, bad) || p["good"].State != "running" {
		t.Fatalf("ports %+v", p)
	}
	_, out, _ := d.cli("port", "list")
	if !strings.Contains(out, "bad: port bad: ") {
		t.Errorf("port list does not say why bad failed:\n%s", out)
	}
	os.Mkdir(filepath.Dir(bad), 0o755)
	if code, out, errs := d.cli("reload"); code != 0 || !strings.Contains(out, "changed bad; 1 unchanged") {
		t.Errorf("reload: %d %q %q", code, out, errs)
	}
	if p := d.ports(t); p["bad"].State != "running" {
		t.Errorf("bad after reload: %+v", p["bad"])
	}
	attachGuest(t, bad)
}

// TestHelperDaemon is not a test: TestSystemdActivation runs the test
// binary as a daemon with sockets passed the way systemd passes them.
func TestHelperDaemon(t *testing.T) {
	args := os.Getenv("VHOSTD_TEST_DAEMON_ARGS")
	if args == "" {
		t.Skip("helper process")
	}
	// systemd sets LISTEN_PID to the service's pid after the fork.
	os.Setenv("LISTEN_PID", fmt.Sprint(os.Getpid()))
	os.Exit(run(strings.Split(args, "\x1f"), os.Stdout, os.Stderr))
}

// TestSystemdActivation: vhostd serves the control socket and a port's
// socket passed with LISTEN_FDS/LISTEN_FDNAMES, notifies READY=1 and
// STOPPING=1, and leaves the passed socket files alone when it stops.
func TestSystemdActivation(t *testing.T) {
	dir := t.TempDir()
	listen := func(name string) *os.File {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, name), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		return f
	}
	ctlFile, vmFile := listen("ctl.sock"), listen("vm0.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	conf := filepath.Join(dir, "ports.conf")
	os.WriteFile(conf, []byte("name=vm0,socket="+filepath.Join(dir, "vm0.sock")+",null\n"), 0o644)

	args := []string{"--config", conf, "--control-socket", "/nonexistent/ignored.sock", "--admin-addr", "", "--capture-dir", filepath.Join(dir, "caps")}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDaemon$")
	cmd.Env = append(os.Environ(), "VHOSTD_TEST_DAEMON_ARGS="+strings.Join(args, "\x1f"),
		"LISTEN_FDS=2", "LISTEN_FDNAMES=control:vhostd.socket", "NOTIFY_SOCKET="+filepath.Join(dir, "notify"))
	cmd.ExtraFiles = []*os.File{ctlFile, vmFile}
	var logb syncBuffer
	cmd.Stderr = &logb
	cmd.Stdout = &logb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	readNotify := func(want string) {
		t.Helper()
		buf := make([]byte, 4096)
		notify.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			n, err := notify.Read(buf)
			if err != nil {
				t.Fatalf("no %s notification: %v\n%s", want, err, logb.String())
			}
			if strings.Contains(string(buf[:n]), want) {
				return
			}
		}
	}
	readNotify("READY=1")
	d := &runningDaemon{ctl: filepath.Join(dir, "ctl.sock")}
	p := d.ports(t)
	if p["vm0"].State != "running" || p["vm0"].FD != 4 {
		t.Errorf("vm0 %+v; want running on fd 4", p["vm0"])
	}
	g := attachGuest(t, filepath.Join(dir, "vm0.sock"))
	g.send(t, 5)
	// Removing the port and adding it again serves the same passed socket.
	if code, _, errs := d.cli("port", "del", "vm0"); code != 0 {
		t.Fatalf("del: %s", errs)
	}
	if code, _, errs := d.cli("port", "add", "vm0", "--socket", filepath.Join(dir, "vm0.sock"), "--null"); code != 0 {
		t.Fatalf("add: %s", errs)
	}
	attachGuest(t, filepath.Join(dir, "vm0.sock")).send(t, 5)

	cmd.Process.Signal(os.Interrupt)
	readNotify("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Errorf("vhostd exit: %v\n%s", err, logb.String())
	}
	for _, f := range []string{"ctl.sock", "vm0.sock"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("systemd's socket %s was removed: %v", f, err)
		}
	}
	if _, err := os.Stat("/nonexistent/ignored.sock"); err == nil {
		t.Error("the control socket path was created though systemd passed one")
	}
}
