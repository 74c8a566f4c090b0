package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Socket activation (sd_listen_fds) and readiness notification (sd_notify),
// in a few lines instead of a dependency.

// listenFDsStart is SD_LISTEN_FDS_START: the first passed fd.
const listenFDsStart = 3

// inheritedSocket is a listening socket systemd passed to vhostd.
type inheritedSocket struct {
	fd   int
	name string // FileDescriptorName= (LISTEN_FDNAMES), "" if not given
	path string // the unix socket path it is bound to, "" if none
	used bool   // a port or the control socket took it
}

// systemdSockets returns the sockets passed with LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES (none if LISTEN_PID is not this process) and unsets the
// variables, as sd_listen_fds(unset_environment=1) does. Each fd is marked
// close-on-exec.
func systemdSockets() ([]*inheritedSocket, error) {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	pidStr, nStr := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pidStr == "" || nStr == "" {
		return nil, nil
	}
	if pid, err := strconv.Atoi(pidStr); err != nil || pid != os.Getpid() {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 0 || n > 1024 {
		return nil, fmt.Errorf("LISTEN_FDS=%q: not a count of file descriptors", nStr)
	}
	var names []string
	if v := os.Getenv("LISTEN_FDNAMES"); v != "" {
		names = strings.Split(v, ":")
	}
	out := make([]*inheritedSocket, 0, n)
	for i := 0; i < n; i++ {
		fd := listenFDsStart + i
		unix.CloseOnExec(fd)
		s := &inheritedSocket{fd: fd}
		if i < len(names) && names[i] != "unknown" {
			s.name = names[i]
		}
		if sa, err := unix.Getsockname(fd); err == nil {
			if ua, ok := sa.(*unix.SockaddrUnix); ok {
				s.path = ua.Name
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// dupFD returns a close-on-exec duplicate of the socket, for a user that
// closes what it is given (a port can be removed and added again).
func (s *inheritedSocket) dupFD() (int, error) {
	fd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, listenFDsStart)
	if err != nil {
		return -1, fmt.Errorf("duplicating inherited socket fd %d: %w", s.fd, err)
	}
	return fd, nil
}

// listener returns a net.Listener on a duplicate of the socket; closing it
// does not remove the socket file (systemd owns it).
func (s *inheritedSocket) listener() (*net.UnixListener, error) {
	fd, err := s.dupFD()
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "inherited-"+s.name)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited socket fd %d (%s): not a listening socket: %w", s.fd, s.describe(), err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("inherited socket fd %d (%s) is a %s socket, want a unix stream socket", s.fd, s.describe(), l.Addr().Network())
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

func (s *inheritedSocket) describe() string {
	switch {
	case s.name != "" && s.path != "":
		return s.name + " " + s.path
	case s.path != "":
		return s.path
	case s.name != "":
		return s.name
	}
	return "unnamed"
}

// findInherited returns the inherited socket named name, else the one
// bound to path.
func findInherited(socks []*inheritedSocket, name, path string) *inheritedSocket {
	for _, s := range socks {
		if name != "" && s.name == name {
			return s
		}
	}
	for _, s := range socks {
		if path != "" && s.path == path {
			return s
		}
	}
	return nil
}

// sdNotify sends state (e.g. "READY=1") to the service manager when
// NOTIFY_SOCKET is set; otherwise it does nothing.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	// A leading '@' is an abstract socket; Go's net package maps it.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// monotonicUsec is CLOCK_MONOTONIC in µs, for RELOADING=1's MONOTONIC_USEC.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano() / int64(time.Microsecond)
}
