package vhostdcni

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vhostd/vhostd/internal/portspec"
)

// maxSocketPath is the longest unix socket path (sun_path is 108 bytes with
// its terminating NUL).
const maxSocketPath = 107

// attachment identifies one interface of one container on this network:
// the names derived from it are the same on ADD, CHECK and DEL.
type attachment struct {
	containerID string
	ifName      string
	podUID      string // "" when the runtime passed none
}

// hash is a short digest of the (container ID, interface) pair, so two
// attachments never share a port, tap or macvtap name.
func (a attachment) hash() string {
	h := sha256.Sum256([]byte(a.containerID + "\x00" + a.ifName))
	return hex.EncodeToString(h[:])
}

// PortName is the vhostd port of an attachment: the first 12 characters of
// the container ID (what crictl and docker show), the interface name and 8
// hex digits of the pair's hash, e.g. 4f2a58363efa-net1-1c9e03b2. It follows
// the port-name rules (1..64 of letters, digits, '.', '_', '-', starting
// with a letter or digit): any other character becomes '_'.
func PortName(containerID, ifName string) string {
	a := attachment{containerID: containerID, ifName: ifName}
	id := sanitize(containerID)
	if len(id) > 12 {
		id = id[:12]
	}
	if id == "" || id[0] == '.' || id[0] == '-' || id[0] == '_' {
		id = "c" + id
	}
	return id + "-" + sanitize(ifName) + "-" + a.hash()[:8]
}

// BackendIfName is the tap or macvtap of an attachment (15 characters:
// IFNAMSIZ): "vdt" or "vdm" and 12 hex digits of the pair's hash.
func BackendIfName(kind, containerID, ifName string) string {
	p := "vdt"
	if kind == BackendMacvtap {
		p = "vdm"
	}
	return p + attachment{containerID: containerID, ifName: ifName}.hash()[:12]
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// podDirName is the per-pod directory's name: the pod UID, or the
// container ID without one.
func (a attachment) podDirName() string {
	if a.podUID != "" {
		return a.podUID
	}
	return a.containerID
}

// SocketPath is where the attachment's vhost-user socket lives.
func SocketPath(socketDir, podDir, ifName string) string {
	return filepath.Join(socketDir, podDir, ifName)
}

// checkPodUID accepts a Kubernetes UID (a UUID) or any plain name.
func checkPodUID(uid string) error {
	if !(len(uid) <= 64 && portspec.PlainName(uid) && uid != "." && uid != "..") {
		return fmt.Errorf("K8S_POD_UID %q is not a pod UID (letters, digits, '-', '.', '_', at most 64)", uid)
	}
	return nil
}
