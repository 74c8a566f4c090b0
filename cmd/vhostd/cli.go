package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/admin"
)

// subcommand runs one client subcommand and returns the exit code.
type subcommand func(ctx context.Context, args []string, stdout, stderr io.Writer) int

var subcommands map[string]subcommand

func init() {
	subcommands = map[string]subcommand{
		"status":  cmdStatus,
		"stats":   cmdStats,
		"policy":  cmdPolicy,
		"capture": cmdCapture,
		"port":    cmdPort,
		"reload":  cmdReload,
	}
}

func subcommandList() string {
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// requestTimeout bounds the status, stats and policy calls.
const requestTimeout = 10 * time.Second

// clientFlags are the flags every subcommand takes.
type clientFlags struct {
	addr       string // --admin-addr: the read-only TCP listener
	control    string // --control-socket
	port       string
	fs         *flag.FlagSet
	addrSet    bool
	controlSet bool
}

func newClientFlagSet(name, usage string, stderr io.Writer, cf *clientFlags) *flag.FlagSet {
	fs := newControlFlagSet(name, usage, stderr, cf)
	fs.StringVar(&cf.addr, "admin-addr", admin.DefaultAddr, "read-only TCP listener of the running vhostd (GET /status only); by default the control socket is tried first")
	fs.StringVar(&cf.port, "port", "", "port name (default: the only port; required when vhostd serves several)")
	return fs
}

// newControlFlagSet is a subcommand's flag set with --control-socket.
func newControlFlagSet(name, usage string, stderr io.Writer, cf *clientFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("vhostd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cf.control, "control-socket", admin.DefaultControlSocket, "control socket of the running vhostd (root, or a member of its --control-group)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: vhostd %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	cf.fs = fs
	return fs
}

// seen records which connection flags were given; call after parsing.
func (cf *clientFlags) seen() {
	cf.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "admin-addr":
			cf.addrSet = true
		case "control-socket":
			cf.controlSet = true
		}
	})
}

// readClients are the ways to read status, in order: the control socket,
// then (unless a control socket was named) the read-only TCP listener; or
// only --admin-addr when it is given.
func (cf *clientFlags) readClients() []*admin.Client {
	if cf.addrSet {
		return []*admin.Client{admin.NewClient(cf.addr)}
	}
	cls := []*admin.Client{admin.NewControlClient(cf.control)}
	if !cf.controlSet {
		cls = append(cls, admin.NewClient(cf.addr))
	}
	return cls
}

// controlClient is the client for requests that change something: the
// control socket only.
func (cf *clientFlags) controlClient(cmd string) (*admin.Client, error) {
	if cf.addrSet {
		return nil, fmt.Errorf("--admin-addr is the read-only listener (GET /metrics and /status): %s needs the control socket; drop --admin-addr (and give --control-socket PATH if vhostd uses another one than %s)", cmd, admin.DefaultControlSocket)
	}
	return admin.NewControlClient(cf.control), nil
}

// onControl returns what fn returns when called with the control socket's
// client and a context that ends after timeout; cmd names the request in the
// error when the flags give no control socket.
func onControl[T any](ctx context.Context, cf *clientFlags, cmd string, timeout time.Duration, fn func(context.Context, *admin.Client) (T, error)) (T, error) {
	cl, err := cf.controlClient(cmd)
	if err != nil {
		var zero T
		return zero, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return fn(ctx, cl)
}

// readStatus fetches GET /status for cf.port from the first of the read
// clients that answers, and returns that client.
func (cf *clientFlags) readStatus(ctx context.Context) (*admin.Client, metrics.Status, error) {
	var st metrics.Status
	cl, err := firstReachable(cf.readClients(), func(cl *admin.Client) (err error) {
		st, err = fetchStatus(ctx, cl, cf.port)
		return err
	})
	return cl, st, err
}

// writeJSON prints v as indented JSON (the --json outputs).
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// firstReachable runs fn with each client until one answers (an API error
// counts as an answer), and returns that client.
func firstReachable(cls []*admin.Client, fn func(*admin.Client) error) (*admin.Client, error) {
	var msgs []string
	for _, cl := range cls {
		err := fn(cl)
		if err == nil || !errors.Is(err, admin.ErrUnreachable) {
			return cl, err
		}
		msgs = append(msgs, err.Error())
	}
	return nil, errors.New(strings.Join(msgs, "; also "))
}

// parseClient parses a subcommand's flags; code >= 0 means return it.
func parseClient(fs *flag.FlagSet, args []string, maxArgs int, stderr io.Writer) (code int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > maxArgs {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(maxArgs))
		fs.Usage()
		return 2
	}
	return -1
}

