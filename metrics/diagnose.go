package metrics

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/vhostd/vhostd/virtionet"
)

// Finding is one diagnosis in plain words.
type Finding struct {
	// Severity is "error", "warning", "info" or "ok".
	Severity string `json:"severity"`
	// Topic groups findings: connection, rings, segmentation, tx_latency,
	// drops, rx.
	Topic   string `json:"topic"`
	Message string `json:"message"`
}

// Severities, most serious first.
const (
	SevError   = "error"
	SevWarning = "warning"
	SevInfo    = "info"
	SevOK      = "ok"
)

// Thresholds of the diagnosis.
const (
	// TSQLatency is where TX completion latency starts to throttle guest
	// TCP: TCP Small Queues (tcp_small_queue_check in net/ipv4/tcp_output.c)
	// lets a flow have about 1 ms of data at its pacing rate
	// (sk_pacing_shift 10), capped by net.ipv4.tcp_limit_output_bytes,
	// queued below the socket and not yet freed; a virtio-net guest frees a
	// sent skb when its used entry comes back.
	TSQLatency = 0.001
	// SlowFraction: more than this share of packets completing later than
	// TSQLatency is reported.
	SlowFraction = 0.01
	// MinLatencySamples: fewer observations are not judged.
	MinLatencySamples = 100
	// MinPacketsForGSOHint: the "no super-packets at all" hint needs at
	// least this many transmitted packets.
	MinPacketsForGSOHint = 1000
)

// Diagnose explains a port's state: early segmentation and its cause, TX
// completion latency against TCP Small Queues, drops, broken rings and RX
// stalls. Counters are taken as given (cumulative, or an interval from
// PortStatus.Since).
func Diagnose(ps PortStatus) []Finding {
	var out []Finding
	add := func(sev, topic, format string, args ...any) {
		out = append(out, Finding{Severity: sev, Topic: topic, Message: fmt.Sprintf(format, args...)})
	}
	if ps.Connected != nil && !*ps.Connected {
		add(SevInfo, "connection", "No vhost-user front-end is connected to port %s: start the guest with its netdev on this port's socket (QEMU -chardev socket,path=...) or check the socket path.", ps.Name)
	}
	for _, qp := range ps.QueuePairs {
		if qp.Counters.TxBroken {
			add(SevError, "rings", "The transmit ring of queue pair %d is broken (the guest moved its avail index by more than the ring size, or posted an out-of-range head): vhostd stopped it. The guest driver must reset the device (reload virtio_net or reboot the guest).", qp.Index)
		}
		if qp.Counters.RxBroken {
			add(SevError, "rings", "The receive ring of queue pair %d is broken (bad avail index or head from the guest): vhostd stopped it until the guest resets the device (reload virtio_net or reboot the guest).", qp.Index)
		}
	}
	t := ps.Total()
	out = append(out, diagnoseSegmentation(&ps, &t)...)
	out = append(out, diagnoseLatency(&t)...)
	out = append(out, diagnoseDrops(&t)...)
	if t.Get(virtionet.CtrRxStalls) > 0 && t.Get(virtionet.CtrRxPackets) > 0 && t.Get(virtionet.CtrRxStalls)*100 > t.Get(virtionet.CtrRxPackets) {
		add(SevInfo, "rx", "Receive waited %d times for the guest to post buffers (%d packets delivered): the guest does not refill its RX ring fast enough. A larger ring helps (QEMU -device virtio-net-pci,rx_queue_size=1024); packets wait in vhostd meanwhile rather than being dropped.", t.Get(virtionet.CtrRxStalls), t.Get(virtionet.CtrRxPackets))
	}
	sort.SliceStable(out, func(i, j int) bool { return sevRank(out[i].Severity) < sevRank(out[j].Severity) })
	return out
}

func sevRank(s string) int {
	switch s {
	case SevError:
		return 0
	case SevWarning:
		return 1
	case SevInfo:
		return 2
	}
	return 3
}

// backendRef names the backend in advice: "tap vm0" or "the null backend".
func backendRef(ps *PortStatus) string {
	switch {
	case ps.BackendKind != "" && ps.BackendName != "":
		return ps.BackendKind + " " + ps.BackendName
	case ps.BackendKind != "":
		return "the " + ps.BackendKind + " backend"
	}
	return "the backend"
}

func devRef(ps *PortStatus) string {
	if ps.BackendName != "" {
		return ps.BackendName
	}
	return "DEV"
}

// raiseLimit is the advice to raise a backend limit.
func raiseLimit(ps *PortStatus, knob, flag string, value uint32) string {
	if ps.LimitsFromFlags || ps.BackendKind != "tap" {
		return fmt.Sprintf("raise it (vhostd %s %d, or leave the flag out to use the link's value)", flag, value)
	}
	dev := devRef(ps)
	if e := egressDevice(ps); e != "" {
		dev = e
	}
	return fmt.Sprintf("raise it on %s (ip link set dev %s %s %d; vhostd follows the change within seconds), or name another egress device with --egress-dev", dev, dev, knob, value)
}

