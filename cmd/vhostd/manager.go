package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/admin"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/portlink"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Where a port came from (admin.PortInfo.Source).
const (
	sourceFlags   = "flags"   // --port, or the single-port flags
	sourceConfig  = "config"  // the --config file (also ports added while one is in use)
	sourceRuntime = "runtime" // vhostd port add without a config file: gone after a restart
)

// runningPort is one port the manager serves: its backends, its device and
// its vhost-user server, which runs until cancel.
type runningPort struct {
	spec   portspec.Spec
	source string
	bes    []backend.Backend
	peer   portlink.Port // set for a port joined guest to guest (bes empty)
	dev    *virtionet.Device
	srv    *vhostuser.Server
	fd     int // inherited listening socket served, 0: none
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	err error // the server stopped by itself with this error
}

func (p *runningPort) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// failedPort is a config file port that could not start; the next reload
// tries it again.
type failedPort struct {
	spec   portspec.Spec
	source string
	err    error
}

// portManager owns the running ports: it opens a port's backends, builds
// its virtionet.Device, starts its vhostuser.Server and registers it with
// the admin API; and it stops and releases everything of one port without
// touching the others. Add, remove and reload are serialised.
type portManager struct {
	ctx       context.Context // the daemon's; every port's context derives from it
	o         *options
	log       *slog.Logger
	adm       *admin.Server // nil: no admin API
	inherited []*inheritedSocket

	mu     sync.Mutex
	closed bool // stopAll ran: no more ports
	ports  map[string]*runningPort
	failed map[string]*failedPort
	order  []string // names of ports and failed ports, in the order they came
}

func newPortManager(ctx context.Context, o *options, log *slog.Logger, inherited []*inheritedSocket) *portManager {
	return &portManager{
		ctx: ctx, o: o, log: log, inherited: inherited,
		ports: map[string]*runningPort{}, failed: map[string]*failedPort{},
	}
}

var _ admin.PortControl = (*portManager)(nil)

// startSet starts the ports given at start (flags or the config file).
// Guest-to-guest ports are wired together here, so they only exist in a
// start set. With fatal, the first error stops everything started and is
// returned; otherwise a port that fails is logged and listed as failed.
func (m *portManager) startSet(specs []portspec.Spec, source string, fatal bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	bes := make([][]backend.Backend, len(specs))
	uso := make([]bool, len(specs))
	ok := make([]bool, len(specs))
	var first error
	for i, spec := range specs {
		if spec.Kind() == portspec.KindPeer {
			ok[i] = true
			continue
		}
		var err error
		if bes[i], uso[i], err = openPortBackends(spec, m.o); err != nil {
			err = fmt.Errorf("port %s: %w", spec.Name, err)
			if fatal {
				closeAll(bes)
				return err
			}
			m.fail(spec, source, err)
			continue
		}
		ok[i] = true
	}
	peers := wirePeers(specs, m.o.useSwitch)
	for i, spec := range specs {
		if !ok[i] {
			continue
		}
		if err := m.start(spec, source, bes[i], peers[i], uso[i]); err != nil {
			if fatal {
				if first == nil {
					first = err
				}
				closeAll(bes[i+1:])
				break
			}
			m.fail(spec, source, err)
		}
	}
	if first != nil {
		for _, name := range append([]string(nil), m.order...) {
			if p := m.ports[name]; p != nil {
				m.stop(p)
			}
		}
		return first
	}
	return nil
}

// firstBackend returns bes[0], or nil for a port joined guest to guest.
func firstBackend(bes []backend.Backend) backend.Backend {
	if len(bes) == 0 {
		return nil
	}
	return bes[0]
}

func closeAll(bes [][]backend.Backend) {
	for _, list := range bes {
		for _, be := range list {
			be.Close()
		}
	}
}

// fail records a port that could not start. Called with mu held.
func (m *portManager) fail(spec portspec.Spec, source string, err error) {
	m.log.Error("port not started", "port", spec.Name, "spec", spec.String(), "err", err)
	if _, known := m.failed[spec.Name]; !known {
		m.order = append(m.order, spec.Name)
	}
	m.failed[spec.Name] = &failedPort{spec: spec, source: source, err: err}
}