func parseControl(cf *clientFlags, args []string, maxArgs int, stderr io.Writer) (code int) {
	code = parseClient(cf.fs, args, maxArgs, stderr)
	cf.seen()
	return code
}

func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "vhostd %s: %v\n", cmd, err)
	return 1
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	var interval time.Duration
	var asJSON bool
	fs := newClientFlagSet("status", "status [--control-socket PATH | --admin-addr ADDR] [--port NAME] [--interval 5s] [--json]", stderr, &cf)
	fs.DurationVar(&interval, "interval", 0, "diagnose only what happens during this interval (two samples) instead of since vhostd started")
	fs.BoolVar(&asJSON, "json", false, "print the raw GET /status JSON")
	if code := parseControl(&cf, args, 0, stderr); code >= 0 {
		return code
	}
	cl, st, err := cf.readStatus(ctx)
	if err != nil {
		return fail(stderr, "status", err)
	}
	if interval > 0 {
		select {
		case <-time.After(interval):
		case <-ctx.Done():
			return 1
		}
		after, err := fetchStatus(ctx, cl, cf.port)
		if err != nil {
			return fail(stderr, "status", err)
		}
		st = since(after, st)
		if !asJSON {
			fmt.Fprintf(stdout, "Counters and diagnosis over the last %v:\n\n", interval)
		}
	}
	if asJSON {
		if err := writeJSON(stdout, st); err != nil {
			return fail(stderr, "status", err)
		}
		return 0
	}
	if err := metrics.WriteStatus(stdout, st); err != nil {
		return fail(stderr, "status", err)
	}
	return 0
}

// since returns after with each port's counters and diagnosis limited to
// what happened since before.
func since(after, before metrics.Status) metrics.Status {
	out := after
	out.Ports = make([]metrics.PortStatus, len(after.Ports))
	for i, p := range after.Ports {
		out.Ports[i] = p
		for _, b := range before.Ports {
			if b.Name == p.Name {
				out.Ports[i] = p.Since(&b)
			}
		}
	}
	return out
}

func fetchStatus(ctx context.Context, cl *admin.Client, port string) (metrics.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return cl.Status(ctx, port)
}

func cmdStats(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	var all bool
	fs := newClientFlagSet("stats", "stats [--control-socket PATH | --admin-addr ADDR] [--port NAME] [--all]", stderr, &cf)
	fs.BoolVar(&all, "all", false, "also list reasons, drops and errnos whose count is zero")
	if code := parseControl(&cf, args, 0, stderr); code >= 0 {
		return code
	}
	_, st, err := cf.readStatus(ctx)
	if err != nil {
		return fail(stderr, "stats", err)
	}
	if err := metrics.WriteStats(stdout, st, all); err != nil {
		return fail(stderr, "stats", err)
	}
	return 0
}

// resolvePort returns the port to act on: the one given, or the only one.
func resolvePort(ctx context.Context, cl *admin.Client, port string) (string, error) {
	if port != "" {
		return port, nil
	}
	st, err := fetchStatus(ctx, cl, "")
	if err != nil {
		return "", err
	}
	switch len(st.Ports) {
	case 0:
		return "", errors.New("this vhostd serves no port")
	case 1:
		return st.Ports[0].Name, nil
	}
	var names []string
	for _, p := range st.Ports {
		names = append(names, p.Name)
	}
	return "", fmt.Errorf("give --port: this vhostd serves %s", strings.Join(names, ", "))
}

func cmdPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	fs := newClientFlagSet("policy", "policy [--control-socket PATH] [--port NAME] [auto|defer|software]\n\n"+
		"Without a policy it prints the current one. The switch takes effect on the next packet:\n"+
		"  auto      the capability check decides per packet (pass whole, re-segment or segment)\n"+
		"  defer     pass every super-packet whole; the kernel segments what the backend cannot take\n"+
		"  software  segment every super-packet in vhostd\n"+
		"Reading the policy also works over --admin-addr; switching it needs the control socket.", stderr, &cf)
	if code := parseControl(&cf, args, 1, stderr); code >= 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var port string
	cls := cf.readClients()
	if fs.NArg() > 0 {
		cl, err := cf.controlClient("switching the GSO policy")
		if err != nil {
			return fail(stderr, "policy", err)
		}
		cls = []*admin.Client{cl}
	}
	cl, err := firstReachable(cls, func(cl *admin.Client) (err error) {
		port, err = resolvePort(ctx, cl, cf.port)
		return err
	})
	if err != nil {
		return fail(stderr, "policy", err)
	}
	if fs.NArg() == 0 {
		res, err := cl.Policy(ctx, port)
		if err != nil {
			return fail(stderr, "policy", err)
		}
		fmt.Fprintf(stdout, "%s: %s\n", res.Port, res.Policy)
		return 0
	}
	res, err := cl.SetPolicy(ctx, port, fs.Arg(0))
	if err != nil {
		return fail(stderr, "policy", err)
	}
	if res.Previous == res.Policy {
		fmt.Fprintf(stdout, "%s: policy was already %s\n", res.Port, res.Policy)
	} else {
		fmt.Fprintf(stdout, "%s: policy %s (was %s), from the next packet on\n", res.Port, res.Policy, res.Previous)
	}
	return 0
}

