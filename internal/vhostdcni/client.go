package vhostdcni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"syscall"

	"github.com/vhostd/vhostd/internal/apiclient"
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
	return &client{socket: socket, http: apiclient.Unix(socket)}
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

// conflict reports vhostd's 409: the port exists.
func (e *apiError) conflict() bool { return e.Status == http.StatusConflict }

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
	var data []byte
	ctype := ""
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		data, ctype = b, "application/json"
	}
	a, err := apiclient.Do(ctx, c.http, method, apiclient.BaseUnix+path, data, ctype, 16<<20)
	if e := (*apiclient.Error)(nil); errors.As(err, &e) && e.Stage == apiclient.StageRequest {
		return e.Err
	}
	if err != nil {
		return c.unreachable(err)
	}
	if !a.OK() {
		msg := a.ErrorMessage()
		if msg == "" {
			msg = fmt.Sprintf("vhostd answered %s to %s %s", a.Status, method, path)
		}
		return &apiError{Status: a.Code, Msg: msg}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(a.Body, out); err != nil {
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

// removePort removes a port; removed is false when vhostd has none of
// that name.
func (c *client) removePort(ctx context.Context, name string) (removed bool, err error) {
	err = c.do(ctx, http.MethodDelete, "/ports/"+url.PathEscape(name), nil, nil)
	if ae := (*apiError)(nil); errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}
