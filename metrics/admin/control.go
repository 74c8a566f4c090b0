package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/internal/unixsock"
)

// PortControl adds, removes and lists a daemon's ports; the control API's
// /ports and /reload routes call it. Errors may be *Error to choose the
// HTTP status (default 500).
type PortControl interface {
	Ports() []PortInfo
	AddPort(ctx context.Context, spec portspec.Spec) (PortInfo, error)
	RemovePort(ctx context.Context, name string) (PortChange, error)
	Reload(ctx context.Context) (ReloadResult, error)
}

// PortInfo describes one port of a running daemon (GET /ports).
type PortInfo struct {
	Name    string `json:"name"`
	Spec    string `json:"spec"` // the port in --port / config file syntax
	Socket  string `json:"socket,omitempty"`
	FD      int    `json:"fd,omitempty"` // inherited listening socket (--fd, systemd), 0: none
	Client  bool   `json:"client,omitempty"`
	Backend string `json:"backend"` // tap, macvtap, null or peer
	Queues  int    `json:"queues"`
	// Source is where the port came from: "flags" (--port or the
	// single-port flags), "config" (the config file) or "runtime" (vhostd
	// port add without a config file: gone after a restart).
	Source string `json:"source"`
	// Persistent: a restart recreates the port (it is in the config file).
	Persistent bool `json:"persistent"`
	// State is "running", or "failed" with Error saying why (a config
	// file port that could not start; the next reload tries again).
	State     string `json:"state"`
	Error     string `json:"error,omitempty"`
	Connected bool   `json:"connected"`
}

// PortChange is the answer of PUT and DELETE /ports/{name}.
type PortChange struct {
	Port   PortInfo `json:"port"`
	Action string   `json:"action"` // added or removed
	// Config is the config file the change was written to, "" when the
	// daemon runs without one (the change lasts until a restart).
	Config string `json:"config,omitempty"`
}

// ReloadResult is the answer of POST /reload.
type ReloadResult struct {
	Config    string            `json:"config"`
	Added     []string          `json:"added"`
	Removed   []string          `json:"removed"`
	Changed   []string          `json:"changed"` // restarted with their new spec
	Unchanged []string          `json:"unchanged"`
	Failed    map[string]string `json:"failed,omitempty"` // port -> error
}

// Error is an API error with its HTTP status.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Errorf returns an *Error with the given status.
func Errorf(code int, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var ae *Error
	var pe *portspec.Error
	switch {
	case errors.As(err, &ae):
		code = ae.Code
	case errors.As(err, &pe):
		code = http.StatusBadRequest
	}
	writeError(w, code, "%v", err)
}

func (s *Server) noControl(w http.ResponseWriter) bool {
	if s.control == nil {
		writeError(w, http.StatusNotImplemented, "this vhostd cannot change its ports at run time")
		return true
	}
	return false
}

func (s *Server) handleListPorts(w http.ResponseWriter, r *http.Request) {
	if s.noControl(w) {
		return
	}
	ports := s.control.Ports()
	if ports == nil {
		ports = []PortInfo{}
	}
	writeJSON(w, http.StatusOK, ports)
}

// maxSpecBody bounds a PUT /ports/{name} body.
const maxSpecBody = 16 << 10

func (s *Server) handleAddPort(w http.ResponseWriter, r *http.Request) {
	if s.noControl(w) {
		return
	}
	name := r.PathValue("name")
	body, ok := readBody(w, r, maxSpecBody, http.StatusRequestEntityTooLarge, fmt.Sprintf("port spec longer than %d bytes", maxSpecBody))
	if !ok {
		return
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		writeError(w, http.StatusBadRequest, `no port spec: send a JSON object such as {"socket": "/run/vhostd/%s.sock", "tap": "vtap0"}`, name)
		return
	}
	// The name comes from the path; a body may repeat it.
	spec, err := portspec.DecodeJSON(withName(body, name))
	if err != nil {
		writeErr(w, err)
		return
	}
	if spec.Name != name {
		writeError(w, http.StatusBadRequest, "the body names port %q but the path names %q: they must agree", spec.Name, name)
		return
	}
	if err := spec.CheckSocketAbsolute(); err != nil {
		writeError(w, http.StatusBadRequest, "%v (vhostd port add makes a relative path absolute for you)", err)
		return
	}
	info, err := s.control.AddPort(r.Context(), spec)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, info)
}

// withName fills in "name" when the JSON body leaves it out.
func withName(body []byte, name string) []byte {
	var probe map[string]any
	if err := json.Unmarshal(body, &probe); err != nil || probe == nil {
		return body // DecodeJSON reports the error
	}
	if _, ok := probe["name"]; ok {
		return body
	}
	b := strings.TrimSpace(string(body))
	nameJSON, _ := json.Marshal(name)
	if b == "{}" {
		return []byte(`{"name":` + string(nameJSON) + `}`)
	}
	return []byte(`{"name":` + string(nameJSON) + `,` + strings.TrimPrefix(b, "{"))
}

