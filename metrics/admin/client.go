package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vhostd/vhostd/internal/apiclient"
	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/metrics"
)

// Client talks to a running vhostd's API (the subcommands use it): over the
// control socket (NewControlClient), or over the read-only TCP listener
// (NewClient), which answers only Status.
type Client struct {
	base   string // http://host:port, or http://vhostd for the control socket
	addr   string // as the user gave it, for error messages
	socket string // control socket path, "" for TCP
	http   *http.Client
}

// NewClient returns a client for the TCP listener at addr: "host:port" or
// an http:// URL. Only Status (and Policy, read from it) work there.
func NewClient(addr string) *Client {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{base: strings.TrimRight(base, "/"), addr: addr, http: &http.Client{}}
}

// NewControlClient returns a client for the control socket at path.
func NewControlClient(path string) *Client {
	return &Client{base: apiclient.BaseUnix, addr: path, socket: path, http: apiclient.Unix(path)}
}

// ErrUnreachable marks errors where nothing answered at the address (no
// socket, no permission to connect, connection refused): the caller may try
// another way in.
var ErrUnreachable = errors.New("vhostd unreachable")

type unreachableError struct{ msg string }

func (e *unreachableError) Error() string        { return e.msg }
func (e *unreachableError) Is(target error) bool { return target == ErrUnreachable }

// transportError turns a failed request into a message that says what to do.
func (c *Client) transportError(err error) error {
	if c.socket != "" {
		switch {
		case errors.Is(err, syscall.ENOENT):
			return &unreachableError{fmt.Sprintf("no control socket at %s: is vhostd running, and with --control-socket %s? (pass --control-socket to reach another one)", c.socket, c.socket)}
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return &unreachableError{fmt.Sprintf("permission denied on the control socket %s: it is for root (run the command with sudo) or members of vhostd's --control-group", c.socket)}
		case errors.Is(err, syscall.ECONNREFUSED):
			return &unreachableError{fmt.Sprintf("nothing answers on the control socket %s: vhostd is not running (a stale socket file)", c.socket)}
		}
		return fmt.Errorf("control socket %s: %w", c.socket, err)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return &unreachableError{fmt.Sprintf("nothing answers at %s: is vhostd running, and with --admin-addr %s? (pass --admin-addr to reach another address)", c.addr, c.addr)}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("admin API address %q: %w", c.addr, err)
	}
	return fmt.Errorf("admin API at %s: %w", c.addr, err)
}

// where names the endpoint in messages.
func (c *Client) where() string {
	if c.socket != "" {
		return "control socket " + c.socket
	}
	return "admin API at " + c.addr
}

// do sends one request and decodes a JSON answer into out, turning
// transport failures and API errors into messages that say what to do.
func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	a, err := apiclient.Do(ctx, c.http, method, c.base+path, body, "", 64<<20)
	if e := (*apiclient.Error)(nil); errors.As(err, &e) {
		switch e.Stage {
		case apiclient.StageRequest:
			return fmt.Errorf("admin API address %q: %w", c.addr, e.Err)
		case apiclient.StageRead:
			return fmt.Errorf("%s: reading the answer: %w", c.where(), e.Err)
		}
		return c.transportError(e.Err)
	}
	if !a.OK() {
		if msg := a.ErrorMessage(); msg != "" {
			return errors.New(msg)
		}
		return fmt.Errorf("%s answered %s to %s %s", c.where(), a.Status, method, path)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(a.Body, out); err != nil {
		return fmt.Errorf("%s: unexpected answer to %s %s (is it a vhostd?): %w", c.where(), method, path, err)
	}
	return nil
}

// Status fetches GET /status (one port, or all when port is "").
func (c *Client) Status(ctx context.Context, port string) (metrics.Status, error) {
	var st metrics.Status
	path := "/status"
	if port != "" {
		path += "?port=" + url.QueryEscape(port)
	}
	err := c.do(ctx, http.MethodGet, path, nil, &st)
	return st, err
}

// SetPolicy switches a port's GSO policy.
func (c *Client) SetPolicy(ctx context.Context, port, policy string) (PolicyResult, error) {
	var res PolicyResult
	err := c.do(ctx, http.MethodPut, "/ports/"+url.PathEscape(port)+"/policy?policy="+url.QueryEscape(policy), nil, &res)
	return res, err
}

// Policy reads a port's GSO policy (from GET /status, so it works on the
// read-only listener too).
func (c *Client) Policy(ctx context.Context, port string) (PolicyResult, error) {
	st, err := c.Status(ctx, port)
	if err != nil {
		return PolicyResult{}, err
	}
	for _, p := range st.Ports {
		if p.Name == port {
			return PolicyResult{Port: p.Name, Policy: p.Policy}, nil
		}
	}
	return PolicyResult{}, fmt.Errorf("no port %q in the status answer", port)
}

// Ports lists the daemon's ports (control socket only).
func (c *Client) Ports(ctx context.Context) ([]PortInfo, error) {
	var res []PortInfo
	err := c.do(ctx, http.MethodGet, "/ports", nil, &res)
	return res, err
}

// AddPort adds a port (control socket only).
func (c *Client) AddPort(ctx context.Context, spec portspec.Spec) (PortInfo, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return PortInfo{}, err
	}
	var res PortInfo
	err = c.do(ctx, http.MethodPut, "/ports/"+url.PathEscape(spec.Name), body, &res)
	return res, err
}

// RemovePort removes a port (control socket only).
func (c *Client) RemovePort(ctx context.Context, name string) (PortChange, error) {
	var res PortChange
	err := c.do(ctx, http.MethodDelete, "/ports/"+url.PathEscape(name), nil, &res)
	return res, err
}

// Reload asks the daemon to re-read its config file (control socket only).
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var res ReloadResult
	err := c.do(ctx, http.MethodPost, "/reload", nil, &res)
	return res, err
}

// CaptureRequest is what `vhostd capture` asks for; zero fields take the
// server's defaults.
type CaptureRequest struct {
	Dir     string // tx, rx or both
	Count   int64
	Snaplen int
	File    string // a plain file name in the daemon's capture directory; "" for the server's default
	Format  string // pcap or pcapng
	Timeout time.Duration
}

// Capture runs a capture and waits for its result.
func (c *Client) Capture(ctx context.Context, port string, r CaptureRequest) (CaptureResult, error) {
	q := url.Values{}
	if r.Dir != "" {
		q.Set("dir", r.Dir)
	}
	q.Set("count", strconv.FormatInt(r.Count, 10))
	if r.Snaplen > 0 {
		q.Set("snaplen", strconv.Itoa(r.Snaplen))
	}
	if r.File != "" {
		q.Set("file", r.File)
	}
	if r.Format != "" {
		q.Set("format", r.Format)
	}
	if r.Timeout > 0 {
		q.Set("timeout", r.Timeout.String())
	}
	var res CaptureResult
	err := c.do(ctx, http.MethodPut, "/ports/"+url.PathEscape(port)+"/capture?"+q.Encode(), nil, &res)
	return res, err
}

// StopCapture ends a port's running capture.
func (c *Client) StopCapture(ctx context.Context, port string) error {
	return c.do(ctx, http.MethodDelete, "/ports/"+url.PathEscape(port)+"/capture", nil, nil)
}
