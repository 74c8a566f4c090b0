package vnet

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

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

// virtio_net_hdr flags (virtio spec 5.1.6, include/uapi/linux/virtio_net.h).
const (
	FlagNeedsCsum     = unix.VIRTIO_NET_HDR_F_NEEDS_CSUM // csum_start/csum_offset describe a partial checksum
	FlagDataValid     = unix.VIRTIO_NET_HDR_F_DATA_VALID // RX only: checksum already validated
	FlagRSCInfo       = unix.VIRTIO_NET_HDR_F_RSC_INFO   // RX only
	FlagUDPTunnelCsum = 8                                // VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM (spec 1.4), not in x/sys
)

// virtio_net_hdr gso_type values (virtio spec 5.1.6).
const (
	GSONone          = unix.VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4         = unix.VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP           = unix.VIRTIO_NET_HDR_GSO_UDP // UFO
	GSOTCPv6         = unix.VIRTIO_NET_HDR_GSO_TCPV6
	GSOUDPL4         = unix.VIRTIO_NET_HDR_GSO_UDP_L4 // USO, IPv4 and IPv6
	GSOUDPTunnelIPv4 = 0x20                           // spec 1.4 UDP tunnel GSO, not in x/sys; never negotiated
	GSOUDPTunnelIPv6 = 0x40
	GSOECN           = unix.VIRTIO_NET_HDR_GSO_ECN // ORed into a TCP type: the super-packet carries CWR
)

// Hdr is a decoded virtio_net_hdr, the one model of the header in vhostd.
// All multi-byte fields are little-endian on the wire (VERSION_1; legacy
// headers are guest-endian, which is little-endian on every host vhostd
// supports).
type Hdr struct {
	Flags      uint8  // Flag*
	GSOType    uint8  // GSO* (GSOECN may be ORed in)
	HdrLen     uint16 // a hint only: never trusted (spec: device MUST NOT rely on it without GUEST_HDRLEN)
	GSOSize    uint16 // MSS: payload bytes per segment
	CsumStart  uint16 // from the start of the Ethernet frame
	CsumOffset uint16 // from CsumStart to the checksum field
	NumBuffers uint16 // 12-byte header only: RX buffers used with MRG_RXBUF; 0 on TX
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
// number of bytes written, 0 if len(b) < 10. Pass b[:HdrLen(features)];
// bytes past 12 are left alone.
func (h Hdr) Encode(b []byte) int {
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

// IsGSO reports whether the header asks for segmentation.
func (h Hdr) IsGSO() bool { return h.GSOType != GSONone }

// NeedsCsum reports whether the header carries a partial checksum.
func (h Hdr) NeedsCsum() bool { return h.Flags&FlagNeedsCsum != 0 }
