package vnet

// HdrReason says why Check rejected a driver's header. The names (String)
// are metric label values (vhostd_tx_header_errors_total{reason}); do not
// rename them.
type HdrReason uint8

const (
	HdrOK HdrReason = iota
	// HdrShort: the chain holds fewer bytes than the header length. Check
	// never returns it (it sees a decoded header); the TX path counts it.
	HdrShort
	// HdrFrameShort: the frame after the header is shorter than an Ethernet
	// header (tun_get_user rejects it with EINVAL). DeviceRules only.
	HdrFrameShort
	// HdrGSOUnknownType: gso_type (without the ECN bit) is not TCPV4, TCPV6,
	// UDP or UDP_L4; this includes the ECN bit alone and the UDP tunnel bits,
	// which vhostd never negotiates.
	HdrGSOUnknownType
	// HdrGSOSizeZero: a GSO header with gso_size 0.
	HdrGSOSizeZero
	// HdrGSOSizeByFrags: gso_size 0xFFFF is the kernel's internal GSO_BY_FRAGS.
	HdrGSOSizeByFrags
	// HdrGSONoCsum: a GSO header without NEEDS_CSUM. The kernel refuses it
	// for UDP_L4 only (the 2024 strict USO rule); for TCP and UFO it
	// flow-dissects and segments in software, so KernelRules reports it for
	// UDP_L4 only, DeviceRules for every GSO type (spec 5.1.6.2: the driver
	// MUST set NEEDS_CSUM with gso_type).
	HdrGSONoCsum
	// HdrGSOECNNotTCP: the ECN bit on a UDP GSO type. The kernel refuses it
	// on UDP_L4 ("gso_type != SKB_GSO_UDP_L4") and lets it through on UFO;
	// DeviceRules refuses both (spec 5.1.6.2: ECN only with TCPV4/TCPV6).
	HdrGSOECNNotTCP
	// HdrCsumOutOfFrame: csum_start + max(transport header, csum_offset + 2)
	// runs past the frame.
	HdrCsumOutOfFrame
	// HdrCsumStartTooSmall: csum_start points inside the minimal L2+L3 space
	// (below 20, or 40 for TCPV6), as the kernel's nh_min_len check.
	HdrCsumStartTooSmall
	// HdrCsumOffsetBad: TCP GSO with csum_offset != 16, or USO with != 6.
	HdrCsumOffsetBad
	// HdrUSOTooManySegs: a USO payload of more than 128 (UDP_MAX_SEGMENTS)
	// segments.
	HdrUSOTooManySegs
	numHdrReasons
)

// NumHdrReasons is the number of HdrReason values, for counter arrays.
const NumHdrReasons = int(numHdrReasons)

var hdrReasonNames = [numHdrReasons]string{
	HdrOK:                "ok",
	HdrShort:             "hdr_short",
	HdrFrameShort:        "frame_short",
	HdrGSOUnknownType:    "gso_unknown_type",
	HdrGSOSizeZero:       "gso_size_zero",
	HdrGSOSizeByFrags:    "gso_size_by_frags",
	HdrGSONoCsum:         "gso_no_csum",
	HdrGSOECNNotTCP:      "gso_ecn_not_tcp",
	HdrCsumOutOfFrame:    "csum_out_of_frame",
	HdrCsumStartTooSmall: "csum_start_too_small",
	HdrCsumOffsetBad:     "csum_offset_bad",
	HdrUSOTooManySegs:    "uso_too_many_segs",
}

// String returns the snake_case metric name.
func (r HdrReason) String() string {
	if r < numHdrReasons {
		return hdrReasonNames[r]
	}
	return "unknown"
}

// Rules selects how strict Check is. The two differ only where the spec
// says MUST and the kernel is lenient; every other rule is shared.
type Rules uint8

const (
	// KernelRules are exactly what Linux __virtio_net_hdr_to_skb refuses
	// (include/linux/virtio_net.h): the gso package mirrors the kernel, so
	// that its decisions match what a tap would do with the same packet.
	KernelRules Rules = iota
	// DeviceRules add the spec's driver requirements (5.1.6.2) that the
	// kernel does not enforce: NEEDS_CSUM on every GSO header, ECN only on
	// TCP, and a frame of at least an Ethernet header (which tun_get_user
	// checks before virtio_net_hdr_to_skb). The TX path of the device drops
	// what they refuse, so a guest learns early and the same packet meets
	// the same fate on every backend.
	DeviceRules
)

