// Package apiclient is the HTTP exchange both clients of vhostd's API share:
// vhostd's own subcommands (metrics/admin.Client) and the CNI plugin
// (internal/vhostdcni), which keeps its own small client so that its binary
// does not carry the datapath and Prometheus packages. Each turns the
// failures into its own advice.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
)

// Unix returns an HTTP client whose requests all go to the unix socket at
// path, one connection per request. Requests name the host "vhostd"
// (BaseUnix).
func Unix(path string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &http.Client{Transport: tr}
}

// BaseUnix is the URL prefix of requests over a Unix client.
const BaseUnix = "http://vhostd"

// Answer is the API's reply to one request.
type Answer struct {
	Code   int    // HTTP status code
	Status string // HTTP status line, e.g. "404 Not Found"
	Body   []byte
}

// OK reports a 2xx answer.
func (a Answer) OK() bool { return a.Code/100 == 2 }

// ErrorMessage is the message of an error answer's {"error": "..."} body,
// or "" when it has none.
func (a Answer) ErrorMessage() string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(a.Body, &e) != nil {
		return ""
	}
	return e.Error
}

// Stage says where a request failed.
type Stage int

const (
	StageRequest Stage = iota // the request could not be made (a bad address)
	StageSend                 // nothing answered
	StageRead                 // the answer broke off
)

// Error is a request that got no answer.
type Error struct {
	Stage Stage
	Err   error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Do sends one request (with body, if not nil, and its Content-Type, if not "") and
// reads the answer, at most limit bytes of it. The error, an *Error, is
// that no answer came; an answer of any status is not an error.
func Do(ctx context.Context, hc *http.Client, method, url string, body []byte, contentType string, limit int64) (Answer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return Answer{}, &Error{StageRequest, err}
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Answer{}, &Error{StageSend, err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return Answer{}, &Error{StageRead, err}
	}
	return Answer{Code: resp.StatusCode, Status: resp.Status, Body: data}, nil
}
