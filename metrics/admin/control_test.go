package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/admin"
	"github.com/vhostd/vhostd/metrics/internal/testrig"
)

// fakeControl records the port changes it is asked for.
type fakeControl struct {
	mu      sync.Mutex
	added   []portspec.Spec
	removed []string
	reloads int
	addErr  error
}

func (f *fakeControl) Ports() []admin.PortInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []admin.PortInfo
	for _, s := range f.added {
		out = append(out, admin.PortInfo{Name: s.Name, Spec: s.String(), Source: "runtime", State: "running"})
	}
	return out
}

func (f *fakeControl) AddPort(_ context.Context, s portspec.Spec) (admin.PortInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addErr != nil {
		return admin.PortInfo{}, f.addErr
	}
	f.added = append(f.added, s)
	return admin.PortInfo{Name: s.Name, Spec: s.String(), State: "running"}, nil
}

func (f *fakeControl) RemovePort(_ context.Context, name string) (admin.PortChange, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, name)
	return admin.PortChange{Port: admin.PortInfo{Name: name}, Action: "removed"}, nil
}

func (f *fakeControl) Reload(context.Context) (admin.ReloadResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	return admin.ReloadResult{}, nil
}

func (f *fakeControl) changes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.added) + len(f.removed) + f.reloads
}

