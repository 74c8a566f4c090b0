// Package vhostdcni is the CNI plugin vhostd-cni (cmd/vhostd-cni): on ADD it
// asks the node's vhostd, over its control socket, for a vhost-user port
// whose socket lives in a per-pod directory; DEL removes the port; CHECK
// verifies it. The plugin follows the CNI spec 1.0 (0.4.0 configs work too).
//
// # Network configuration
//
//	{
//	  "cniVersion": "1.0.0",
//	  "name": "vhostd-net",
//	  "type": "vhostd-cni",
//	  "controlSocket": "/run/vhostd/control.sock",   // default: vhostd's default control socket
//	  "socketDir": "/run/vhostd/pods",               // default
//	  "mode": "server",                              // vhostd listens (default); "client": vhostd connects (QEMU/KubeVirt server=on)
//	  "queues": 1,
//	  "backend": {"type": "tap"}                     // or {"type": "macvtap", "lower": "eth0", "mode": "bridge"}, or {"type": "null"}
//	}
//
// Unknown keys are refused (the spec lets plugins do so), with the list of
// the valid ones; the keys the spec reserves for the runtime (args,
// runtimeConfig, prevResult, capabilities, dns) are accepted.
//
// # Where the socket is
//
// The vhost-user socket of interface IFNAME is SOCKETDIR/POD/IFNAME, where
// POD is the pod's UID (K8S_POD_UID in CNI_ARGS, which Multus, containerd
// and CRI-O pass) or, without one, the container ID. This is the per-pod
// directory layout of the userspace CNI plugins (a host directory per pod
// holding that pod's vhost-user sockets), with the socket named after the
// interface: a pod mounts only its own directory (hostPath SOCKETDIR with
// subPathExpr $(POD_UID)) and finds net1's socket as net1 there. The path is
// also in the result, as the interface's socketPath (CNI 1.0), and in the
// device-info file when the runtime passes the CNIDeviceInfoFile capability
// (Multus then shows it in the pod's network-status annotation).
package vhostdcni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vhostd/vhostd/internal/portspec"
)

// Defaults of the network configuration.
const (
	// DefaultControlSocket is vhostd's default --control-socket.
	DefaultControlSocket = "/run/vhostd/control.sock"
	// DefaultSocketDir holds one directory per pod.
	DefaultSocketDir = "/run/vhostd/pods"
)

// Backend kinds of the network configuration.
const (
	BackendTap     = "tap"
	BackendMacvtap = "macvtap"
	BackendNull    = "null"
)

// Modes: who listens on the vhost-user socket.
const (
	ModeServer = "server" // vhostd listens; the DPDK application or QEMU connects
	ModeClient = "client" // vhostd connects; QEMU listens (server=on, KubeVirt)
)

// NetConf is the plugin's network configuration.
type NetConf struct {
	types.PluginConf

	ControlSocket string  `json:"controlSocket,omitempty"`
	SocketDir     string  `json:"socketDir,omitempty"`
	Mode          string  `json:"mode,omitempty"`
	Queues        int     `json:"queues,omitempty"`
	Backend       Backend `json:"backend"`

	// Args and RuntimeConfig are the spec's conventions: "args" is free
	// form (ignored), runtimeConfig carries the capabilities the runtime
	// filled in.
	Args          json.RawMessage `json:"args,omitempty"`
	RuntimeConfig RuntimeConfig   `json:"runtimeConfig,omitempty"`
}

// Backend is the host side of the port.
type Backend struct {
	Type  string `json:"type"`
	Lower string `json:"lower,omitempty"` // macvtap: the lower device (to create the macvtap)
	Mode  string `json:"mode,omitempty"`  // macvtap: bridge (default), vepa, private, passthru
}

// RuntimeConfig holds the capabilities the plugin understands.
type RuntimeConfig struct {
	// MAC ("mac" capability): the macvtap's MAC address.
	MAC string `json:"mac,omitempty"`
	// DeviceInfoFile ("CNIDeviceInfoFile" capability, NPWG device-info
	// spec): where to write the vhost-user device information.
	DeviceInfoFile string `json:"CNIDeviceInfoFile,omitempty"`
}

// knownKeys are the top-level keys accepted.
var knownKeys = []string{
	"cniVersion", "name", "type", "capabilities", "ipam", "dns", "prevResult", "args", "runtimeConfig",
	"cni.dev/valid-attachments",
	"controlSocket", "socketDir", "mode", "queues", "backend",
}

