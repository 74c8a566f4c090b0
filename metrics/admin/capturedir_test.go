package admin_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/admin"
)

// TestCaptureDirConfinement: captures go only under the capture directory,
// with checked names, never through a symlink, as 0600 files.
func TestCaptureDirConfinement(t *testing.T) {
	g := newRig(t)
	_, url := serveFull(t, g)
	outside := t.TempDir()
	base := url + "/ports/vm0/capture?dir=tx&count=1&timeout=50ms&file="

	// Names that would leave the directory, or hide in it.
	for _, name := range []string{
		"../escape.pcap", "..", ".", "/etc/vhostd-escape.pcap", outside + "/x.pcap", "a/b.pcap", ".hidden.pcap",
		"sub%2Fx.pcap", "nul%00.pcap", "new%0Aline.pcap", strings.Repeat("x", 201),
	} {
		code, body := call(t, "PUT", base+name, "")
		if code != 400 || !strings.Contains(body, "give a plain file name such as vm0.pcap") || !strings.Contains(body, "captures are written only under the capture directory "+g.dir) {
			t.Errorf("file=%s: %d %s", name, code, body)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("files created outside the capture directory: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(g.dir), "escape.pcap")); err == nil {
		t.Error("../escape.pcap was created")
	}

	// A good name: the directory is created 0700, the files are 0600.
	code, body := call(t, "PUT", base+"ok.pcap", "")
	if code != 200 || !strings.Contains(body, `"file": "`+filepath.Join(g.dir, "ok.pcap")+`"`) {
		t.Fatalf("file=ok.pcap: %d %s", code, body)
	}
	if fi, err := os.Stat(g.dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("capture directory %v %v; want 0700", fi.Mode(), err)
	}
	for _, f := range []string{"ok.pcap", "ok.pcap.decisions.tsv"} {
		if fi, err := os.Stat(filepath.Join(g.dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v; want 0600", f, fi.Mode(), err)
		}
	}
	// The default name is in the directory too.
	code, body = call(t, "PUT", url+"/ports/vm0/capture?dir=tx&count=1&timeout=50ms", "")
	if code != 200 || !strings.Contains(body, `"file": "`+g.dir+`/vhostd-vm0-`) {
		t.Errorf("default name: %d %s", code, body)
	}

	// A symlink planted in the directory is not followed: its target is
	// neither created nor truncated.
	target := filepath.Join(outside, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(g.dir, "link.pcap")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "new"), filepath.Join(g.dir, "dangling.pcap")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "tsv"), filepath.Join(g.dir, "side.pcap.decisions.tsv")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"link.pcap", "dangling.pcap", "side.pcap"} {
		code, body := call(t, "PUT", base+name, "")
		if code != 409 || !strings.Contains(body, "already exists") {
			t.Errorf("file=%s over a symlink: %d %s", name, code, body)
		}
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("symlink target changed: %q", b)
	}
	for _, f := range []string{"new", "tsv"} {
		if _, err := os.Lstat(filepath.Join(outside, f)); err == nil {
			t.Errorf("symlink target %s created", f)
		}
	}
	if _, err := os.Lstat(filepath.Join(g.dir, "side.pcap")); err == nil {
		t.Error("side.pcap left behind after its decisions file failed")
	}
}

// TestCaptureDirItselfChecked: a capture directory that is a symlink, or
// that others can write to, is refused.
func TestCaptureDirItselfChecked(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(dir string) string // returns the --capture-dir
		want  string
	}{
		{"symlink", func(dir string) string {
			real := filepath.Join(dir, "real")
			os.Mkdir(real, 0o700)
			link := filepath.Join(dir, "link")
			os.Symlink(real, link)
			return link
		}, "is a symlink or not a directory"},
		{"world-writable", func(dir string) string {
			d := filepath.Join(dir, "open")
			os.Mkdir(d, 0o700)
			os.Chmod(d, 0o777)
			return d
		}, "not be writable by group or others (chown"},
		{"a file", func(dir string) string {
			f := filepath.Join(dir, "file")
			os.WriteFile(f, nil, 0o600)
			return f
		}, "capture directory"},
		{"relative", func(string) string { return "captures" }, "give an absolute --capture-dir"},
	} {
		r := newRig(t)
		dir := c.setup(t.TempDir())
		s, err := admin.New(admin.Config{Ports: []metrics.Port{r.r.Port("null")}, Logger: quietLog(), CaptureDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		w := httptestRecorder(s, "PUT", "/ports/vm0/capture?dir=tx&count=1&timeout=50ms&file=x.pcap")
		if w.Code/100 == 2 || !strings.Contains(w.Body.String(), c.want) {
			t.Errorf("%s: %d %s; want %q", c.name, w.Code, w.Body.String(), c.want)
		}
	}
}
