// Package admin is vhostd's admin HTTP API: Prometheus /metrics,
// /debug/pprof, GET /status, run-time GSO policy switching and pcap capture,
// plus the client the `vhostd status|stats|policy|capture` subcommands use.
//
// Routes (all JSON unless noted):
//
//	GET    /metrics                      Prometheus text format
//	GET    /debug/pprof/...              net/http/pprof
//	GET    /status[?port=NAME]           metrics.Status
//	GET    /ports/{name}/policy          {"port", "policy"}
//	PUT    /ports/{name}/policy          body or ?policy= auto|defer|software
//	PUT    /ports/{name}/capture?...     runs a capture, answers when it ends
//	GET    /ports/{name}/capture         progress of the running capture, or the last result
//	DELETE /ports/{name}/capture         ends the running capture early
//
// Errors are {"error": "..."} with a 4xx/5xx status.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/metrics"
)

// DefaultAddr is where the admin API listens unless --admin-addr says
// otherwise: loopback only, since it can switch policies and write files.
const DefaultAddr = "127.0.0.1:9637"

// Config configures a Server.
type Config struct {
	Ports  []metrics.Port
	Logger *slog.Logger
	// CaptureDir receives captures requested without file=; default
	// os.TempDir().
	CaptureDir string
	// Registry receives the port collectors; nil means a new registry with
	// the Go runtime and process collectors too (process_cpu_seconds_total
	// is what A/B runs divide by bytes moved).
	Registry *prometheus.Registry
}

// Server serves the admin API for a set of ports.
type Server struct {
	ports      map[string]metrics.Port
	order      []string
	log        *slog.Logger
	reg        *prometheus.Registry
	mux        *http.ServeMux
	captureDir string

	mu       sync.Mutex
	captures map[string]*captureRun // running capture per port
	last     map[string]*CaptureResult
}

// New registers one collector per port and builds the routes.
func New(cfg Config) (*Server, error) {
	s := &Server{
		ports:      map[string]metrics.Port{},
		log:        cfg.Logger,
		reg:        cfg.Registry,
		captureDir: cfg.CaptureDir,
		captures:   map[string]*captureRun{},
		last:       map[string]*CaptureResult{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.captureDir == "" {
		s.captureDir = os.TempDir()
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	for _, p := range cfg.Ports {
		name := p.Name()
		if _, dup := s.ports[name]; dup {
			return nil, fmt.Errorf("admin: two ports are named %q; give each a distinct --name", name)
		}
		if err := s.reg.Register(metrics.NewCollector(p)); err != nil {
			return nil, fmt.Errorf("admin: registering the metrics of port %q: %w", name, err)
		}
		s.ports[name] = p
		s.order = append(s.order, name)
	}
	s.routes()
	return s, nil
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) routes() {
	m := http.NewServeMux()
	m.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		Registry: s.reg, // self-instrumentation: promhttp_metric_handler_*
	}))
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	m.HandleFunc("GET /status", s.handleStatus)
	m.HandleFunc("GET /ports/{name}/policy", s.handleGetPolicy)
	m.HandleFunc("PUT /ports/{name}/policy", s.handlePutPolicy)
	m.HandleFunc("PUT /ports/{name}/capture", s.handlePutCapture)
	m.HandleFunc("GET /ports/{name}/capture", s.handleGetCapture)
	m.HandleFunc("DELETE /ports/{name}/capture", s.handleDeleteCapture)
	m.HandleFunc("GET /{$}", s.handleIndex)
	s.mux = m
}

// Listen opens the admin listener with an error that says what to do.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		hint := "check --admin-addr"
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = "another vhostd (or another program) uses it: give this one its own --admin-addr, or --admin-addr '' to turn the admin API off"
		}
		return nil, fmt.Errorf("admin API: cannot listen on %s: %w; %s", addr, err, hint)
	}
	return ln, nil
}

