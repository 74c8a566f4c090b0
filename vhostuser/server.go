package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/vhostd/vhostd/internal/unixsock"
)

// SocketMode is the default permission of a socket created by Listen: only
// its owner may connect. Whoever can connect can hand vhostd guest memory and
// drive its backend, so wider access is opt-in (ListenOptions.Mode and
// Group; libvirt, which runs QEMU as its own user, needs 0660 and a shared
// group).
const SocketMode fs.FileMode = 0o600

// ListenOptions are the socket file's permissions.
type ListenOptions struct {
	Mode     fs.FileMode // 0: SocketMode
	Group    int         // group id to give the socket, if SetGroup
	SetGroup bool        // Group is meant (group 0 is a valid group)
}

// Dial retry interval bounds (client mode).
const (
	dialRetryMin = 100 * time.Millisecond
	dialRetryMax = time.Second
)

// Server accepts front-end connections and runs one Session at a time:
// vhost-user is one front-end per back-end socket. It listens on a socket
// path (QEMU is the client), uses an inherited listening socket (--fd), or
// dials a front-end that listens (QEMU server=on, --client).
type Server struct {
	log      *slog.Logger
	ln       *net.UnixListener // nil in client mode
	dialPath string            // client mode

	mu      sync.Mutex
	current *Session

	counts MessageCounts // over all sessions
}

// MessageCounts reports how many messages of each request the server's
// sessions received, over the server's life ("UNKNOWN" for ids this
// back-end does not know).
func (srv *Server) MessageCounts(fn func(req string, n uint64)) { srv.counts.Each(fn) }

// Listen creates the socket at socketPath. A stale socket file left by a
// previous run is removed; a live one (something accepts on it) or a file
// that is not a socket is an error. Close removes the socket file.
func Listen(socketPath string, log *slog.Logger) (*Server, error) {
	return ListenWith(socketPath, ListenOptions{}, log)
}

// ListenWith is Listen with the socket's mode and group chosen. The socket
// is bound with a umask that leaves it owner-only, so it is never reachable
// by others between bind and chmod.
func ListenWith(socketPath string, o ListenOptions, log *slog.Logger) (*Server, error) {
	mode := o.Mode
	if mode == 0 {
		mode = SocketMode
	}
	ln, err := unixsock.Listen(socketPath, unixsock.Options{
		Mode: mode, Group: o.Group, SetGroup: o.SetGroup,
		What: "vhost-user", Flag: "--socket-path",
		InUse: " by a running process; stop it or choose another --socket-path",
	})
	if err != nil {
		return nil, err
	}
	return &Server{log: orDefault(log).With("socket", socketPath), ln: ln}, nil
}

// FromFD uses an inherited listening unix socket (--fd N, vhost-user.rst
// "Backend program conventions"). It takes ownership of fd: the listener
// works on a duplicate and fd itself is closed, also on error. The socket
// file, if any, is not removed on Close: whoever created it owns it.
func FromFD(fd int, log *slog.Logger) (*Server, error) {
	f := os.NewFile(uintptr(fd), fmt.Sprintf("vhost-user-listener-fd%d", fd))
	if f == nil {
		return nil, fmt.Errorf("vhost-user: --fd %d is not a valid file descriptor", fd)
	}
	defer f.Close() // FileListener dups it
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("vhost-user: --fd %d is not a listening socket: %w", fd, err)
	}
	ln, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("vhost-user: --fd %d is a %s socket, want a unix stream socket", fd, l.Addr().Network())
	}
	ln.SetUnlinkOnClose(false)
	return &Server{log: orDefault(log).With("fd", fd), ln: ln}, nil
}

// Dial returns a client-mode server: Serve connects to socketPath, retrying
// every 100ms..1s until the front-end listens, and dials again after each
// session ends.
func Dial(socketPath string, log *slog.Logger) *Server {
	return &Server{log: orDefault(log).With("socket", socketPath, "mode", "client"), dialPath: socketPath}
}

func orDefault(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.Default()
	}
	return log
}

