package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/virtionet"
)

// portSpec is one vhost-user port: its socket and its backend.
type portSpec struct {
	name       string
	socketPath string
	client     bool
	fd         int
	queues     int
	// Backend: exactly one of these kinds.
	kind         string // tap, macvtap, null, peer (another port: link or switch)
	tap          string
	macvtap      string
	macvtapLower string
	macvtapMode  string
	macvtapMAC   string
}

// parsePortSpec parses --port name=N,socket=PATH[,client][,queues=Q]
// [,tap=IF | ,macvtap=NAME,lower=DEV[,mode=M][,mac=MAC] | ,null]. A port
// with no backend key is a guest-to-guest port: it is cross-connected to the
// other such port, or joins the learning switch (--switch).
func parsePortSpec(s string) (portSpec, error) {
	p := portSpec{fd: -1, queues: 1, kind: "peer"}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "name":
			p.name = v
		case "socket":
			p.socketPath = v
		case "client":
			p.client = true
		case "queues":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return p, fmt.Errorf("--port %q: queues=%q is not a positive number", s, v)
			}
			p.queues = n
		case "tap":
			p.kind, p.tap = "tap", v
		case "macvtap":
			p.kind, p.macvtap = "macvtap", v
		case "lower":
			p.macvtapLower = v
		case "mode":
			p.macvtapMode = v
		case "mac":
			p.macvtapMAC = v
		case "null":
			p.kind = "null"
		default:
			return p, fmt.Errorf("--port %q: unknown key %q (use name, socket, client, queues, tap, macvtap, lower, mode, mac, null)", s, k)
		}
	}
	if p.socketPath == "" {
		return p, fmt.Errorf("--port %q: socket=PATH is missing", s)
	}
	if p.name == "" {
		return p, fmt.Errorf("--port %q: name=NAME is missing", s)
	}
	return p, nil
}

// portFlag collects repeated --port flags.
type portFlag struct{ specs *[]portSpec }

func (f portFlag) String() string { return "" }
func (f portFlag) Set(s string) error {
	p, err := parsePortSpec(s)
	if err != nil {
		return err
	}
	*f.specs = append(*f.specs, p)
	return nil
}

// checkPorts validates the port set and the guest-to-guest topology.
func checkPorts(ports []portSpec, useSwitch bool) error {
	names := map[string]bool{}
	sockets := map[string]bool{}
	peers := 0
	for _, p := range ports {
		if names[p.name] {
			return fmt.Errorf("two ports are named %q", p.name)
		}
		names[p.name] = true
		if p.socketPath != "" {
			if sockets[p.socketPath] {
				return fmt.Errorf("two ports use socket %s", p.socketPath)
			}
			sockets[p.socketPath] = true
		}
		if p.kind == "peer" {
			peers++
			if p.queues != 1 {
				return fmt.Errorf("port %s: guest-to-guest ports have one queue pair", p.name)
			}
		}
		if p.kind == "macvtap" && p.macvtap == "" {
			return fmt.Errorf("port %s: macvtap=NAME is missing", p.name)
		}
	}
	switch {
	case peers == 1:
		return errors.New("one guest-to-guest port alone has nobody to talk to: give it a backend (tap=, macvtap=, null) or add another port")
	case peers > 2 && !useSwitch:
		return fmt.Errorf("%d guest-to-guest ports: a cross-connect joins exactly two; add --switch for a learning switch", peers)
	}
	return nil
}

// openPortBackends opens one backend per queue pair of every port whose
// backend is a device (tap, macvtap, null); peer ports get their Link or
// Switch ends from wirePeers.
func openPortBackends(p portSpec, o *options) ([]backend.Backend, bool, error) {
	switch p.kind {
	case "tap":
		cfg := backend.TapConfig{Name: p.tap, MTU: o.mtu, GSOMaxSize: uint32(o.gsoMaxSize), GSOMaxSegs: uint32(o.gsoMaxSegs), EgressDev: o.egressDev}
		if p.queues == 1 {
			t, err := backend.OpenTap(cfg)
			if err != nil {
				return nil, false, err
			}
			return []backend.Backend{t}, t.ProbeUSO(), nil
		}
		ts, err := backend.OpenTapQueues(cfg, p.queues)
		if err != nil {
			return nil, false, err
		}
		out := make([]backend.Backend, len(ts))
		for i, t := range ts {
			out[i] = t
		}
		return out, ts[0].ProbeUSO(), nil
	case "macvtap":
		mode, err := backend.ParseMacvtapMode(p.macvtapMode)
		if err != nil {
			return nil, false, err
		}
		cfg := backend.MacvtapConfig{Name: p.macvtap, Lower: p.macvtapLower, Mode: mode, MTU: o.mtu,
			GSOMaxSize: uint32(o.gsoMaxSize), GSOMaxSegs: uint32(o.gsoMaxSegs)}
		if p.macvtapMAC != "" {
			mac, err := net.ParseMAC(p.macvtapMAC)
			if err != nil {
				return nil, false, fmt.Errorf("port %s: mac=%q: %w", p.name, p.macvtapMAC, err)
			}
			cfg.MAC = mac
		}
		ms, err := backend.OpenMacvtapQueues(cfg, p.queues)
		if err != nil {
			return nil, false, err
		}
		out := make([]backend.Backend, len(ms))
		for i, m := range ms {
			out[i] = m
		}
		return out, ms[0].ProbeUSO(), nil
	case "null":
		caps := backend.DefaultNullCaps
		if o.gsoMaxSize > 0 {
			caps.GSOMaxSize = uint32(o.gsoMaxSize)
		}
		if o.gsoMaxSegs > 0 {
			caps.GSOMaxSegs = uint32(o.gsoMaxSegs)
		}
		var tmpl []byte
		if o.nullRxSize > 0 {
			tmpl = udpTemplate(o.nullRxSize)
		}
		out := make([]backend.Backend, p.queues)
		for i := range out {
			out[i] = backend.NewNull(backend.NullConfig{Caps: caps, RXTemplate: tmpl})
		}
		return out, false, nil
	}
	return nil, false, fmt.Errorf("port %s: no backend", p.name)
}

// wirePeers gives the guest-to-guest ports their backends: the two ends of
// a Link, or ports of one learning Switch.
func wirePeers(ports []portSpec, bes [][]backend.Backend, useSwitch bool) {
	var idx []int
	for i, p := range ports {
		if p.kind == "peer" {
			idx = append(idx, i)
		}
	}
	switch {
	case len(idx) == 0:
	case len(idx) == 2 && !useSwitch:
		a, b := virtionet.NewLink()
		bes[idx[0]] = []backend.Backend{a}
		bes[idx[1]] = []backend.Backend{b}
	default:
		sw := virtionet.NewSwitch(len(idx))
		for k, i := range idx {
			bes[i] = []backend.Backend{sw.Port(k)}
		}
	}
}

// backendName describes a port's backend for logs and status.
func (p portSpec) backendName() string {
	switch p.kind {
	case "tap":
		return p.tap
	case "macvtap":
		return p.macvtap
	}
	return ""
}
