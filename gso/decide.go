package gso

import (
	"fmt"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Limits are the egress link's GSO limits and MTU. A zero field means "no
// limit" (unknown).
type Limits struct {
	// GSOMaxSize: a super-packet whose frame length is >= this is segmented
	// (dev->gso_max_size; the check is skb->len >= gso_max_size).
	GSOMaxSize uint32
	// GSOIPv4MaxSize is dev->gso_ipv4_max_size, used instead of GSOMaxSize
	// for IPv4 (netif_get_gso_max_size()); 0 means "same as GSOMaxSize".
	GSOIPv4MaxSize uint32
	// GSOMaxSegs: a super-packet of more segments is segmented
	// (dev->gso_max_segs).
	GSOMaxSegs uint32
	// MTU is the largest L3 packet the link carries; segmenting to an MSS
	// that exceeds it is a drop.
	MTU int
}

// maxSize returns the gso_max_size that applies to m.
func (l Limits) maxSize(m *Meta) uint32 {
	if !m.IPv6 && l.GSOIPv4MaxSize != 0 {
		return l.GSOIPv4MaxSize
	}
	return l.GSOMaxSize
}

// Policy is a port's GSO policy.
type Policy uint8

const (
	// PolicyAuto: the capability check decides per packet.
	PolicyAuto Policy = iota
	// PolicyDefer: always pass whole and let the kernel segment.
	PolicyDefer
	// PolicySoftware: always segment super-packets in vhostd.
	PolicySoftware
)

var policyNames = [...]string{"auto", "defer", "software"}

// String returns "auto", "defer" or "software".
func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return "unknown"
}

// ParsePolicy parses a --policy value.
func ParsePolicy(s string) (Policy, error) {
	for i, n := range policyNames {
		if s == n {
			return Policy(i), nil
		}
	}
	return 0, fmt.Errorf("unknown GSO policy %q: use auto, defer or software", s)
}

// Decision is the path a packet takes.
type Decision uint8

const (
	// DecisionPassWhole: write the frame and the guest's virtio_net_hdr
	// unchanged.
	DecisionPassWhole Decision = iota
	// DecisionPassPlain: write the frame unchanged with Meta.PlainVnetHdr()
	// (the GSO fields cleared: the payload fits in one segment).
	DecisionPassPlain
	// DecisionCompleteCsum: finish the partial checksum (CompleteCsum or
	// FinishCsum) and write the frame with an all-zero virtio_net_hdr.
	DecisionCompleteCsum
	// DecisionSegment: segment to MSS in software (Segment).
	DecisionSegment
	// DecisionResegment: split into fewer, smaller super-packets that fit the
	// limits (Resegment).
	DecisionResegment
	// DecisionDrop: do not send; count the reason.
	DecisionDrop

	// NumDecisions is the number of Decision values.
	NumDecisions
)

var decisionNames = [NumDecisions]string{"pass_whole", "pass_plain", "complete_csum", "segment", "resegment", "drop"}

// String returns the metrics label, e.g. "resegment".
func (d Decision) String() string {
	if d < NumDecisions {
		return decisionNames[d]
	}
	return "unknown"
}

// Decide picks the path for one parsed packet, mirroring what the kernel's
// transmit path would do with the same skb on a device with features f and
// limits l (netif_skb_features() -> gso_features_check(), vlan_features_check(),
// harmonize_features(); then netif_needs_gso() / net_gso_ok() and
// validate_xmit_skb() -> skb_csum_hwoffload_help()), with one addition: a
// packet that is refused only for gso_max_size or gso_max_segs, on a backend
// that has the needed TSO/USO feature, is re-segmented into super-packets
// that fit instead of being cut to MSS. docs/gso.md has the table.
//
// When several rules apply, the reason reported is the first in this order:
// policy, checksum (NEEDS_CSUM missing, no CSUM, IPv6 extension headers,
// multi-tagged VLAN), the type feature (TSO4/TSO6/USO/UFO), ECN, then the
// limits. A limit is thus reported only when it is the sole obstacle, which
// is exactly when re-segmentation can help.
func Decide(m Meta, f vnet.Offloads, l Limits, p Policy) (Decision, Reason) {
	if m.Malformed != ReasonNone {
		return DecisionDrop, m.Malformed
	}
	if m.Kind == KindPlain {
		return decidePlain(&m, f, p)
	}
	switch p {
	case PolicyDefer:
		return DecisionPassWhole, ReasonPolicy
	case PolicySoftware:
		return decideSegment(&m, l, ReasonPolicy)
	}

	// netif_needs_gso(): a GSO skb that is not CHECKSUM_PARTIAL (no
	// NEEDS_CSUM) is always segmented in software; tcp4_gso_segment() then
	// writes the pseudo-header checksum itself.
	if !m.NeedsCsum {
		return decideSegment(&m, l, ReasonGSONoNeedsCsum)
	}
	// harmonize_features(): no checksum offload for this packet means no GSO
	// either ("features &= ~(NETIF_F_CSUM_MASK | NETIF_F_GSO_MASK)"). The
	// IPv6-extension-header rule of gso_features_check() and the
	// multi-tag rule of vlan_features_check() strip the checksum feature
	// first when it is the protocol-specific kind.
	if r := csumOffloadReason(&m, f); r != ReasonNone {
		return decideSegment(&m, l, r)
	}
	// A multi-tagged packet keeps only NETIF_F_HW_CSUM (and SG/FRAGLIST/VLAN
	// insertion): vlan_features_check() drops every GSO feature.
	if m.VLANTags > 1 {
		return decideSegment(&m, l, ReasonVLANMulti)
	}
	// net_gso_ok(): every SKB_GSO_* bit of the packet needs its NETIF_F_*.
	if r := typeFeatureReason(&m, f); r != ReasonNone {
		return decideSegment(&m, l, r)
	}
	// gso_features_check(): "gso_segs > dev->gso_max_segs" and
	// "skb->len >= netif_get_gso_max_size()" strip all GSO features.
	if r := limitReason(&m, l); r != ReasonNone {
		if m.Kind != KindUFO && segsPerChunk(&m, l) >= 2 {
			return DecisionResegment, r
		}
		return decideSegment(&m, l, r)
	}
	return DecisionPassWhole, ReasonNone
}