// rig is one port, an admin server with a fake port control, and its
// capture directory.
type rig struct {
	r   *testrig.Rig
	s   *admin.Server
	ctl *fakeControl
	dir string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := testrig.New(t, "vm0", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	ctl := &fakeControl{}
	dir := filepath.Join(t.TempDir(), "captures")
	s, err := admin.New(admin.Config{Ports: []metrics.Port{r.Port("null")}, Logger: quietLog(), CaptureDir: dir, Control: ctl,
		ReadOnlyHint: "use the control socket /run/test/control.sock"})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{r: r, s: s, ctl: ctl, dir: dir}
}

// serveTCP runs the read-only listener on a free loopback port.
func (g *rig) serveTCP(t *testing.T) string {
	t.Helper()
	ln, err := admin.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.s.ServeReadOnly(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

// serveUnix runs the control socket at path with check.
func (g *rig) serveUnix(t *testing.T, path string, o admin.ControlSocketOptions, check admin.PeerCheck) {
	t.Helper()
	ln, err := admin.ListenControl(path, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.s.ServeControl(ctx, ln, check) }()
	t.Cleanup(func() { cancel(); <-done })
}

// unixCall sends one request over a unix socket.
func unixCall(t *testing.T, sock, method, path, body string) (int, string) {
	t.Helper()
	cl := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	req, err := http.NewRequest(method, "http://vhostd"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadOnlyListenerChangesNothing: the TCP listener serves GET /metrics
// and GET /status, and nothing that changes state or reveals more.
func TestReadOnlyListenerChangesNothing(t *testing.T) {
	g := newRig(t)
	url := g.serveTCP(t)
	if code, body := call(t, "GET", url+"/metrics", ""); code != 200 || !strings.Contains(body, `vhostd_gso_policy{policy="auto",port="vm0"} 1`) {
		t.Errorf("GET /metrics: %d", code)
	}
	if code, body := call(t, "GET", url+"/status", ""); code != 200 || !strings.Contains(body, `"name": "vm0"`) {
		t.Errorf("GET /status: %d %s", code, body)
	}
	if code, body := call(t, "GET", url+"/", ""); code != 200 || !strings.Contains(body, "read-only") {
		t.Errorf("GET /: %d %s", code, body)
	}
	refused := []struct {
		method, path, body string
		code               int
	}{
		{"PUT", "/ports/vm0/policy?policy=software", "", 403},
		{"PUT", "/ports/vm0/policy", "software", 403},
		{"GET", "/ports/vm0/policy", "", 403},
		{"PUT", "/ports/vm0/capture?dir=tx&count=1&timeout=1s", "", 403},
		{"GET", "/ports/vm0/capture", "", 403},
		{"DELETE", "/ports/vm0/capture", "", 403},
		{"GET", "/debug/pprof/", "", 403},
		{"GET", "/debug/pprof/cmdline", "", 403},
		{"GET", "/ports", "", 403},
		{"PUT", "/ports/vm1", `{"socket": "/tmp/x.sock", "null": true}`, 403},
		{"DELETE", "/ports/vm0", "", 403},
		{"POST", "/reload", "", 403},
		{"POST", "/metrics", "", 405},
		{"PUT", "/status", "", 405},
		{"DELETE", "/status", "", 405},
	}
	for _, c := range refused {
		code, body := call(t, c.method, url+c.path, c.body)
		if code != c.code || !strings.Contains(body, "use the control socket /run/test/control.sock") {
			t.Errorf("%s %s: %d %s; want %d pointing to the control socket", c.method, c.path, code, body, c.code)
		}
	}
	if p := g.r.Dev.Policy(); p != gso.PolicyAuto {
		t.Errorf("policy changed to %v through TCP", p)
	}
	if n := g.ctl.changes(); n != 0 {
		t.Errorf("%d port changes through TCP", n)
	}
	if _, err := os.Stat(g.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the capture directory was created through TCP: %v", err)
	}
	// The client reads status and the policy over TCP, and gets the
	// server's advice for the rest.
	cl := admin.NewClient(strings.TrimPrefix(url, "http://"))
	if res, err := cl.Policy(context.Background(), "vm0"); err != nil || res.Policy != "auto" {
		t.Errorf("Policy over TCP: %+v %v", res, err)
	}
	if _, err := cl.SetPolicy(context.Background(), "vm0", "defer"); err == nil || !strings.Contains(err.Error(), "use the control socket") {
		t.Errorf("SetPolicy over TCP: %v", err)
	}
}

// TestControlSocketChecksPeer: the control socket asks the peer check with
// the caller's real credentials and refuses with its message.
func TestControlSocketChecksPeer(t *testing.T) {
	g := newRig(t)
	sock := filepath.Join(t.TempDir(), "run", "control.sock") // the directory is created
	var mu sync.Mutex
	var seen []admin.PeerCred
	allow := false
	check := func(c admin.PeerCred) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, c)
		if !allow {
			return fmt.Errorf("uid %d refused by the test", c.UID)
		}
		return nil
	}
	g.serveUnix(t, sock, admin.ControlSocketOptions{}, check)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %v %v; want a 0600 socket", fi.Mode(), err)
	}

	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/ports/vm0/policy?policy=software", ""},
		{"GET", "/status", ""},
		{"PUT", "/ports/vm1", `{"socket": "/tmp/x.sock", "null": true}`},
		{"GET", "/debug/pprof/", ""},
	} {
		code, body := unixCall(t, sock, c.method, c.path, c.body)
		if code != 403 || !strings.Contains(body, fmt.Sprintf("uid %d refused by the test", os.Getuid())) {
			t.Errorf("refused peer: %s %s: %d %s", c.method, c.path, code, body)
		}
	}
	if g.r.Dev.Policy() != gso.PolicyAuto || g.ctl.changes() != 0 {
		t.Errorf("a refused peer changed something")
	}
	mu.Lock()
	if len(seen) == 0 || seen[0].UID != uint32(os.Getuid()) || seen[0].PID != int32(os.Getpid()) || seen[0].GID != uint32(os.Getgid()) {
		t.Errorf("credentials seen: %+v; want uid %d gid %d pid %d", seen, os.Getuid(), os.Getgid(), os.Getpid())
	}
	allow = true
	mu.Unlock()

	if code, body := unixCall(t, sock, "PUT", "/ports/vm0/policy?policy=software", ""); code != 200 {
		t.Errorf("allowed peer: %d %s", code, body)
	}
	if g.r.Dev.Policy() != gso.PolicySoftware {
		t.Errorf("policy not switched through the control socket")
	}
	cl := admin.NewControlClient(sock)
	info, err := cl.AddPort(context.Background(), portspec.Spec{Name: "vm1", Socket: "/run/vm1.sock", Tap: "vtap1", Queues: 2})
	if err != nil || info.Name != "vm1" {
		t.Fatalf("AddPort: %+v %v", info, err)
	}
	if _, err := cl.RemovePort(context.Background(), "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.ctl.mu.Lock()
	if len(g.ctl.added) != 1 || g.ctl.added[0].String() != "name=vm1,socket=/run/vm1.sock,queues=2,tap=vtap1" || len(g.ctl.removed) != 1 || g.ctl.reloads != 1 {
		t.Errorf("control saw added %+v removed %v reloads %d", g.ctl.added, g.ctl.removed, g.ctl.reloads)
	}
	g.ctl.mu.Unlock()

	// A second daemon on the same socket is refused with advice; a stale
	// socket file is replaced.
	if _, err := admin.ListenControl(sock, admin.ControlSocketOptions{}); err == nil || !strings.Contains(err.Error(), "another vhostd runs with it") {
		t.Errorf("second listener: %v", err)
	}
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l, _ := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	l.SetUnlinkOnClose(false)
	l.Close()
	if ln, err := admin.ListenControl(stale, admin.ControlSocketOptions{}); err != nil {
		t.Errorf("stale socket: %v", err)
	} else {
		ln.Close()
	}
	if _, err := admin.ListenControl("rel.sock", admin.ControlSocketOptions{}); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative path: %v", err)
	}
}

func TestAllowPeers(t *testing.T) {
	self := uint32(os.Geteuid())
	other := uint32(54321)
	if other == self {
		other++
	}
	for _, c := range []struct {
		name     string
		gid      int
		hasGroup bool
		cred     admin.PeerCred
		ok       bool
	}{
		{"root", 0, false, admin.PeerCred{UID: 0, GID: 0}, true},
		{"self", 0, false, admin.PeerCred{UID: self, GID: 1}, true},
		{"other", 0, false, admin.PeerCred{UID: other, GID: other}, false},
		{"other in the group's gid", 0, false, admin.PeerCred{UID: other, GID: 0}, false}, // no --control-group: gid 0 is not enough
		{"group primary", 4242, true, admin.PeerCred{UID: other, GID: 4242}, true},
		{"group supplementary", 4242, true, admin.PeerCred{UID: other, GID: 100, Groups: []uint32{27, 4242}}, true},
		{"not in group", 4242, true, admin.PeerCred{UID: other, GID: 100, Groups: []uint32{27}}, false},
	} {
		err := admin.AllowPeers(c.gid, c.hasGroup)(c.cred)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "may not use the vhostd control socket") {
			t.Errorf("%s: message %q", c.name, err)
		}
	}
}

