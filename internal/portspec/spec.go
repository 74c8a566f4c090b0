// Package portspec is the one description of a vhostd port, shared by the
// --port flag, the config file and the control API: its name, its vhost-user
// socket and its backend.
//
// The text form is a comma-separated list of keys:
//
//	name=N,socket=PATH[,client][,queues=Q][,tap=IF | ,macvtap=NAME[,lower=DEV][,mode=M][,mac=MAC] | ,null]
//
// A port with no backend key is a guest-to-guest port (joined to the other
// such ports by a cross-connect or a learning switch).
//
// Parsing is strict: an unknown or repeated key, two backends, a bad boolean
// or a value out of range is an error that says what to write instead.
package portspec

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// MaxQueues is the most queue pairs a port may have (as --queues).
const MaxQueues = 64

// Backend kinds, as Spec.Kind returns them.
const (
	KindTap     = "tap"
	KindMacvtap = "macvtap"
	KindNull    = "null"
	KindPeer    = "peer" // guest to guest: a Link or a Switch port
)

// Spec describes one port. The zero Queues means 1.
type Spec struct {
	Name   string `json:"name"`
	Socket string `json:"socket,omitempty"`
	// Client: vhostd connects to Socket (QEMU listens, server=on) instead
	// of listening on it.
	Client bool `json:"client,omitempty"`
	Queues int  `json:"queues,omitempty"`

	// The backend: at most one of Tap, Macvtap and Null. None of them is a
	// guest-to-guest port.
	Tap     string `json:"tap,omitempty"`
	Macvtap string `json:"macvtap,omitempty"`
	Lower   string `json:"lower,omitempty"` // macvtap: lower device, to create it
	Mode    string `json:"mode,omitempty"`  // macvtap: bridge (default), vepa, private, passthru
	MAC     string `json:"mac,omitempty"`   // macvtap: MAC of a created macvtap
	Null    bool   `json:"null,omitempty"`

	// FD is an inherited listening socket to serve instead of Socket
	// (--fd N), when HasFD. Never part of the text or JSON form.
	FD    int  `json:"-"`
	HasFD bool `json:"-"`
}

// Keys lists the keys of the text form, in canonical order.
var Keys = []string{"name", "socket", "client", "queues", "tap", "macvtap", "lower", "mode", "mac", "null"}

// Kind returns the backend kind: KindTap, KindMacvtap, KindNull or KindPeer.
func (s Spec) Kind() string {
	switch {
	case s.Tap != "":
		return KindTap
	case s.Macvtap != "":
		return KindMacvtap
	case s.Null:
		return KindNull
	}
	return KindPeer
}

// BackendName is the host interface of the backend (tap or macvtap name),
// or "".
func (s Spec) BackendName() string {
	switch s.Kind() {
	case KindTap:
		return s.Tap
	case KindMacvtap:
		return s.Macvtap
	}
	return ""
}

// QueuePairs returns Queues, or 1 when unset.
func (s Spec) QueuePairs() int {
	if s.Queues == 0 {
		return 1
	}
	return s.Queues
}

// Error is a spec error; Spec is the text it was parsed from, if any.
type Error struct {
	Spec string
	Msg  string
}

func (e *Error) Error() string {
	if e.Spec == "" {
		return e.Msg
	}
	return fmt.Sprintf("port %q: %s", e.Spec, e.Msg)
}

// Parse parses the text form strictly and validates the result.
func Parse(text string) (Spec, error) {
	s, err := parse(text)
	if err != nil {
		return s, &Error{Spec: text, Msg: err.Error()}
	}
	if err := s.check(); err != nil {
		return s, &Error{Spec: text, Msg: err.Error()}
	}
	return s, nil
}