// decidePlain handles a packet that is not GSO.
func decidePlain(m *Meta, f vnet.Offloads, p Policy) (Decision, Reason) {
	if p == PolicyDefer {
		return DecisionPassWhole, ReasonPolicy
	}
	// validate_xmit_skb() -> skb_csum_hwoffload_help() -> skb_checksum_help():
	// a CHECKSUM_PARTIAL skb on a device that cannot checksum it gets its
	// checksum finished in software.
	if m.NeedsCsum && f&vnet.OffloadCSUM == 0 {
		return DecisionCompleteCsum, ReasonNoCsum
	}
	if m.SmallGSO {
		return DecisionPassPlain, ReasonSmallGSO
	}
	return DecisionPassWhole, ReasonNone
}

// decideSegment returns DecisionSegment with reason r, or a drop when the
// segments could not be sent.
func decideSegment(m *Meta, l Limits, r Reason) (Decision, Reason) {
	if m.Kind == KindUFO && m.IPv6 && m.IPv6Ext {
		return DecisionDrop, ReasonUFOIPv6ExtHdr
	}
	if l.MTU > 0 && m.MaxSegmentLen()-m.L3Off > l.MTU {
		return DecisionDrop, ReasonMSSExceedsMTU
	}
	return DecisionSegment, r
}

// csumOffloadReason returns why the backend cannot finish m's checksum, or
// ReasonNone if it can. Segment uses the same test to choose between
// partial and full checksums.
func csumOffloadReason(m *Meta, f vnet.Offloads) Reason {
	if f&vnet.OffloadCSUM == 0 {
		return ReasonNoCsum
	}
	if f&vnet.OffloadCSUMProtoSpecific != 0 {
		// gso_features_check(): NETIF_F_IPV6_CSUM does not cover extension
		// headers, "so neither does TSO that depends on it" (TSO6, USO).
		if m.IPv6 && m.IPv6Ext {
			return ReasonIPv6ExtHdr
		}
		// vlan_features_check(): multi-tagged packets keep only HW_CSUM.
		if m.VLANTags > 1 {
			return ReasonVLANMulti
		}
	}
	return ReasonNone
}

// kindFeature is, per GSO kind, the feature net_gso_ok() asks for and the
// reason when it is missing (none for KindPlain).
var kindFeature = [...]struct {
	need    vnet.Offloads
	missing Reason
}{
	KindTCPv4: {vnet.OffloadTSO4, ReasonNoTSO4},
	KindTCPv6: {vnet.OffloadTSO6, ReasonNoTSO6},
	KindUSO:   {vnet.OffloadUSO, ReasonNoUSO},
	KindUFO:   {vnet.OffloadUFO, ReasonNoUFO},
}

// typeFeatureReason applies net_gso_ok(): the feature for the GSO type, and
// TSO_ECN for the ECN bit (SKB_GSO_TCP_ECN -> NETIF_F_TSO_ECN).
func typeFeatureReason(m *Meta, f vnet.Offloads) Reason {
	if int(m.Kind) < len(kindFeature) {
		if k := kindFeature[m.Kind]; f&k.need != k.need {
			return k.missing
		}
	}
	if m.ECN && f&vnet.OffloadTSOECN == 0 {
		return ReasonNoTSOECN
	}
	return ReasonNone
}

// limitReason applies gso_features_check()'s two limits, gso_max_segs first
// as the kernel does.
func limitReason(m *Meta, l Limits) Reason {
	if l.GSOMaxSegs != 0 && uint64(m.Segs) > uint64(l.GSOMaxSegs) {
		return ReasonGSOMaxSegs
	}
	if ms := l.maxSize(m); ms != 0 && uint64(m.FrameLen) >= uint64(ms) {
		return ReasonGSOMaxSize
	}
	return ReasonNone
}

// segsPerChunk returns how many MSS segments one re-segmented super-packet
// may carry under l: the largest k with k <= gso_max_segs and
// HdrLen + k*MSS < gso_max_size (USO also k <= UDP_MAX_SEGMENTS).
func segsPerChunk(m *Meta, l Limits) int {
	k := m.Segs
	if l.GSOMaxSegs != 0 && uint64(k) > uint64(l.GSOMaxSegs) {
		k = int(l.GSOMaxSegs)
	}
	if ms := l.maxSize(m); ms != 0 {
		room := int64(ms) - 1 - int64(m.HdrLen)
		if room < 0 {
			return 0
		}
		if bySize := room / int64(m.GSOSize); bySize < int64(k) {
			k = int(bySize)
		}
	}
	if m.Kind == KindUSO && k > udpMaxSegments {
		k = udpMaxSegments
	}
	return k
}