// start builds and starts one port on bes (opened here when nil), or joined
// guest to guest on peer. On error bes are closed. Called with mu held.
func (m *portManager) start(spec portspec.Spec, source string, bes []backend.Backend, peer portlink.Port, uso bool) (err error) {
	if bes == nil && peer == nil {
		if bes, uso, err = openPortBackends(spec, m.o); err != nil {
			return fmt.Errorf("port %s: %w", spec.Name, err)
		}
	}
	defer func() {
		if err != nil {
			for _, be := range bes {
				be.Close()
			}
		}
	}()
	o, log := m.o, m.log
	queues, caps := len(bes), portlink.Caps
	var peers []portlink.Port
	if peer != nil {
		queues, peers = 1, []portlink.Port{peer}
	} else {
		caps = bes[0].Caps()
	}
	offer, dropped := virtionet.Offer(virtionet.BackendOffloads{RxUSO: uso, TxUSO: caps.Offloads&vnet.OffloadUSO != 0}, o.toggles)
	attrs := []any{"port", spec.Name, "backend", spec.Kind(), "name", spec.BackendName(), "queues", queues,
		"offloads", caps.Offloads.String(), "gso_max_size", caps.GSOMaxSize, "gso_max_segs", caps.GSOMaxSegs,
		"mtu", caps.MTU, "limits_from", caps.LimitsFrom, "policy", o.policy.String(), "offer", fmt.Sprintf("0x%x", uint64(offer))}
	if mv, ok := firstBackend(bes).(*backend.Macvtap); ok {
		attrs = append(attrs, "macvtap_mac", mv.HardwareAddr().String(), "lower", spec.Lower)
		log.Info("macvtap passes only unicast to its own MAC: start the guest with this MAC (QEMU -device virtio-net-pci,mac=...)",
			"port", spec.Name, "mac", mv.HardwareAddr().String())
	}
	log.Info("backend ready", attrs...)
	if dropped != 0 {
		log.Info("features not offered (a dependency is off, or the backend lacks them)", "port", spec.Name, "features", dropped.String())
	}
	dev, err := virtionet.New(virtionet.Config{
		Name: spec.Name, Offer: uint64(offer), MTU: o.mtu, Backends: bes, Peers: peers, Logger: log, Policy: o.policy,
		PollMax: time.Duration(o.pollUs) * time.Microsecond,
	})
	if err != nil {
		return fmt.Errorf("port %s: %w", spec.Name, err)
	}
	srv, fd, err := m.server(spec)
	if err != nil {
		return fmt.Errorf("port %s: %w", spec.Name, err)
	}
	p := &runningPort{spec: spec, source: source, bes: bes, peer: peer, dev: dev, srv: srv, fd: fd, done: make(chan struct{})}
	if m.adm != nil {
		if err := m.adm.AddPort(m.metricsPort(p)); err != nil {
			srv.Close()
			return err
		}
	}
	var ctx context.Context
	ctx, p.cancel = context.WithCancel(m.ctx)
	if _, known := m.failed[spec.Name]; known {
		delete(m.failed, spec.Name)
	} else {
		m.order = append(m.order, spec.Name)
	}
	m.ports[spec.Name] = p
	log.Info("vhostd serving", "port", spec.Name, "socket", spec.Socket, "client", spec.Client, "fd", fd, "source", source)
	go func() {
		defer close(p.done)
		if err := srv.Serve(ctx, func() vhostuser.Device { return dev }); err != nil && ctx.Err() == nil {
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			log.Error("port stopped: its vhost-user server failed; the other ports go on (remove and add it again: vhostd port del, vhostd port add)",
				"port", spec.Name, "err", err)
		}
	}()
	return nil
}

