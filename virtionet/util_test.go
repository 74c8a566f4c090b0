package virtionet_test

import (
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/gso"
)

func parsePolicy(s string) (gso.Policy, error) { return gso.ParsePolicy(s) }

// unixSocketpair returns two connected unix stream sockets.
func unixSocketpair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	conv := func(fd int) (*net.UnixConn, error) {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}
	a, err := conv(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	b, err := conv(fds[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

type gsoPolicy = gso.Policy
