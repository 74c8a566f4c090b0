package main

// The plugin driven the way a container runtime drives it: through the CNI
// library's runtime side (libcni, as containerd and CRI-O use it), which
// execs the built vhostd-cni binary with the CNI environment and parses its
// result, against a real vhostd started here with its control socket in a
// temporary directory. Null-backend ports need no root; the tap test needs
// root and /dev/net/tun (skipped outside CI without them).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vhostd/vhostd/internal/daemontest"
	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/internal/vhostdcni"
	"github.com/vhostd/vhostd/metrics/admin"
	"github.com/vhostd/vhostd/vhostuser/frontend"
)

func TestMain(m *testing.M) {
	code := m.Run()
	daemontest.Cleanup()
	os.Exit(code)
}

const (
	cid1   = "4f2a58363efa0b9661a78caac3d835511385e7c25cffe37e1edb0123456789ab" // 64 hex, as containerd makes them
	cid2   = "9c2dc4306398aace5c0aa8037e332b24bd00df68000000000000000000000000"
	podUID = "174eecc3-58fa-42d1-8501-7f9004a28b76"
)

type env struct {
	t         *testing.T
	dir       string
	socketDir string
	cni       *libcni.CNIConfig
	d         *daemontest.Daemon
	ctl       *admin.Client
}

// setup builds vhostd and vhostd-cni and starts vhostd with its control
// socket in a temporary directory and no port.
func setup(t *testing.T, daemonArgs ...string) *env {
	t.Helper()
	vhostd := daemontest.Build(t, "github.com/vhostd/vhostd/cmd/vhostd")
	plugin := daemontest.Build(t, "github.com/vhostd/vhostd/cmd/vhostd-cni")
	dir := t.TempDir()
	e := &env{t: t, dir: dir, socketDir: filepath.Join(dir, "pods")}
	e.d = daemontest.Start(t, vhostd, dir, daemonArgs...)
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(plugin)}, filepath.Join(dir, "cni-cache"), nil)
	e.ctl = admin.NewControlClient(e.d.ControlSocket)
	return e
}

// conf is a network configuration list (the .conflist a runtime loads
// from /etc/cni/net.d) with one vhostd-cni plugin for the daemon under
// test; extra keys are added to the plugin's object or replace its
// defaults (a nil value deletes one); cniVersion and name are the list's.
func (e *env) conf(extra map[string]any) *libcni.NetworkConfigList {
	e.t.Helper()
	list := map[string]any{"cniVersion": "1.0.0", "name": "vhostd-net"}
	plugin := map[string]any{
		"type":          "vhostd-cni",
		"controlSocket": e.d.ControlSocket,
		"socketDir":     e.socketDir,
		"backend":       map[string]any{"type": "null"},
	}
	for k, v := range extra {
		m := plugin
		if k == "cniVersion" || k == "name" {
			m = list
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	list["plugins"] = []any{plugin}
	b, err := json.Marshal(list)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		e.t.Fatalf("NetworkConfFromBytes(%s): %v", b, err)
	}
	return c
}

// rt is the runtime side of one attachment, as containerd fills it in
// for a Kubernetes pod.
func (e *env) rt(containerID, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: containerID,
		// A path that is no network namespace: vhost-user ports have no
		// kernel interface in the pod, and the plugin never enters it.
		NetNS:  filepath.Join(e.dir, "netns-"+containerID[:8]),
		IfName: ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "dpdk-app"},
			{"K8S_POD_INFRA_CONTAINER_ID", containerID}, {"K8S_POD_UID", podUID},
		},
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// cniErr asserts err is a CNI error with code and a message containing
// every want.
func cniErr(t *testing.T, what string, err error, code uint, want ...string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("%s: got %v (%T), want a CNI error with code %d", what, err, err, code)
	}
	if te.Code != code {
		t.Errorf("%s: code %d (%s), want %d", what, te.Code, te.Msg, code)
	}
	for _, w := range want {
		if !strings.Contains(te.Msg, w) {
			t.Errorf("%s: message %q does not say %q", what, te.Msg, w)
		}
	}
}

