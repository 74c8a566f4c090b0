// Package unixsock creates the listening unix sockets vhostd serves on (the
// vhost-user sockets and the control socket) the one careful way: a stale
// socket file left by a previous run is replaced, a live one or a file that
// is not a socket is an error, and the socket is never reachable by others
// between bind and its final owner and mode.
package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"
)

// Options are the socket's permissions and how errors name it.
type Options struct {
	Mode     os.FileMode // final mode
	Group    int         // group to own the socket, if SetGroup
	SetGroup bool

	What  string // prefix of every error, e.g. "vhost-user"
	Flag  string // the option that chooses the path, for advice, e.g. "--socket-path"
	InUse string // the advice after "PATH is in use" when something accepts on it
}

// Listen creates the socket at path. Closing the listener removes the
// socket file.
func Listen(path string, o Options) (*net.UnixListener, error) {
	if err := removeStale(path, o); err != nil {
		return nil, err
	}
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("%s: listening on %s: %w", o.What, path, err)
	}
	ln.SetUnlinkOnClose(true)
	if o.SetGroup {
		if err := os.Chown(path, -1, o.Group); err != nil {
			ln.Close()
			return nil, fmt.Errorf("%s: giving %s to group %d: %w", o.What, path, o.Group, err)
		}
	}
	if err := os.Chmod(path, o.Mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s: setting mode %v on %s: %w", o.What, o.Mode, path, err)
	}
	return ln, nil
}

// removeStale removes path if it is a unix socket nobody accepts on.
func removeStale(path string, o Options) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: checking %s: %w", o.What, path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s: %s exists and is not a socket; refusing to replace it (remove it or choose another %s)", o.What, path, o.Flag)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %s is in use%s", o.What, path, o.InUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: probing existing socket %s: %w", o.What, path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: removing stale socket %s: %w", o.What, path, err)
	}
	return nil
}