// Kernel constants mirrored by Check.
const (
	ethHdrLen       = 14
	ipv4MinHdrLen   = 20 // sizeof(struct iphdr): the kernel's default nh_min_len
	ipv6HdrLen      = 40 // sizeof(struct ipv6hdr): nh_min_len for TCPV6
	tcpHdrLen       = 20 // sizeof(struct tcphdr): thlen for TCP GSO
	udpHdrLen       = 8  // sizeof(struct udphdr): thlen for UDP GSO
	tcpCsumOffset   = 16 // offsetof(struct tcphdr, check)
	udpCsumOffset   = 6  // offsetof(struct udphdr, check)
	udpMaxSegments  = 128
	gsoSizeByFrags  = 0xFFFF // GSO_BY_FRAGS
	csumFieldLength = 2
)

// Check is the one validator of a driver's virtio_net_hdr against the frame
// length that follows it (frameLen excludes the header). It mirrors Linux
// __virtio_net_hdr_to_skb (include/linux/virtio_net.h, with the 2024 "drop
// bad gso csum_start and offset" and "more strict VIRTIO_NET_HDR_GSO_UDP_L4
// validation" rules), and with DeviceRules also the spec's TX rules
// (5.1.6.2):
//
//  1. (DeviceRules) the frame holds at least an Ethernet header.
//  2. gso_type without ECN must be TCPV4, TCPV6, UDP or UDP_L4; gso_size must
//     be non-zero and not 0xFFFF; ECN not on UDP_L4 (DeviceRules: only on
//     TCP).
//  3. UDP_L4 needs NEEDS_CSUM (DeviceRules: every GSO type does).
//  4. With NEEDS_CSUM: csum_start + max(thlen, csum_offset+2) <= frameLen and
//     csum_start >= 20 (40 for TCPV6); TCP GSO needs csum_offset 16, USO
//     csum_offset 6 and at most 128 segments of payload after the UDP header.
//  5. hdr_len is never looked at. Unknown flag bits are ignored (spec: the
//     device MUST ignore them), and so are csum fields without NEEDS_CSUM.
//
// The order of the checks decides which reason a header with several faults
// gets; it is part of the metric contract. Check does not look at the
// frame's bytes (the gso package parses those) and does not allocate.
func (h Hdr) Check(frameLen int, rules Rules) HdrReason {
	strict := rules == DeviceRules
	if strict && frameLen < ethHdrLen {
		return HdrFrameShort
	}
	thlen := 0
	nhMin := ipv4MinHdrLen
	needsCsum := h.Flags&FlagNeedsCsum != 0
	if h.GSOType != GSONone {
		switch h.GSOType &^ GSOECN {
		case GSOTCPv4:
			thlen = tcpHdrLen
		case GSOTCPv6:
			thlen = tcpHdrLen
			nhMin = ipv6HdrLen
		case GSOUDP:
			if strict && h.GSOType&GSOECN != 0 {
				return HdrGSOECNNotTCP
			}
			thlen = udpHdrLen
		case GSOUDPL4:
			if h.GSOType&GSOECN != 0 {
				return HdrGSOECNNotTCP
			}
			thlen = udpHdrLen
		default:
			return HdrGSOUnknownType
		}
		switch {
		case h.GSOSize == 0:
			return HdrGSOSizeZero
		case h.GSOSize == gsoSizeByFrags:
			return HdrGSOSizeByFrags
		case !needsCsum && (strict || h.GSOType == GSOUDPL4):
			return HdrGSONoCsum
		}
	}
	if !needsCsum {
		return HdrOK
	}
	start, off := int(h.CsumStart), int(h.CsumOffset)
	if start+max(thlen, off+csumFieldLength) > frameLen {
		return HdrCsumOutOfFrame
	}
	if start < nhMin {
		return HdrCsumStartTooSmall
	}
	switch h.GSOType &^ GSOECN {
	case GSOTCPv4, GSOTCPv6:
		if off != tcpCsumOffset {
			return HdrCsumOffsetBad
		}
	case GSOUDPL4:
		if off != udpCsumOffset {
			return HdrCsumOffsetBad
		}
		if frameLen-(start+udpHdrLen) > int(h.GSOSize)*udpMaxSegments {
			return HdrUSOTooManySegs
		}
	}
	return HdrOK
}