func (e *env) ports() []admin.PortInfo {
	e.t.Helper()
	ps, err := e.ctl.Ports(ctx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	return ps
}

func isSocket(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&fs.ModeSocket != 0
}

// TestAddCheckDel: ADD creates the port and its socket in the pod's
// directory and returns a CNI 1.0 result with the socket path; a DPDK-style
// front-end completes the vhost-user handshake on it; CHECK passes; a
// second ADD fails as the spec says; DEL removes the port, the socket and
// the directory; DEL again, and DEL of a container never added, succeed;
// CHECK after DEL fails.
func TestAddCheckDel(t *testing.T) {
	e := setup(t)
	nc := e.conf(nil)
	rt := e.rt(cid1, "net1")
	res, err := e.cni.AddNetworkList(ctx(t), nc, rt)
	if err != nil {
		t.Fatalf("ADD: %v\n%s", err, e.d.Log())
	}
	if res.Version() != "1.0.0" {
		t.Errorf("result cniVersion %q, want the config's 1.0.0", res.Version())
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	wantSock := filepath.Join(e.socketDir, podUID, "net1")
	if len(r.Interfaces) != 1 || r.Interfaces[0].Name != "net1" || r.Interfaces[0].SocketPath != wantSock || r.Interfaces[0].Sandbox != rt.NetNS {
		b, _ := json.Marshal(r)
		t.Fatalf("result %s: want one interface net1 with socketPath %s and sandbox %s", b, wantSock, rt.NetNS)
	}
	if !isSocket(wantSock) {
		t.Fatalf("no socket at %s", wantSock)
	}
	ps := e.ports()
	name := vhostdcni.PortName(cid1, "net1")
	if len(ps) != 1 || ps[0].Name != name || ps[0].Socket != wantSock || ps[0].Backend != portspec.KindNull || ps[0].State != "running" {
		t.Fatalf("vhostd ports %+v, want one running null port %s on %s", ps, name, wantSock)
	}
	if err := portspec.CheckName(name); err != nil {
		t.Errorf("port name %s: %v", name, err)
	}

	// A DPDK application (virtio-user) or QEMU connects to the socket.
	fe, err := frontend.Dial(wantSock)
	if err != nil {
		t.Fatal(err)
	}
	if err := fe.Handshake(frontend.Options{Order: frontend.OrderVirtioUser}); err != nil {
		t.Fatalf("vhost-user handshake on the pod's socket: %v", err)
	}
	waitConnected(t, e, name, true)

	if err := e.cni.CheckNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}

	// ADD of the same (container, interface) again: an error, the port
	// untouched.
	_, err = e.cni.AddNetworkList(ctx(t), nc, rt)
	cniErr(t, "second ADD", err, vhostdcni.ErrPortExists, "already exists", "net1", cid1)
	waitConnected(t, e, name, true)
	if err := e.cni.CheckNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("CHECK after the refused ADD: %v", err)
	}

	fe.Close()
	if err := e.cni.DelNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if ps := e.ports(); len(ps) != 0 {
		t.Errorf("ports after DEL: %+v", ps)
	}
	if _, err := os.Lstat(wantSock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket %s after DEL: %v", wantSock, err)
	}
	if _, err := os.Lstat(filepath.Dir(wantSock)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pod directory %s after DEL: %v (want it removed)", filepath.Dir(wantSock), err)
	}
	if err := e.cni.DelNetworkList(ctx(t), nc, rt); err != nil {
		t.Errorf("second DEL: %v (must succeed)", err)
	}
	if err := e.cni.DelNetworkList(ctx(t), nc, e.rt(cid2, "net7")); err != nil {
		t.Errorf("DEL of a container never added: %v (must succeed)", err)
	}

	// ADD again after DEL works; a port removed behind the runtime's
	// back (vhostd port del by hand) fails CHECK, and DEL still succeeds.
	if _, err := e.cni.AddNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("ADD after DEL: %v", err)
	}
	if _, err := e.ctl.RemovePort(ctx(t), name); err != nil {
		t.Fatal(err)
	}
	err = e.cni.CheckNetworkList(ctx(t), nc, rt)
	cniErr(t, "CHECK of a removed port", err, vhostdcni.ErrCheckFailed, "no port "+name)
	if err := e.cni.DelNetworkList(ctx(t), nc, rt); err != nil {
		t.Errorf("DEL of a port removed by hand: %v", err)
	}
	if _, err := os.Lstat(filepath.Dir(wantSock)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pod directory %s after DEL: %v (want it removed)", filepath.Dir(wantSock), err)
	}
}

