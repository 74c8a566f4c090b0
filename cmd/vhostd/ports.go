package main

import (
	"fmt"
	"net"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/virtionet/portlink"
)

// portFlag collects repeated --port flags, parsed strictly (portspec).
type portFlag struct{ specs *[]portspec.Spec }

func (f portFlag) String() string { return "" }
func (f portFlag) Set(s string) error {
	p, err := portspec.Parse(s)
	if err != nil {
		return err
	}
	*f.specs = append(*f.specs, p)
	return nil
}

// checkPorts validates a port set: unique names and sockets, and the
// guest-to-guest topology.
func checkPorts(ports []portspec.Spec, useSwitch bool) error {
	if err := portspec.CheckUnique(ports); err != nil {
		return err
	}
	return portspec.CheckTopology(ports, useSwitch)
}

// asBackends returns the queues of one device as a []backend.Backend.
func asBackends[B backend.Backend](qs []B) []backend.Backend {
	out := make([]backend.Backend, len(qs))
	for i, q := range qs {
		out[i] = q
	}
	return out
}

// openPortBackends opens one backend per queue pair of a port whose backend
// is a device (tap, macvtap, null); peer ports get their Link or Switch ports
// from wirePeers instead. The bool reports whether the backend takes USO.
func openPortBackends(p portspec.Spec, o *options) ([]backend.Backend, bool, error) {
	queues := p.QueuePairs()
	switch p.Kind() {
	case portspec.KindTap:
		cfg := backend.TapConfig{Name: p.Tap, MTU: o.mtu, GSOMaxSize: uint32(o.gsoMaxSize), GSOMaxSegs: uint32(o.gsoMaxSegs), EgressDev: o.egressDev}
		if queues == 1 {
			t, err := backend.OpenTap(cfg)
			if err != nil {
				return nil, false, err
			}
			return []backend.Backend{t}, t.ProbeUSO(), nil
		}
		ts, err := backend.OpenTapQueues(cfg, queues)
		if err != nil {
			return nil, false, err
		}
		return asBackends(ts), ts[0].ProbeUSO(), nil
	case portspec.KindMacvtap:
		mode, err := backend.ParseMacvtapMode(p.Mode)
		if err != nil {
			return nil, false, err
		}
		cfg := backend.MacvtapConfig{Name: p.Macvtap, Lower: p.Lower, Mode: mode, MTU: o.mtu,
			GSOMaxSize: uint32(o.gsoMaxSize), GSOMaxSegs: uint32(o.gsoMaxSegs)}
		if p.MAC != "" {
			mac, err := net.ParseMAC(p.MAC)
			if err != nil {
				return nil, false, fmt.Errorf("port %s: mac=%q: %w", p.Name, p.MAC, err)
			}
			cfg.MAC = mac
		}
		ms, err := backend.OpenMacvtapQueues(cfg, queues)
		if err != nil {
			return nil, false, err
		}
		return asBackends(ms), ms[0].ProbeUSO(), nil
	case portspec.KindNull:
		caps := backend.DefaultNullCaps
		if o.gsoMaxSize > 0 {
			caps.GSOMaxSize = uint32(o.gsoMaxSize)
		}
		if o.gsoMaxSegs > 0 {
			caps.GSOMaxSegs = uint32(o.gsoMaxSegs)
		}
		var tmpl []byte
		if o.nullRxSize > 0 {
			tmpl = backend.UDPTemplate(o.nullRxSize)
		}
		out := make([]backend.Backend, queues)
		for i := range out {
			out[i] = backend.NewNull(backend.NullConfig{Caps: caps, RXTemplate: tmpl})
		}
		return out, false, nil
	}
	return nil, false, fmt.Errorf("port %s: no backend", p.Name)
}

// wirePeers joins the guest-to-guest ports: the two ends of a Link, or
// ports of one learning Switch. peers[i] is set for each peer port (one
// queue pair, checked by portspec).
func wirePeers(ports []portspec.Spec, useSwitch bool) (peers []portlink.Port) {
	peers = make([]portlink.Port, len(ports))
	var idx []int
	for i, p := range ports {
		if p.Kind() == portspec.KindPeer {
			idx = append(idx, i)
		}
	}
	switch {
	case len(idx) == 0:
	case len(idx) == 2 && !useSwitch:
		a, b := portlink.NewLink()
		peers[idx[0]], peers[idx[1]] = a, b
	default:
		sw := portlink.NewSwitch(len(idx))
		for k, i := range idx {
			peers[i] = sw.Port(k)
		}
	}
	return peers
}
