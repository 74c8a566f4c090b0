package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/internal/portspec"
)

// unitDir is where the systemd units live, from this package.
const unitDir = "../../packaging/systemd"

// TestSystemdUnitsVerify runs systemd-analyze verify on the units (any
// warning about them fails the test) and checks the service's exposure
// score (systemd-analyze security) stays at or below 3.0.
func TestSystemdUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing: apt-get install systemd (CI must verify the units)")
		}
		t.Skip("systemd-analyze is missing (apt-get install systemd); the units are verified in CI")
	}
	dir := t.TempDir()
	units := []string{"vhostd.service", "vhostd.socket", "vhostd-ports.socket"}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join(unitDir, u))
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart= names an executable.
		b = []byte(strings.ReplaceAll(string(b), "/usr/local/bin/vhostd", exe))
		if err := os.WriteFile(filepath.Join(dir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"verify", "--man=no"}
	for _, u := range units {
		args = append(args, "./"+u)
	}
	cmd := exec.Command(sa, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		for _, u := range units {
			if strings.Contains(line, u) {
				t.Errorf("systemd-analyze verify: %s", line)
				break
			}
		}
	}
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	cmd = exec.Command(sa, "security", "--offline=true", "--no-pager", "./vhostd.service")
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for vhostd.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Logf("systemd-analyze security --offline gave no score (%v):\n%s", err, out)
		return
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f", score)
	if score > 3.0 {
		t.Errorf("exposure level %.1f > 3.0: the unit lost some hardening\n%s", score, out)
	}
}

// TestSystemdUnitFlags: the daemon accepts the ExecStart= command line of
// the unit (a renamed flag would otherwise only show on a real host).
func TestSystemdUnitFlags(t *testing.T) {
	f, err := os.Open(filepath.Join(unitDir, "vhostd.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmdline string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "ExecStart=") || cmdline != "" && strings.HasPrefix(l, "    ") {
			cmdline += strings.TrimSuffix(strings.TrimPrefix(l, "ExecStart="), "\\") + " "
			if !strings.HasSuffix(l, "\\") {
				break
			}
		}
	}
	fields := strings.Fields(cmdline)
	if len(fields) < 2 || fields[0] != "/usr/local/bin/vhostd" {
		t.Fatalf("ExecStart=%q", cmdline)
	}
	args := fields[1:]
	for i, a := range args {
		if a == "kvm" && i > 0 && args[i-1] == "--socket-group" {
			args[i] = "0" // the group may not exist here
		}
	}
	o, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("vhostd %s: %v", strings.Join(args, " "), err)
	}
	if o.configPath != "/etc/vhostd/ports.conf" || o.controlSocket != "/run/vhostd/control.sock" || o.captureDir != "/var/lib/vhostd/captures" {
		t.Errorf("unit options %+v", o)
	}
	// The example config file parses.
	if _, err := readExampleConfig(filepath.Join(unitDir, "ports.conf")); err != nil {
		t.Error(err)
	}
}

func readExampleConfig(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The examples are commented out; uncommented they must parse too.
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "# name=") {
			l = strings.TrimPrefix(l, "# ")
		}
		lines = append(lines, l)
	}
	specs, err := portspec.ParseConfig(strings.NewReader(strings.Join(lines, "\n")), path)
	if err == nil && len(specs) != 2 {
		err = fmt.Errorf("%s: %d example ports, want 2", path, len(specs))
	}
	return len(specs), err
}
