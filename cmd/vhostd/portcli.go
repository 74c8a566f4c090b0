package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/metrics/admin"
)

const portUsage = `port add NAME --socket PATH [--client] [--queues N] [--tap IF | --macvtap NAME [--lower DEV] [--mode M] [--mac MAC] | --null]
       vhostd port add --spec 'name=NAME,socket=PATH,...'
       vhostd port del NAME
       vhostd port list [--json]

Adds, removes and lists the ports of a running vhostd without disturbing the
others (over the control socket: root, or a member of vhostd's --control-group).
When vhostd runs with --config, added and removed ports are written to the
config file, so a restart recreates them; without one they last until vhostd
stops. Guest-to-guest ports (no backend) are set when vhostd starts only.`

// cmdPort is `vhostd port add|del|list`.
func cmdPort(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprintf(stderr, "Usage: vhostd %s\n", portUsage)
			return 0
		}
		fmt.Fprintf(stderr, "vhostd port: say add, del or list\n\nUsage: vhostd %s\n", portUsage)
		return 2
	}
	switch args[0] {
	case "add":
		return cmdPortAdd(ctx, args[1:], stdout, stderr)
	case "del", "delete", "rm", "remove":
		return cmdPortDel(ctx, args[1:], stdout, stderr)
	case "list", "ls":
		return cmdPortList(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "vhostd port: unknown action %q: use add, del or list\n", args[0])
	return 2
}

// splitName takes a leading NAME off args (flags may follow it).
func splitName(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}

func cmdPortAdd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	var s portspec.Spec
	var text, link string
	fs := newControlFlagSet("port add", portUsage, stderr, &cf)
	fs.StringVar(&s.Socket, "socket", "", "vhost-user socket: vhostd listens on it (QEMU connects), or connects to it with --client")
	fs.BoolVar(&s.Client, "client", false, "connect to --socket (QEMU started with server=on) instead of listening")
	fs.IntVar(&s.Queues, "queues", 1, "queue pairs (QEMU -netdev vhost-user,queues=N)")
	fs.StringVar(&s.Tap, "tap", "", "backend: a tap (created if missing)")
	fs.StringVar(&s.Macvtap, "macvtap", "", "backend: a macvtap (created on --lower if missing)")
	fs.StringVar(&s.Lower, "lower", "", "macvtap: lower device, to create it")
	fs.StringVar(&s.Mode, "mode", "", "macvtap: bridge (default), vepa, private or passthru")
	fs.StringVar(&s.MAC, "mac", "", "macvtap: MAC of a created macvtap")
	fs.BoolVar(&s.Null, "null", false, "backend: the counting sink (benchmarks)")
	fs.StringVar(&text, "spec", "", "the whole port in --port syntax instead of the flags: name=N,socket=PATH,...")
	fs.StringVar(&link, "link", "", "not available at run time: guest-to-guest ports are set when vhostd starts")
	name, rest := splitName(args)
	if code := parseControl(&cf, rest, 1, stderr); code >= 0 {
		return code
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	} else if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vhostd port add: unexpected argument %q (flags come after the port name)\n", fs.Arg(0))
		return 2
	}
	if link != "" {
		fmt.Fprintf(stderr, "vhostd port add: --link: guest-to-guest ports are joined when vhostd starts (--port name=A,socket=... --port name=B,socket=..., or two such lines in the config file) and cannot be added at run time; give this port a backend (--tap, --macvtap or --null)\n")
		return 2
	}
	if text != "" {
		set := 0
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "spec" && f.Name != "control-socket" {
				set++
			}
		})
		if set > 0 {
			fmt.Fprintln(stderr, "vhostd port add: give the port either with --spec or with flags, not both")
			return 2
		}
		var err error
		if s, err = portspec.Parse(text); err != nil {
			fmt.Fprintf(stderr, "vhostd port add: %v\n", err)
			return 2
		}
		if name != "" && name != s.Name {
			fmt.Fprintf(stderr, "vhostd port add: the argument names port %s but --spec names %s\n", name, s.Name)
			return 2
		}
	} else {
		s.Name = name
		queuesSet := false
		fs.Visit(func(f *flag.Flag) { queuesSet = queuesSet || f.Name == "queues" })
		if queuesSet && (s.Queues < 1 || s.Queues > portspec.MaxQueues) {
			fmt.Fprintf(stderr, "vhostd port add: --queues %d: give the number of queue pairs, 1..%d (queues=0 is not a default)\n", s.Queues, portspec.MaxQueues)
			return 2
		}
		if s.Queues == 1 {
			s.Queues = 0 // the default, left out of the spec
		}
	}
	if s.Name == "" {
		fmt.Fprintf(stderr, "vhostd port add: give the port a name: vhostd port add NAME --socket PATH --tap IF\n")
		return 2
	}
	if s.Kind() == portspec.KindPeer {
		fmt.Fprintf(stderr, "vhostd port add: port %s has no backend: give --tap IF, --macvtap NAME --lower DEV, or --null (guest-to-guest ports are set when vhostd starts)\n", s.Name)
		return 2
	}
	if s.Socket != "" && !filepath.IsAbs(s.Socket) {
		// The daemon does not share our working directory.
		abs, err := filepath.Abs(s.Socket)
		if err != nil {
			return fail(stderr, "port add", err)
		}
		s.Socket = abs
	}
	if err := s.Validate(); err != nil {
		fmt.Fprintf(stderr, "vhostd port add: %v\n", err)
		return 2
	}
	info, err := onControl(ctx, &cf, "port add", requestTimeout, func(ctx context.Context, cl *admin.Client) (admin.PortInfo, error) { return cl.AddPort(ctx, s) })
	if err != nil {
		return fail(stderr, "port add", err)
	}
	fmt.Fprintf(stdout, "port %s added: %s\n", info.Name, info.Spec)
	if info.Persistent {
		fmt.Fprintln(stdout, "written to the config file: a restart recreates it")
	} else {
		fmt.Fprintln(stdout, "not persistent: vhostd runs without --config, so it is gone after a restart")
	}
	return 0
}