// server returns the vhost-user server of a port: on its inherited socket
// (--fd, or one systemd passed for its path or name), dialling it (client),
// or listening on it.
func (m *portManager) server(spec portspec.Spec) (*vhostuser.Server, int, error) {
	if spec.HasFD {
		for _, s := range m.inherited {
			if s.fd == spec.FD {
				s.used = true
				fd, err := s.dupFD()
				if err != nil {
					return nil, 0, err
				}
				srv, err := vhostuser.FromFD(fd, m.log)
				return srv, spec.FD, err
			}
		}
		srv, err := vhostuser.FromFD(spec.FD, m.log)
		return srv, spec.FD, err
	}
	if spec.Client {
		return vhostuser.Dial(spec.Socket, m.log), 0, nil
	}
	if s := findInherited(m.inherited, "", spec.Socket); s != nil {
		s.used = true
		fd, err := s.dupFD()
		if err != nil {
			return nil, 0, err
		}
		m.log.Info("serving the socket systemd passed", "port", spec.Name, "socket", spec.Socket, "fd", s.fd)
		srv, err := vhostuser.FromFD(fd, m.log)
		return srv, s.fd, err
	}
	srv, err := vhostuser.ListenWith(spec.Socket, m.o.listenOpts, m.log)
	return srv, 0, err
}

func (m *portManager) metricsPort(p *runningPort) metrics.Port {
	return metrics.Port{
		Device: p.dev, Session: metrics.NewServerSource(p.srv),
		BackendKind: p.spec.Kind(), BackendName: p.spec.BackendName(),
		LimitsFromFlags: m.o.gsoMaxSize > 0 || m.o.gsoMaxSegs > 0,
	}
}

// stop ends one port: it leaves the admin API, its session ends (rings
// stopped, guest memory unmapped), its socket is closed (and removed if
// vhostd made it) and its backends are closed (a tap or macvtap vhostd
// created goes away). Called with mu held.
func (m *portManager) stop(p *runningPort) {
	name := p.spec.Name
	if m.adm != nil {
		m.adm.RemovePort(name)
	}
	p.cancel()
	<-p.done
	p.srv.Close()
	metrics.LogStats(m.log, p.dev)
	for _, be := range p.bes {
		be.Close()
	}
	if p.peer != nil {
		// What the other guests still send here is counted on the link.
		p.peer.Bind(nil)
	}
	delete(m.ports, name)
	m.forget(name)
	m.log.Info("port stopped", "port", name)
}

// forget drops name from the order. Called with mu held.
func (m *portManager) forget(name string) {
	for i, n := range m.order {
		if n == name {
			m.order = append(m.order[:i:i], m.order[i+1:]...)
			return
		}
	}
}

// stopAll stops every port, last added first.
func (m *portManager) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for i := len(m.order) - 1; i >= 0; i-- {
		if p := m.ports[m.order[i]]; p != nil {
			m.stop(p)
		}
	}
}

// each calls fn for every running port, in order.
func (m *portManager) each(fn func(*runningPort)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range m.order {
		if p := m.ports[name]; p != nil {
			fn(p)
		}
	}
}

// Ports implements admin.PortControl.
func (m *portManager) Ports() []admin.PortInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]admin.PortInfo, 0, len(m.order))
	for _, name := range m.order {
		if p := m.ports[name]; p != nil {
			info := portInfo(p.spec, p.source)
			info.FD = p.fd
			info.Connected = p.srv.Session() != nil
			if err := p.failure(); err != nil {
				info.State, info.Error = "failed", err.Error()
			}
			out = append(out, info)
		} else if f := m.failed[name]; f != nil {
			info := portInfo(f.spec, f.source)
			info.State, info.Error = "failed", f.err.Error()
			out = append(out, info)
		}
	}
	return out
}

func portInfo(s portspec.Spec, source string) admin.PortInfo {
	return admin.PortInfo{
		Name: s.Name, Spec: s.String(), Socket: s.Socket, Client: s.Client, Backend: s.Kind(), Queues: s.QueuePairs(),
		Source: source, Persistent: source == sourceConfig, State: "running",
	}
}

// errStopping refuses changes once the daemon is shutting down.
var errStopping = admin.Errorf(http.StatusServiceUnavailable, "vhostd is stopping: no port changes now")

