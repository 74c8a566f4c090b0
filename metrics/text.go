package metrics

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Stat is one `name: value` line of `vhostd stats`.
type Stat struct {
	Name  string
	Value string
}

// StatLines lists one queue pair's counters in the spirit of `ethtool -S`:
// totals first, then per path, reason and errno. Reason, drop and errno
// lines with a zero count are left out unless all is set.
func StatLines(c *QueueCounters, all bool) []Stat {
	var out []Stat
	u := func(name string, v uint64) { out = append(out, Stat{name, strconv.FormatUint(v, 10)}) }
	f := func(name string, v float64) { out = append(out, Stat{name, strconv.FormatFloat(v, 'f', 2, 64)}) }
	b := func(name string, v bool) {
		if v {
			u(name, 1)
		} else {
			u(name, 0)
		}
	}
	labelled := func(prefix string, m map[string]uint64, names []string) {
		for _, n := range names {
			if v := m[n]; v != 0 || all {
				u(prefix+n, v)
			}
		}
	}

	u("tx_posted", c.TxPosted)
	u("tx_packets", c.TxWritten())
	u("tx_bytes", c.TxBytesTotal())
	u("tx_dropped", c.TxDropped())
	for p := 0; p < virtionet.NumTxPaths; p++ {
		name := virtionet.TxPath(p).String()
		u("tx_"+name+"_packets", c.TxPackets[name])
		u("tx_"+name+"_bytes", c.TxBytes[name])
	}
	u("tx_gso_packets", c.TxGSOPackets)
	u("tx_gso_segments", c.TxGSOSegments)
	u("tx_gso_packets_noseg", c.TxGSOPacketsNoseg)
	labelled("tx_decision_", c.TxDecisions, reasonNames())
	labelled("tx_drop_", c.TxDrops, dropNames("tx"))
	labelled("tx_header_error_", c.TxHeaderErrors, hdrReasonNames())
	for _, e := range sortedKeys(c.TxWriteErrors) {
		u("tx_write_error_"+strings.ToLower(e), c.TxWriteErrors[e])
	}
	u("tx_kicks", c.TxKicks)
	u("tx_calls", c.TxCalls)
	u("tx_calls_suppressed", c.TxCallsSuppressed)
	p50, _ := c.TxLatency.Quantile(0.5)
	p99, _ := c.TxLatency.Quantile(0.99)
	u("tx_completion_latency_p50_us", uint64(p50*1e6+0.5))
	u("tx_completion_latency_p99_us", uint64(p99*1e6+0.5))
	u("tx_completion_latency_mean_us", uint64(c.TxLatency.Mean()*1e6+0.5))
	u("tx_completion_over_1ms", c.TxLatency.CountAbove(firstBoundAtLeast(c.TxLatency.Bounds, TSQLatency)))
	f("tx_batch_mean", c.TxBatch.Mean())
	b("tx_ring_broken", c.TxBroken)

	u("rx_packets", c.RxPackets)
	u("rx_bytes", c.RxBytes)
	u("rx_dropped", c.RxDropped())
	u("rx_gso_packets", c.RxGSOPackets)
	u("rx_buffers", c.RxBuffers)
	perPkt := 0.0
	if c.RxPackets > 0 {
		perPkt = float64(c.RxBuffers) / float64(c.RxPackets)
	}
	f("rx_buffers_per_packet", perPkt)
	u("rx_csum_completed", c.RxCsumCompleted)
	u("rx_kicks", c.RxKicks)
	u("rx_calls", c.RxCalls)
	u("rx_calls_suppressed", c.RxCallsSuppressed)
	u("rx_stalls", c.RxStalls)
	u("rx_read_errors", c.RxReadErrors)
	u("rx_buffers_unused", c.RxBuffersUnused)
	labelled("rx_drop_", c.RxDrops, dropNames("rx"))
	f("rx_batch_mean", c.RxBatch.Mean())
	b("rx_ring_broken", c.RxBroken)
	return out
}

// firstBoundAtLeast returns the first bound >= v, or +large if none.
func firstBoundAtLeast(bounds []float64, v float64) float64 {
	for _, b := range bounds {
		if b >= v {
			return b
		}
	}
	return 1e308
}