// TestHelperControlClient is not a test: TestControlSocketRefusesOtherUser
// runs the test binary as another user to make one request.
func TestHelperControlClient(t *testing.T) {
	sock := os.Getenv("VHOSTD_TEST_CONTROL_SOCKET")
	if sock == "" {
		t.Skip("helper process")
	}
	_, err := admin.NewControlClient(sock).SetPolicy(context.Background(), "vm0", "software")
	fmt.Printf("RESULT uid=%d err=%v\n", os.Getuid(), err)
}

// TestControlSocketRefusesOtherUser runs a client as uid 65534 (nobody)
// against the control socket: at mode 0600 the kernel refuses the connect;
// with the socket opened up to everyone (0666, a misconfiguration) the
// SO_PEERCRED check still refuses it.
func TestControlSocketRefusesOtherUser(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root to run a client as another user")
		}
		t.Skip("needs root to run a client as another user (runs in CI)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A directory and a copy of the test binary that nobody can reach.
	dir, err := os.MkdirTemp("", "vhostd-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "admin.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	g := newRig(t)
	sock := filepath.Join(dir, "control.sock")
	g.serveUnix(t, sock, admin.ControlSocketOptions{}, admin.AllowPeers(0, false))

	asNobody := func() string {
		cmd := exec.Command(bin, "-test.run=^TestHelperControlClient$", "-test.v")
		cmd.Env = append(os.Environ(), "VHOSTD_TEST_CONTROL_SOCKET="+sock, "GOCOVERDIR=")
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper as nobody: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "RESULT ") {
				return l
			}
		}
		t.Fatalf("helper printed no result:\n%s", out)
		return ""
	}
	out := asNobody()
	if !strings.Contains(out, "uid=65534") || !strings.Contains(out, "permission denied on the control socket") {
		t.Errorf("nobody at mode 0600: %s", out)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	out = asNobody()
	if !strings.Contains(out, "uid 65534") || !strings.Contains(out, "may not use the vhostd control socket") {
		t.Errorf("nobody at mode 0666: %s", out)
	}
	if g.r.Dev.Policy() != gso.PolicyAuto {
		t.Errorf("another user switched the policy")
	}
	// Root still gets in.
	if code, body := unixCall(t, sock, "PUT", "/ports/vm0/policy?policy=defer", ""); code != 200 {
		t.Errorf("root: %d %s", code, body)
	}
}

