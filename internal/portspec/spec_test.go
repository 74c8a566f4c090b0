package portspec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		want Spec   // when err == ""
		err  string // substring of the error
	}{
		// Accepted.
		{in: "name=vm0,socket=/run/vm0.sock,tap=vtap0", want: Spec{Name: "vm0", Socket: "/run/vm0.sock", Tap: "vtap0"}},
		{in: "name=vm0,socket=/s,client", want: Spec{Name: "vm0", Socket: "/s", Client: true}},
		{in: "name=vm0,socket=/s,client=true,null", want: Spec{Name: "vm0", Socket: "/s", Client: true, Null: true}},
		{in: "name=vm0,socket=/s,client=false,null", want: Spec{Name: "vm0", Socket: "/s", Null: true}},
		{in: "name=vm0,socket=/s,client=off,null", want: Spec{Name: "vm0", Socket: "/s", Null: true}},
		{in: "name=vm0,socket=/s,client=yes,null", want: Spec{Name: "vm0", Socket: "/s", Client: true, Null: true}},
		{in: "name=a.b_c-1,socket=rel.sock,queues=64,null", want: Spec{Name: "a.b_c-1", Socket: "rel.sock", Queues: 64, Null: true}},
		{in: "socket=/s,name=m,macvtap=mv0,lower=eth0,mode=vepa,mac=52:54:00:AB:cd:01,queues=2",
			want: Spec{Name: "m", Socket: "/s", Macvtap: "mv0", Lower: "eth0", Mode: "vepa", MAC: "52:54:00:AB:cd:01", Queues: 2}},
		{in: "name=p,socket=/s", want: Spec{Name: "p", Socket: "/s"}}, // guest to guest
		{in: "name=p,socket=/a=b", want: Spec{Name: "p", Socket: "/a=b"}},

		// Unknown, repeated and empty keys.
		{in: "name=a,socket=/s,bogus=1", err: `unknown key "bogus"; the keys are name, socket, client, queues, tap, macvtap, lower, mode, mac, null`},
		{in: "name=a,sockt=/s", err: `unknown key "sockt" (did you mean socket?)`},
		{in: "name=a,socket=/s,Tap=x", err: `(did you mean tap?)`},
		{in: "name=a,socket=/s,tap=x,tap=y", err: "tap given twice (tap=x and tap=y): give each key once"},
		{in: "name=a,name=b,socket=/s", err: "name given twice"},
		{in: "name=a,socket=/s,client,client=false", err: "client given twice"},
		{in: "name=a,socket=/s,,null", err: "empty item"},
		{in: "name=a,socket=/s,null,", err: "empty item"},
		{in: "", err: "empty port"},
		{in: "name=,socket=/s", err: "name needs a value: write name=vm0"},
		{in: "name=a,socket", err: "socket needs a value: write socket=/run/vhostd/vm0.sock"},
		{in: "name=a,socket=/s,tap=", err: "tap needs a value: write tap=vtap0"},

		// Conflicting backends.
		{in: "name=a,socket=/s,tap=x,null", err: "tap=x and null both choose the backend: keep one of"},
		{in: "name=a,socket=/s,null,macvtap=m", err: "null and macvtap=m both choose the backend"},
		{in: "name=a,socket=/s,tap=x,macvtap=m", err: "both choose the backend"},

		// Booleans.
		{in: "name=a,socket=/s,client=maybe", err: "client=maybe: write client (vhostd connects; QEMU listens with server=on) or client=false"},
		{in: "name=a,socket=/s,null=true", err: "null takes no value: write null"},

		// Ranges and formats.
		{in: "name=a,socket=/s,queues=0,null", err: "queues=0: give the number of queue pairs, 1..64"},
		{in: "name=a,socket=/s,queues=65,null", err: "queues=65"},
		{in: "name=a,socket=/s,queues=two,null", err: "queues=two"},
		{in: "name=a,socket=/s,queues=2", err: "guest-to-guest ports (no backend) have one queue pair"},
		{in: "name=a,socket=/s,tap=waytoolonginterfacename", err: "tap=waytoolonginterfacename: interface names are 1..15 characters"},
		{in: "name=a,socket=/s,tap=a/b", err: "interface names are 1..15 characters without '/'"},
		{in: "name=a,socket=/s,tap=..", err: "interface names"},
		{in: "name=a,socket=/s,macvtap=m,mode=fast", err: "mode=fast: use bridge (the default), vepa, private or passthru"},
		{in: "name=a,socket=/s,macvtap=m,mac=zz", err: "mac=zz: give a unicast Ethernet MAC"},
		{in: "name=a,socket=/s,macvtap=m,mac=01:00:5e:00:00:01", err: "unicast"},
		{in: "name=a,socket=/s,tap=t,lower=eth0", err: "lower=eth0 only applies to a macvtap port: add macvtap=NAME"},
		{in: "name=a,socket=/s,null,mode=vepa", err: "mode=vepa only applies to a macvtap port"},
		{in: "socket=/s,null", err: "name=NAME is missing"},
		{in: "name=a,null", err: "socket=PATH is missing"},
		{in: "name=../x,socket=/s,null", err: "name=../x: use 1..64 letters, digits"},
		{in: "name=a b,socket=/s,null", err: "name=a b"},
		{in: "name=-a,socket=/s,null", err: "starting with a letter or digit"},
		{in: "name=" + strings.Repeat("x", 65) + ",socket=/s,null", err: "use 1..64"},
		{in: "name=a,socket=/s\nname=b,null", err: "contains a control character"},
		{in: "name=a,socket=/s ,null", err: "starts or ends with a space"},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q): err %v, want one containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if !got.Equal(c.want) {
			t.Errorf("Parse(%q) = %+v, want %+v", c.in, got, c.want)
		}
		// The canonical form parses back to the same port.
		back, err := Parse(got.String())
		if err != nil || !back.Equal(got) {
			t.Errorf("Parse(%q).String() = %q does not round-trip: %+v %v", c.in, got.String(), back, err)
		}
	}
}

