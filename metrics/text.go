package metrics

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vhostd/vhostd/internal/counters"
	"github.com/vhostd/vhostd/virtionet"
)

// Stat is one `name: value` line of `vhostd stats`.
type Stat struct {
	Name  string
	Value string
}

// StatLines lists one queue pair's counters in the spirit of `ethtool -S`:
// the registered counters in declaration order (counterLines), with the
// lines computed from several of them (totals, latency quantiles, means,
// ring state) after the counter they belong with. Reason, drop and errno
// lines with a zero count are left out unless all is set.
func StatLines(c *QueueCounters, all bool) []Stat {
	u := func(name string, v uint64) Stat { return Stat{name, strconv.FormatUint(v, 10)} }
	f := func(name string, v float64) Stat { return Stat{name, strconv.FormatFloat(v, 'f', 2, 64)} }
	derived := map[string]func() []Stat{
		"tx_posted": func() []Stat {
			return []Stat{u("tx_packets", c.TxWritten()), u("tx_bytes", c.TxBytesTotal()), u("tx_dropped", c.TxDropped())}
		},
		"tx_calls_suppressed": func() []Stat {
			p50, _ := c.TxLatency.Quantile(0.5)
			p99, _ := c.TxLatency.Quantile(0.99)
			return []Stat{
				u("tx_completion_latency_p50_us", uint64(p50*1e6+0.5)),
				u("tx_completion_latency_p99_us", uint64(p99*1e6+0.5)),
				u("tx_completion_latency_mean_us", uint64(c.TxLatency.Mean()*1e6+0.5)),
				u("tx_completion_over_1ms", c.TxLatency.CountAbove(firstBoundAtLeast(c.TxLatency.Bounds, TSQLatency))),
				f("tx_batch_mean", c.TxBatch.Mean()),
				u("tx_ring_broken", uint64(b2i(c.TxBroken))),
			}
		},
		"rx_bytes": func() []Stat { return []Stat{u("rx_dropped", c.RxDropped())} },
		"rx_buffers": func() []Stat {
			perPkt := 0.0
			if rx := c.Get(virtionet.CtrRxPackets); rx > 0 {
				perPkt = float64(c.Get(virtionet.CtrRxBuffers)) / float64(rx)
			}
			return []Stat{f("rx_buffers_per_packet", perPkt)}
		},
		"rx_drops": func() []Stat {
			return []Stat{f("rx_batch_mean", c.RxBatch.Mean()), u("rx_ring_broken", uint64(b2i(c.RxBroken)))}
		},
	}
	return counterLines(c, all, derived)
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
			paths = append(paths, fmt.Sprintf("%d %s", c.Labelled(virtionet.CtrTxPackets)[name], name))
		}
		kv("  TX", "%d posted: %s, %d dropped", c.Get(virtionet.CtrTxPosted), strings.Join(paths, ", "), c.TxDropped())
		kv("  TX GSO", "%d super-packets, %d segments written, %d fit one segment", c.Get(virtionet.CtrTxGSOPackets), c.Get(virtionet.CtrTxSegments), c.Get(virtionet.CtrTxGSONoseg))
		if len(c.Labelled(virtionet.CtrTxDecisions)) > 0 {
			kv("  TX reasons", "%s", listCounts(c.Labelled(virtionet.CtrTxDecisions)))
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
		kv("  TX notifications", "%d kicks, %d calls, %d calls suppressed", c.Get(virtionet.CtrTxKicks), c.Get(virtionet.CtrTxCalls), c.Get(virtionet.CtrTxCallsSupp))
		perPkt := 0.0
		if c.Get(virtionet.CtrRxPackets) > 0 {
			perPkt = float64(c.Get(virtionet.CtrRxBuffers)) / float64(c.Get(virtionet.CtrRxPackets))
		}
		kv("  RX", "%d packets, %d bytes, %d GSO, %.2f buffers per packet, %d dropped, %d stalls",
			c.Get(virtionet.CtrRxPackets), c.Get(virtionet.CtrRxBytes), c.Get(virtionet.CtrRxGSOPackets), perPkt, c.RxDropped(), c.Get(virtionet.CtrRxStalls))
		kv("  RX notifications", "%d kicks, %d calls, %d calls suppressed, %d calls coalesced", c.Get(virtionet.CtrRxKicks), c.Get(virtionet.CtrRxCalls), c.Get(virtionet.CtrRxCallsSupp), c.Get(virtionet.CtrRxCallsCoalesced))
		kv("  Polling", "%s", pollLine(c))
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

// pollLine sums up both workers' adaptive busy-polling.
func pollLine(c *QueueCounters) string {
	dir := func(name string, fam, window counters.ID) string {
		o := c.Labelled(fam)
		return fmt.Sprintf("%s window %d µs, %d hits, %d misses, %d contended, %d sleeps",
			name, c.Get(window), o["hit"], o["miss"], o["contended"], o["sleep"])
	}
	return dir("TX", virtionet.CtrTxPoll, virtionet.CtrTxPollWindow) + "; " + dir("RX", virtionet.CtrRxPoll, virtionet.CtrRxPollWindow)
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
