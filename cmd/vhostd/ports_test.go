package main

import (
	"io"
	"strings"
	"testing"
)

func TestPortFlags(t *testing.T) {
	o, err := parseFlags([]string{"--port", "name=a,socket=/tmp/a.sock", "--port", "name=b,socket=/tmp/b.sock,client"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.ports) != 2 || o.ports[0].kind != "peer" || !o.ports[1].client || o.ports[1].socketPath != "/tmp/b.sock" {
		t.Errorf("ports %+v", o.ports)
	}
	o, err = parseFlags([]string{"--socket-path", "/tmp/x.sock", "--macvtap", "mv0", "--macvtap-lower", "veth0", "--queues", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if p := o.ports[0]; p.kind != "macvtap" || p.macvtap != "mv0" || p.macvtapLower != "veth0" || p.queues != 2 || p.name != "mv0" {
		t.Errorf("single port %+v", p)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--port", "name=a,socket=/s"}, "nobody to talk to"},
		{[]string{"--port", "name=a,socket=/s", "--port", "name=a,socket=/t"}, `two ports are named "a"`},
		{[]string{"--port", "name=a,socket=/s", "--port", "name=b,socket=/s"}, "two ports use socket"},
		{[]string{"--port", "name=a,socket=/s", "--port", "name=b,socket=/t", "--port", "name=c,socket=/u"}, "add --switch"},
		{[]string{"--port", "name=a"}, "socket=PATH is missing"},
		{[]string{"--port", "name=a,socket=/s,bogus=1"}, `unknown key "bogus"`},
		{[]string{"--port", "name=a,socket=/s,tap=t0", "--tap", "x"}, "do not mix"},
		{[]string{"--socket-path", "/s", "--queues", "0"}, "--queues 0"},
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