func TestPortRoutes(t *testing.T) {
	g := newRig(t)
	_, url := serveFull(t, g)
	cases := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", "/ports/vm1", `{"socket": "/run/vm1.sock", "tap": "vtap1"}`, 201, `"name": "vm1"`},
		{"PUT", "/ports/vm2", `{"name": "vm2", "socket": "/run/vm2.sock", "null": true}`, 201, `"spec": "name=vm2,socket=/run/vm2.sock,null"`},
		{"PUT", "/ports/vm3", `{"name": "other", "socket": "/run/vm3.sock", "null": true}`, 400, `the body names port \"other\" but the path names \"vm3\"`},
		{"PUT", "/ports/vm3", `{"socket": "vm3.sock", "null": true}`, 400, "is relative: give an absolute path"},
		{"PUT", "/ports/vm3", `{"socket": "/s", "tap": "t", "null": true}`, 400, "more than one backend"},
		{"PUT", "/ports/vm3", `{"socket": "/s", "tpa": "t"}`, 400, `unknown field \"tpa\"`},
		{"PUT", "/ports/vm3", ``, 400, "no port spec"},
		{"PUT", "/ports/a%20b", `{"socket": "/s", "null": true}`, 400, "name=a b: use 1..64"},
		{"DELETE", "/ports/vm1", "", 200, `"action": "removed"`},
		{"GET", "/ports", "", 200, `"name": "vm1"`},
	}
	for _, c := range cases {
		code, body := call(t, c.method, url+c.path, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s %s: %d %s; want %d with %q", c.method, c.path, c.body, code, body, c.code, c.want)
		}
	}
	g.ctl.mu.Lock()
	g.ctl.addErr = admin.Errorf(http.StatusConflict, "port vm1 exists")
	g.ctl.mu.Unlock()
	if code, body := call(t, "PUT", url+"/ports/vm1", `{"socket": "/run/vm1.sock", "null": true}`); code != 409 || !strings.Contains(body, "port vm1 exists") {
		t.Errorf("conflict: %d %s", code, body)
	}
	// Without a port control the routes say so.
	s, _ := admin.New(admin.Config{Logger: quietLog()})
	w := httptestRecorder(s, "GET", "/ports")
	if w.Code != 501 {
		t.Errorf("no control: %d", w.Code)
	}
}

// TestPortsComeAndGo: AddPort and RemovePort change /metrics and /status,
// and removing a port ends its capture.
func TestPortsComeAndGo(t *testing.T) {
	g := newRig(t)
	_, url := serveFull(t, g)
	r2 := testrig.New(t, "vm1", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	if err := g.s.AddPort(r2.Port("null")); err != nil {
		t.Fatal(err)
	}
	if err := g.s.AddPort(r2.Port("null")); err == nil {
		t.Error("a second port vm1 was accepted")
	}
	_, body := call(t, "GET", url+"/metrics", "")
	if !strings.Contains(body, `vhostd_gso_policy{policy="auto",port="vm1"} 1`) {
		t.Error("vm1 not in /metrics after AddPort")
	}
	var st metrics.Status
	_, body = call(t, "GET", url+"/status", "")
	json.Unmarshal([]byte(body), &st)
	if len(st.Ports) != 2 || st.Ports[1].Name != "vm1" {
		t.Errorf("status after AddPort: %d ports", len(st.Ports))
	}

	// A capture waiting for traffic on vm1 ends when vm1 goes.
	type out struct {
		code int
		body string
	}
	resc := make(chan out, 1)
	go func() {
		code, body := call(t, "PUT", url+"/ports/vm1/capture?dir=tx&count=10&timeout=30s&file=vm1.pcap", "")
		resc <- out{code, body}
	}()
	waitFor(t, func() bool {
		code, body := call(t, "GET", url+"/ports/vm1/capture", "")
		return code == 200 && strings.Contains(body, `"state": "running"`)
	})
	if !g.s.RemovePort("vm1") || g.s.RemovePort("vm1") {
		t.Error("RemovePort results")
	}
	select {
	case o := <-resc:
		if o.code != 200 || !strings.Contains(o.body, `"ended": "cancelled"`) {
			t.Errorf("capture on a removed port: %d %s", o.code, o.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the capture did not end with its port")
	}
	_, body = call(t, "GET", url+"/metrics", "")
	if strings.Contains(body, `port="vm1"`) {
		t.Error("vm1 still in /metrics after RemovePort")
	}
	if code, _ := call(t, "GET", url+"/status?port=vm1", ""); code != 404 {
		t.Errorf("status of a removed port: %d", code)
	}
	// The name can come back.
	r3 := testrig.New(t, "vm1", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	if err := g.s.AddPort(r3.Port("null")); err != nil {
		t.Errorf("adding vm1 again: %v", err)
	}
}

// serveFull serves the whole API (as the control socket does, without the
// peer check) on an httptest server.
func serveFull(t *testing.T, g *rig) (*httptest.Server, string) {
	t.Helper()
	ts := httptest.NewServer(g.s.Handler())
	t.Cleanup(ts.Close)
	return ts, ts.URL
}

func httptestRecorder(s *admin.Server, method, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w
}