// errPeerAtRuntime explains why guest-to-guest ports cannot come and go.
func errPeerAtRuntime(name string) error {
	return admin.Errorf(http.StatusBadRequest, "port %s has no backend (a guest-to-guest port): those are joined by a cross-connect or switch built when vhostd starts, so they cannot be added, changed or removed at run time; give the port a backend (--tap IF, --macvtap NAME --lower DEV, or --null), or list guest-to-guest ports with --port or in the config file and restart vhostd", name)
}

// AddPort implements admin.PortControl: it starts the port and, when a
// config file is in use, writes it there (atomically); if that write fails
// the port is stopped again and nothing changed.
func (m *portManager) AddPort(ctx context.Context, spec portspec.Spec) (admin.PortInfo, error) {
	if err := spec.Validate(); err != nil {
		return admin.PortInfo{}, err
	}
	if spec.Kind() == portspec.KindPeer {
		return admin.PortInfo{}, errPeerAtRuntime(spec.Name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return admin.PortInfo{}, errStopping
	}
	if err := m.checkNew(spec); err != nil {
		return admin.PortInfo{}, err
	}
	source := sourceRuntime
	if m.o.configPath != "" {
		source = sourceConfig
	}
	if err := m.start(spec, source, nil, nil, false); err != nil {
		return admin.PortInfo{}, admin.Errorf(http.StatusUnprocessableEntity, "%v", err)
	}
	if m.o.configPath != "" {
		if err := portspec.AddToConfig(m.o.configPath, spec); err != nil {
			m.stop(m.ports[spec.Name])
			return admin.PortInfo{}, fmt.Errorf("port %s not added: %w", spec.Name, err)
		}
	}
	m.log.Info("port added", "port", spec.Name, "spec", spec.String(), "config", m.o.configPath)
	info := portInfo(spec, source)
	info.FD = m.ports[spec.Name].fd
	return info, nil
}

// checkNew refuses a name or socket already in use. Called with mu held.
func (m *portManager) checkNew(spec portspec.Spec) error {
	if p, ok := m.ports[spec.Name]; ok {
		return admin.Errorf(http.StatusConflict, "port %s already exists (%s): remove it first (vhostd port del %s) or choose another name", spec.Name, p.spec.String(), spec.Name)
	}
	if f, ok := m.failed[spec.Name]; ok {
		return admin.Errorf(http.StatusConflict, "port %s is in the config file but failed to start (%v): fix its line and reload (systemctl reload vhostd, or vhostd reload), or remove it (vhostd port del %s)", spec.Name, f.err, spec.Name)
	}
	for _, p := range m.ports {
		if spec.Socket != "" && p.spec.Socket == spec.Socket {
			return admin.Errorf(http.StatusConflict, "port %s already uses socket %s: give port %s its own socket", p.spec.Name, spec.Socket, spec.Name)
		}
		if b := spec.BackendName(); b != "" && p.spec.BackendName() == b {
			return admin.Errorf(http.StatusConflict, "port %s already uses %s %s: give port %s its own backend", p.spec.Name, p.spec.Kind(), b, spec.Name)
		}
	}
	return nil
}

// RemovePort implements admin.PortControl.
func (m *portManager) RemovePort(ctx context.Context, name string) (admin.PortChange, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var info admin.PortInfo
	switch p, f := m.ports[name], m.failed[name]; {
	case p != nil:
		if p.spec.Kind() == portspec.KindPeer {
			return admin.PortChange{}, errPeerAtRuntime(name)
		}
		info = portInfo(p.spec, p.source)
		info.FD = p.fd
		m.stop(p)
	case f != nil:
		info = portInfo(f.spec, f.source)
		info.State = "failed"
		delete(m.failed, name)
		m.forget(name)
	default:
		return admin.PortChange{}, admin.Errorf(http.StatusNotFound, "no port %q: this vhostd serves %s", name, m.names())
	}
	info.State = "removed"
	res := admin.PortChange{Port: info, Action: "removed"}
	if info.Source == sourceConfig && m.o.configPath != "" {
		res.Config = m.o.configPath
		if _, err := portspec.RemoveFromConfig(m.o.configPath, name); err != nil {
			return res, fmt.Errorf("port %s was removed, but not from the config file, so a restart or reload brings it back: %w; remove its line by hand", name, err)
		}
	}
	m.log.Info("port removed", "port", name, "config", res.Config)
	return res, nil
}

// names lists the port names for messages. Called with mu held.
func (m *portManager) names() string {
	if len(m.order) == 0 {
		return "no ports"
	}
	n := append([]string(nil), m.order...)
	sort.Strings(n)
	return fmt.Sprint(n)
}

// Reload implements admin.PortControl: re-read the config file and apply
// the difference. Ports whose line did not change keep running untouched;
// a changed port is restarted with its new spec (its guest reconnects).
// A config file that does not parse changes nothing.
func (m *portManager) Reload(ctx context.Context) (admin.ReloadResult, error) {
	path := m.o.configPath
	res := admin.ReloadResult{Config: path, Added: []string{}, Removed: []string{}, Changed: []string{}, Unchanged: []string{}}
	if path == "" {
		return res, admin.Errorf(http.StatusBadRequest, "vhostd runs without --config: there is no config file to reload")
	}
	specs, err := portspec.ReadConfig(path)
	if err == nil {
		err = checkPorts(specs, m.o.useSwitch)
	}
	if err != nil {
		return res, admin.Errorf(http.StatusBadRequest, "config file not applied, every port keeps running as it was: %v", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return res, errStopping
	}
	fail := func(name string, err error) {
		if res.Failed == nil {
			res.Failed = map[string]string{}
		}
		res.Failed[name] = err.Error()
	}
	want := map[string]portspec.Spec{}
	for _, s := range specs {
		want[s.Name] = s
	}
	// Removed first, so their sockets and backends are free.
	for _, name := range append([]string(nil), m.order...) {
		if _, keep := want[name]; keep {
			continue
		}
		if p := m.ports[name]; p != nil && p.source == sourceConfig {
			if p.spec.Kind() == portspec.KindPeer {
				fail(name, errPeerAtRuntime(name))
				continue
			}
			m.stop(p)
			res.Removed = append(res.Removed, name)
		} else if f := m.failed[name]; f != nil && f.source == sourceConfig {
			delete(m.failed, name)
			m.forget(name)
			res.Removed = append(res.Removed, name)
		}
	}
	for _, s := range specs {
		p, f := m.ports[s.Name], m.failed[s.Name]
		switch {
		case p != nil && p.spec.Equal(s) && p.failure() == nil:
			res.Unchanged = append(res.Unchanged, s.Name)
			continue
		case p != nil && p.source != sourceConfig:
			fail(s.Name, fmt.Errorf("a %s port of that name runs: remove it first (vhostd port del %s)", p.source, s.Name))
			continue
		case s.Kind() == portspec.KindPeer || (p != nil && p.spec.Kind() == portspec.KindPeer):
			fail(s.Name, errPeerAtRuntime(s.Name))
			continue
		case p != nil:
			m.stop(p)
			res.Changed = append(res.Changed, s.Name)
		case f != nil:
			delete(m.failed, s.Name) // tried again
			m.forget(s.Name)
			res.Changed = append(res.Changed, s.Name)
		default:
			res.Added = append(res.Added, s.Name)
		}
		if err := m.checkNew(s); err != nil {
			m.fail(s, sourceConfig, err)
			fail(s.Name, err)
			continue
		}
		if err := m.start(s, sourceConfig, nil, nil, false); err != nil {
			m.fail(s, sourceConfig, err)
			fail(s.Name, err)
		}
	}
	m.log.Info("config reloaded", "config", path, "added", res.Added, "removed", res.Removed, "changed", res.Changed,
		"unchanged", len(res.Unchanged), "failed", len(res.Failed))
	return res, nil
}

// unusedInherited logs sockets systemd passed that nothing took.
func (m *portManager) unusedInherited() {
	for _, s := range m.inherited {
		if !s.used {
			m.log.Warn("systemd passed a socket no port uses: add a port with this socket (the config file or vhostd port add), or remove it from the socket unit",
				"fd", s.fd, "socket", s.describe())
		}
	}
}
