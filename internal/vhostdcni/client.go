package vhostdcni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/vhostd/vhostd/internal/portspec"
)

// client speaks the part of vhostd's control API the plugin needs (GET
// /ports, PUT and DELETE /ports/NAME) over the control socket. It is kept
// apart from metrics/admin.Client so the plugin binary does not carry the
// datapath and Prometheus packages, and so it sees the HTTP status.
type client struct {
	socket string
	http   *http.Client
}

func newClient(socket string) *client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &client{socket: socket, http: &http.Client{Transport: tr}}
}

// portInfo is the part of vhostd's admin.PortInfo the plugin reads.
type portInfo struct {
	Name      string `json:"name"`
	Spec      string `json:"spec"`
	Socket    string `json:"socket"`
	Client    bool   `json:"client"`
	Backend   string `json:"backend"`
	Queues    int    `json:"queues"`
	State     string `json:"state"`
	Error     string `json:"error"`
	Connected bool   `json:"connected"`
}

// unreachableError: nothing answered on the control socket.
type unreachableError struct{ msg string }

func (e *unreachableError) Error() string { return e.msg }

// apiError is vhostd's answer to a request it refused.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return e.Msg }

func (c *client) unreachable(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return &unreachableError{fmt.Sprintf("vhostd is not running on this node: no control socket at %s (is the vhostd DaemonSet's pod running, with --control-socket %s? the network configuration's controlSocket must name it)", c.socket, c.socket)}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &unreachableError{fmt.Sprintf("vhostd is not running on this node: nothing answers on its control socket %s (a stale socket left by a vhostd that stopped)", c.socket)}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return &unreachableError{fmt.Sprintf("permission denied on vhostd's control socket %s: the plugin runs as root on the node; check the socket's owner and mode", c.socket)}
	case errors.Is(err, context.DeadlineExceeded):
		return &unreachableError{fmt.Sprintf("vhostd did not answer on its control socket %s in time: %v", c.socket, err)}
	}
	return &unreachableError{fmt.Sprintf("vhostd's control socket %s: %v", c.socket, err)}
}

func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://vhostd"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return c.unreachable(err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("vhostd answered %s to %s %s", resp.Status, method, path)
		}
		return &apiError{Status: resp.StatusCode, Msg: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("unexpected answer from %s to %s %s (is it a vhostd control socket?): %w", c.socket, method, path, err)
	}
	return nil
}

// ports lists vhostd's ports.
func (c *client) ports(ctx context.Context) ([]portInfo, error) {
	var out []portInfo
	err := c.do(ctx, http.MethodGet, "/ports", nil, &out)
	return out, err
}

// port finds one port; ok is false when vhostd has none of that name.
func (c *client) port(ctx context.Context, name string) (portInfo, bool, error) {
	ps, err := c.ports(ctx)
	if err != nil {
		return portInfo{}, false, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, true, nil
		}
	}
	return portInfo{}, false, nil
}

// addPort creates a port.
func (c *client) addPort(ctx context.Context, s portspec.Spec) (portInfo, error) {
	var out portInfo
	err := c.do(ctx, http.MethodPut, "/ports/"+url.PathEscape(s.Name), s, &out)
	return out, err
}

// removePort removes a port; a 404 is an *apiError with Status 404.
func (c *client) removePort(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/ports/"+url.PathEscape(name), nil, nil)
}