// Close stops accepting and removes a socket file created by Listen. It does
// not end a running session; cancel Serve's context for that.
func (srv *Server) Close() error {
	if srv.ln == nil {
		return nil
	}
	if err := srv.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// Session returns the running session, or nil.
func (srv *Server) Session() *Session {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.current
}

// Serve runs sessions until ctx is cancelled, each with a device from
// newDevice (to serve a single device, return the same one each time; the
// session resets it on disconnect). It returns nil after cancellation, once
// the running session has cleaned up, and closes the listener.
func (srv *Server) Serve(ctx context.Context, newDevice func() Device) error {
	if srv.ln == nil {
		return srv.serveClient(ctx, newDevice)
	}
	defer srv.ln.Close()

	conns := make(chan *net.UnixConn)
	acceptErr := make(chan error, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := srv.ln.AcceptUnix()
			if err != nil {
				acceptErr <- err
				return
			}
			select {
			case conns <- c:
			case <-stop:
				c.Close()
				return
			}
		}
	}()
	defer func() {
		close(stop)
		srv.ln.Close() // unblocks Accept
		wg.Wait()
	}()

	var sessionDone chan struct{}
	for {
		select {
		case <-ctx.Done():
			if sessionDone != nil {
				<-sessionDone // the session sees ctx too and cleans up
				srv.setCurrent(nil)
			}
			return nil
		case err := <-acceptErr:
			if sessionDone != nil {
				<-sessionDone
				srv.setCurrent(nil)
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("vhost-user: accept: %w", err)
		case <-sessionDone:
			sessionDone = nil
			srv.setCurrent(nil)
		case c := <-conns:
			// The previous session may have ended at the same moment:
			// select picks among ready cases at random, so look before
			// refusing.
			if sessionDone != nil {
				select {
				case <-sessionDone:
					sessionDone = nil
					srv.setCurrent(nil)
				default:
				}
			}
			if sessionDone != nil {
				srv.log.Warn("refusing a second vhost-user connection: a front-end is already attached (vhost-user is one front-end per socket)")
				c.Close()
				continue
			}
			sessionDone = make(chan struct{})
			go func(done chan struct{}) {
				defer close(done)
				srv.runSession(ctx, c, newDevice())
			}(sessionDone)
		}
	}
}

// serveClient dials the front-end, runs a session, and dials again.
func (srv *Server) serveClient(ctx context.Context, newDevice func() Device) error {
	for {
		c, err := srv.dial(ctx)
		if err != nil {
			return nil // ctx cancelled
		}
		srv.runSession(ctx, c, newDevice())
		srv.setCurrent(nil)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// dial connects to srv.dialPath, retrying with a growing interval.
func (srv *Server) dial(ctx context.Context) (*net.UnixConn, error) {
	wait := dialRetryMin
	logged := false
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", srv.dialPath)
		if err == nil {
			srv.log.Info("connected to vhost-user front-end")
			return c.(*net.UnixConn), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !logged {
			srv.log.Info("waiting for the vhost-user front-end to listen", "err", err)
			logged = true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, dialRetryMax)
	}
}

func (srv *Server) setCurrent(s *Session) {
	srv.mu.Lock()
	srv.current = s
	srv.mu.Unlock()
}

func (srv *Server) runSession(ctx context.Context, c *net.UnixConn, dev Device) {
	s, err := NewSession(c, dev, srv.log)
	if err != nil {
		srv.log.Error("cannot serve the front-end", "err", err)
		c.Close()
		return
	}
	s.counts = &srv.counts
	srv.mu.Lock()
	srv.current = s
	srv.mu.Unlock()
	srv.log.Info("vhost-user front-end connected")
	err = s.Serve(ctx)
	// The caller clears srv.current: the listening loop does it only once
	// it has seen the session end, so that Session() == nil means a new
	// front-end is accepted, not refused as a second one.
	if err != nil && !errors.Is(err, context.Canceled) {
		srv.log.Error("vhost-user session ended", "err", err)
	} else {
		srv.log.Info("vhost-user session ended")
	}
}
