package main

import (
	"io"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/internal/portspec"
	"github.com/vhostd/vhostd/virtionet/portlink"
)

func TestPortFlags(t *testing.T) {
	o, err := parseFlags([]string{"--port", "name=a,socket=/tmp/a.sock", "--port", "name=b,socket=/tmp/b.sock,client"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.ports) != 2 || o.ports[0].Kind() != "peer" || !o.ports[1].Client || o.ports[1].Socket != "/tmp/b.sock" {
		t.Errorf("ports %+v", o.ports)
	}
	// client=false means false (it used to turn client mode on).
	o, err = parseFlags([]string{"--port", "name=a,socket=/tmp/a.sock,client=false,null"}, io.Discard)
	if err != nil || o.ports[0].Client {
		t.Errorf("client=false: %+v %v", o.ports, err)
	}
	o, err = parseFlags([]string{"--socket-path", "/tmp/x.sock", "--macvtap", "mv0", "--macvtap-lower", "veth0", "--queues", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if p := o.ports[0]; p.Kind() != "macvtap" || p.Macvtap != "mv0" || p.Lower != "veth0" || p.QueuePairs() != 2 || p.Name != "mv0" {
		t.Errorf("single port %+v", p)
	}
	o, err = parseFlags([]string{"--fd", "5", "--tap", "t0"}, io.Discard)
	if err != nil || !o.ports[0].HasFD || o.ports[0].FD != 5 || o.ports[0].String() != "name=t0,tap=t0" {
		t.Errorf("--fd port %+v %v", o.ports, err)
	}
	// No port at all: the daemon starts and waits for vhostd port add.
	o, err = parseFlags([]string{"--control-socket", "/tmp/c.sock"}, io.Discard)
	if err != nil || len(o.ports) != 0 {
		t.Errorf("no ports: %+v %v", o, err)
	}
	o, err = parseFlags([]string{"--config", "/etc/vhostd/ports.conf", "--control-group", "0"}, io.Discard)
	if err != nil || o.configPath != "/etc/vhostd/ports.conf" || !o.hasControlGroup || o.controlGroup != 0 {
		t.Errorf("--config: %+v %v", o, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--port", "name=a,socket=/s"}, "nobody to talk to"},
		{[]string{"--port", "name=a,socket=/s", "--port", "name=a,socket=/t"}, `two ports are named "a"`},
		{[]string{"--port", "name=a,socket=/s", "--port", "name=b,socket=/s"}, "ports a and b both use socket /s"},
		{[]string{"--port", "name=a,socket=/s", "--port", "name=b,socket=/t", "--port", "name=c,socket=/u"}, "add --switch"},
		{[]string{"--port", "name=a"}, "socket=PATH is missing"},
		{[]string{"--port", "name=a,socket=/s,bogus=1"}, `unknown key "bogus"`},
		{[]string{"--port", "name=a,socket=/s,tap=x,null"}, "tap=x and null both choose the backend"},
		{[]string{"--port", "name=a,socket=/s,tap=x,tap=y"}, "tap given twice"},
		{[]string{"--port", "name=a,socket=/s,client=maybe,null"}, "client=maybe: write client"},
		{[]string{"--port", "name=a,socket=/s,queues=100,null"}, "queues=100: give the number of queue pairs, 1..64"},
		{[]string{"--port", "name=a,socket=/s,tap=t0", "--tap", "x"}, "do not mix"},
		{[]string{"--port", "name=a,socket=/s,tap=t0", "--client"}, "do not mix"},
		{[]string{"--config", "/c", "--port", "name=a,socket=/s,null"}, "--config lists every port"},
		{[]string{"--config", "/c", "--socket-path", "/s"}, "--config lists every port"},
		{[]string{"--socket-path", "/s", "--queues", "0"}, "--queues 0"},
		{[]string{"--tap", "t0"}, "no socket for the port: give --socket-path PATH"},
		{[]string{"--socket-path", "/s", "--name", "../x"}, "name=../x: use 1..64"},
		{[]string{"--control-socket", "rel.sock"}, "--control-socket rel.sock: give an absolute path"},
		{[]string{"--capture-dir", "caps"}, "--capture-dir caps: give an absolute path"},
		{[]string{"--control-group", "no-such-group-here"}, "--control-group: group"},
	} {
		_, err := parseFlags(c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.want)
		}
	}
	if _, err := parseFlags([]string{"--port", "name=a,socket=/s", "--port", "name=b,socket=/t", "--port", "name=c,socket=/u", "--switch"}, io.Discard); err != nil {
		t.Errorf("three switch ports: %v", err)
	}
}

// TestWirePeers: peer ports get Link ends (two, no --switch) or Switch
// ports, as portlink ports for virtionet.Config.Peers, never backends.
func TestWirePeers(t *testing.T) {
	parse := func(specs ...string) []portspec.Spec {
		var out []portspec.Spec
		for _, s := range specs {
			p, err := portspec.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	two := parse("name=a,socket=/tmp/a.sock", "name=n,socket=/tmp/n.sock,null", "name=b,socket=/tmp/b.sock")
	peers := wirePeers(two, false)
	ea, okA := peers[0].(*portlink.End)
	eb, okB := peers[2].(*portlink.End)
	if !okA || !okB || ea == eb || peers[1] != nil {
		t.Fatalf("cross-connect: %T %T %v", peers[0], peers[2], peers[1])
	}
	peers = wirePeers(two, true)
	if _, ok := peers[0].(*portlink.SwitchPort); !ok || peers[1] != nil {
		t.Fatalf("--switch: %T %v", peers[0], peers[1])
	}
	if peers := wirePeers(parse("name=n,socket=/tmp/n.sock,null"), false); peers[0] != nil {
		t.Fatalf("no peer ports: %v", peers)
	}
}
