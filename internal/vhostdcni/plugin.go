package vhostdcni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vhostd/vhostd/internal/portspec"
)

// Plugin-specific error codes (the spec keeps 0-99 for its own).
const (
	// ErrPortExists: ADD of an interface that already exists (the spec
	// says ADD must then fail), or vhostd already has the socket.
	ErrPortExists uint = 100
	// ErrPortRefused: vhostd refused to create the port (the message is
	// vhostd's: e.g. the tap could not be created).
	ErrPortRefused uint = 101
	// ErrCheckFailed: CHECK found the port missing or unhealthy.
	ErrCheckFailed uint = 102
)

// Versions are the CNI spec versions the plugin supports. CHECK needs
// 0.4.0 or later; GC (1.1.0) is a no-op (see GC); STATUS says whether
// vhostd answers.
var Versions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Timeout bounds one command's requests to vhostd.
var Timeout = 30 * time.Second

// Funcs are the plugin's commands for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}
}

// cniError turns a failure talking to vhostd into a CNI error.
func cniError(err error, what string) error {
	var ue *unreachableError
	var ae *apiError
	var te *types.Error
	switch {
	case errors.As(err, &te):
		return te
	case errors.As(err, &ue):
		return types.NewError(types.ErrTryAgainLater, "vhostd-cni: "+what+": "+ue.msg, "")
	case errors.As(err, &ae) && ae.conflict():
		return types.NewError(ErrPortExists, "vhostd-cni: "+what+": vhostd: "+ae.Msg, "")
	case errors.As(err, &ae):
		return types.NewError(ErrPortRefused, "vhostd-cni: "+what+": vhostd refused: "+ae.Msg, "")
	}
	return types.NewError(types.ErrInternal, "vhostd-cni: "+what+": "+err.Error(), "")
}

// newAttachment reads the runtime's arguments.
func newAttachment(args *skel.CmdArgs) (attachment, error) {
	a := attachment{containerID: args.ContainerID, ifName: args.IfName}
	for _, kv := range strings.Split(args.Args, ";") {
		k, v, _ := strings.Cut(kv, "=")
		if k == "K8S_POD_UID" && v != "" {
			if err := checkPodUID(v); err != nil {
				return a, types.NewError(types.ErrInvalidEnvironmentVariables, "vhostd-cni: CNI_ARGS: "+err.Error(), "")
			}
			a.podUID = v
		}
	}
	return a, nil
}

// plan is what an attachment asks of vhostd.
type plan struct {
	conf *NetConf
	att  attachment
	spec portspec.Spec
	dir  string // the pod's socket directory
}

func newPlan(args *skel.CmdArgs) (*plan, error) {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return nil, err
	}
	att, err := newAttachment(args)
	if err != nil {
		return nil, err
	}
	p := &plan{conf: conf, att: att, dir: filepath.Join(conf.SocketDir, att.podDirName())}
	sock := SocketPath(conf.SocketDir, att.podDirName(), args.IfName)
	if len(sock) > maxSocketPath {
		return nil, invalidf("socket path %s is %d bytes, more than a unix socket path can hold (%d): choose a shorter socketDir", sock, len(sock), maxSocketPath)
	}
	p.spec = portspec.Spec{Name: PortName(args.ContainerID, args.IfName), Socket: sock,
		Client: conf.Mode == ModeClient, Queues: conf.Queues}
	mac := ""
	if conf.Backend.Type == BackendMacvtap {
		mac = conf.RuntimeConfig.MAC
	}
	conf.applyBackend(&p.spec, BackendIfName(conf.Backend.Type, args.ContainerID, args.IfName), mac)
	if err := p.spec.Validate(); err != nil {
		return nil, invalidf("%v", err)
	}
	return p, nil
}

func (p *plan) client() *client { return newClient(p.conf.ControlSocket) }

