package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/admin"
)

// serve runs the daemon until ctx ends: the control socket and the
// read-only TCP listener, the ports (from the flags or the config file),
// SIGHUP (reload the config file) and SIGUSR1 (log the counters).
func serve(ctx context.Context, o *options, log *slog.Logger) error {
	// Signals first: SIGHUP's default action would end the daemon.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(signals)
	inherited, err := systemdSockets()
	if err != nil {
		return err
	}
	m := newPortManager(ctx, o, log, inherited)
	stopAPI, err := serveAPI(o, m, inherited, log)
	defer stopAPI()
	if err != nil {
		return err
	}
	if err := startPorts(o, m, log); err != nil {
		return err
	}
	m.unusedInherited()
	defer m.stopAll()

	n := len(m.Ports())
	if err := sdNotify(fmt.Sprintf("READY=1\nSTATUS=serving %d ports\nMAINPID=%d", n, os.Getpid())); err != nil {
		log.Warn("readiness notification failed", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			_ = sdNotify("STOPPING=1")
			log.Info("vhostd stopping")
			m.stopAll()
			log.Info("vhostd stopped cleanly")
			return nil
		case sig := <-signals:
			handleSignal(ctx, sig, o, m, log)
		}
	}
}

// serveAPI starts the admin API on the control socket and the read-only
// listener; the returned stop (never nil) ends both and waits for them.
func serveAPI(o *options, m *portManager, inherited []*inheritedSocket, log *slog.Logger) (stop func(), err error) {
	actx, cancel := context.WithCancel(context.Background())
	apiDone := make(chan struct{}, 2)
	running := 0
	stop = func() {
		cancel()
		for ; running > 0; running-- {
			<-apiDone
		}
	}
	// serve runs one listener's server until stop; what names it in the log.
	serve := func(what string, run func() error) {
		running++
		go func() {
			defer func() { apiDone <- struct{}{} }()
			if err := run(); err != nil {
				log.Error(what+" stopped", "err", err)
			}
		}()
	}
	hint := "use the control socket"
	if o.controlSocket != "" {
		hint += " " + o.controlSocket + " (vhostd status|stats|policy|capture|port --control-socket " + o.controlSocket + ") as root"
	} else {
		hint += " (this vhostd runs with --control-socket '': none)"
	}
	adm, err := admin.New(admin.Config{Logger: log, CaptureDir: o.captureDir, Control: m, ReadOnlyHint: hint})
	if err != nil {
		return stop, err
	}
	m.adm = adm
	ctl, err := controlListener(o, inherited, log)
	if err != nil {
		return stop, err
	}
	if ctl != nil {
		serve("control socket", func() error {
			return adm.ServeControl(actx, ctl, admin.AllowPeers(o.controlGroup, o.hasControlGroup))
		})
	}
	ro, err := readOnlyListener(o, log)
	if err != nil {
		return stop, err
	}
	if ro != nil {
		serve("read-only admin listener", func() error { return adm.ServeReadOnly(actx, ro) })
	}
	return stop, nil
}

// startPorts starts the ports the config file or the flags list. A port of
// the config file that fails is listed as failed (reload tries again); one
// from the flags ends the daemon.
func startPorts(o *options, m *portManager, log *slog.Logger) error {
	switch {
	case o.configPath != "":
		specs, err := portspec.ReadConfig(o.configPath)
		if err == nil {
			err = checkPorts(specs, o.useSwitch)
		}
		if err != nil {
			return err
		}
		log.Info("config file read", "config", o.configPath, "ports", len(specs))
		_ = m.startSet(specs, sourceConfig, false)
	case len(o.ports) > 0:
		return m.startSet(o.ports, sourceFlags, true)
	default:
		log.Info("no ports yet: add one with vhostd port add NAME --socket PATH --tap IF (or start vhostd with --config FILE or --port)",
			"control_socket", o.controlSocket)
	}
	return nil
}

// handleSignal: SIGUSR1 logs every port's counters, SIGHUP reloads the
// config file.
func handleSignal(ctx context.Context, sig os.Signal, o *options, m *portManager, log *slog.Logger) {
	switch sig {
	case syscall.SIGUSR1:
		m.each(func(p *runningPort) { metrics.LogStats(log, p.dev) })
	case syscall.SIGHUP:
		if o.configPath == "" {
			log.Warn("SIGHUP: vhostd runs without --config, there is no config file to reload")
			return
		}
		_ = sdNotify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
		if _, err := m.Reload(ctx); err != nil {
			log.Error("SIGHUP: reload failed", "err", err)
		}
		_ = sdNotify(fmt.Sprintf("READY=1\nSTATUS=serving %d ports", len(m.Ports())))
	}
}

// controlListener opens the control socket: the one systemd passed (named
// "control", or bound to --control-socket), else a new one. The default
// path failing (another vhostd has it, or no permission to create
// /run/vhostd) only costs a warning; a path the user chose must work.
func controlListener(o *options, inherited []*inheritedSocket, log *slog.Logger) (net.Listener, error) {
	if s := findInherited(inherited, "control", o.controlSocket); s != nil {
		s.used = true
		ln, err := s.listener()
		if err != nil {
			return nil, fmt.Errorf("control socket from systemd: %w", err)
		}
		log.Info("control socket listening (from systemd)", "socket", s.describe())
		return ln, nil
	}
	if o.controlSocket == "" {
		return nil, nil
	}
	ln, err := admin.ListenControl(o.controlSocket, admin.ControlSocketOptions{Group: o.controlGroup, SetGroup: o.hasControlGroup})
	if err != nil {
		if o.controlSet {
			return nil, err
		}
		log.Warn("control socket not started: vhostd port/policy/capture cannot reach this vhostd (give it its own --control-socket)", "err", err)
		return nil, nil
	}
	mode := "0600"
	if o.hasControlGroup {
		mode = fmt.Sprintf("0660 group %d", o.controlGroup)
	}
	log.Info("control socket listening", "socket", o.controlSocket, "mode", mode)
	return ln, nil
}

// readOnlyListener opens --admin-addr. The default address failing (another
// vhostd has it, or lo is down in a fresh network namespace) only costs a
// warning: the datapath matters more. An address the user chose must work.
func readOnlyListener(o *options, log *slog.Logger) (net.Listener, error) {
	if o.adminAddr == "" {
		return nil, nil
	}
	ln, err := admin.Listen(o.adminAddr)
	if err != nil {
		if o.adminAddrSet {
			return nil, err
		}
		log.Warn("read-only admin listener not started", "err", err)
		return nil, nil
	}
	addr := ln.Addr().String()
	log.Info("read-only admin listener (GET /metrics, GET /status)", "addr", addr, "metrics", "http://"+addr+"/metrics")
	return ln, nil
}