// Serve answers on ln until ctx is cancelled. Requests in flight (a long
// capture) see ctx end too, so shutdown does not wait for them.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin API on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-errc
	return nil
}

// apiError is the JSON error body.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

// port finds the port named in the path, or answers 404.
func (s *Server) port(w http.ResponseWriter, name string) (metrics.Port, bool) {
	p, ok := s.ports[name]
	if !ok {
		writeError(w, http.StatusNotFound, "no port %q: this vhostd serves %s", name, s.portList())
	}
	return p, ok
}

func (s *Server) portList() string {
	if len(s.order) == 0 {
		return "no ports"
	}
	names := append([]string(nil), s.order...)
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, `vhostd admin API (ports: %s)

GET    /metrics                          Prometheus metrics
GET    /status[?port=NAME]               ports, features, backend limits, rings, counters, diagnosis (JSON)
GET    /ports/NAME/policy                current GSO policy
PUT    /ports/NAME/policy?policy=P       switch the GSO policy: auto, defer or software
PUT    /ports/NAME/capture?dir=D&count=N capture to pcap: dir tx|rx|both; optional snaplen, file, format=pcap|pcapng, timeout
GET    /ports/NAME/capture               progress of the running capture, or the last result
DELETE /ports/NAME/capture               end the running capture early
GET    /debug/pprof/                     Go profiles
`, s.portList())
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	var ports []metrics.Port
	if name := r.URL.Query().Get("port"); name != "" {
		p, ok := s.port(w, name)
		if !ok {
			return
		}
		ports = []metrics.Port{p}
	} else {
		for _, name := range s.order {
			ports = append(ports, s.ports[name])
		}
	}
	writeJSON(w, http.StatusOK, metrics.Snapshot(ports))
}

// PolicyResult is the answer of the policy endpoints.
type PolicyResult struct {
	Port     string `json:"port"`
	Policy   string `json:"policy"`
	Previous string `json:"previous,omitempty"`
}

func (s *Server) handleGetPolicy(w http.ResponseWriter, r *http.Request) {
	p, ok := s.port(w, r.PathValue("name"))
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, PolicyResult{Port: p.Name(), Policy: p.Device.Policy().String()})
}

// maxPolicyBody bounds the PUT body: a policy name or a tiny JSON object.
const maxPolicyBody = 256

func (s *Server) handlePutPolicy(w http.ResponseWriter, r *http.Request) {
	p, ok := s.port(w, r.PathValue("name"))
	if !ok {
		return
	}
	value := r.URL.Query().Get("policy")
	if value == "" {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxPolicyBody+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, "reading the request body: %v", err)
			return
		}
		if len(body) > maxPolicyBody {
			writeError(w, http.StatusBadRequest, "request body longer than %d bytes: send just the policy name (auto, defer or software)", maxPolicyBody)
			return
		}
		value = strings.TrimSpace(string(body))
		if strings.HasPrefix(value, "{") {
			var v struct {
				Policy string `json:"policy"`
			}
			if err := json.Unmarshal([]byte(value), &v); err != nil {
				writeError(w, http.StatusBadRequest, `body is not valid JSON (%v): send {"policy": "auto"}, the bare name, or ?policy=auto`, err)
				return
			}
			value = v.Policy
		}
	}
	if value == "" {
		writeError(w, http.StatusBadRequest, "no policy given: send auto, defer or software as the body or as ?policy=")
		return
	}
	pol, err := gso.ParsePolicy(value)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v (auto: the capability check decides per packet; defer: pass every super-packet whole; software: segment every super-packet in vhostd)", err)
		return
	}
	prev := p.Device.Policy()
	// The TX workers read the policy per packet: the next packet takes the
	// new path and no packet is lost.
	p.Device.SetPolicy(pol)
	s.log.Info("GSO policy switched", "port", p.Name(), "policy", pol.String(), "previous", prev.String())
	writeJSON(w, http.StatusOK, PolicyResult{Port: p.Name(), Policy: pol.String(), Previous: prev.String()})
}
