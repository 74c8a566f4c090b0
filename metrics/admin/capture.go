package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Capture limits.
const (
	// DefaultCaptureTimeout bounds a capture whose count is not reached.
	DefaultCaptureTimeout = 60 * time.Second
	MaxCaptureTimeout     = time.Hour
	MaxCaptureCount       = 10_000_000
	// DefaultSnaplen keeps a whole 64 KiB super-packet with its Ethernet
	// and VLAN headers.
	DefaultSnaplen = 65535 + 18
	// captureDepth is the most slots between the datapath and the file
	// writer; packets arriving while all are full are skipped (counted).
	captureDepth = 1024
	// drainGrace is how long to wait, after the capture ends, for packets
	// the datapath reserved a slot for but had not handed over yet.
	drainGrace = 50 * time.Millisecond
)

// CaptureOptions describe one capture.
type CaptureOptions struct {
	Dir     virtionet.CaptureDir
	Count   int64 // packets to record, 1..MaxCaptureCount
	Snaplen int   // bytes kept per packet; 0: DefaultSnaplen
	// File is the pcap path; the decisions go to File + ".decisions.tsv".
	// Through the API it is always a plain name joined to the capture
	// directory.
	File string
	// Format is "pcap" (default) or "pcapng"; pcapng also carries each
	// TX packet's decision as a packet comment, shown by Wireshark.
	Format  string
	Timeout time.Duration // 0: DefaultCaptureTimeout
}

