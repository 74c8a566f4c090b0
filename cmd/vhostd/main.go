// Command vhostd is a userspace virtio-net datapath: a vhost-user back-end
// that connects a QEMU guest (or DPDK virtio-user) to a Linux tap, passing GSO
// super-packets through whole.
//
// Without a subcommand it runs the daemon. The subcommands status, stats,
// policy, capture, port and reload talk to a running daemon over its control
// socket (--control-socket; status and stats also over the read-only
// --admin-addr listener).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/metrics/admin"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/virtionet"
)

// options are the command-line settings.
// defaultPollUs is --poll-us's default: off. Measured on 2026-12-03
// (docs/benchmarks.md, "Adaptive polling"), polling doubles the packet rate
// of a fast in-process front-end but costs a TCG guest's iperf3 1.4x
// vhostd's CPU per GB, whose packets come further apart than any window
// worth spinning; turn it on where front-ends post fast (DPDK, KVM guests
// with spare cores). maxPollUs bounds it (a window of
// more than a millisecond only burns CPU: a kick costs microseconds).
const (
	defaultPollUs = 0
	maxPollUs     = 1000
)

type options struct {
	socketPath   string
	client       bool
	fd           int
	printCaps    bool
	tap          string
	backendKind  string
	name         string
	mtu          int
	queuePairs   int
	logLevel     string
	toggles      virtionet.Toggles
	gsoMaxSize   uint
	gsoMaxSegs   uint
	egressDev    string
	pollUs       int
	showFeatures bool
	nullRxSize   int
	policy       gso.Policy
	// adminAddr is where the read-only TCP listener (/metrics, /status)
	// listens ("" turns it off); adminAddrSet says the user chose it, so
	// failing to bind is fatal.
	adminAddr    string
	adminAddrSet bool
	// controlSocket is the control API's unix socket ("" turns it off);
	// controlSet says the user chose it. controlGroup may use it too.
	controlSocket   string
	controlSet      bool
	controlGroup    int
	hasControlGroup bool
	// captureDir is the only directory captures are written to.
	captureDir string
	// configPath is the config file listing the ports (--config), read at
	// start and on SIGHUP; ports added or removed at run time are written
	// back to it.
	configPath string

	// ports are the vhost-user ports to serve: from --port, or one port
	// made of the single-port flags above.
	socketMode  uint
	socketGroup string
	listenOpts  vhostuser.ListenOptions

	ports        []portspec.Spec
	useSwitch    bool
	macvtap      string
	macvtapLower string
	macvtapMode  string
	macvtapMAC   string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if cmd, ok := subcommands[args[0]]; ok {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
			defer stop()
			return cmd(ctx, args[1:], stdout, stderr)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return runDaemon(ctx, args, stdout, stderr)
}

// runDaemon parses the daemon flags and serves until ctx ends.
func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "vhostd: %v\n", err)
		return 2
	}
	if opts.printCaps {
		// vhost-user.rst "Backend program conventions": --print-capabilities
		// prints a JSON object with the device type.
		fmt.Fprintln(stdout, `{"type": "net"}`)
		return 0
	}
	log, err := newLogger(opts.logLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "vhostd: %v\n", err)
		return 2
	}
	if err := serve(ctx, opts, log); err != nil {
		log.Error("vhostd stopped", "err", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("vhostd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.socketPath, "socket-path", "", "vhost-user unix socket: listen on it (or connect to it with --client)")
	fs.Func("socket-mode", "permissions of the sockets vhostd creates, octal (default 0600: only vhostd's user may connect; libvirt needs 0660 plus --socket-group)", func(v string) error {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o777 {
			return fmt.Errorf("--socket-mode %q: give an octal mode such as 0600 or 0660", v)
		}
		o.socketMode = uint(m)
		return nil
	})
	fs.StringVar(&o.socketGroup, "socket-group", "", "group (name or id) to own the sockets vhostd creates, e.g. the group QEMU runs in")
	fs.BoolVar(&o.client, "client", false, "connect to --socket-path (QEMU started with server=on), retrying until it appears")
	fs.IntVar(&o.fd, "fd", -1, "serve an inherited listening unix socket on this fd instead of --socket-path")
	fs.BoolVar(&o.printCaps, "print-capabilities", false, `print {"type": "net"} and exit`)
	fs.StringVar(&o.tap, "tap", "", "tap interface to use as backend (created if missing)")
	fs.StringVar(&o.backendKind, "backend", "", "backend kind: tap or null (default: tap if --tap is given, else null)")
	fs.StringVar(&o.name, "name", "", "port name for logs and metrics (default: the tap name, or port0)")
	fs.IntVar(&o.mtu, "mtu", 0, "set this MTU on the tap (0: leave it)")
	fs.IntVar(&o.queuePairs, "queues", 1, "queue pairs (QEMU: -netdev vhost-user,queues=N; the tap or macvtap gets N queues)")
	fs.StringVar(&o.macvtap, "macvtap", "", "macvtap link to use as backend (created on --macvtap-lower if missing)")
	fs.StringVar(&o.macvtapLower, "macvtap-lower", "", "lower device of the macvtap (needed to create it)")
	fs.StringVar(&o.macvtapMode, "macvtap-mode", "bridge", "macvtap mode: bridge, vepa, private or passthru")
	fs.StringVar(&o.macvtapMAC, "macvtap-mac", "", "MAC of a created macvtap; give the guest the same MAC (QEMU mac=), a macvtap only passes unicast to its own address")
	fs.Var(portFlag{&o.ports}, "port", "serve one more port: name=N,socket=PATH[,client][,queues=Q][,tap=IF | ,macvtap=NAME,lower=DEV[,mode=M][,mac=MAC] | ,null]; ports without a backend are connected guest to guest (repeat the flag)")
	fs.StringVar(&o.configPath, "config", "", "config file listing the ports, one --port spec per line ('#' comments); read at start and on SIGHUP, and vhostd port add/del write to it")
	fs.BoolVar(&o.useSwitch, "switch", false, "join the guest-to-guest ports with a learning L2 switch (default with two such ports: a cross-connect)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.UintVar(&o.gsoMaxSize, "gso-max-size", 0, "override the backend's gso_max_size (0: read it from the link)")
	fs.UintVar(&o.gsoMaxSegs, "gso-max-segs", 0, "override the backend's gso_max_segs (0: read it from the link)")
	fs.StringVar(&o.egressDev, "egress-dev", "", "tap backends: the device the guest's packets leave the host through, whose gso_max_size/gso_max_segs/MTU decide what passes whole (default: found from the tap's bridge ports or the default route, re-read when they change)")
	fs.IntVar(&o.pollUs, "poll-us", defaultPollUs, "adaptive busy-poll window, at most this many microseconds (e.g. 50): after work each queue worker keeps looking for more before it sleeps, stops at once when another task wants the CPU, and holds RX interrupts while packets keep arriving; 0 (the default) turns polling off")
	fs.IntVar(&o.nullRxSize, "null-rx-size", 0, "with --backend null: generate UDP frames of this many bytes toward the guest at full speed (RX benchmarks); 0: none")
	fs.Func("policy", "GSO policy: auto (the capability check decides, default), defer (always pass super-packets whole) or software (always segment in vhostd)", func(v string) error {
		p, err := gso.ParsePolicy(v)
		o.policy = p
		return err
	})
	fs.StringVar(&o.adminAddr, "admin-addr", admin.DefaultAddr, "read-only TCP listener: GET /metrics and GET /status only (everything else is on --control-socket); empty turns it off")
	fs.StringVar(&o.controlSocket, "control-socket", admin.DefaultControlSocket, "control API unix socket (policy, capture, ports, pprof; used by vhostd status|stats|policy|capture|port|reload), mode 0600 (0660 with --control-group); only root, vhostd's own user and --control-group members get in; empty turns it off")
	fs.Func("control-group", "group (name or id) that may use the control socket too (the socket becomes 0660)", func(v string) error {
		gid, err := lookupGroup(v)
		if err != nil {
			return fmt.Errorf("--control-group: %w", err)
		}
		o.controlGroup, o.hasControlGroup = gid, true
		return nil
	})
	fs.StringVar(&o.captureDir, "capture-dir", admin.DefaultCaptureDir, "directory captures are written to (created 0700); vhostd capture --file names a file in it")
	fs.BoolVar(&o.showFeatures, "list-offloads", false, "list the --offload-NAME toggles and exit")
	for _, name := range virtionet.ToggleNames() {
		name := name
		fs.Func("offload-"+name, "on|off: offer the "+name+" feature (default on)", func(v string) error {
			on, err := virtionet.ParseOnOff(v)
			if err != nil {
				return err
			}
			return o.toggles.Set(name, on)
		})
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: vhostd [flags]            run the daemon\n"+
			"       vhostd status|stats|policy|capture|port|reload [flags]   ask a running vhostd (vhostd SUBCOMMAND -h for details)\n\nDaemon flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --; subcommands are %s and come first)", fs.Arg(0), subcommandList())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.adminAddrSet, o.controlSet = set["admin-addr"], set["control-socket"]
	if o.showFeatures {
		fmt.Fprintln(stderr, strings.Join(virtionet.ToggleNames(), "\n"))
		return nil, flag.ErrHelp
	}
	if o.printCaps {
		return o, nil
	}
	o.listenOpts.Mode = iofs.FileMode(o.socketMode)
	if o.socketGroup != "" {
		gid, err := lookupGroup(o.socketGroup)
		if err != nil {
			return nil, fmt.Errorf("--socket-group: %w", err)
		}
		o.listenOpts.Group, o.listenOpts.SetGroup = gid, true
	}
	if o.controlSocket != "" && !filepath.IsAbs(o.controlSocket) {
		return nil, fmt.Errorf("--control-socket %s: give an absolute path", o.controlSocket)
	}
	if !filepath.IsAbs(o.captureDir) {
		return nil, fmt.Errorf("--capture-dir %s: give an absolute path", o.captureDir)
	}
	singlePort := set["socket-path"] || set["fd"] || set["tap"] || set["macvtap"] || set["client"] ||
		set["backend"] || set["name"] || set["queues"] || set["macvtap-lower"] || set["macvtap-mode"] || set["macvtap-mac"]
	if o.configPath != "" {
		if len(o.ports) > 0 || singlePort {
			return nil, errors.New("--config lists every port; do not mix it with --port, --socket-path, --fd, --tap or --macvtap (put those ports in the file)")
		}
		return o, nil
	}
	if len(o.ports) > 0 {
		if singlePort {
			return nil, errors.New("--port describes every port; do not mix it with --socket-path, --fd, --tap, --macvtap, --client, --backend, --name or --queues")
		}
		if err := checkPorts(o.ports, o.useSwitch); err != nil {
			return nil, err
		}
		return o, nil
	}
	if !singlePort {
		// No port yet: they come with vhostd port add.
		return o, nil
	}
	switch {
	case o.fd >= 0 && o.socketPath != "":
		return nil, errors.New("give either --socket-path or --fd, not both")
	case o.fd < 0 && o.socketPath == "":
		return nil, errors.New("no socket for the port: give --socket-path PATH (or --fd N for an inherited listening socket, or --port for several ports)")
	case o.client && o.fd >= 0:
		return nil, errors.New("--client connects to --socket-path; it cannot be used with --fd")
	}
	if o.backendKind == "" {
		o.backendKind = "null"
		switch {
		case o.tap != "":
			o.backendKind = "tap"
		case o.macvtap != "":
			o.backendKind = "macvtap"
		}
	}
	switch o.backendKind {
	case "tap":
		if o.tap == "" {
			return nil, errors.New("--backend tap needs --tap IFNAME")
		}
	case "macvtap":
		if o.macvtap == "" {
			return nil, errors.New("--backend macvtap needs --macvtap NAME (and --macvtap-lower DEV to create it)")
		}
	case "null":
		if o.nullRxSize != 0 && (o.nullRxSize < 60 || o.nullRxSize > 65535) {
			return nil, fmt.Errorf("--null-rx-size %d: use 60..65535 bytes", o.nullRxSize)
		}
	default:
		return nil, fmt.Errorf("unknown --backend %q: use tap, macvtap or null", o.backendKind)
	}
	if o.pollUs < 0 || o.pollUs > maxPollUs {
		return nil, fmt.Errorf("--poll-us %d: want 0 (off) to %d microseconds", o.pollUs, maxPollUs)
	}
	if o.queuePairs < 1 || o.queuePairs > 64 {
		return nil, fmt.Errorf("--queues %d: use 1..64", o.queuePairs)
	}
	if o.name == "" {
		o.name = o.tap
		if o.name == "" {
			o.name = o.macvtap
		}
		if o.name == "" {
			o.name = "port0"
		}
	}
	spec := portspec.Spec{Name: o.name, Socket: o.socketPath, Client: o.client, Queues: o.queuePairs}
	if o.fd >= 0 {
		spec.FD, spec.HasFD = o.fd, true
	}
	switch o.backendKind {
	case "tap":
		spec.Tap = o.tap
	case "macvtap":
		spec.Macvtap, spec.Lower, spec.MAC = o.macvtap, o.macvtapLower, o.macvtapMAC
		if o.macvtapMode != "bridge" {
			spec.Mode = o.macvtapMode
		}
	case "null":
		spec.Null = true
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	o.ports = []portspec.Spec{spec}
	return o, nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// lookupGroup resolves a group name or numeric id.
func lookupGroup(g string) (int, error) {
	if id, err := strconv.Atoi(g); err == nil {
		return id, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", g, err)
	}
	return strconv.Atoi(grp.Gid)
}