func TestStringIsCanonical(t *testing.T) {
	s, err := Parse("null,queues=1,socket=/s,name=x,client=false")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "name=x,socket=/s,null" {
		t.Errorf("String() = %q", got)
	}
	s, _ = Parse("mac=52:54:00:AB:CD:01,macvtap=m,name=x,socket=/s,client,queues=4")
	if got := s.String(); got != "name=x,socket=/s,client,queues=4,macvtap=m,mac=52:54:00:ab:cd:01" {
		t.Errorf("String() = %q", got)
	}
}

func TestDecodeJSON(t *testing.T) {
	s, err := DecodeJSON([]byte(`{"name":"vm1","socket":"/run/vm1.sock","tap":"vtap1","queues":2}`))
	if err != nil || s.Name != "vm1" || s.Tap != "vtap1" || s.QueuePairs() != 2 {
		t.Fatalf("%+v %v", s, err)
	}
	for _, c := range []struct{ in, err string }{
		{`{"name":"vm1","socket":"/s","tap":"t","nul":true}`, `unknown field "nul"`},
		{`{"name":"vm1","socket":"/s","tap":"t","null":true}`, "more than one backend"},
		{`{"name":"vm1","socket":"/s","queues":100,"null":true}`, "queues=100"},
		{`{"name":"vm1","socket":"/s","client":"false","null":true}`, "cannot unmarshal string"},
		{`{"name":"vm1"}`, "socket=PATH is missing"},
		{`{"name":"v","socket":"/s","null":true} {}`, "more than one value"},
	} {
		if _, err := DecodeJSON([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("DecodeJSON(%s): %v, want %q", c.in, err, c.err)
		}
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ports.conf")
	content := "# vhostd ports\n\n  name=vm0,socket=/run/vm0.sock,tap=vtap0  \n# keep me\nname=vm1,socket=/run/vm1.sock,null\n"
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	specs, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[0].Tap != "vtap0" || specs[1].Name != "vm1" {
		t.Fatalf("%+v", specs)
	}
	add, _ := Parse("name=vm2,socket=/run/vm2.sock,queues=2,tap=vtap2")
	if err := AddToConfig(path, add); err != nil {
		t.Fatal(err)
	}
	if err := AddToConfig(path, add); err == nil || !strings.Contains(err.Error(), "already has a port named vm2") {
		t.Errorf("second add: %v", err)
	}
	if ok, err := RemoveFromConfig(path, "vm0"); !ok || err != nil {
		t.Fatalf("remove vm0: %v %v", ok, err)
	}
	if ok, err := RemoveFromConfig(path, "nope"); ok || err != nil {
		t.Errorf("remove nope: %v %v", ok, err)
	}
	got, _ := os.ReadFile(path)
	want := "# vhostd ports\n\n# keep me\nname=vm1,socket=/run/vm1.sock,null\nname=vm2,socket=/run/vm2.sock,queues=2,tap=vtap2\n"
	if string(got) != want {
		t.Errorf("file after add and remove:\n%s\nwant:\n%s", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", fi.Mode())
	}
	// No temporary files left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("%d entries in the config dir", len(ents))
	}

	// A symlinked config stays a symlink.
	link := filepath.Join(t.TempDir(), "link.conf")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := RemoveFromConfig(link, "vm1"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi, err)
	}

	for _, c := range []struct{ content, err string }{
		{"name=a,socket=/s,null\nname=a,socket=/t,null\n", `two ports are named "a"`},
		{"name=a,socket=/s,null\nname=b,socket=/s,null\n", "ports a and b both use socket /s"},
		{"name=a,socket=rel.sock,null\n", "x.conf:1: port a: socket=rel.sock is relative: give an absolute path"},
		{"# c\nname=a,socket=/s,tap=x,null\n", "x.conf:2: tap=x and null both choose the backend"},
	} {
		p := filepath.Join(t.TempDir(), "x.conf")
		os.WriteFile(p, []byte(c.content), 0o600)
		if _, err := ReadConfig(p); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: %v, want %q", c.content, err, c.err)
		}
	}
	if _, err := ReadConfig(filepath.Join(dir, "missing.conf")); err == nil || !strings.Contains(err.Error(), "an empty file means no ports yet") {
		t.Errorf("missing file: %v", err)
	}
}

func TestCheckTopology(t *testing.T) {
	peer := func(n string) Spec { return Spec{Name: n, Socket: "/" + n} }
	tap := Spec{Name: "t", Socket: "/t", Tap: "t0"}
	if err := CheckTopology([]Spec{peer("a"), tap}, false); err == nil || !strings.Contains(err.Error(), "nobody to talk to") {
		t.Errorf("one peer: %v", err)
	}
	if err := CheckTopology([]Spec{peer("a"), peer("b"), peer("c")}, false); err == nil || !strings.Contains(err.Error(), "add --switch") {
		t.Errorf("three peers: %v", err)
	}
	if err := CheckTopology([]Spec{peer("a"), peer("b"), peer("c")}, true); err != nil {
		t.Error(err)
	}
}