func cmdPortDel(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	newControlFlagSet("port del", portUsage, stderr, &cf)
	name, rest := splitName(args)
	if code := parseControl(&cf, rest, 1, stderr); code >= 0 {
		return code
	}
	if name == "" && cf.fs.NArg() == 1 {
		name = cf.fs.Arg(0)
	} else if cf.fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vhostd port del: unexpected argument %q\n", cf.fs.Arg(0))
		return 2
	}
	if name == "" {
		fmt.Fprintln(stderr, "vhostd port del: give the port name: vhostd port del NAME (vhostd port list shows them)")
		return 2
	}
	res, err := onControl(ctx, &cf, "port del", requestTimeout, func(ctx context.Context, cl *admin.Client) (admin.PortChange, error) { return cl.RemovePort(ctx, name) })
	if err != nil {
		return fail(stderr, "port del", err)
	}
	if res.Config != "" {
		fmt.Fprintf(stdout, "port %s removed (and from %s)\n", name, res.Config)
	} else {
		fmt.Fprintf(stdout, "port %s removed\n", name)
	}
	return 0
}

func cmdPortList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	var asJSON bool
	fs := newControlFlagSet("port list", portUsage, stderr, &cf)
	fs.BoolVar(&asJSON, "json", false, "print the raw GET /ports JSON")
	if code := parseControl(&cf, args, 0, stderr); code >= 0 {
		return code
	}
	ports, err := onControl(ctx, &cf, "port list", requestTimeout, func(ctx context.Context, cl *admin.Client) ([]admin.PortInfo, error) { return cl.Ports(ctx) })
	if err != nil {
		return fail(stderr, "port list", err)
	}
	if asJSON {
		if err := writeJSON(stdout, ports); err != nil {
			return fail(stderr, "port list", err)
		}
		return 0
	}
	if len(ports) == 0 {
		fmt.Fprintln(stdout, "no ports (add one: vhostd port add NAME --socket PATH --tap IF)")
		return 0
	}
	writePortTable(stdout, ports)
	return 0
}

// writePortTable prints one line per port.
func writePortTable(w io.Writer, ports []admin.PortInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tGUEST\tSOURCE\tSPEC")
	for _, p := range ports {
		guest := "-"
		if p.State == "running" {
			guest = "waiting"
			if p.Connected {
				guest = "connected"
			}
		}
		state := p.State
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, state, guest, p.Source, p.Spec)
	}
	tw.Flush()
	for _, p := range ports {
		if p.Error != "" {
			fmt.Fprintf(w, "%s: %s\n", p.Name, p.Error)
		}
	}
}

// cmdReload is `vhostd reload`: re-read the config file (as SIGHUP).
func cmdReload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	newControlFlagSet("reload", "reload [--control-socket PATH]\n\nRe-reads vhostd's config file and applies it: ports added, removed and changed\n(restarted with their new line); untouched ports keep running. Same as SIGHUP.", stderr, &cf)
	if code := parseControl(&cf, args, 0, stderr); code >= 0 {
		return code
	}
	res, err := onControl(ctx, &cf, "reload", 2*requestTimeout, func(ctx context.Context, cl *admin.Client) (admin.ReloadResult, error) { return cl.Reload(ctx) })
	if err != nil {
		return fail(stderr, "reload", err)
	}
	list := func(n []string) string {
		if len(n) == 0 {
			return "none"
		}
		return strings.Join(n, ", ")
	}
	fmt.Fprintf(stdout, "%s reloaded: added %s; removed %s; changed %s; %d unchanged\n",
		res.Config, list(res.Added), list(res.Removed), list(res.Changed), len(res.Unchanged))
	if len(res.Failed) > 0 {
		names := make([]string, 0, len(res.Failed))
		for n := range res.Failed {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(stderr, "vhostd reload: port %s: %s\n", n, res.Failed[n])
		}
		return 1
	}
	return 0
}