// ParseConf decodes and checks a network configuration. Errors are
// *types.Error with the spec's codes (6: not JSON, 7: invalid).
func ParseConf(data []byte) (*NetConf, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "vhostd-cni: the network configuration is not a JSON object: "+err.Error(), "")
	}
	known := map[string]bool{}
	for _, k := range knownKeys {
		known[k] = true
	}
	var unknown []string
	for k := range raw {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, invalidf("unknown key %s in the network configuration; vhostd-cni takes controlSocket, socketDir, mode, queues and backend (besides the spec's cniVersion, name, type, capabilities, dns, args, runtimeConfig)",
			strings.Join(quoteAll(unknown), ", "))
	}
	c := &NetConf{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, invalidf("%v", err)
	}
	if b, ok := raw["backend"]; ok {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var be Backend
		if err := dec.Decode(&be); err != nil {
			return nil, invalidf("backend: %v: give {\"type\": \"tap\"}, {\"type\": \"macvtap\", \"lower\": \"eth0\"[, \"mode\": \"bridge\"]} or {\"type\": \"null\"}", err)
		}
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}

func invalidf(format string, args ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, "vhostd-cni: "+fmt.Sprintf(format, args...), "")
}

// check fills in the defaults and validates.
func (c *NetConf) check() error {
	if c.ControlSocket == "" {
		c.ControlSocket = DefaultControlSocket
	}
	if c.SocketDir == "" {
		c.SocketDir = DefaultSocketDir
	}
	if c.Mode == "" {
		c.Mode = ModeServer
	}
	if !filepath.IsAbs(c.ControlSocket) {
		return invalidf("controlSocket %q: give vhostd's absolute --control-socket path (default %s)", c.ControlSocket, DefaultControlSocket)
	}
	if !filepath.IsAbs(c.SocketDir) {
		return invalidf("socketDir %q: give an absolute host directory (default %s)", c.SocketDir, DefaultSocketDir)
	}
	c.SocketDir = filepath.Clean(c.SocketDir)
	if c.IPAM.Type != "" {
		return invalidf("ipam %q: vhostd-cni assigns no addresses (the interface lives in the DPDK application or the VM, configure its address there); remove ipam", c.IPAM.Type)
	}
	switch c.Mode {
	case ModeServer, ModeClient:
	default:
		return invalidf("mode %q: use %q (vhostd listens, the default) or %q (vhostd connects to a socket QEMU listens on)", c.Mode, ModeServer, ModeClient)
	}
	if c.Queues < 0 || c.Queues > portspec.MaxQueues {
		return invalidf("queues %d: give the number of queue pairs, 1..%d", c.Queues, portspec.MaxQueues)
	}
	b := c.Backend
	switch b.Type {
	case BackendTap, BackendNull:
		if b.Lower != "" || b.Mode != "" {
			return invalidf("backend %s takes no lower or mode (those are for macvtap)", b.Type)
		}
	case BackendMacvtap:
		if b.Lower == "" {
			return invalidf("backend macvtap needs \"lower\": the host device the macvtap sits on (e.g. eth0)")
		}
	case "":
		return invalidf("backend is missing: give {\"type\": \"tap\"}, {\"type\": \"macvtap\", \"lower\": \"eth0\"} or {\"type\": \"null\"}")
	default:
		return invalidf("backend type %q: use tap, macvtap or null", b.Type)
	}
	// The spec of a sample port checks the backend fields as vhostd would.
	s := portspec.Spec{Name: "check", Socket: "/check", Queues: c.Queues}
	c.applyBackend(&s, "vdcheck0", "")
	if c.RuntimeConfig.MAC != "" && b.Type == BackendMacvtap {
		s.MAC = c.RuntimeConfig.MAC
	}
	if err := s.Validate(); err != nil {
		return invalidf("%s", strings.TrimPrefix(err.Error(), "port check: "))
	}
	return nil
}

// applyBackend sets the backend fields of s; ifname names the tap or
// macvtap.
func (c *NetConf) applyBackend(s *portspec.Spec, ifname, mac string) {
	switch c.Backend.Type {
	case BackendTap:
		s.Tap = ifname
	case BackendMacvtap:
		s.Macvtap, s.Lower, s.Mode, s.MAC = ifname, c.Backend.Lower, c.Backend.Mode, mac
	case BackendNull:
		s.Null = true
	}
}