func (s *Server) handleRemovePort(w http.ResponseWriter, r *http.Request) {
	if s.noControl(w) {
		return
	}
	res, err := s.control.RemovePort(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if s.noControl(w) {
		return
	}
	res, err := s.control.Reload(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// --- the control socket ---

// PeerCred is who is on the other end of a control socket connection
// (SO_PEERCRED, SO_PEERGROUPS).
type PeerCred struct {
	PID    int32
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups; nil if the kernel does not say
}

// PeerCheck decides whether a peer may use the control socket; the error
// is sent to it.
type PeerCheck func(PeerCred) error

// AllowPeers returns the default check: root, the daemon's own uid, and, if
// hasGroup, members of group gid (primary or supplementary).
func AllowPeers(gid int, hasGroup bool) PeerCheck {
	self := uint32(os.Geteuid())
	return func(c PeerCred) error {
		if c.UID == 0 || c.UID == self {
			return nil
		}
		if hasGroup {
			if c.GID == uint32(gid) {
				return nil
			}
			for _, g := range c.Groups {
				if g == uint32(gid) {
					return nil
				}
			}
		}
		who := fmt.Sprintf("uid %d (pid %d)", c.UID, c.PID)
		if hasGroup {
			return fmt.Errorf("%s may not use the vhostd control socket: it is for root, uid %d and members of group %d; run the command with sudo, or add the user to group %d", who, self, gid, gid)
		}
		return fmt.Errorf("%s may not use the vhostd control socket: it is for root and uid %d; run the command with sudo, or start vhostd with --control-group GROUP and add the user to it (read-only /metrics and /status stay on --admin-addr)", who, self)
	}
}

type credKey struct{}

type credResult struct {
	cred PeerCred
	err  error
}

// peerCred reads the credentials of a unix socket peer.
func peerCred(c net.Conn) (PeerCred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return PeerCred{}, fmt.Errorf("not a unix socket connection (%T)", c)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return PeerCred{}, err
	}
	var cred PeerCred
	var serr error
	err = rc.Control(func(fd uintptr) {
		u, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			serr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		cred = PeerCred{PID: u.Pid, UID: u.Uid, GID: u.Gid}
		cred.Groups, _ = peerGroups(int(fd)) // Linux >= 4.13; the primary gid still counts without it
	})
	if err == nil {
		err = serr
	}
	return cred, err
}

// peerGroups reads SO_PEERGROUPS.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for tries := 0; tries < 4; tries++ {
		l := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
		switch e {
		case 0:
			return buf[:l/4], nil
		case unix.ERANGE:
			buf = make([]uint32, l/4+1)
			continue
		default:
			return nil, e
		}
	}
	return nil, unix.ERANGE
}

// ServeControl answers the whole API on ln (the control socket) until ctx
// is cancelled, to peers that check lets through; others get 403 with
// check's message. Every refusal is logged.
func (s *Server) ServeControl(ctx context.Context, ln net.Listener, check PeerCheck) error {
	if check == nil {
		check = AllowPeers(0, false)
	}
	connCtx := func(ctx context.Context, c net.Conn) context.Context {
		cred, err := peerCred(c)
		return context.WithValue(ctx, credKey{}, credResult{cred, err})
	}
	guard := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cr, _ := r.Context().Value(credKey{}).(credResult)
		err := cr.err
		if err == nil {
			err = check(cr.cred)
		} else {
			err = fmt.Errorf("cannot tell who is connecting (%v): refused", err)
		}
		if err != nil {
			s.log.Warn("control socket: request refused", "method", r.Method, "path", r.URL.Path,
				"uid", cr.cred.UID, "gid", cr.cred.GID, "pid", cr.cred.PID, "err", err)
			writeError(w, http.StatusForbidden, "%v", err)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			// Who changed what: every change is logged with its caller.
			s.log.Info("control request", "method", r.Method, "path", r.URL.Path, "uid", cr.cred.UID, "pid", cr.cred.PID)
		}
		s.mux.ServeHTTP(w, r)
	})
	return s.serve(ctx, ln, guard, connCtx)
}

// ControlSocketOptions are the control socket's permissions.
type ControlSocketOptions struct {
	Group    int  // group to own the socket (mode 0660), if SetGroup
	SetGroup bool // otherwise the socket is 0600
}

// ListenControl creates the control socket at path: its directory is
// created (0755) if missing, a stale socket from a previous run is replaced,
// a live one (another vhostd) is an error. The socket is bound under a
// umask that keeps it owner-only until its final mode (0600, or 0660 with a
// group) is set. Closing the listener removes the socket.
func ListenControl(path string, o ControlSocketOptions) (*net.UnixListener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("--control-socket %s: give an absolute path", path)
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("control socket: creating %s: %w", dir, err)
		}
	}
	mode := os.FileMode(0o600)
	if o.SetGroup {
		mode = 0o660
	}
	return unixsock.Listen(path, unixsock.Options{
		Mode: mode, Group: o.Group, SetGroup: o.SetGroup,
		What: "control socket", Flag: "--control-socket",
		InUse: ": another vhostd runs with it; give this one its own --control-socket PATH (or --control-socket '' for none)",
	})
}