func cmdCapture(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	var req admin.CaptureRequest
	fs := newClientFlagSet("capture", "capture [--control-socket PATH] [--port NAME] [--dir tx|rx|both] --count N [--file NAME] [--format pcap|pcapng] [--snaplen N] [--timeout 60s]\n\n"+
		"Records N packets into a pcap file (Ethernet frames as the guest sent or received them) and\n"+
		"NAME.decisions.tsv: per packet its virtio_net_hdr and, for TX, the path vhostd chose and why.\n"+
		"Both are written by the daemon in its capture directory (vhostd --capture-dir, default\n"+
		admin.DefaultCaptureDir+"), mode 0600; the answer gives their full paths.\n"+
		"The datapath never waits for the capture: packets it cannot keep up with are skipped and counted.\n"+
		"Ctrl-C ends the capture early and keeps what was written.", stderr, &cf)
	fs.StringVar(&req.Dir, "dir", "both", "direction: tx (guest to backend), rx (backend to guest) or both")
	fs.Int64Var(&req.Count, "count", 0, "packets to record (required)")
	fs.StringVar(&req.File, "file", "", "pcap file name in the daemon's capture directory (default: vhostd-PORT-TIME.pcap); a plain name, never overwritten")
	fs.StringVar(&req.Format, "format", "pcap", "pcap, or pcapng to also carry each packet's decision as a comment Wireshark shows")
	fs.IntVar(&req.Snaplen, "snaplen", 0, "bytes kept per packet (default: whole packets up to 64 KiB)")
	fs.DurationVar(&req.Timeout, "timeout", admin.DefaultCaptureTimeout, "give up waiting for packets after this long")
	if code := parseControl(&cf, args, 0, stderr); code >= 0 {
		return code
	}
	if req.Count <= 0 {
		fmt.Fprintln(stderr, "vhostd capture: give --count N, the number of packets to record")
		return 2
	}
	if req.File != "" && strings.ContainsRune(req.File, filepath.Separator) {
		fmt.Fprintf(stderr, "vhostd capture: --file %s: give a file name (e.g. --file %s): the daemon writes captures only in its capture directory (vhostd --capture-dir, default %s) and prints where\n",
			req.File, filepath.Base(req.File), admin.DefaultCaptureDir)
		return 2
	}
	cl, err := cf.controlClient("capture")
	if err != nil {
		return fail(stderr, "capture", err)
	}
	port, err := resolvePort(ctx, cl, cf.port)
	if err != nil {
		return fail(stderr, "capture", err)
	}

	// Ctrl-C asks the daemon to end the capture; its answer still comes
	// back on the pending request, with the files it wrote.
	intr := make(chan os.Signal, 1)
	signal.Notify(intr, os.Interrupt)
	defer signal.Stop(intr)
	reqCtx, cancel := context.WithTimeout(ctx, req.Timeout+requestTimeout)
	defer cancel()
	go func() {
		select {
		case <-intr:
			sctx, scancel := context.WithTimeout(context.Background(), requestTimeout)
			defer scancel()
			if err := cl.StopCapture(sctx, port); err != nil {
				cancel()
			}
		case <-reqCtx.Done():
		}
	}()
	fmt.Fprintf(stderr, "capturing %d %s packets on port %s (up to %v)...\n", req.Count, req.Dir, port, req.Timeout)
	res, err := cl.Capture(reqCtx, port, req)
	if err != nil {
		return fail(stderr, "capture", err)
	}
	fmt.Fprintf(stdout, "%d packets written to %s\ndecisions: %s\n", res.Packets, res.File, res.DecisionsFile)
	if res.Skipped > 0 {
		fmt.Fprintf(stdout, "%d packets skipped: the writer fell behind (the datapath never waits for a capture)\n", res.Skipped)
	}
	if !res.Complete {
		fmt.Fprintf(stderr, "vhostd capture: ended (%s) after %d of %d packets\n", res.Ended, res.Packets, res.Requested)
	}
	return 0
}
