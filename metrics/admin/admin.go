// Package admin is vhostd's admin HTTP API: Prometheus /metrics, GET
// /status, /debug/pprof, run-time GSO policy switching, pcap capture and
// port management, plus the client the `vhostd status|stats|policy|capture|
// port` subcommands use.
//
// The API is served on two kinds of listener:
//
//   - the control socket (a unix socket, ServeControl): every route, for
//     peers that pass the credentials check (root, the daemon's own user,
//     or members of a group the operator names);
//   - the TCP listener (--admin-addr, ServeReadOnly): only GET /metrics and
//     GET /status. Everything else answers 403 (405 for another method on
//     those two) with a message pointing to the control socket.
//
// Routes (all JSON unless noted):
//
//	GET    /metrics                      Prometheus text format (also on TCP)
//	GET    /status[?port=NAME]           metrics.Status (also on TCP)
//	GET    /debug/pprof/...              net/http/pprof
//	GET    /ports                        []PortInfo
//	PUT    /ports/{name}                 add a port: body is a portspec.Spec (JSON)
//	DELETE /ports/{name}                 remove a port
//	POST   /reload                       re-read the config file (as SIGHUP)
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

// DefaultAddr is where the read-only TCP listener (/metrics, /status)
// listens unless --admin-addr says otherwise.
const DefaultAddr = "127.0.0.1:9637"

// DefaultControlSocket is the control socket's default path.
const DefaultControlSocket = "/run/vhostd/control.sock"

// DefaultCaptureDir is where captures are written unless Config.CaptureDir
// (--capture-dir) says otherwise.
const DefaultCaptureDir = "/var/lib/vhostd/captures"

// Config configures a Server.
type Config struct {
	// Ports are the ports served from the start; AddPort and RemovePort
	// change the set later.
	Ports  []metrics.Port
	Logger *slog.Logger
	// CaptureDir is the only directory captures are written to (created
	// 0700 at the first capture); default DefaultCaptureDir.
	CaptureDir string
	// Registry receives the port collectors; nil means a new registry with
	// the Go runtime and process collectors too (process_cpu_seconds_total
	// is what A/B runs divide by bytes moved).
	Registry *prometheus.Registry
	// Control adds, removes and lists ports (the /ports and /reload
	// routes); nil answers those routes with 501.
	Control PortControl
	// ReadOnlyHint is appended to the 403 answers of the read-only
	// listener, e.g. "use the control socket /run/vhostd/control.sock".
	ReadOnlyHint string
}

// Server serves the admin API for a set of ports.
type Server struct {
	log        *slog.Logger
	reg        *prometheus.Registry
	mux        *http.ServeMux // every route (control socket)
	ro         *http.ServeMux // GET /metrics and GET /status only (TCP)
	metricsH   http.Handler
	captureDir string
	control    PortControl
	roHint     string

	pmu        sync.RWMutex
	ports      map[string]metrics.Port
	collectors map[string]*metrics.Collector
	order      []string

	mu       sync.Mutex
	captures map[string]*captureRun // running capture per port
	last     map[string]*CaptureResult
}

// New registers one collector per port and builds the routes.
func New(cfg Config) (*Server, error) {
	s := &Server{
		ports:      map[string]metrics.Port{},
		collectors: map[string]*metrics.Collector{},
		log:        cfg.Logger,
		reg:        cfg.Registry,
		captureDir: cfg.CaptureDir,
		control:    cfg.Control,
		roHint:     cfg.ReadOnlyHint,
		captures:   map[string]*captureRun{},
		last:       map[string]*CaptureResult{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.captureDir == "" {
		s.captureDir = DefaultCaptureDir
	}
	if s.roHint == "" {
		s.roHint = "use the control socket (vhostd SUBCOMMAND --control-socket PATH, default " + DefaultControlSocket + ") as root"
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	for _, p := range cfg.Ports {
		if err := s.AddPort(p); err != nil {
			return nil, err
		}
	}
	s.routes()
	return s, nil
}

// AddPort starts serving p's metrics, status, policy and capture routes.
func (s *Server) AddPort(p metrics.Port) error {
	name := p.Name()
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if _, dup := s.ports[name]; dup {
		return fmt.Errorf("admin: two ports are named %q; give each a distinct name", name)
	}
	c := metrics.NewCollector(p)
	if err := s.reg.Register(c); err != nil {
		return fmt.Errorf("admin: registering the metrics of port %q: %w", name, err)
	}
	s.ports[name] = p
	s.collectors[name] = c
	s.order = append(s.order, name)
	return nil
}

// RemovePort stops serving the port named name: its metrics leave
// /metrics, and a capture running on it ends ("cancelled"). It reports
// whether the port was there.
func (s *Server) RemovePort(name string) bool {
	s.pmu.Lock()
	_, ok := s.ports[name]
	if ok {
		s.reg.Unregister(s.collectors[name])
		delete(s.ports, name)
		delete(s.collectors, name)
		for i, n := range s.order {
			if n == name {
				s.order = append(s.order[:i:i], s.order[i+1:]...)
				break
			}
		}
	}
	s.pmu.Unlock()
	s.mu.Lock()
	if run := s.captures[name]; run != nil {
		run.stop()
	}
	delete(s.last, name)
	s.mu.Unlock()
	return ok
}

// CaptureDir is the directory captures are written to.
func (s *Server) CaptureDir() string { return s.captureDir }

// Handler returns the HTTP handler of the whole API (what the control
// socket serves, without the peer check).
func (s *Server) Handler() http.Handler { return s.mux }

// ReadOnlyHandler returns the handler of the TCP listener: GET /metrics and
// GET /status; 405 for other methods on those, 403 for everything else.
func (s *Server) ReadOnlyHandler() http.Handler { return s.ro }

func (s *Server) routes() {
	s.metricsH = promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		Registry: s.reg, // self-instrumentation: promhttp_metric_handler_*
	})
	m := http.NewServeMux()
	m.Handle("GET /metrics", s.metricsH)
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	m.HandleFunc("GET /status", s.handleStatus)
	m.HandleFunc("GET /ports", s.handleListPorts)
	m.HandleFunc("PUT /ports/{name}", s.handleAddPort)
	m.HandleFunc("DELETE /ports/{name}", s.handleRemovePort)
	m.HandleFunc("POST /reload", s.handleReload)
	m.HandleFunc("GET /ports/{name}/policy", s.handleGetPolicy)
	m.HandleFunc("PUT /ports/{name}/policy", s.handlePutPolicy)
	m.HandleFunc("PUT /ports/{name}/capture", s.handlePutCapture)
	m.HandleFunc("GET /ports/{name}/capture", s.handleGetCapture)
	m.HandleFunc("DELETE /ports/{name}/capture", s.handleDeleteCapture)
	m.HandleFunc("GET /{$}", s.handleIndex)
	s.mux = m

	ro := http.NewServeMux()
	ro.Handle("GET /metrics", s.metricsH)
	ro.HandleFunc("GET /status", s.handleStatus)
	ro.HandleFunc("GET /{$}", s.handleReadOnlyIndex)
	readOnlyMethod := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "%s %s: this listener is read-only (GET /metrics and GET /status); to change anything, %s", r.Method, r.URL.Path, s.roHint)
	}
	ro.HandleFunc("/metrics", readOnlyMethod)
	ro.HandleFunc("/status", readOnlyMethod)
	ro.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "%s %s is not served on the read-only TCP listener (--admin-addr serves only GET /metrics and GET /status): %s", r.Method, r.URL.Path, s.roHint)
	})
	s.ro = ro
}