func parse(text string) (Spec, error) {
	var s Spec
	if strings.TrimSpace(text) == "" {
		return s, errors.New("empty port: write name=NAME,socket=PATH and a backend (tap=IF, macvtap=NAME,lower=DEV or null)")
	}
	seen := map[string]string{}
	backendKey := ""
	// asWritten holds the keys whose value is stored as written.
	asWritten := map[string]*string{"name": &s.Name, "socket": &s.Socket, "tap": &s.Tap, "macvtap": &s.Macvtap, "lower": &s.Lower, "mode": &s.Mode, "mac": &s.MAC}
	for _, item := range strings.Split(text, ",") {
		if item == "" {
			return s, errors.New("empty item (two commas in a row, or a comma at an end): separate keys with single commas")
		}
		k, v, hasValue := strings.Cut(item, "=")
		if prev, dup := seen[k]; dup {
			return s, fmt.Errorf("%s given twice (%s and %s): give each key once", k, prev, item)
		}
		seen[k] = item
		// Every key but client and null needs a value; tap, macvtap and null
		// each choose the backend.
		switch k {
		case "client":
		case "null":
			if hasValue {
				return s, fmt.Errorf("%s: null takes no value: write null for the counting sink backend", item)
			}
		default:
			if slices.Contains(Keys, k) && (!hasValue || v == "") {
				return s, fmt.Errorf("%s needs a value: write %s", k, example(k))
			}
		}
		if k == "tap" || k == "macvtap" || k == "null" {
			if backendKey != "" {
				return s, fmt.Errorf("%s and %s both choose the backend: keep one of tap=IF, macvtap=NAME (with lower=DEV) or null", seen[backendKey], item)
			}
			backendKey = k
		}
		if f, ok := asWritten[k]; ok {
			*f = v
			continue
		}
		switch k {
		case "client":
			on := true
			if hasValue {
				b, ok := parseBool(v)
				if !ok {
					return s, fmt.Errorf("client=%s: write client (vhostd connects; QEMU listens with server=on) or client=false (vhostd listens, the default)", v)
				}
				on = b
			}
			s.Client = on
		case "queues":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxQueues {
				return s, fmt.Errorf("queues=%s: give the number of queue pairs, 1..%d (QEMU -netdev vhost-user,queues=N)", v, MaxQueues)
			}
			s.Queues = n
		case "null":
			s.Null = true
		default:
			msg := fmt.Sprintf("unknown key %q", k)
			if near := nearest(k); near != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", near)
			}
			return s, fmt.Errorf("%s; the keys are %s", msg, strings.Join(Keys, ", "))
		}
	}
	return s, nil
}

func example(k string) string {
	switch k {
	case "name":
		return "name=vm0"
	case "socket":
		return "socket=/run/vhostd/vm0.sock"
	case "queues":
		return "queues=2"
	case "tap":
		return "tap=vtap0"
	case "macvtap":
		return "macvtap=mvtap0"
	case "lower":
		return "lower=eth0"
	case "mode":
		return "mode=bridge"
	case "mac":
		return "mac=52:54:00:12:34:56"
	}
	return k + "=VALUE"
}

// parseBool accepts true/false, on/off, yes/no and 1/0.
func parseBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "true", "on", "yes", "1":
		return true, true
	case "false", "off", "no", "0":
		return false, true
	}
	return false, false
}