// CaptureResult is what a capture wrote.
type CaptureResult struct {
	Port          string `json:"port"`
	Dir           string `json:"dir"`
	Format        string `json:"format"`
	File          string `json:"file"`
	DecisionsFile string `json:"decisions_file"`
	Requested     int64  `json:"requested"`
	Packets       uint64 `json:"packets"`
	Skipped       uint64 `json:"skipped"` // not recorded because the writer lagged; the datapath never waits
	Complete      bool   `json:"complete"`
	// Ended says why the capture ended: "count reached", "timeout",
	// "stopped" (DELETE), "cancelled" (the client went away or vhostd is
	// stopping) or "replaced" (another capture took the port).
	Ended    string    `json:"ended"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// State is "starting" (files being created), "running" (attached to
	// the datapath) or "done".
	State string `json:"state"`
}

// captureRun is a running capture, for GET and DELETE.
type captureRun struct {
	result  CaptureResult // set before the run is published; read-only after
	packets atomic.Uint64
	capture atomic.Pointer[virtionet.Capture]
	stop    context.CancelFunc
	stopped atomic.Bool
}

func parseDir(s string) (virtionet.CaptureDir, error) {
	switch s {
	case "tx":
		return virtionet.CaptureTX, nil
	case "rx":
		return virtionet.CaptureRX, nil
	case "both", "":
		return virtionet.CaptureBoth, nil
	}
	return 0, fmt.Errorf("dir=%q: use tx (guest to backend), rx (backend to guest) or both", s)
}

// parseCaptureQuery reads the PUT /ports/{name}/capture parameters.
func (s *Server) parseCaptureQuery(port string, r *http.Request) (CaptureOptions, error) {
	q := r.URL.Query()
	var o CaptureOptions
	var err error
	if o.Dir, err = parseDir(q.Get("dir")); err != nil {
		return o, err
	}
	cs := q.Get("count")
	if cs == "" {
		return o, errors.New("count is missing: give count=N, the number of packets to record (1..10000000)")
	}
	if o.Count, err = strconv.ParseInt(cs, 10, 64); err != nil || o.Count < 1 || o.Count > MaxCaptureCount {
		return o, fmt.Errorf("count=%q: give a number of packets from 1 to %d", cs, MaxCaptureCount)
	}
	if v := q.Get("snaplen"); v != "" {
		if o.Snaplen, err = strconv.Atoi(v); err != nil || o.Snaplen < 64 || o.Snaplen > DefaultSnaplen {
			return o, fmt.Errorf("snaplen=%q: give the bytes to keep per packet, 64..%d", v, DefaultSnaplen)
		}
	}
	switch o.Format = q.Get("format"); o.Format {
	case "":
		o.Format = "pcap"
	case "pcap", "pcapng":
	default:
		return o, fmt.Errorf("format=%q: use pcap or pcapng", o.Format)
	}
	if v := q.Get("timeout"); v != "" {
		if o.Timeout, err = time.ParseDuration(v); err != nil || o.Timeout <= 0 || o.Timeout > MaxCaptureTimeout {
			return o, fmt.Errorf("timeout=%q: give a duration such as 30s, at most %v", v, MaxCaptureTimeout)
		}
	}
	name := q.Get("file")
	if name == "" {
		name = fmt.Sprintf("vhostd-%s-%s.%s", port, time.Now().Format("20060102-150405.000"), o.Format)
	} else if err := CheckCaptureName(name); err != nil {
		return o, fmt.Errorf("%v; captures are written only under the capture directory %s (--capture-dir)", err, s.captureDir)
	}
	o.File = filepath.Join(s.captureDir, name)
	return o, nil
}

func (s *Server) handlePutCapture(w http.ResponseWriter, r *http.Request) {
	p, ok := s.port(w, r.PathValue("name"))
	if !ok {
		return
	}
	opt, err := s.parseCaptureQuery(p.Name(), r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	run := &captureRun{stop: cancel, result: newResult(p.Name(), opt)}
	s.mu.Lock()
	if cur := s.captures[p.Name()]; cur != nil {
		s.mu.Unlock()
		writeError(w, http.StatusConflict, "a capture is already running on port %s (writing %s since %s); wait for it or end it with DELETE /ports/%s/capture",
			p.Name(), cur.result.File, cur.result.Started.Format(time.RFC3339), p.Name())
		return
	}
	s.captures[p.Name()] = run
	s.mu.Unlock()
	// The port may have been removed since it was looked up; RemovePort
	// only ends the captures it sees.
	s.pmu.RLock()
	_, still := s.ports[p.Name()]
	s.pmu.RUnlock()
	if !still {
		s.mu.Lock()
		delete(s.captures, p.Name())
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "port %s was removed", p.Name())
		return
	}
	defer func() {
		s.mu.Lock()
		delete(s.captures, p.Name())
		s.mu.Unlock()
	}()

	pf, tf, err := s.createCaptureFiles(filepath.Base(opt.File))
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, fs.ErrExist) {
			code = http.StatusConflict
		}
		writeError(w, code, "%v", err)
		return
	}
	s.log.Info("capture started", "port", p.Name(), "dir", opt.Dir.String(), "count", opt.Count, "file", opt.File)
	res, err := runCapture(ctx, p.Device, opt, run, pf, tf)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if run.stopped.Load() && !res.Complete {
		res.Ended = "stopped"
	}
	s.mu.Lock()
	s.last[p.Name()] = &res
	s.mu.Unlock()
	s.log.Info("capture finished", "port", p.Name(), "file", res.File, "packets", res.Packets, "skipped", res.Skipped, "ended", res.Ended)
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleGetCapture(w http.ResponseWriter, r *http.Request) {
	p, ok := s.port(w, r.PathValue("name"))
	if !ok {
		return
	}
	s.mu.Lock()
	cur, last := s.captures[p.Name()], s.last[p.Name()]
	s.mu.Unlock()
	switch {
	case cur != nil:
		res := cur.result
		res.State = "starting"
		res.Packets = cur.packets.Load()
		if c := cur.capture.Load(); c != nil {
			res.State = "running"
			res.Skipped = c.Skipped.Load()
		}
		writeJSON(w, http.StatusOK, res)
	case last != nil:
		writeJSON(w, http.StatusOK, last)
	default:
		writeError(w, http.StatusNotFound, "no capture has run on port %s yet: start one with PUT /ports/%s/capture?dir=both&count=100", p.Name(), p.Name())
	}
}

func (s *Server) handleDeleteCapture(w http.ResponseWriter, r *http.Request) {
	p, ok := s.port(w, r.PathValue("name"))
	if !ok {
		return
	}
	s.mu.Lock()
	cur := s.captures[p.Name()]
	s.mu.Unlock()
	if cur == nil {
		writeError(w, http.StatusNotFound, "no capture is running on port %s", p.Name())
		return
	}
	cur.stopped.Store(true)
	cur.stop()
	writeJSON(w, http.StatusOK, map[string]any{"port": p.Name(), "stopping": true, "file": cur.result.File})
}

// decisionsSuffix names the side file of a capture.
const decisionsSuffix = ".decisions.tsv"

// maxCaptureName bounds a capture file name (the side file adds 14 bytes).
const maxCaptureName = 200

// CheckCaptureName accepts a plain file name for a capture: no directory
// part, no "..", not hidden, printable, at most 200 bytes.
func CheckCaptureName(name string) error {
	bad := name == "" || len(name) > maxCaptureName || strings.HasPrefix(name, ".") ||
		strings.ContainsAny(name, "/\\")
	for _, c := range name {
		if c < ' ' || c == 0x7f {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("file=%q: give a plain file name such as vm0.pcap (no directory, no '..', not starting with '.', at most %d bytes)", name, maxCaptureName)
	}
	return nil
}

// createCaptureFiles creates the pcap file name and its decisions file in
// the capture directory, 0600, refusing to replace anything and never
// following a symlink: the directory is opened with O_NOFOLLOW|O_DIRECTORY
// and the files with openat(O_CREAT|O_EXCL|O_NOFOLLOW) relative to it.
func (s *Server) createCaptureFiles(name string) (pcap, tsv *os.File, err error) {
	if err := CheckCaptureName(name); err != nil {
		return nil, nil, err
	}
	dfd, err := openCaptureDir(s.captureDir)
	if err != nil {
		return nil, nil, err
	}
	defer unix.Close(dfd)
	create := func(n string) (*os.File, error) {
		fd, err := unix.Openat(dfd, n, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			path := filepath.Join(s.captureDir, n)
			if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ELOOP) {
				return nil, fmt.Errorf("capture file %s already exists: choose another file= or remove it (captures never overwrite): %w", path, fs.ErrExist)
			}
			return nil, fmt.Errorf("creating capture file %s: %w", path, err)
		}
		return os.NewFile(uintptr(fd), filepath.Join(s.captureDir, n)), nil
	}
	pcap, err = create(name)
	if err != nil {
		return nil, nil, err
	}
	tsv, err = create(name + decisionsSuffix)
	if err != nil {
		pcap.Close()
		unix.Unlinkat(dfd, name, 0)
		return nil, nil, err
	}
	return pcap, tsv, nil
}

// openCaptureDir creates dir (0700) if missing and opens it without
// following a symlink. A directory others may write to is refused: they
// could swap names under vhostd.
func openCaptureDir(dir string) (int, error) {
	if !filepath.IsAbs(dir) {
		return -1, fmt.Errorf("capture directory %s: give an absolute --capture-dir", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return -1, fmt.Errorf("creating the capture directory %s: %w (choose another with --capture-dir)", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return -1, fmt.Errorf("capture directory %s is a symlink or not a directory: give the real directory with --capture-dir", dir)
		}
		return -1, fmt.Errorf("opening the capture directory %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("capture directory %s: %w", dir, err)
	}
	if st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("capture directory %s is owned by uid %d with mode %04o: it must belong to vhostd's user (uid %d) and not be writable by group or others (chown %d %s; chmod 0700 %s)",
			dir, st.Uid, st.Mode&0o7777, os.Geteuid(), os.Geteuid(), dir, dir)
	}
	return fd, nil
}

// createNew creates path for RunCapture, 0600, refusing to replace an
// existing file or to follow a symlink.
func createNew(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("capture file %s already exists: choose another file or remove it (captures never overwrite): %w", path, fs.ErrExist)
	}
	if err != nil {
		return nil, fmt.Errorf("creating capture file: %w (does the directory exist and is it writable?)", err)
	}
	return f, nil
}

func newResult(port string, opt CaptureOptions) CaptureResult {
	return CaptureResult{
		Port: port, Dir: opt.Dir.String(), Format: opt.Format, File: opt.File,
		DecisionsFile: opt.File + decisionsSuffix, Requested: opt.Count, Started: time.Now().UTC(),
	}
}

// packetWriter writes one captured packet to the capture file.
type packetWriter func(p *virtionet.CapturedPacket) error

// RunCapture records packets of dev into a pcap (or pcapng) file and a
// .decisions.tsv side file until opt.Count packets are written, the timeout
// passes or ctx ends. The datapath only ever copies into free slots of a
// bounded queue (virtionet.Capture); when the writer lags, packets are
// skipped and counted, never waited for.
//
// The files are created 0600 at opt.File and opt.File + ".decisions.tsv"
// and never replace anything. (The API writes only under its capture
// directory; this is for callers that chose the path themselves.)
func RunCapture(ctx context.Context, dev *virtionet.Device, opt CaptureOptions) (CaptureResult, error) {
	pf, err := createNew(opt.File)
	if err != nil {
		return newResult(dev.Name(), opt), err
	}
	tf, err := createNew(opt.File + decisionsSuffix)
	if err != nil {
		pf.Close()
		os.Remove(opt.File)
		return newResult(dev.Name(), opt), err
	}
	return runCapture(ctx, dev, opt, nil, pf, tf)
}

// runCapture is RunCapture into files already created, reporting progress
// to run (may be nil). It closes pf and tf.
func runCapture(ctx context.Context, dev *virtionet.Device, opt CaptureOptions, run *captureRun, pf, tf *os.File) (CaptureResult, error) {
	defer pf.Close()
	defer tf.Close()
	if opt.Snaplen <= 0 {
		opt.Snaplen = DefaultSnaplen
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultCaptureTimeout
	}
	if opt.Format == "" {
		opt.Format = "pcap"
	}
	if opt.Count < 1 {
		return CaptureResult{}, errors.New("capture count must be at least 1")
	}
	res := newResult(dev.Name(), opt)
	pb := bufio.NewWriterSize(pf, 1<<20)
	tb := bufio.NewWriterSize(tf, 64<<10)

	write, err := newPacketWriter(pb, opt, dev.Name())
	if err != nil {
		return res, fmt.Errorf("writing the capture file header: %w", err)
	}
	fmt.Fprintln(tb, "# index\ttime\tdir\tqueue\tpath\tdecision\treason\tdropped\tgso_type\tgso_size\tcsum_start\tcsum_offset\torig_len\tflags")

	c := virtionet.NewCapture(opt.Dir, opt.Count, opt.Snaplen, int(min(opt.Count, captureDepth)))
	dev.StartCapture(c)
	if run != nil {
		run.capture.Store(c)
	}
	stopped := false
	stop := func() {
		if !stopped {
			dev.StopCapture()
			stopped = true
		}
	}
	defer stop()

	var n uint64
	var werr error
	record := func(p *virtionet.CapturedPacket) {
		defer c.Release(p)
		if werr != nil || int64(n) >= opt.Count {
			return
		}
		if werr = write(p); werr == nil {
			werr = writeDecision(tb, n, p)
		}
		n++
		if run != nil {
			run.packets.Store(n)
		}
	}
	timer := time.NewTimer(opt.Timeout)
	defer timer.Stop()
loop:
	for int64(n) < opt.Count && werr == nil {
		select {
		case p := <-c.Packets():
			record(p)
		case <-c.Done():
			res.Ended = "count reached"
			break loop
		case <-timer.C:
			res.Ended = "timeout"
			break loop
		case <-ctx.Done():
			res.Ended = "cancelled"
			break loop
		}
	}
	stop()
	// Packets the datapath reserved before the stop may still arrive.
	for int64(n) < opt.Count && werr == nil {
		select {
		case p := <-c.Packets():
			record(p)
			continue
		case <-time.After(drainGrace):
		}
		break
	}
	if werr != nil {
		return res, fmt.Errorf("writing %s: %w", res.File, werr)
	}
	if err := pb.Flush(); err != nil {
		return res, fmt.Errorf("writing %s: %w", res.File, err)
	}
	if err := tb.Flush(); err != nil {
		return res, fmt.Errorf("writing %s: %w", res.DecisionsFile, err)
	}
	res.Packets = n
	res.Skipped = c.Skipped.Load()
	res.Complete = int64(n) >= opt.Count
	switch {
	case res.Complete:
		res.Ended = "count reached"
	case res.Ended == "count reached":
		// Done closed early: another capture replaced this one.
		res.Ended = "replaced"
	}
	res.Finished = time.Now().UTC()
	res.State = "done"
	return res, nil
}

func newPacketWriter(w *bufio.Writer, opt CaptureOptions, port string) (packetWriter, error) {
	if opt.Format == "pcapng" {
		ng, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{
			Name: port, Description: "vhostd port " + port, LinkType: layers.LinkTypeEthernet,
			SnapLength: uint32(opt.Snaplen), TimestampResolution: 9,
		}, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "vhostd"}})
		if err != nil {
			return nil, err
		}
		return func(p *virtionet.CapturedPacket) error {
			ci := captureInfo(p)
			if err := ng.WritePacketWithOptions(ci, p.Data, pcapgo.NgPacketOptions{Comments: []string{comment(p)}}); err != nil {
				return err
			}
			return ng.Flush()
		}, nil
	}
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(uint32(opt.Snaplen), layers.LinkTypeEthernet); err != nil {
		return nil, err
	}
	return func(p *virtionet.CapturedPacket) error { return pw.WritePacket(captureInfo(p), p.Data) }, nil
}

func captureInfo(p *virtionet.CapturedPacket) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: p.Time, CaptureLength: len(p.Data), Length: max(p.OrigLen, len(p.Data))}
}

// verdict renders path, decision, reason and drop of a packet as the TSV
// columns do: "-" where a field does not apply.
func verdict(p *virtionet.CapturedPacket) (path, decision, reason, dropped string) {
	if p.Dir != virtionet.CaptureTX {
		return "-", "-", "-", "-"
	}
	path, decision, reason, dropped = p.Path.String(), p.Decision.String(), p.Reason.String(), "-"
	if p.Dropped != virtionet.DropNone {
		dropped = p.Dropped.String()
		path = "-"
		// Only a packet the decision step saw has a decision: one refused
		// by the backend, or one the decision itself dropped.
		if p.Dropped != virtionet.DropBackendWrite && p.Decision != gso.DecisionDrop {
			decision, reason = "-", "-"
		}
	}
	return
}

// queuePair converts CapturedPacket.Queue, the vring index (receiveq(k) is
// vring 2k, transmitq(k) is 2k+1, virtio 5.1.2), to the queue pair index the
// metrics use as their queue label.
func queuePair(p *virtionet.CapturedPacket) int { return p.Queue / 2 }

func writeDecision(w *bufio.Writer, index uint64, p *virtionet.CapturedPacket) error {
	path, decision, reason, dropped := verdict(p)
	_, err := fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n",
		index, p.Time.UTC().Format(time.RFC3339Nano), p.Dir, queuePair(p), path, decision, reason, dropped,
		GSOTypeName(p.Hdr.GSOType), p.Hdr.GSOSize, p.Hdr.CsumStart, p.Hdr.CsumOffset, p.OrigLen, flagNames(p.Hdr.Flags))
	return err
}

// comment is the pcapng packet comment: the same facts as the TSV line.
func comment(p *virtionet.CapturedPacket) string {
	path, decision, reason, dropped := verdict(p)
	var b strings.Builder
	fmt.Fprintf(&b, "vhostd %s queue %d", p.Dir, queuePair(p))
	if p.Dir == virtionet.CaptureTX {
		fmt.Fprintf(&b, " path=%s decision=%s reason=%s", path, decision, reason)
		if dropped != "-" {
			fmt.Fprintf(&b, " dropped=%s", dropped)
		}
	}
	fmt.Fprintf(&b, " virtio_net_hdr: gso_type=%s gso_size=%d csum_start=%d csum_offset=%d flags=%s",
		GSOTypeName(p.Hdr.GSOType), p.Hdr.GSOSize, p.Hdr.CsumStart, p.Hdr.CsumOffset, flagNames(p.Hdr.Flags))
	if p.Hdr.NumBuffers != 0 {
		fmt.Fprintf(&b, " num_buffers=%d", p.Hdr.NumBuffers)
	}
	return b.String()
}

// GSOTypeName names a virtio_net_hdr gso_type (virtio spec 5.1.6):
// "none", "tcpv4", "tcpv6", "udp", "udp_l4", with "|ecn" for the ECN bit.
func GSOTypeName(t uint8) string {
	var name string
	switch t &^ vnet.GSOECN {
	case vnet.GSONone:
		name = "none"
	case vnet.GSOTCPv4:
		name = "tcpv4"
	case vnet.GSOTCPv6:
		name = "tcpv6"
	case vnet.GSOUDP:
		name = "udp"
	case vnet.GSOUDPL4:
		name = "udp_l4"
	default:
		name = fmt.Sprintf("%#x", t&^vnet.GSOECN)
	}
	if t&vnet.GSOECN != 0 {
		name += "|ecn"
	}
	return name
}

// flagNames names virtio_net_hdr flags: "needs_csum|data_valid", or "-".
func flagNames(f uint8) string {
	var parts []string
	for _, b := range []struct {
		bit  uint8
		name string
	}{
		{vnet.FlagNeedsCsum, "needs_csum"}, {vnet.FlagDataValid, "data_valid"},
		{vnet.FlagRSCInfo, "rsc_info"}, {vnet.FlagUDPTunnelCsum, "udp_tunnel_csum"},
	} {
		if f&b.bit != 0 {
			parts = append(parts, b.name)
			f &^= b.bit
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("%#x", f))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "|")
}
