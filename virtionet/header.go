package virtionet

import "encoding/binary"

// virtio_net_hdr lengths (virtio spec 5.1.6 "Device Operation"): 10 bytes for a
// legacy device without MRG_RXBUF, 12 (num_buffers added) with VERSION_1 or
// MRG_RXBUF.
const (
	HdrLenLegacy = 10
	HdrLenV1     = 12
)

// HdrLen returns the virtio_net_hdr length the negotiated features imply:
// 12 if VERSION_1 or MRG_RXBUF, else 10. Feature bits that enlarge the header
// further (HASH_REPORT, UDP tunnel GSO) are never offered by vhostd.
func HdrLen[F ~uint64](features F) int {
	if Feature(features)&(FeatureVersion1|NetMrgRxbuf) != 0 {
		return HdrLenV1
	}
	return HdrLenLegacy
}

// virtio_net_hdr flags (virtio spec 5.1.6).
const (
	FlagNeedsCsum     = 1 // csum_start/csum_offset describe a partial checksum
	FlagDataValid     = 2 // RX only: checksum already validated
	FlagRSCInfo       = 4 // RX only
	FlagUDPTunnelCsum = 8
)

// virtio_net_hdr gso_type values (virtio spec 5.1.6).
const (
	GSONone          = 0
	GSOTCPv4         = 1
	GSOUDP           = 3 // UFO
	GSOTCPv6         = 4
	GSOUDPL4         = 5 // USO, IPv4 and IPv6
	GSOUDPTunnelIPv4 = 0x20
	GSOUDPTunnelIPv6 = 0x40
	GSOECN           = 0x80 // ORed into a TCP type: the super-packet carries CWR
)

// Hdr is a decoded virtio_net_hdr. All multi-byte fields are little-endian on
// the wire (VERSION_1; legacy headers are guest-endian, which is little-endian
// on every host vhostd supports).
type Hdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // a hint only: never trusted (spec: device MUST NOT rely on it without GUEST_HDRLEN)
	GSOSize    uint16 // MSS: payload bytes per segment
	CsumStart  uint16 // from the start of the Ethernet frame
	CsumOffset uint16 // from CsumStart to the checksum field
	NumBuffers uint16 // 12-byte header only: RX buffers used with MRG_RXBUF
}

// DecodeHdr decodes a header from b: 12 bytes if len(b) >= 12, else 10. It
// never panics: for len(b) < 10 it returns the zero Hdr, so callers check the
// length against HdrLen first (and count HdrShort).
func DecodeHdr(b []byte) Hdr {
	if len(b) < HdrLenLegacy {
		return Hdr{}
	}
	h := Hdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:4]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:6]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:8]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:10]),
	}
	if len(b) >= HdrLenV1 {
		h.NumBuffers = binary.LittleEndian.Uint16(b[10:12])
	}
	return h
}

// Encode writes h into b: 12 bytes if len(b) >= 12, else 10. It returns the
// number of bytes written, 0 if len(b) < 10. Pass b[:HdrLen(features)].
func (h *Hdr) Encode(b []byte) int {
	if len(b) < HdrLenLegacy {
		return 0
	}
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:4], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:6], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:8], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:10], h.CsumOffset)
	if len(b) < HdrLenV1 {
		return HdrLenLegacy
	}
	binary.LittleEndian.PutUint16(b[10:12], h.NumBuffers)
	return HdrLenV1
}

// HdrReason says why a TX header was rejected. The names (String) are metric
// label values.
type HdrReason uint8

const (
	HdrOK HdrReason = iota
	// HdrShort: the chain holds fewer bytes than the header length.
	HdrShort
	// HdrFrameShort: the frame after the header is shorter than an Ethernet
	// header (tun rejects it with EINVAL).
	HdrFrameShort
	// HdrGSOUnknownType: gso_type (without the ECN bit) is not TCPV4, TCPV6,
	// UDP or UDP_L4; this includes the ECN bit alone and the UDP tunnel bits,
	// which vhostd never negotiates.
	HdrGSOUnknownType
	// HdrGSOSizeZero: a GSO header with gso_size 0.
	HdrGSOSizeZero
	// HdrGSOSizeByFrags: gso_size 0xFFFF is the kernel's internal GSO_BY_FRAGS.
	HdrGSOSizeByFrags
	// HdrGSONoCsum: a GSO header without NEEDS_CSUM (spec 5.1.6.2: the driver
	// MUST set it; the kernel would flow-dissect instead, vhostd drops).
	HdrGSONoCsum
	// HdrGSOECNNotTCP: the ECN bit on a UDP GSO type.
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

// Kernel constants mirrored by Validate.
const (
	ethHdrLen       = 14
	ipv4MinHdrLen   = 20 // sizeof(struct iphdr): the kernel's default nh_min_len
	ipv6HdrLen      = 40 // sizeof(struct ipv6hdr): nh_min_len for TCPV6
	tcpHdrLen       = 20 // sizeof(struct tcphdr): thlen for TCP GSO
	udpHdrLen       = 8  // sizeof(struct udphdr): thlen for UDP GSO
	tcpCsumOffset   = 16 // offsetof(struct tcphdr, check)
	udpCsumOffset   = 6  // offsetof(struct udphdr, check)
	udpMaxSegments  = 128
	gsoSizeByFrags  = 0xFFFF
	csumFieldLength = 2
)

// Validate checks a TX header against the frame length that follows it
// (frameLen excludes the header), mirroring what Linux
// __virtio_net_hdr_to_skb (include/linux/virtio_net.h, with the 2024
// "drop bad gso csum_start and offset" and "more strict
// VIRTIO_NET_HDR_GSO_UDP_L4 validation" rules) would refuse on a tap write or
// in the receiving guest, and the spec's TX rules (5.1.6.2):
//
//  1. gso_type without ECN must be TCPV4, TCPV6, UDP or UDP_L4; gso_size must
//     be non-zero and not 0xFFFF; ECN only on TCP.
//  2. GSO needs NEEDS_CSUM (stricter than the kernel, which flow-dissects
//     GSO packets without it; the spec makes NEEDS_CSUM a MUST).
//  3. With NEEDS_CSUM: csum_start + max(thlen, csum_offset+2) <= frameLen and
//     csum_start >= 20 (40 for TCPV6); TCP GSO needs csum_offset 16, USO
//     csum_offset 6 and at most 128 segments of payload after the UDP header.
//  4. hdr_len is never looked at. Unknown flag bits are ignored (spec: the
//     device MUST ignore them), and so are csum fields without NEEDS_CSUM.
//
// It does not allocate.
func (h Hdr) Validate(frameLen int) HdrReason {
	if frameLen < ethHdrLen {
		return HdrFrameShort
	}
	thlen := 0
	nhMin := ipv4MinHdrLen
	if h.GSOType != GSONone {
		switch h.GSOType &^ GSOECN {
		case GSOTCPv4:
			thlen = tcpHdrLen
		case GSOTCPv6:
			thlen = tcpHdrLen
			nhMin = ipv6HdrLen
		case GSOUDP, GSOUDPL4:
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
		case h.Flags&FlagNeedsCsum == 0:
			return HdrGSONoCsum
		}
	}
	if h.Flags&FlagNeedsCsum == 0 {
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

// IsGSO reports whether the header asks for segmentation.
func (h Hdr) IsGSO() bool { return h.GSOType != GSONone }