// nearest returns the key within edit distance 2 of k, if one is.
func nearest(k string) string {
	best, bestD := "", 3
	for _, c := range Keys {
		if d := editDistance(strings.ToLower(k), c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Validate checks a Spec built in code or decoded from JSON with the rules
// Parse applies.
func (s Spec) Validate() error {
	if err := s.check(); err != nil {
		return &Error{Msg: fmt.Sprintf("port %s: %v", orUnnamed(s.Name), err)}
	}
	return nil
}

func orUnnamed(n string) string {
	if n == "" {
		return "(no name)"
	}
	return n
}

func (s Spec) check() error {
	if s.Name == "" {
		return errors.New("name=NAME is missing: every port needs a name (it appears in logs, metrics and vhostd port del NAME)")
	}
	if err := CheckName(s.Name); err != nil {
		return err
	}
	if s.Socket == "" && !s.HasFD {
		return errors.New("socket=PATH is missing: the vhost-user socket QEMU connects to (or listens on, with client)")
	}
	for _, c := range s.Socket {
		if c < ' ' || c == 0x7f {
			return fmt.Errorf("socket=%q contains a control character: give a plain path", s.Socket)
		}
	}
	if strings.TrimSpace(s.Socket) != s.Socket {
		return fmt.Errorf("socket=%q starts or ends with a space: write the path without them", s.Socket)
	}
	if s.Queues < 0 || s.Queues > MaxQueues {
		return fmt.Errorf("queues=%d: give the number of queue pairs, 1..%d", s.Queues, MaxQueues)
	}
	n := 0
	for _, set := range []bool{s.Tap != "", s.Macvtap != "", s.Null} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("more than one backend (tap, macvtap, null): keep one")
	}
	if s.Tap != "" {
		if err := checkIfName("tap", s.Tap); err != nil {
			return err
		}
	}
	if s.Macvtap != "" {
		if err := checkIfName("macvtap", s.Macvtap); err != nil {
			return err
		}
	}
	for _, kv := range [][2]string{{"lower", s.Lower}, {"mode", s.Mode}, {"mac", s.MAC}} {
		if kv[1] != "" && s.Macvtap == "" {
			return fmt.Errorf("%s=%s only applies to a macvtap port: add macvtap=NAME (and lower=DEV to create it) or drop %s=", kv[0], kv[1], kv[0])
		}
	}
	if s.Lower != "" {
		if err := checkIfName("lower", s.Lower); err != nil {
			return err
		}
	}
	switch s.Mode {
	case "", "bridge", "vepa", "private", "passthru":
	default:
		return fmt.Errorf("mode=%s: use bridge (the default), vepa, private or passthru", s.Mode)
	}
	if s.MAC != "" {
		hw, err := net.ParseMAC(s.MAC)
		if err != nil || len(hw) != 6 || hw[0]&1 != 0 || isZero(hw) {
			return fmt.Errorf("mac=%s: give a unicast Ethernet MAC such as 52:54:00:12:34:56", s.MAC)
		}
	}
	if s.Kind() == KindPeer && s.QueuePairs() != 1 {
		return fmt.Errorf("queues=%d: guest-to-guest ports (no backend) have one queue pair; drop queues= or give a backend", s.Queues)
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// PlainName reports whether s is not empty and has only letters, digits,
// '.', '_' and '-': the characters a name may have that appears in paths,
// URLs and metric labels.
func PlainName(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

// CheckName checks a port name: 1..64 characters from letters, digits, '.',
// '_' and '-', not starting with '.' or '-'. Names appear in URL paths,
// metric labels and capture file names.
func CheckName(name string) error {
	if !(len(name) <= 64 && PlainName(name) && name[0] != '.' && name[0] != '-') {
		return fmt.Errorf("name=%s: use 1..64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. name=vm0)", name)
	}
	return nil
}

// checkIfName checks a Linux interface name (dev_valid_name).
func checkIfName(key, v string) error {
	ok := len(v) >= 1 && len(v) <= 15 && v != "." && v != ".."
	for _, c := range v {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%s=%s: interface names are 1..15 characters without '/', ':' or spaces (e.g. %s)", key, v, example(key))
	}
	return nil
}

// String returns the canonical text form: keys in the order of Keys,
// defaults left out. Parse(s.String()) gives s back (FD aside).
func (s Spec) String() string {
	var b []string
	add := func(k, v string) {
		if v != "" {
			b = append(b, k+"="+v)
		}
	}
	add("name", s.Name)
	add("socket", s.Socket)
	if s.Client {
		b = append(b, "client")
	}
	if s.Queues > 1 {
		add("queues", strconv.Itoa(s.Queues))
	}
	add("tap", s.Tap)
	add("macvtap", s.Macvtap)
	add("lower", s.Lower)
	add("mode", s.Mode)
	if s.MAC != "" {
		if hw, err := net.ParseMAC(s.MAC); err == nil {
			add("mac", hw.String())
		} else {
			add("mac", s.MAC)
		}
	}
	if s.Null {
		b = append(b, "null")
	}
	return strings.Join(b, ",")
}

// Equal reports whether two specs describe the same port (FD included).
func (s Spec) Equal(o Spec) bool {
	return s.String() == o.String() && s.HasFD == o.HasFD && (!s.HasFD || s.FD == o.FD)
}

// DecodeJSON decodes a Spec strictly: unknown fields are errors.
func DecodeJSON(data []byte) (Spec, error) {
	var s Spec
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, &Error{Msg: fmt.Sprintf("port spec JSON: %v: send an object with the fields %s", err, jsonFields())}
	}
	if dec.More() {
		return s, &Error{Msg: "port spec JSON: more than one value: send one object"}
	}
	return s, s.Validate()
}

func jsonFields() string {
	f := append([]string(nil), Keys...)
	sort.Strings(f)
	return strings.Join(f, ", ")
}

// CheckSocketAbsolute refuses a relative socket path where no working
// directory is meaningful (the config file, the control API).
func (s Spec) CheckSocketAbsolute() error {
	if s.Socket != "" && !filepath.IsAbs(s.Socket) {
		return fmt.Errorf("port %s: socket=%s is relative: give an absolute path (e.g. socket=/run/vhostd/%s.sock)", s.Name, s.Socket, s.Name)
	}
	return nil
}