// Add creates the port (ADD).
func Add(args *skel.CmdArgs) error {
	p, err := newPlan(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	c := p.client()
	what := fmt.Sprintf("adding interface %s of container %s", args.IfName, args.ContainerID)
	if old, ok, err := c.port(ctx, p.spec.Name); err != nil {
		return cniError(err, what)
	} else if ok {
		return types.NewError(ErrPortExists, fmt.Sprintf("vhostd-cni: interface %s of container %s already exists on network %s (vhostd port %s, socket %s): a runtime must DEL it before adding it again",
			args.IfName, args.ContainerID, p.conf.Name, old.Name, old.Socket), "")
	}
	created, err := mkdirPod(p.dir)
	if err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("vhostd-cni: creating the pod's socket directory %s: %v", p.dir, err), "")
	}
	undoDir := func() {
		if created {
			_ = os.Remove(p.dir)
		}
	}
	if _, err := c.addPort(ctx, p.spec); err != nil {
		undoDir()
		return cniError(err, what)
	}
	res, err := p.result(args)
	if err == nil {
		err = p.writeDeviceInfo()
	}
	if err != nil {
		_, _ = c.removePort(ctx, p.spec.Name)
		undoDir()
		return err
	}
	return types.PrintResult(res, p.conf.CNIVersion)
}

// mkdirPod creates the pod's socket directory (and its parents), mode
// 0755: the socket's own mode decides who may connect.
func mkdirPod(dir string) (bool, error) {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return false, fmt.Errorf("%s exists and is not a directory", dir)
		}
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	return true, nil
}

// result builds the ADD result: prevResult (if chained) plus the host
// interface (tap or macvtap) and the pod's vhost-user interface, whose
// socketPath is the vhost-user socket.
func (p *plan) result(args *skel.CmdArgs) (*current.Result, error) {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if p.conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&p.conf.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "vhostd-cni: prevResult: "+err.Error(), "")
		}
		prev, err := current.NewResultFromResult(p.conf.PrevResult)
		if err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "vhostd-cni: prevResult: "+err.Error(), "")
		}
		res = prev
	}
	pod := &current.Interface{Name: args.IfName, Sandbox: args.Netns, SocketPath: p.spec.Socket}
	if host := p.spec.BackendName(); host != "" {
		mac := readMAC(host)
		res.Interfaces = append(res.Interfaces, &current.Interface{Name: host, Mac: mac})
		if p.spec.Kind() == portspec.KindMacvtap {
			pod.Mac = mac // a macvtap passes only unicast to its own MAC: the guest must use it
		}
	}
	res.Interfaces = append(res.Interfaces, pod)
	if len(p.conf.DNS.Nameservers) > 0 || p.conf.DNS.Domain != "" || len(p.conf.DNS.Search) > 0 || len(p.conf.DNS.Options) > 0 {
		res.DNS = p.conf.DNS
	}
	return res, nil
}

