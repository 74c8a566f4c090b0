package admin

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/virtionet"
)

func fuzzServer(t testing.TB) (*Server, *virtionet.Device) {
	dev, err := virtionet.New(virtionet.Config{Name: "f", Backends: []backend.Backend{backend.NewNull(backend.NullConfig{})},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Ports: []metrics.Port{{Device: dev}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), CaptureDir: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	return s, dev
}

// FuzzCaptureQuery checks the capture parameters parser on arbitrary query
// strings: it never panics, and what it accepts is within the limits.
// (Only the parser runs: no file is created.)
func FuzzCaptureQuery(f *testing.F) {
	for _, q := range []string{
		"dir=tx&count=10", "dir=both&count=1&snaplen=64&format=pcapng&timeout=1s&file=/tmp/x.pcap",
		"dir=rx&count=99999999999999999999", "count=-1", "dir=%zz", "timeout=-5s&count=3", "file=rel/x&count=1", "file=../../etc/passwd&count=1", "file=..&count=1", "file=a%2Fb&count=1",
	} {
		f.Add(q)
	}
	s, _ := fuzzServer(f)
	f.Fuzz(func(t *testing.T, raw string) {
		r := &http.Request{URL: &url.URL{RawQuery: raw}}
		o, err := s.parseCaptureQuery("f", r)
		if err != nil {
			return
		}
		if o.Count < 1 || o.Count > MaxCaptureCount || o.Dir == 0 || o.Dir&^virtionet.CaptureBoth != 0 {
			t.Fatalf("accepted %q as %+v", raw, o)
		}
		if o.Snaplen != 0 && (o.Snaplen < 64 || o.Snaplen > DefaultSnaplen) {
			t.Fatalf("accepted snaplen %d", o.Snaplen)
		}
		if o.Timeout < 0 || o.Timeout > MaxCaptureTimeout || (o.Format != "pcap" && o.Format != "pcapng") || !filepath.IsAbs(o.File) ||
			filepath.Dir(o.File) != "/nonexistent" || CheckCaptureName(filepath.Base(o.File)) != nil {
			t.Fatalf("accepted %q as %+v", raw, o)
		}
	})
}

// FuzzPolicyRequest sends arbitrary query strings and bodies to PUT
// /ports/f/policy: the answer is 200 with a valid policy set, or 400 with
// the policy unchanged.
func FuzzPolicyRequest(f *testing.F) {
	f.Add("policy=software", "")
	f.Add("", "defer\n")
	f.Add("", `{"policy":"auto"}`)
	f.Add("", `{"policy": 7}`)
	f.Add("policy=", strings.Repeat("x", 300))
	s, dev := fuzzServer(f)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, query, body string) {
		before := dev.Policy()
		req := httptest.NewRequest(http.MethodPut, "/ports/f/policy", strings.NewReader(body))
		req.URL.RawQuery = query
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK:
			if p := dev.Policy(); p > gso.PolicySoftware {
				t.Fatalf("policy %d set", p)
			}
		case http.StatusBadRequest:
			if dev.Policy() != before {
				t.Fatalf("a refused request changed the policy")
			}
		default:
			t.Fatalf("status %d for query %q body %q", w.Code, query, body)
		}
	})
}
