package gso

// Reason says why a packet took the path Decide chose, or why Parse,
// Segment or Resegment refused it. String gives the snake_case label used
// in metrics; the values are dense from 0 to NumReasons-1 so that counters
// can live in a fixed array indexed by Reason (no map on the hot path).
type Reason uint8

const (
	ReasonNone Reason = iota
	// ReasonPolicy: the port policy (defer or software) decided, not the
	// capability check.
	ReasonPolicy
	// ReasonSmallGSO: the header asks for GSO but the payload fits in one
	// segment, so the packet is not GSO at all (virtio_net_hdr_to_skb: "Too
	// small packets are not really GSO ones").
	ReasonSmallGSO
	// ReasonNoCsum: the backend cannot finish partial checksums
	// (harmonize_features / skb_csum_hwoffload_help).
	ReasonNoCsum
	// ReasonGSONoNeedsCsum: a GSO packet without NEEDS_CSUM is not
	// CHECKSUM_PARTIAL, so netif_needs_gso() segments it in software.
	ReasonGSONoNeedsCsum
	// ReasonIPv6ExtHdr: IPv6 extension headers with a backend whose checksum
	// offload is protocol specific (gso_features_check, NETIF_F_IPV6_CSUM).
	ReasonIPv6ExtHdr
	// ReasonVLANMulti: more than one VLAN tag (vlan_features_check).
	ReasonVLANMulti
	ReasonNoTSO4   // TCPv4 super-packet, backend without TSO4 (net_gso_ok)
	ReasonNoTSO6   // TCPv6 super-packet, backend without TSO6
	ReasonNoTSOECN // GSO ECN bit, backend without TSO_ECN
	ReasonNoUSO    // GSO_UDP_L4, backend without USO
	ReasonNoUFO    // GSO_UDP, backend without UFO
	// ReasonGSOMaxSegs: more segments than gso_max_segs (gso_features_check).
	ReasonGSOMaxSegs
	// ReasonGSOMaxSize: frame length >= gso_max_size (gso_features_check).
	ReasonGSOMaxSize
	// ReasonMSSExceedsMTU: segmenting would produce packets larger than the
	// MTU (they would be dropped by the next hop's is_skb_forwardable()).
	ReasonMSSExceedsMTU
	// ReasonUFOIPv6ExtHdr: UFO over IPv6 with extension headers must be
	// fragmented here but the kernel's own fragmentation of such packets is
	// wrong (see docs/gso.md), so there is nothing correct to mirror.
	ReasonUFOIPv6ExtHdr
	// ReasonHeadTooShort: the contiguous head given to ParseHead ends inside
	// the headers; linearise more of the frame and parse again.
	ReasonHeadTooShort
	// ReasonShortBuffer: the caller's output buffers are too few or too small.
	ReasonShortBuffer

	// Malformed packets: each is a drop. The kernel would reject the same
	// packet with EINVAL on a tap write or fail to segment it.
	ReasonMalformedGSOType      // unknown gso_type, or ECN with UDP_L4
	ReasonMalformedGSOSize      // gso_size 0 or GSO_BY_FRAGS
	ReasonMalformedCsumRange    // csum_start/csum_offset outside the frame
	ReasonMalformedCsumStart    // GSO with csum_start != transport header, or csum_start below nh_min_len
	ReasonMalformedCsumOffset   // GSO with csum_offset != 16 (TCP) / 6 (UDP)
	ReasonMalformedUSONoCsum    // GSO_UDP_L4 without NEEDS_CSUM
	ReasonMalformedUSOSegs      // GSO_UDP_L4 with more than 128 segments
	ReasonMalformedUFOSize      // GSO_UDP with gso_size not a multiple of 8
	ReasonMalformedEthernet     // frame shorter than an Ethernet header
	ReasonMalformedVLAN         // truncated VLAN tag or more than 8 tags
	ReasonMalformedEtherType    // GSO on a frame that is not IPv4/IPv6, or the wrong one
	ReasonMalformedIPv4         // truncated, version != 4 or IHL < 5
	ReasonMalformedIPv4Length   // tot_len does not match the frame
	ReasonMalformedIPv4Fragment // GSO on an IPv4 fragment
	ReasonMalformedIPv6         // truncated or version != 6
	ReasonMalformedIPv6Length   // payload_len does not match the frame
	ReasonMalformedIPv6ExtHdr   // truncated or unsupported extension header
	ReasonMalformedL4Proto      // transport protocol does not match gso_type
	ReasonMalformedTCP          // truncated TCP header or data offset < 5
	ReasonMalformedUDP          // truncated UDP header

	// NumReasons is the number of Reason values.
	NumReasons
)

var reasonNames = [NumReasons]string{
	ReasonNone:                  "none",
	ReasonPolicy:                "policy",
	ReasonSmallGSO:              "small_gso",
	ReasonNoCsum:                "no_csum",
	ReasonGSONoNeedsCsum:        "gso_no_needs_csum",
	ReasonIPv6ExtHdr:            "ipv6_exthdr",
	ReasonVLANMulti:             "vlan_multi",
	ReasonNoTSO4:                "no_tso4",
	ReasonNoTSO6:                "no_tso6",
	ReasonNoTSOECN:              "no_tso_ecn",
	ReasonNoUSO:                 "no_uso",
	ReasonNoUFO:                 "no_ufo",
	ReasonGSOMaxSegs:            "gso_max_segs",
	ReasonGSOMaxSize:            "gso_max_size",
	ReasonMSSExceedsMTU:         "mss_exceeds_mtu",
	ReasonUFOIPv6ExtHdr:         "ufo_ipv6_exthdr",
	ReasonHeadTooShort:          "head_too_short",
	ReasonShortBuffer:           "short_buffer",
	ReasonMalformedGSOType:      "malformed_gso_type",
	ReasonMalformedGSOSize:      "malformed_gso_size",
	ReasonMalformedCsumRange:    "malformed_csum_range",
	ReasonMalformedCsumStart:    "malformed_csum_start",
	ReasonMalformedCsumOffset:   "malformed_csum_offset",
	ReasonMalformedUSONoCsum:    "malformed_uso_no_csum",
	ReasonMalformedUSOSegs:      "malformed_uso_segs",
	ReasonMalformedUFOSize:      "malformed_ufo_size",
	ReasonMalformedEthernet:     "malformed_ethernet",
	ReasonMalformedVLAN:         "malformed_vlan",
	ReasonMalformedEtherType:    "malformed_ethertype",
	ReasonMalformedIPv4:         "malformed_ipv4",
	ReasonMalformedIPv4Length:   "malformed_ipv4_length",
	ReasonMalformedIPv4Fragment: "malformed_ipv4_fragment",
	ReasonMalformedIPv6:         "malformed_ipv6",
	ReasonMalformedIPv6Length:   "malformed_ipv6_length",
	ReasonMalformedIPv6ExtHdr:   "malformed_ipv6_exthdr",
	ReasonMalformedL4Proto:      "malformed_l4_proto",
	ReasonMalformedTCP:          "malformed_tcp",
	ReasonMalformedUDP:          "malformed_udp",
}

// String returns the metrics label, e.g. "gso_max_size".
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Malformed reports whether r names a malformed packet.
func (r Reason) Malformed() bool {
	return r >= ReasonMalformedGSOType && r < NumReasons
}