// Listen opens the read-only TCP listener with an error that says what to
// do.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		hint := "check --admin-addr"
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = "another vhostd (or another program) uses it: give this one its own --admin-addr, or --admin-addr '' to turn the TCP listener off"
		}
		return nil, fmt.Errorf("admin API: cannot listen on %s: %w; %s", addr, err, hint)
	}
	return ln, nil
}

// ServeReadOnly answers GET /metrics and GET /status on ln (the TCP
// listener) until ctx is cancelled.
func (s *Server) ServeReadOnly(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, ln, s.ro, nil)
}

// serve answers on ln until ctx is cancelled. Requests in flight (a long
// capture) see ctx end too, so shutdown does not wait for them.
func (s *Server) serve(ctx context.Context, ln net.Listener, h http.Handler, connContext func(context.Context, net.Conn) context.Context) error {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       connContext,
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

// readBody reads a request body of at most limit bytes. A longer one is
// answered with tooLongCode and the message tooLong; ok is false when the
// request has been answered.
func readBody(w http.ResponseWriter, r *http.Request, limit, tooLongCode int, tooLong string) (body []byte, ok bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the request body: %v", err)
		return nil, false
	}
	if len(body) > limit {
		writeError(w, tooLongCode, "%s", tooLong)
		return nil, false
	}
	return body, true
}

// port finds the port named in the path, or answers 404.
func (s *Server) port(w http.ResponseWriter, name string) (metrics.Port, bool) {
	s.pmu.RLock()
	p, ok := s.ports[name]
	s.pmu.RUnlock()
	if !ok {
		writeError(w, http.StatusNotFound, "no port %q: this vhostd serves %s", name, s.portList())
	}
	return p, ok
}

// snapshotPorts returns the ports in the order they were added.
func (s *Server) snapshotPorts() []metrics.Port {
	s.pmu.RLock()
	defer s.pmu.RUnlock()
	out := make([]metrics.Port, 0, len(s.order))
	for _, name := range s.order {
		out = append(out, s.ports[name])
	}
	return out
}

func (s *Server) portList() string {
	s.pmu.RLock()
	names := append([]string(nil), s.order...)
	s.pmu.RUnlock()
	if len(names) == 0 {
		return "no ports"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, `vhostd control API (ports: %s)

GET    /metrics                          Prometheus metrics
GET    /status[?port=NAME]               ports, features, backend limits, rings, counters, diagnosis (JSON)
GET    /ports                            the ports: spec, source (flags, config, runtime), state
PUT    /ports/NAME                       add a port (JSON body: {"socket": "/run/vhostd/NAME.sock", "tap": "vtap0", ...})
DELETE /ports/NAME                       remove a port (the others keep running)
POST   /reload                           re-read the config file (as SIGHUP)
GET    /ports/NAME/policy                current GSO policy
PUT    /ports/NAME/policy?policy=P       switch the GSO policy: auto, defer or software
PUT    /ports/NAME/capture?dir=D&count=N capture to pcap under the capture directory: dir tx|rx|both; optional snaplen, file (a plain name), format=pcap|pcapng, timeout
GET    /ports/NAME/capture               progress of the running capture, or the last result
DELETE /ports/NAME/capture               end the running capture early
GET    /debug/pprof/                     Go profiles
`, s.portList())
}

func (s *Server) handleReadOnlyIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, `vhostd read-only API (ports: %s)

GET    /metrics                          Prometheus metrics
GET    /status[?port=NAME]               ports, features, backend limits, rings, counters, diagnosis (JSON)

Policy switching, captures, port changes and profiles are on the control socket: %s.
`, s.portList(), s.roHint)
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
		ports = s.snapshotPorts()
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
		body, ok := readBody(w, r, maxPolicyBody, http.StatusBadRequest,
			fmt.Sprintf("request body longer than %d bytes: send just the policy name (auto, defer or software)", maxPolicyBody))
		if !ok {
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