func reasonNames() []string {
	var out []string
	for r := gso.Reason(0); r < gso.NumReasons; r++ {
		if decisionReasonApplies(r) {
			out = append(out, r.String())
		}
	}
	return out
}

func dropNames(dir string) []string {
	var out []string
	for d := virtionet.Drop(0); int(d) < virtionet.NumDrops; d++ {
		if dropApplies(d, dir) {
			out = append(out, d.String())
		}
	}
	return out
}

func hdrReasonNames() []string {
	var out []string
	for r := vnet.HdrReason(1); int(r) < vnet.NumHdrReasons; r++ {
		out = append(out, r.String())
	}
	return out
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// WriteStats prints `vhostd stats`: per port and queue pair, one
// `name: value` line per counter.
func WriteStats(w io.Writer, st Status, all bool) error {
	ew := &errWriter{w: w}
	for _, ps := range st.Ports {
		for _, qp := range ps.QueuePairs {
			ew.printf("%s queue pair %d statistics:\n", ps.Name, qp.Index)
			for _, s := range StatLines(&qp.Counters, all) {
				ew.printf("     %s: %s\n", s.Name, s.Value)
			}
		}
		if len(ps.Messages) > 0 {
			ew.printf("%s vhost-user messages:\n", ps.Name)
			for _, k := range sortedKeys(ps.Messages) {
				ew.printf("     %s: %d\n", strings.ToLower(k), ps.Messages[k])
			}
		}
	}
	return ew.err
}

// WriteStatus prints `vhostd status`: what was negotiated, the backend,
// the rings, a counter summary and the diagnosis in plain words.
func WriteStatus(w io.Writer, st Status) error {
	ew := &errWriter{w: w}
	for i, ps := range st.Ports {
		if i > 0 {
			ew.printf("\n")
		}
		writePortStatus(ew, &ps)
	}
	return ew.err
}

const statusWidth = 100

func writePortStatus(ew *errWriter, ps *PortStatus) {
	title := "Port " + ps.Name
	if ps.BackendKind != "" {
		title += " (" + strings.TrimSpace(ps.BackendKind+" "+ps.BackendName) + ")"
	}
	ew.printf("%s\n", title)
	kv := func(k, format string, args ...any) {
		ew.printf("  %-20s %s\n", k+":", fmt.Sprintf(format, args...))
	}
	if ps.Connected != nil {
		kv("Front-end", "%s", yesNo(*ps.Connected, "connected", "not connected"))
	}
	kv("GSO policy", "%s", ps.Policy)
	kv("virtio_net_hdr", "%d bytes", ps.HdrLen)
	kv("Offered features", "%s", featureLine(ps.Offered))
	kv("Negotiated", "%s", featureLine(ps.Negotiated))
	if ps.ProtocolFeatures != "" {
		kv("Protocol features", "%s", ps.ProtocolFeatures)
	}
	if len(ps.DeviceStatus) > 0 {
		kv("Device status", "%s", strings.Join(ps.DeviceStatus, "|"))
	}
	if m := ps.MTU; m != nil {
		if m.Applied {
			kv("Guest MTU", "%d: %s", m.Requested, m.Detail)
		} else {
			kv("Guest MTU", "%d REFUSED (QEMU reports \"MTU not supported by the backend\"): %s", m.Requested, m.Detail)
		}
	}
	if m := ps.Migration; m != nil {
		state := "off"
		if m.DirtyLogging {
			state = "ON (a live migration is copying memory)"
		}
		kv("Live migration", "dirty logging %s, %d pages marked in a %d-byte log, %d RARP announces sent", state, m.PagesMarked, m.LogBytes, m.RARPsSent)
		if m.LogOverflows > 0 {
			kv("", "[warning] %d writes fell outside the front-end's log (its log is too small for its memory): those pages may reach the destination stale", m.LogOverflows)
		}
	}
	for _, qp := range ps.QueuePairs {
		ew.printf("  Queue pair %d\n", qp.Index)
		kv("  Backend", "offloads %s, gso_max_size %d, gso_max_segs %d, mtu %d",
			offloadList(qp.Backend.Offloads), qp.Backend.GSOMaxSize, qp.Backend.GSOMaxSegs, qp.Backend.MTU)
		if qp.Backend.LimitsFrom != "" {
			kv("  Limits from", "%s", qp.Backend.LimitsFrom)
		}
		if len(ps.QueuePairs) > 1 {
			kv("  Backend queue", "%s", yesNo(qp.Backend.Attached, "attached", "detached (the guest has this pair disabled; the host steers no packets to it)"))
		}
		for _, r := range qp.Rings {
			state := []string{yesNo(r.Started, "started", "stopped"), yesNo(r.Enabled, "enabled", "disabled")}
			if r.Broken {
				state = append(state, "BROKEN")
			}
			line := fmt.Sprintf("vring %d, %s, size %d", r.Vring, strings.Join(state, ", "), r.Size)
			if r.Layout == "packed" {
				line += ", packed"
			}
			if !r.Started {
				// While a ring runs the session only knows the index it
				// started from, which says nothing about the live ring.
				line += fmt.Sprintf(", next avail %d", r.LastAvail)
			}
			kv("  "+strings.ToUpper(r.Kind)+" ring", "%s", line)
		}
		c := &qp.Counters
		var paths []string
		for p := 0; p < virtionet.NumTxPaths; p++ {
			name := virtionet.TxPath(p).String()
			paths = append(paths, fmt.Sprintf("%d %s", c.TxPackets[name], name))
		}
		kv("  TX", "%d posted: %s, %d dropped", c.TxPosted, strings.Join(paths, ", "), c.TxDropped())
		kv("  TX GSO", "%d super-packets, %d segments written, %d fit one segment", c.TxGSOPackets, c.TxGSOSegments, c.TxGSOPacketsNoseg)
		if len(c.TxDecisions) > 0 {
			kv("  TX reasons", "%s", listCounts(c.TxDecisions))
		}
		if c.TxLatency.Count > 0 {
			p50, _ := c.TxLatency.Quantile(0.5)
			p99, above := c.TxLatency.Quantile(0.99)
			p99s := dur(p99)
			if above {
				p99s = "above " + p99s
			}
			kv("  TX completion", "p50 %s, p99 %s over %d packets; batches of %.1f", dur(p50), p99s, c.TxLatency.Count, c.TxBatch.Mean())
		}
		kv("  TX notifications", "%d kicks, %d calls, %d calls suppressed", c.TxKicks, c.TxCalls, c.TxCallsSuppressed)
		perPkt := 0.0
		if c.RxPackets > 0 {
			perPkt = float64(c.RxBuffers) / float64(c.RxPackets)
		}
		kv("  RX", "%d packets, %d bytes, %d GSO, %.2f buffers per packet, %d dropped, %d stalls",
			c.RxPackets, c.RxBytes, c.RxGSOPackets, perPkt, c.RxDropped(), c.RxStalls)
		kv("  RX notifications", "%d kicks, %d calls, %d calls suppressed", c.RxKicks, c.RxCalls, c.RxCallsSuppressed)
	}
	ew.printf("  Diagnosis\n")
	if len(ps.Diagnosis) == 0 {
		ew.printf("    nothing to report yet (no traffic)\n")
	}
	for _, f := range ps.Diagnosis {
		prefix := "    " + fmt.Sprintf("%-9s", "["+f.Severity+"]") + " "
		for i, line := range wrap(f.Message, statusWidth-len(prefix)) {
			if i == 0 {
				ew.printf("%s%s\n", prefix, line)
			} else {
				ew.printf("%s%s\n", strings.Repeat(" ", len(prefix)), line)
			}
		}
	}
}

func featureLine(f FeatureSet) string {
	if len(f.Names) == 0 {
		return "none"
	}
	return strings.Join(f.Names, "|") + " (" + f.Bits + ")"
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

// wrap breaks s into lines of at most width runes at spaces.
func wrap(s string, width int) []string {
	var lines []string
	var cur strings.Builder
	curLen := 0
	for _, word := range strings.Fields(s) {
		wl := utf8.RuneCountInString(word)
		if curLen > 0 && curLen+1+wl > width {
			lines = append(lines, cur.String())
			cur.Reset()
			curLen = 0
		}
		if curLen > 0 {
			cur.WriteByte(' ')
			curLen++
		}
		cur.WriteString(word)
		curLen += wl
	}
	if curLen > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err != nil {
		return
	}
	_, e.err = fmt.Fprintf(e.w, format, args...)
}
