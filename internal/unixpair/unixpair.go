// Package unixpair makes connected unix stream socket pairs, for tests that
// run a vhost-user session and a front-end in one process over a real socket
// with real fd passing.
package unixpair

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// New returns two connected unix stream sockets.
func New() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	a, err := conn(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	b, err := conn(fds[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// conn wraps fd (taking ownership) as a *net.UnixConn.
func conn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "socketpair")
	defer f.Close() // FileConn dups the fd
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
