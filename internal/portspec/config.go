package portspec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The config file lists ports, one per line, in the same text form as
// --port:
//
//	# vhostd ports (vhostd --config /etc/vhostd/ports.conf)
//	name=vm0,socket=/run/vhostd/vm0.sock,tap=vtap0
//	name=vm1,socket=/run/vhostd/vm1.sock,queues=2,macvtap=mvtap1,lower=eth0
//
// Lines starting with '#' (after optional blanks) are comments; blank lines
// are ignored; leading and trailing blanks of a line are ignored. Socket
// paths must be absolute.

// ParseConfig reads a config file's content; name prefixes error messages.
func ParseConfig(r io.Reader, name string) ([]Spec, error) {
	var specs []Spec
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	no := 0
	for sc.Scan() {
		no++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := Parse(line)
		if err != nil {
			var pe *Error
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("%s:%d: %s", name, no, pe.Msg)
			}
			return nil, fmt.Errorf("%s:%d: %w", name, no, err)
		}
		if err := s.CheckSocketAbsolute(); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, no, err)
		}
		specs = append(specs, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if err := CheckUnique(specs); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return specs, nil
}

// ReadConfig reads and parses the config file at path.
func ReadConfig(path string) ([]Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config file %s does not exist: create it (an empty file means no ports yet), e.g. install -m 0644 /dev/null %s", path, path)
		}
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	return ParseConfig(f, path)
}

// CheckUnique refuses two ports with one name or one socket path.
func CheckUnique(specs []Spec) error {
	names := map[string]bool{}
	sockets := map[string]string{}
	for _, s := range specs {
		if names[s.Name] {
			return fmt.Errorf("two ports are named %q: give each port its own name=", s.Name)
		}
		names[s.Name] = true
		if s.Socket != "" {
			if other, dup := sockets[s.Socket]; dup {
				return fmt.Errorf("ports %s and %s both use socket %s: give each port its own socket=", other, s.Name, s.Socket)
			}
			sockets[s.Socket] = s.Name
		}
	}
	return nil
}

// CheckTopology checks the guest-to-guest ports of a set: a cross-connect
// joins exactly two; more need a switch; one alone has nobody to talk to.
func CheckTopology(specs []Spec, useSwitch bool) error {
	peers := 0
	for _, s := range specs {
		if s.Kind() == KindPeer {
			peers++
		}
	}
	switch {
	case peers == 1:
		return errors.New("one guest-to-guest port alone has nobody to talk to: give it a backend (tap=, macvtap=, null) or add another port")
	case peers > 2 && !useSwitch:
		return fmt.Errorf("%d guest-to-guest ports: a cross-connect joins exactly two; add --switch for a learning switch", peers)
	}
	return nil
}

// AddToConfig appends s to the config file at path, atomically (the file is
// rewritten and renamed into place). Comments and other lines are kept.
// A port of the same name already in the file is an error.
func AddToConfig(path string, s Spec) error {
	return rewriteConfig(path, func(lines []string) ([]string, error) {
		for i, l := range lines {
			if ls, ok := lineSpec(l); ok && ls.Name == s.Name {
				return nil, fmt.Errorf("%s:%d already has a port named %s: remove it first (vhostd port del %s)", path, i+1, s.Name, s.Name)
			}
		}
		return append(lines, s.String()), nil
	})
}

// RemoveFromConfig removes the lines describing port name from the config
// file at path, atomically. It reports whether a line was removed.
func RemoveFromConfig(path, name string) (bool, error) {
	removed := false
	err := rewriteConfig(path, func(lines []string) ([]string, error) {
		out := lines[:0:0]
		for _, l := range lines {
			if ls, ok := lineSpec(l); ok && ls.Name == name {
				removed = true
				continue
			}
			out = append(out, l)
		}
		if !removed {
			return nil, errNoChange
		}
		return out, nil
	})
	if errors.Is(err, errNoChange) {
		err = nil
	}
	return removed, err
}

// errNoChange tells rewriteConfig to leave the file alone.
var errNoChange = errors.New("no change")

// lineSpec parses one config line; ok is false for comments, blanks and
// lines that do not parse (kept as they are).
func lineSpec(l string) (Spec, bool) {
	t := strings.TrimSpace(l)
	if t == "" || strings.HasPrefix(t, "#") {
		return Spec{}, false
	}
	s, err := Parse(t)
	return s, err == nil
}

// rewriteConfig reads the file's lines, lets edit change them and writes the
// result atomically: a temporary file in the same directory, fsync, rename,
// fsync of the directory. A symlinked path is followed, so the link stays.
// The file keeps its mode and owner.
func rewriteConfig(path string, edit func([]string) ([]string, error)) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var lines []string
	if len(data) > 0 {
		lines = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	}
	lines, err = edit(lines)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	dir := filepath.Dir(real)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(real)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing config file %s: %w (vhostd needs write access to %s; under systemd add it to ReadWritePaths=)", path, err, dir)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("writing config file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(fi.Mode().Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("writing config file %s: %w", tmp.Name(), err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		_ = tmp.Chown(int(st.Uid), int(st.Gid)) // best effort: keep the owner
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing config file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing config file %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), real); err != nil {
		return fmt.Errorf("replacing config file %s: %w", real, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
