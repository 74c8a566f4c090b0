// Package metrics exposes a vhostd port's counters: a Prometheus collector
// that reads the datapath's atomic counters only when scraped, a JSON status
// snapshot for the admin API, the `ethtool -S`-style stat lines of
// `vhostd stats`, and the plain-words diagnosis of `vhostd status`.
//
// Nothing here runs on the datapath. The workers add to
// virtionet.QueueStats once per batch; this package loads those atomics at
// scrape or status time and never takes a lock the datapath could wait on.
package metrics

import (
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/virtionet"
)

// Port is one vhostd port as the collector and the admin API see it.
type Port struct {
	Device *virtionet.Device
	// Session reports the vhost-user side; nil leaves out the connection
	// gauge and the message counters.
	Session SessionSource
	// BackendKind is "tap", "null", ...; BackendName is the host interface
	// (the tap's name) or "". Both only shape the advice in diagnoses.
	BackendKind string
	BackendName string
	// LimitsFromFlags is set when gso_max_size/gso_max_segs were forced
	// with --gso-max-size/--gso-max-segs instead of read from the link, so
	// advice says to change the flag rather than the link.
	LimitsFromFlags bool
}

// Name returns the port name.
func (p Port) Name() string { return p.Device.Name() }

// SessionSource is what the metrics need from the vhost-user side of a
// port. The vhost-user package does not count messages yet; ServerSource
// adapts a *vhostuser.Server and reports counts once the server or its
// session grows a MessageCounts method of this shape.
type SessionSource interface {
	// Connected reports whether a front-end is attached to the socket.
	Connected() bool
	// MessageCounts calls fn once per request name (e.g. "SET_MEM_TABLE")
	// with the number of messages handled so far; it may call fn zero times.
	MessageCounts(fn func(req string, n uint64))
}

// SessionDetails is optionally implemented by a SessionSource to fill the
// ring states and negotiated vhost-user state in /status.
type SessionDetails interface {
	// Rings returns a snapshot of every vring, or nil when not connected.
	Rings() []vhostuser.RingState
	// Negotiated returns the acked virtio features (with bit 30), the
	// protocol features and the last SET_STATUS value; ok is false when no
	// front-end is attached.
	Negotiated() (features uint64, protocol vhostuser.ProtocolFeatures, status uint8, ok bool)
}

// messageCounter is the method ServerSource looks for on the server (counts
// kept across sessions, preferred) or on the running session.
type messageCounter interface {
	MessageCounts(fn func(req string, n uint64))
}

// ServerSource adapts a *vhostuser.Server to SessionSource and
// SessionDetails.
type ServerSource struct {
	srv *vhostuser.Server
}

// NewServerSource returns a SessionSource for srv.
func NewServerSource(srv *vhostuser.Server) *ServerSource { return &ServerSource{srv: srv} }

var (
	_ SessionSource  = (*ServerSource)(nil)
	_ SessionDetails = (*ServerSource)(nil)
)

// Connected implements SessionSource: a session runs while a front-end is
// connected to the socket.
func (s *ServerSource) Connected() bool { return s.srv.Session() != nil }

// MessageCounts implements SessionSource. The checks are dynamic so that the
// counts appear as soon as vhostuser provides them, without a change here.
func (s *ServerSource) MessageCounts(fn func(req string, n uint64)) {
	if mc, ok := any(s.srv).(messageCounter); ok {
		mc.MessageCounts(fn)
		return
	}
	if sess := s.srv.Session(); sess != nil {
		if mc, ok := any(sess).(messageCounter); ok {
			mc.MessageCounts(fn)
		}
	}
}

// Rings implements SessionDetails.
func (s *ServerSource) Rings() []vhostuser.RingState {
	if sess := s.srv.Session(); sess != nil {
		return sess.RingStates()
	}
	return nil
}

// Negotiated implements SessionDetails.
func (s *ServerSource) Negotiated() (uint64, vhostuser.ProtocolFeatures, uint8, bool) {
	sess := s.srv.Session()
	if sess == nil {
		return 0, 0, 0, false
	}
	f, p := sess.Features()
	return f, p, sess.Status(), true
}

// SessionOf adapts a single *vhostuser.Session (tests, or a caller that runs
// sessions itself) to SessionSource and SessionDetails. connected reports
// whether the session still runs.
func SessionOf(sess *vhostuser.Session, connected func() bool) SessionSource {
	return &sessionSource{sess: sess, connected: connected}
}

type sessionSource struct {
	sess      *vhostuser.Session
	connected func() bool
}

func (s *sessionSource) Connected() bool { return s.connected() }

func (s *sessionSource) MessageCounts(fn func(req string, n uint64)) {
	if mc, ok := any(s.sess).(messageCounter); ok {
		mc.MessageCounts(fn)
	}
}

func (s *sessionSource) Rings() []vhostuser.RingState {
	if !s.connected() {
		return nil
	}
	return s.sess.RingStates()
}

func (s *sessionSource) Negotiated() (uint64, vhostuser.ProtocolFeatures, uint8, bool) {
	if !s.connected() {
		return 0, 0, 0, false
	}
	f, p := s.sess.Features()
	return f, p, s.sess.Status(), true
}

// logStatser is implemented by session sources that can report the dirty
// log (live migration).
type logStatser interface {
	LogStats() (vhostuser.LogStats, bool)
}

// LogStats reports the running session's dirty log; ok is false when no
// front-end is attached.
func (s *ServerSource) LogStats() (vhostuser.LogStats, bool) {
	if sess := s.srv.Session(); sess != nil {
		return sess.LogStats(), true
	}
	return vhostuser.LogStats{}, false
}

func (s *sessionSource) LogStats() (vhostuser.LogStats, bool) {
	if !s.connected() {
		return vhostuser.LogStats{}, false
	}
	return s.sess.LogStats(), true
}