func waitConnected(t *testing.T, e *env, name string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, p := range e.ports() {
			if p.Name == name && p.Connected == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %s: connected never became %v: %+v\n%s", name, want, e.ports(), e.d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTwoInterfacesOnePod: two interfaces of one pod share its directory;
// the directory goes with the last one.
func TestTwoInterfacesOnePod(t *testing.T) {
	e := setup(t)
	nc := e.conf(map[string]any{"queues": 2})
	r1, r2 := e.rt(cid1, "net1"), e.rt(cid1, "net2")
	for _, rt := range []*libcni.RuntimeConf{r1, r2} {
		if _, err := e.cni.AddNetworkList(ctx(t), nc, rt); err != nil {
			t.Fatalf("ADD %s: %v", rt.IfName, err)
		}
	}
	dir := filepath.Join(e.socketDir, podUID)
	if !isSocket(filepath.Join(dir, "net1")) || !isSocket(filepath.Join(dir, "net2")) {
		t.Fatalf("want sockets net1 and net2 in %s", dir)
	}
	for _, p := range e.ports() {
		if p.Queues != 2 {
			t.Errorf("port %s has %d queue pairs, want 2", p.Name, p.Queues)
		}
	}
	if err := e.cni.DelNetworkList(ctx(t), nc, r1); err != nil {
		t.Fatal(err)
	}
	if !isSocket(filepath.Join(dir, "net2")) {
		t.Fatalf("DEL net1 took net2's socket")
	}
	if err := e.cni.DelNetworkList(ctx(t), nc, r2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pod directory after the last DEL: %v", err)
	}
}

// TestOlderAndNewerSpecVersions: 0.4.0 (no socketPath in its result
// type) and 1.1.0 configurations work through ADD, CHECK and DEL.
func TestOlderAndNewerSpecVersions(t *testing.T) {
	e := setup(t)
	for i, v := range []string{"0.4.0", "1.1.0"} {
		nc := e.conf(map[string]any{"cniVersion": v})
		rt := e.rt(cid1, fmt.Sprintf("net%d", i+1))
		res, err := e.cni.AddNetworkList(ctx(t), nc, rt)
		if err != nil {
			t.Fatalf("%s ADD: %v", v, err)
		}
		if res.Version() != v {
			t.Errorf("%s: result version %s", v, res.Version())
		}
		if err := e.cni.CheckNetworkList(ctx(t), nc, rt); err != nil {
			t.Errorf("%s CHECK: %v", v, err)
		}
		if err := e.cni.DelNetworkList(ctx(t), nc, rt); err != nil {
			t.Errorf("%s DEL: %v", v, err)
		}
	}
	if ps := e.ports(); len(ps) != 0 {
		t.Errorf("ports left: %+v", ps)
	}
}

// TestVhostdNotRunning: no control socket, or a stale one nobody answers
// on: ADD, CHECK and DEL fail with code 11 (try again later) and say
// vhostd is not running and where the plugin looked; STATUS says 50.
func TestVhostdNotRunning(t *testing.T) {
	e := setup(t)
	missing := filepath.Join(e.dir, "no-such-dir", "control.sock")
	stale := filepath.Join(e.dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	for _, sock := range []string{missing, stale} {
		nc := e.conf(map[string]any{"controlSocket": sock})
		rt := e.rt(cid1, "net1")
		_, err := e.cni.AddNetworkList(ctx(t), nc, rt)
		cniErr(t, "ADD with "+sock, err, types.ErrTryAgainLater, "vhostd is not running", sock)
		if _, err := os.Lstat(filepath.Join(e.socketDir, podUID)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a failed ADD left the pod directory: %v", err)
		}
		err = e.cni.DelNetworkList(ctx(t), nc, rt)
		cniErr(t, "DEL with "+sock, err, types.ErrTryAgainLater, "vhostd is not running", sock)

		list, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "vhostd-net", "plugins": [{"type": "vhostd-cni", "controlSocket": %q, "backend": {"type": "null"}}]}`, sock)))
		if err != nil {
			t.Fatal(err)
		}
		err = e.cni.GetStatusNetworkList(ctx(t), list)
		cniErr(t, "STATUS with "+sock, err, types.ErrPluginNotAvailable, sock)
	}
	list, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "vhostd-net", "plugins": [{"type": "vhostd-cni", "controlSocket": %q, "backend": {"type": "null"}}]}`, e.d.ControlSocket)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cni.GetStatusNetworkList(ctx(t), list); err != nil {
		t.Errorf("STATUS with vhostd running: %v", err)
	}
}

// TestBadConfig: configurations the plugin refuses, with code 7 and what
// to write instead; nothing reaches vhostd.
func TestBadConfig(t *testing.T) {
	e := setup(t)
	cases := []struct {
		extra map[string]any
		want  []string
	}{
		{map[string]any{"controlSocekt": "/x"}, []string{`unknown key "controlSocekt"`, "controlSocket"}},
		{map[string]any{"backend": map[string]any{"type": "tap", "name": "x"}}, []string{"backend", `unknown field "name"`}},
		{map[string]any{"backend": nil}, []string{"backend is missing"}},
		{map[string]any{"backend": map[string]any{"type": "macvtap"}}, []string{"lower"}},
		{map[string]any{"backend": map[string]any{"type": "vdpa"}}, []string{"tap, macvtap or null"}},
		{map[string]any{"mode": "listen"}, []string{`mode "listen"`}},
		{map[string]any{"queues": 65}, []string{"queues 65", "1..64"}},
		{map[string]any{"socketDir": "pods"}, []string{"absolute"}},
		{map[string]any{"ipam": map[string]any{"type": "host-local"}}, []string{"no addresses"}},
		{map[string]any{"socketDir": "/" + strings.Repeat("d", 90)}, []string{"socket path", "shorter socketDir"}},
	}
	for _, c := range cases {
		_, err := e.cni.AddNetworkList(ctx(t), e.conf(c.extra), e.rt(cid1, "net1"))
		cniErr(t, fmt.Sprint(c.extra), err, types.ErrInvalidNetworkConfig, c.want...)
	}
	if ps := e.ports(); len(ps) != 0 {
		t.Errorf("ports after refused configurations: %+v", ps)
	}
}

// TestClientModeDeviceInfo: mode client (QEMU listens, as KubeVirt runs
// it): vhostd dials the socket path and waits for it; the device-info file
// the runtime asked for says the container side is the server.
func TestClientModeDeviceInfo(t *testing.T) {
	e := setup(t)
	info := filepath.Join(e.dir, "devinfo", "default-vhostd-net-net1-device-info.json")
	nc := e.conf(map[string]any{"mode": "client", "capabilities": map[string]any{"CNIDeviceInfoFile": true}})
	rt := e.rt(cid1, "net1")
	rt.CapabilityArgs = map[string]any{"CNIDeviceInfoFile": info}
	if _, err := e.cni.AddNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("ADD: %v\n%s", err, e.d.Log())
	}
	sock := filepath.Join(e.socketDir, podUID, "net1")
	b, err := os.ReadFile(info)
	if err != nil {
		t.Fatal(err)
	}
	var di vhostdcni.DeviceInfo
	if err := json.Unmarshal(b, &di); err != nil || di.Type != "vhost-user" || di.Version != "1.1.0" || di.VhostUser == nil ||
		di.VhostUser.Mode != "server" || di.VhostUser.Path != sock {
		t.Fatalf("device info %s (%v): want vhost-user, mode server, path %s", b, err, sock)
	}
	ps := e.ports()
	if len(ps) != 1 || !ps[0].Client || ps[0].Socket != sock {
		t.Fatalf("ports %+v: want one client port dialling %s", ps, sock)
	}
	if err := e.cni.CheckNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := e.cni.DelNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatal(err)
	}
	if ps := e.ports(); len(ps) != 0 {
		t.Errorf("ports after DEL: %+v", ps)
	}
}

