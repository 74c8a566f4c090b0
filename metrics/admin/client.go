package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vhostd/vhostd/metrics"
)

// Client talks to a running vhostd's admin API (the subcommands use it).
type Client struct {
	base string // http://host:port
	addr string // as the user gave it, for error messages
	http *http.Client
}

// NewClient returns a client for addr: "host:port" or an http:// URL.
func NewClient(addr string) *Client {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{base: strings.TrimRight(base, "/"), addr: addr, http: &http.Client{}}
}

// do sends one request and decodes a JSON answer into out, turning
// transport failures and API errors into messages that say what to do.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("admin API address %q: %w", c.addr, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("nothing answers at %s: is vhostd running, and with --admin-addr %s? (pass --admin-addr to reach another address)", c.addr, c.addr)
		}
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			return fmt.Errorf("admin API address %q: %w", c.addr, err)
		}
		return fmt.Errorf("admin API at %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API at %s: reading the answer: %w", c.addr, err)
	}
	if resp.StatusCode/100 != 2 {
		var e apiError
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("admin API at %s answered %s to %s %s", c.addr, resp.Status, method, path)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API at %s: unexpected answer to %s %s (is it a vhostd?): %w", c.addr, method, path, err)
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

// Policy reads a port's GSO policy.
func (c *Client) Policy(ctx context.Context, port string) (PolicyResult, error) {
	var res PolicyResult
	err := c.do(ctx, http.MethodGet, "/ports/"+url.PathEscape(port)+"/policy", nil, &res)
	return res, err
}

// CaptureRequest is what `vhostd capture` asks for; zero fields take the
// server's defaults.
type CaptureRequest struct {
	Dir     string // tx, rx or both
	Count   int64
	Snaplen int
	File    string // absolute path on the vhostd host; "" for the server's default
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