// readMAC reads a host interface's MAC address ("" if unknown).
func readMAC(ifname string) string {
	b, err := os.ReadFile(filepath.Join("/sys/class/net", ifname, "address"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// DeviceInfo is the NPWG device-info format for a vhost-user device.
type DeviceInfo struct {
	Type      string               `json:"type"`
	Version   string               `json:"version"`
	VhostUser *DeviceInfoVhostUser `json:"vhost-user,omitempty"`
}

// DeviceInfoVhostUser is the "vhost-user" object of DeviceInfo. Mode is the
// container's side: "client" when the host (vhostd) creates the socket and
// the application in the container attaches, "server" when the
// application creates it (vhostd in client mode).
type DeviceInfoVhostUser struct {
	Mode string `json:"mode"`
	Path string `json:"path"`
}

// writeDeviceInfo writes the device-info file the runtime asked for with
// the CNIDeviceInfoFile capability, unless one is there already (a device
// plugin's, which the spec says to keep).
func (p *plan) writeDeviceInfo() error {
	path := p.conf.RuntimeConfig.DeviceInfoFile
	if path == "" {
		return nil
	}
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	mode := "client"
	if p.spec.Client {
		mode = "server"
	}
	b, _ := json.Marshal(DeviceInfo{Type: "vhost-user", Version: "1.1.0", VhostUser: &DeviceInfoVhostUser{Mode: mode, Path: p.spec.Socket}})
	fail := func(err error) error {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("vhostd-cni: writing the device-info file %s: %v", path, err), "")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fail(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fail(err)
	}
	return nil
}

// Del removes the port (DEL). A port vhostd does not have (an unknown
// container, a second DEL) is success. When vhostd does not answer, DEL
// fails with code 11 (try again later) rather than leave a port behind: the
// runtime retries, and a vhostd started from its ports file still has it.
func Del(args *skel.CmdArgs) error {
	p, err := newPlan(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	c := p.client()
	what := fmt.Sprintf("removing interface %s of container %s", args.IfName, args.ContainerID)
	sock := p.spec.Socket
	port, ok, err := c.port(ctx, p.spec.Name)
	if err != nil {
		return cniError(err, what)
	}
	if ok {
		if port.Socket != "" {
			sock = port.Socket
		}
		if _, err := c.removePort(ctx, p.spec.Name); err != nil {
			return cniError(err, what)
		}
	}
	p.cleanDir(filepath.Dir(sock))
	return nil
}

// cleanDir removes a pod's socket directory once it is empty (vhostd
// removes the sockets it made). Only directories directly under socketDir
// are touched.
func (p *plan) cleanDir(dir string) {
	if filepath.Dir(filepath.Clean(dir)) != p.conf.SocketDir {
		return
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		fmt.Fprintf(os.Stderr, "vhostd-cni: removing %s: %v\n", dir, err)
	}
}

// Check verifies the port (CHECK): prevResult names the interface with its
// socket, vhostd has the port running with that socket and backend, and in
// server mode the socket is there.
func Check(args *skel.CmdArgs) error {
	p, err := newPlan(args)
	if err != nil {
		return err
	}
	fail := func(format string, a ...any) error {
		return types.NewError(ErrCheckFailed, fmt.Sprintf("vhostd-cni: interface %s of container %s: ", args.IfName, args.ContainerID)+fmt.Sprintf(format, a...), "")
	}
	if p.conf.RawPrevResult == nil {
		return fail("no prevResult to check against (the runtime passes the ADD result)")
	}
	if err := version.ParsePrevResult(&p.conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "vhostd-cni: prevResult: "+err.Error(), "")
	}
	prev, err := current.NewResultFromResult(p.conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "vhostd-cni: prevResult: "+err.Error(), "")
	}
	var iface *current.Interface
	for _, i := range prev.Interfaces {
		if i.Name == args.IfName && i.Sandbox != "" {
			iface = i
		}
	}
	switch {
	case iface == nil:
		return fail("prevResult lists no such interface")
	case iface.SocketPath != "" && iface.SocketPath != p.spec.Socket:
		// (A 0.4.0 result has no socketPath: nothing to compare.)
		return fail("prevResult gives socket %q, the network configuration gives %s", iface.SocketPath, p.spec.Socket)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	port, ok, err := p.client().port(ctx, p.spec.Name)
	if err != nil {
		return cniError(err, "checking interface "+args.IfName)
	}
	switch {
	case !ok:
		return fail("vhostd has no port %s (was vhostd restarted without its ports file, or the port removed by hand?)", p.spec.Name)
	case port.State != "running":
		return fail("vhostd port %s is %s: %s", port.Name, port.State, port.Error)
	case port.Socket != p.spec.Socket:
		return fail("vhostd port %s serves socket %s, not %s", port.Name, port.Socket, p.spec.Socket)
	case port.Backend != p.spec.Kind():
		return fail("vhostd port %s has backend %s, the network configuration asks for %s", port.Name, port.Backend, p.spec.Kind())
	case port.Client != p.spec.Client:
		return fail("vhostd port %s has client=%v, the network configuration asks for mode %s", port.Name, port.Client, p.conf.Mode)
	}
	if !p.spec.Client {
		fi, err := os.Lstat(p.spec.Socket)
		if err != nil || fi.Mode()&fs.ModeSocket == 0 {
			return fail("vhostd port %s runs but its socket %s is missing or not a socket (removed from the host?)", port.Name, p.spec.Socket)
		}
	}
	if host := p.spec.BackendName(); host != "" {
		if _, err := os.Stat(filepath.Join("/sys/class/net", host)); err != nil {
			return fail("the %s %s of vhostd port %s is gone from the host", p.spec.Kind(), host, port.Name)
		}
	}
	return nil
}

// GC (CNI 1.1) does nothing: a vhostd port does not say which network it
// was made for, so the plugin cannot tell another network's ports from
// stale ones of this network. Stale ports show in vhostd port list.
func GC(args *skel.CmdArgs) error {
	if _, err := ParseConf(args.StdinData); err != nil {
		return err
	}
	return nil
}

// Status (CNI 1.1) reports whether vhostd answers on its control socket
// (code 50, plugin not available, when not).
func Status(args *skel.CmdArgs) error {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if _, err := newClient(conf.ControlSocket).ports(ctx); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "vhostd-cni: "+err.Error(), "")
	}
	return nil
}