// TestPortsSurviveRestart: as the DaemonSet runs it, vhostd keeps the
// ports the plugin adds in its --config file, so a restarted vhostd (a new
// pod of the DaemonSet) serves them again and CHECK passes; DEL takes the
// port out of the file.
func TestPortsSurviveRestart(t *testing.T) {
	vhostd := daemontest.Build(t, "github.com/vhostd/vhostd/cmd/vhostd")
	dir := t.TempDir()
	ports := filepath.Join(dir, "ports.conf")
	if err := os.WriteFile(ports, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e := setup(t, "--config", ports)
	nc := e.conf(nil)
	rt := e.rt(cid1, "net1")
	if _, err := e.cni.AddNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	name := vhostdcni.PortName(cid1, "net1")
	if b, _ := os.ReadFile(ports); !strings.Contains(string(b), "name="+name+",") {
		t.Fatalf("ports file after ADD:\n%s", b)
	}
	e.d.Stop(t)
	// The new vhostd keeps the control socket path (the plugin's
	// controlSocket) and reads the same file.
	e.d = daemontest.Start(t, vhostd, e.dir, "--config", ports)
	ps := e.ports()
	if len(ps) != 1 || ps[0].Name != name || ps[0].State != "running" {
		t.Fatalf("ports after the restart: %+v\n%s", ps, e.d.Log())
	}
	if err := e.cni.CheckNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("CHECK after the restart: %v", err)
	}
	if err := e.cni.DelNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(ports); strings.Contains(string(b), name) {
		t.Errorf("ports file after DEL still has the port:\n%s", b)
	}
}