// egressDevice is the device named first in a tap's LimitsFrom ("eth1
// (bridge br0)"), or "".
func egressDevice(ps *PortStatus) string {
	if len(ps.QueuePairs) == 0 {
		return ""
	}
	from := ps.QueuePairs[0].Backend.LimitsFrom
	name, _, ok := strings.Cut(from, " (")
	if !ok || strings.ContainsAny(name, " ,") {
		return ""
	}
	return name
}

// limitRef says whose limit decided: "egress device eth1 (bridge br0) of tap
// vm0", or the backend when no device is known.
func limitRef(ps *PortStatus) string {
	if ps.BackendKind == "tap" && !ps.LimitsFromFlags && len(ps.QueuePairs) > 0 && egressDevice(ps) != "" {
		return "egress device " + ps.QueuePairs[0].Backend.LimitsFrom + " of " + backendRef(ps)
	}
	return backendRef(ps)
}

func diagnoseSegmentation(ps *PortStatus, t *QueueCounters) []Finding {
	var out []Finding
	add := func(sev, format string, args ...any) {
		out = append(out, Finding{Severity: sev, Topic: "segmentation", Message: fmt.Sprintf(format, args...)})
	}
	var caps BackendStatus
	if len(ps.QueuePairs) > 0 {
		caps = ps.QueuePairs[0].Backend
	}
	gsoPkts := t.Get(virtionet.CtrTxGSOPackets)
	reseg, seg := t.Labelled(virtionet.CtrTxPackets)["resegmented"], t.Labelled(virtionet.CtrTxPackets)["segmented"]
	superPkts := t.Labelled(virtionet.CtrTxPackets)["passthrough"] + reseg + seg
	// The size of the super-packets that were split says how far they
	// are above the limit; without any, the average of all of them.
	avg := uint64(0)
	if reseg+seg > 0 {
		avg = (t.Labelled(virtionet.CtrTxBytes)["resegmented"] + t.Labelled(virtionet.CtrTxBytes)["segmented"]) / (reseg + seg)
	} else if superPkts > 0 {
		avg = (t.Labelled(virtionet.CtrTxBytes)["passthrough"] + t.Labelled(virtionet.CtrTxBytes)["resegmented"] + t.Labelled(virtionet.CtrTxBytes)["segmented"]) / superPkts
	}
	ofGSO := func(n uint64) string {
		if gsoPkts == 0 {
			return fmt.Sprintf("%d", n)
		}
		return fmt.Sprintf("%d of %d super-packets (%s)", n, gsoPkts, pct(n, gsoPkts))
	}
	split := fmt.Sprintf("%d re-segmented into smaller super-packets, %d cut to MSS in vhostd overall", reseg, seg)

	switch ps.Policy {
	case "defer":
		if gsoPkts > 0 {
			add(SevInfo, "Policy defer: vhostd passes every packet whole and the kernel segments what %s cannot take, so no segmentation reason is counted (%d super-packets so far).", backendRef(ps), gsoPkts)
		}
	case "software":
		if seg > 0 {
			add(SevInfo, "Policy software: vhostd cuts every super-packet to MSS itself (%s so far). Switch back with `vhostd policy --port %s auto` to pass them whole where %s can take them.", ofGSO(seg), ps.Name, backendRef(ps))
		}
	}

	reasons := t.Labelled(virtionet.CtrTxDecisions)
	n := func(r string) uint64 { return reasons[r] }
	if c := n("gso_max_size"); c > 0 {
		guest := "the guest's super-packets"
		if avg > 0 {
			guest = fmt.Sprintf("the guest's %s super-packets", kb(avg))
		}
		add(SevWarning, "gso_max_size %d on %s is below %s: %s were split before reaching it (%s). %s, or lower the guest's gso_max_size (inside the guest: ip link set dev <guest NIC> gso_max_size %d) so it builds super-packets that fit.",
			caps.GSOMaxSize, limitRef(ps), guest, ofGSO(c), split, capitalize(raiseLimit(ps, "gso_max_size", "--gso-max-size", 65536)), caps.GSOMaxSize)
	}
	if c := n("gso_max_segs"); c > 0 {
		add(SevWarning, "gso_max_segs %d on %s is below the segment count of the guest's super-packets: %s were split before reaching it (%s). %s, or lower the guest's gso_max_segs (inside the guest: ip link set dev <guest NIC> gso_max_segs %d).",
			caps.GSOMaxSegs, limitRef(ps), ofGSO(c), split, capitalize(raiseLimit(ps, "gso_max_segs", "--gso-max-segs", 65535)), caps.GSOMaxSegs)
	}
	missing := []struct{ reason, kind, offload, guestOff string }{
		{"no_tso4", "TCP/IPv4 super-packets", "tso4", "ethtool -K <guest NIC> tso off"},
		{"no_tso6", "TCP/IPv6 super-packets", "tso6", "ethtool -K <guest NIC> tso off"},
		{"no_tso_ecn", "TCP super-packets with the ECN (CWR) bit", "tso_ecn", "ethtool -K <guest NIC> tx-tcp-ecn-segmentation off"},
		{"no_uso", "UDP (USO) super-packets", "uso", "ethtool -K <guest NIC> tx-udp-segmentation off"},
		{"no_ufo", "UFO super-packets", "ufo", "ethtool -K <guest NIC> ufo off"},
	}
	for _, m := range missing {
		if c := n(m.reason); c > 0 {
			add(SevWarning, "%s does not take %s (offloads: %s, no %s): %s were cut to MSS in vhostd. Give the backend the %s offload, or turn the offload off in the guest (%s) to segment there instead.",
				capitalize(backendRef(ps)), m.kind, offloadList(caps.Offloads), m.offload, ofGSO(c), m.offload, m.guestOff)
		}
	}
	if c := n("no_csum"); c > 0 {
		add(SevWarning, "%s cannot finish partial checksums (no csum offload): vhostd completed the checksum of, or segmented, %d packets itself. Enable checksum offload on the backend, or turn off tx checksumming in the guest (ethtool -K <guest NIC> tx off).",
			capitalize(backendRef(ps)), c)
	}
	if c := n("gso_no_needs_csum"); c > 0 {
		add(SevWarning, "The guest sent %d super-packets without NEEDS_CSUM, which no backend can take whole (the kernel segments such packets in software too): %s were segmented in vhostd. This is a guest driver bug.", c, ofGSO(c))
	}
	if c := n("ipv6_exthdr"); c > 0 {
		add(SevInfo, "%s were segmented in vhostd because they carry IPv6 extension headers and %s has only protocol-specific checksum offload.", capitalize(ofGSO(c)), backendRef(ps))
	}
	if c := n("vlan_multi"); c > 0 {
		add(SevInfo, "%s were segmented in vhostd because they carry more than one VLAN tag, which leaves no GSO offload on the backend (the kernel's vlan_features_check does the same).", capitalize(ofGSO(c)))
	}
	if c := n("mss_exceeds_mtu"); c > 0 {
		add(SevWarning, "%d super-packets were dropped: cut to their MSS they would exceed the backend MTU %d. Lower the guest's MTU to %d or raise the backend's.", c, caps.MTU, caps.MTU)
	}
	warned := slices.ContainsFunc(out, func(f Finding) bool { return f.Severity == SevWarning })
	if !warned {
		switch {
		case gsoPkts > 0 && reseg+seg == 0:
			add(SevOK, "No super-packet was split before the backend: %d of %d passed whole.", t.Labelled(virtionet.CtrTxPackets)["passthrough"], gsoPkts)
		case gsoPkts == 0 && t.Get(virtionet.CtrTxPosted) >= MinPacketsForGSOHint:
			add(SevInfo, "The guest sent no GSO super-packets (%d packets): %s. Large sends cost the guest one packet per MSS.", t.Get(virtionet.CtrTxPosted), gsoHint(ps))
		}
	}
	return out
}

