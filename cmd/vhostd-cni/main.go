// Command vhostd-cni is a CNI plugin (spec 1.0; 0.4.0 and 1.1.0 configs
// too) that gives a pod or a VM a vhost-user port on the node's vhostd: ADD
// asks vhostd over its control socket for a port whose socket is
// SOCKETDIR/POD_UID/IFNAME, DEL removes it, CHECK verifies it. The network
// configuration and the conventions are in internal/vhostdcni.
//
// Installed in /opt/cni/bin like any plugin; the runtime (containerd,
// CRI-O, Multus) runs it with CNI_COMMAND and the network configuration on
// stdin. One more use, for the DaemonSet's init container:
//
//	vhostd-cni install --cni-bin-dir /host/opt/cni/bin [--ports-file /run/vhostd/ports.conf]
//
// copies this binary into the CNI bin directory (atomically: a temporary
// file, then rename, so a runtime never runs a half-written plugin) and
// creates vhostd's ports file empty if it is missing (vhostd --config needs
// one). It needs no shell, so the image can be FROM scratch.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/vhostd/vhostd/internal/vhostdcni"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "install" && os.Getenv("CNI_COMMAND") == "" {
		if err := install(os.Args[2:], os.Stderr); err != nil {
			fmt.Fprintf(os.Stderr, "vhostd-cni install: %v\n", err)
			os.Exit(1)
		}
		return
	}
	skel.PluginMainFuncs(vhostdcni.Funcs(), vhostdcni.Versions,
		"CNI plugin vhostd-cni: vhost-user ports on the node's vhostd (vhostd-cni install --cni-bin-dir DIR to install it)")
}

func install(args []string, stderr io.Writer) error {
	set := flag.NewFlagSet("vhostd-cni install", flag.ContinueOnError)
	set.SetOutput(stderr)
	binDir := set.String("cni-bin-dir", "", "the node's CNI plugin directory, as mounted here (e.g. /host/opt/cni/bin)")
	portsFile := set.String("ports-file", "", "vhostd's --config file: created empty if missing")
	if err := set.Parse(args); err != nil {
		return err
	}
	if set.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", set.Arg(0))
	}
	if *binDir == "" && *portsFile == "" {
		return errors.New("give --cni-bin-dir DIR (and --ports-file FILE to create vhostd's ports file)")
	}
	if *binDir != "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		dst := filepath.Join(*binDir, "vhostd-cni")
		if err := copyAtomic(self, dst); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "vhostd-cni installed as %s\n", dst)
	}
	if *portsFile != "" {
		f, err := os.OpenFile(*portsFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		switch {
		case err == nil:
			if _, err := f.WriteString("# vhostd ports: written by vhostd port add and the vhostd-cni plugin\n"); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "created %s\n", *portsFile)
		case errors.Is(err, fs.ErrExist):
		default:
			return err
		}
	}
	return nil
}

// copyAtomic copies src to dst through a temporary file in dst's
// directory, mode 0755.
func copyAtomic(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".vhostd-cni-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