// TestTapBackend: a tap named after the container, on the host, listed in
// the result as a host interface; gone after DEL. Needs root and
// /dev/net/tun.
func TestTapBackend(t *testing.T) {
	if os.Geteuid() != 0 {
		needRoot(t, "creating a tap needs root (CAP_NET_ADMIN)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		needRoot(t, "no /dev/net/tun")
	}
	e := setup(t)
	nc := e.conf(map[string]any{"backend": map[string]any{"type": "tap"}})
	rt := e.rt(cid2, "net1")
	tap := vhostdcni.BackendIfName(vhostdcni.BackendTap, cid2, "net1")
	t.Cleanup(func() {
		// The DEL below removes it; this is only for a failed test.
		_ = e.cni.DelNetworkList(context.Background(), nc, rt)
	})
	res, err := e.cni.AddNetworkList(ctx(t), nc, rt)
	if err != nil {
		t.Fatalf("ADD: %v\n%s", err, e.d.Log())
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Interfaces) != 2 || r.Interfaces[0].Name != tap || r.Interfaces[0].Sandbox != "" || r.Interfaces[0].Mac == "" ||
		r.Interfaces[1].Name != "net1" || r.Interfaces[1].SocketPath == "" {
		b, _ := json.Marshal(r)
		t.Fatalf("result %s: want host interface %s (with its MAC) and net1 with its socket", b, tap)
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", tap)); err != nil {
		t.Fatalf("tap %s: %v", tap, err)
	}
	if err := e.cni.CheckNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := e.cni.DelNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", tap)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("tap %s after DEL: %v (vhostd created it, so the port's removal deletes it)", tap, err)
	}
}

// TestMacvtapBackend: a macvtap named after the container on a lower
// device (a veth made here), with the MAC the runtime passed through the
// "mac" capability, which the result gives the pod interface too (the guest
// must use it). Needs root.
func TestMacvtapBackend(t *testing.T) {
	if os.Geteuid() != 0 {
		needRoot(t, "creating a macvtap needs root (CAP_NET_ADMIN)")
	}
	lower := fmt.Sprintf("vdcl%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "link", "add", lower, "type", "veth", "peer", "name", lower+"p").CombinedOutput(); err != nil {
		t.Skipf("cannot make a veth for the macvtap's lower device: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", lower).Run() })
	if out, err := exec.Command("ip", "link", "set", lower, "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s up: %v %s", lower, err, out)
	}
	e := setup(t)
	nc := e.conf(map[string]any{"backend": map[string]any{"type": "macvtap", "lower": lower, "mode": "bridge"},
		"capabilities": map[string]any{"mac": true}})
	rt := e.rt(cid2, "net1")
	const mac = "52:54:00:aa:bb:cc"
	rt.CapabilityArgs = map[string]any{"mac": mac}
	mv := vhostdcni.BackendIfName(vhostdcni.BackendMacvtap, cid2, "net1")
	t.Cleanup(func() { _ = e.cni.DelNetworkList(context.Background(), nc, rt) })
	res, err := e.cni.AddNetworkList(ctx(t), nc, rt)
	if err != nil {
		t.Fatalf("ADD: %v\n%s", err, e.d.Log())
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Interfaces) != 2 || r.Interfaces[0].Name != mv || r.Interfaces[0].Mac != mac || r.Interfaces[1].Mac != mac {
		b, _ := json.Marshal(r)
		t.Fatalf("result %s: want macvtap %s and net1, both with MAC %s", b, mv, mac)
	}
	if err := e.cni.CheckNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := e.cni.DelNetworkList(ctx(t), nc, rt); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", mv)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("macvtap %s after DEL: %v", mv, err)
	}
}

func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s: CI runs as root with /dev/net/tun, this test must run there", why)
	}
	t.Skipf("%s: the tap backend is tested in CI (root)", why)
}
