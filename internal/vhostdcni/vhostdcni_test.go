package vhostdcni

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vhostd/vhostd/internal/portspec"
)

func TestNames(t *testing.T) {
	ids := []string{
		"4f2a58363efa0b9661a78caac3d835511385e7c25cffe37e1edb0123456789ab",
		"4f2a58363efa0b9661a78caac3d835511385e7c25cffe37e1edb0123456789ac", // same first 12
		"dummy", "a", "Z.b_c-d", strings.Repeat("x", 200),
	}
	ifs := []string{"net1", "net2", "eth0", "a", "vhu@x", "if.with.dots", "123456789012345", "é"}
	seenPort := map[string]string{}
	seenIf := map[string]string{}
	for _, id := range ids {
		for _, ifn := range ifs {
			pair := id + "/" + ifn
			p := PortName(id, ifn)
			if err := portspec.CheckName(p); err != nil {
				t.Errorf("PortName(%q, %q) = %q: %v", id, ifn, p, err)
			}
			if p != PortName(id, ifn) {
				t.Errorf("PortName(%q, %q) is not deterministic", id, ifn)
			}
			if other, dup := seenPort[p]; dup {
				t.Errorf("PortName %q for both %s and %s", p, other, pair)
			}
			seenPort[p] = pair
			for _, kind := range []string{BackendTap, BackendMacvtap} {
				b := BackendIfName(kind, id, ifn)
				s := portspec.Spec{Name: "x", Socket: "/x"}
				if kind == BackendTap {
					s.Tap = b
				} else {
					s.Macvtap = b
				}
				if len(b) != 15 || s.Validate() != nil {
					t.Errorf("BackendIfName(%s, %q, %q) = %q: want a valid 15-character interface name (%v)", kind, id, ifn, b, s.Validate())
				}
				if other, dup := seenIf[b]; dup {
					t.Errorf("BackendIfName %q for both %s and %s", b, other, pair)
				}
				seenIf[b] = pair
			}
		}
	}
	if got := PortName(ids[0], "net1"); !strings.HasPrefix(got, "4f2a58363efa-net1-") || len(got) != 26 {
		t.Errorf("PortName = %q, want 4f2a58363efa-net1-XXXXXXXX", got)
	}
}

func TestParseConfDefaults(t *testing.T) {
	c, err := ParseConf([]byte(`{"cniVersion": "1.0.0", "name": "n", "type": "vhostd-cni", "backend": {"type": "null"},
		"args": {"cni": {"x": 1}}, "runtimeConfig": {"mac": "52:54:00:12:34:56", "portMappings": []}, "dns": {"nameservers": ["10.0.0.1"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.ControlSocket != DefaultControlSocket || c.SocketDir != DefaultSocketDir || c.Mode != ModeServer {
		t.Errorf("defaults: %+v", c)
	}
	for _, bad := range []string{
		`[]`,
		`{"name": "n", "backend": {"type": "macvtap", "lower": "eth0", "mode": "bridged"}}`,
		`{"name": "n", "backend": {"type": "macvtap", "lower": "eth/0"}}`,
		`{"name": "n", "backend": {"type": "tap", "lower": "eth0"}}`,
		`{"name": "n", "backend": {"type": "macvtap", "lower": "eth0"}, "runtimeConfig": {"mac": "01:00:00:00:00:01"}}`,
		`{"name": "n", "backend": {"type": "null"}, "controlSocket": "control.sock"}`,
	} {
		_, err := ParseConf([]byte(bad))
		var te *types.Error
		if !errors.As(err, &te) || (te.Code != types.ErrInvalidNetworkConfig && te.Code != types.ErrDecodingFailure) {
			t.Errorf("ParseConf(%s) = %v, want a code 6 or 7 error", bad, err)
		}
	}
}

// TestResultChained: with a prevResult (the plugin chained after another)
// the result keeps it and adds the interface.
func TestResultChained(t *testing.T) {
	conf := `{"cniVersion": "1.0.0", "name": "n", "type": "vhostd-cni", "socketDir": "/run/vhostd/pods", "backend": {"type": "null"},
		"prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth9", "sandbox": "/ns"}], "ips": [{"address": "10.1.0.2/24", "interface": 0}]}}`
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "net1", Netns: "/ns", Args: "K8S_POD_UID=u1", StdinData: []byte(conf)}
	p, err := newPlan(args)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.result(args)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	if len(res.Interfaces) != 2 || res.Interfaces[0].Name != "eth9" || len(res.IPs) != 1 ||
		res.Interfaces[1].SocketPath != "/run/vhostd/pods/u1/net1" {
		t.Errorf("chained result %s", b)
	}
	if _, err := current.NewResultFromResult(res); err != nil {
		t.Error(err)
	}
}

func TestPodUIDFromArgs(t *testing.T) {
	for args, want := range map[string]string{
		"":                                    "cid",
		"IgnoreUnknown=1;K8S_POD_NAME=x":      "cid",
		"K8S_POD_UID=174eecc3-58fa-42d1-8501": "174eecc3-58fa-42d1-8501",
	} {
		a, err := newAttachment(&skel.CmdArgs{ContainerID: "cid", IfName: "net1", Args: args})
		if err != nil || a.podDirName() != want {
			t.Errorf("CNI_ARGS %q: dir %q (%v), want %q", args, a.podDirName(), err, want)
		}
	}
	for _, bad := range []string{"K8S_POD_UID=../x", "K8S_POD_UID=a/b", "K8S_POD_UID=..", fmt.Sprintf("K8S_POD_UID=%s", strings.Repeat("a", 65))} {
		if _, err := newAttachment(&skel.CmdArgs{ContainerID: "cid", IfName: "net1", Args: bad}); err == nil {
			t.Errorf("CNI_ARGS %q accepted", bad)
		}
	}
}