// gsoHint explains why a guest might send no super-packets.
func gsoHint(ps *PortStatus) string {
	var missing []string
	for _, f := range []string{"CSUM", "HOST_TSO4", "HOST_TSO6"} {
		if !slices.Contains(ps.Negotiated.Names, f) {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("%s not negotiated (check QEMU's csum=/host_tso4=/host_tso6= device options and vhostd's --offload-* flags)", strings.Join(missing, ", "))
	}
	return "TSO is negotiated, so it may be off in the guest (ethtool -k <guest NIC>) or the traffic is small packets"
}

func diagnoseLatency(t *QueueCounters) []Finding {
	h := t.TxLatency
	if h.Count < MinLatencySamples {
		return nil
	}
	// The first bucket bound at or above 1 ms: everything beyond it took
	// longer than TSQLatency, exactly.
	limit := 0.0
	for _, b := range h.Bounds {
		if b >= TSQLatency {
			limit = b
			break
		}
	}
	p50, _ := h.Quantile(0.5)
	p99, above := h.Quantile(0.99)
	p99s := dur(p99)
	if above {
		p99s = "above " + p99s
	}
	if limit == 0 {
		return nil
	}
	slow := h.CountAbove(limit)
	if float64(slow) > SlowFraction*float64(h.Count) {
		return []Finding{{Severity: SevWarning, Topic: "tx_latency", Message: fmt.Sprintf(
			"TX completion latency is high enough to throttle guest TCP: p99 %s, p50 %s; %s of %d packets waited more than %s between vhostd seeing them and returning their buffers. "+
				"The guest frees a sent packet only when its used entry comes back, and TCP Small Queues lets each flow keep only about 1 ms of data at its pacing rate "+
				"(and at most net.ipv4.tcp_limit_output_bytes) unfreed, so the flow stalls waiting. Give vhostd CPU time of its own (pin it with taskset or a cgroup away from the vCPU threads), "+
				"check the backend for write errors or a slow consumer, or as a stopgap raise net.ipv4.tcp_limit_output_bytes in the guest.",
			p99s, dur(p50), pct(slow, h.Count), h.Count, dur(limit))}}
	}
	return []Finding{{Severity: SevOK, Topic: "tx_latency", Message: fmt.Sprintf(
		"TX completion latency p99 %s (p50 %s) over %d packets: below the ~1 ms at which TCP Small Queues throttles guest TCP.", p99s, dur(p50), h.Count)}}
}

func diagnoseDrops(t *QueueCounters) []Finding {
	var out []Finding
	if d := t.TxDropped(); d > 0 {
		msg := fmt.Sprintf("%d of %d transmitted packets were dropped (%s): %s.", d, t.Get(virtionet.CtrTxPosted), pct(d, t.Get(virtionet.CtrTxPosted)), listCounts(t.Labelled(virtionet.CtrTxDrops)))
		if t.Labelled(virtionet.CtrTxDrops)["hdr_invalid"] > 0 {
			msg += fmt.Sprintf(" Header errors: %s; the guest sent virtio_net_hdr values the kernel would refuse.", listCounts(t.Labelled(virtionet.CtrTxHdrErrors)))
		}
		if t.Labelled(virtionet.CtrTxDrops)["backend_write"] > 0 {
			msg += fmt.Sprintf(" The backend refused writes: %s (EINVAL: the kernel rejected the vnet header; EIO/ENOBUFS: the tap is down or full).", listCounts(t.Labelled(virtionet.CtrTxWriteErrno)))
		}
		if t.Labelled(virtionet.CtrTxDrops)["ring_disabled"] > 0 {
			msg += " ring_disabled: the guest posted on a transmit ring it had disabled (SET_VRING_ENABLE 0)."
		}
		out = append(out, Finding{Severity: SevWarning, Topic: "drops", Message: msg})
	}
	if d := t.RxDropped(); d > 0 {
		msg := fmt.Sprintf("%d received packets were dropped before reaching the guest: %s.", d, listCounts(t.Labelled(virtionet.CtrRxDrops)))
		if t.Labelled(virtionet.CtrRxDrops)["rx_buffer_too_small"] > 0 {
			msg += " rx_buffer_too_small: without MRG_RXBUF each guest buffer must hold a whole packet; negotiate MRG_RXBUF (QEMU mrg_rxbuf=on) or post larger buffers."
		}
		if t.Labelled(virtionet.CtrRxDrops)["rx_gso_not_acked"] > 0 {
			msg += " rx_gso_not_acked: the backend produced a GSO type the guest did not negotiate."
		}
		out = append(out, Finding{Severity: SevWarning, Topic: "drops", Message: msg})
	}
	return out
}

// listCounts renders a label->count map, largest first: "hdr_invalid 3, backend_write 2".
func listCounts(m map[string]uint64) string {
	type kv struct {
		k string
		v uint64
	}
	var l []kv
	for k, v := range m {
		if v > 0 {
			l = append(l, kv{k, v})
		}
	}
	sort.Slice(l, func(i, j int) bool {
		if l[i].v != l[j].v {
			return l[i].v > l[j].v
		}
		return l[i].k < l[j].k
	})
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = fmt.Sprintf("%s %d", e.k, e.v)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func offloadList(o []string) string {
	if len(o) == 0 {
		return "none"
	}
	return strings.Join(o, "|")
}

func pct(n, of uint64) string {
	if of == 0 {
		return "0%"
	}
	p := 100 * float64(n) / float64(of)
	if p >= 10 || p == 0 {
		return fmt.Sprintf("%.0f%%", p)
	}
	return fmt.Sprintf("%.1f%%", p)
}

// kb renders a byte count as the "64 KB" (KiB).
func kb(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d-byte", n)
	}
	return fmt.Sprintf("%.0f KB", float64(n)/1024)
}

// dur renders seconds as µs or ms.
func dur(s float64) string {
	switch {
	case s >= 1:
		return fmt.Sprintf("%.2f s", s)
	case s >= 1e-3:
		return fmt.Sprintf("%.2f ms", s*1e3)
	default:
		return fmt.Sprintf("%.0f µs", s*1e6)
	}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
