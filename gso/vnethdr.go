package gso

import "encoding/binary"

// VnetHdr holds the fields of a virtio_net_hdr that matter on transmit
// (virtio spec 5.1.6 "Device Operation", struct virtio_net_hdr). num_buffers
// and the hash/tunnel fields of longer headers play no part in segmentation.
type VnetHdr struct {
	Flags      uint8  // VnetFlagNeedsCsum, ...
	GSOType    uint8  // VnetGSO* (VnetGSOECN may be ORed in)
	HdrLen     uint16 // a hint only: never trusted (spec: device MUST NOT rely on it)
	GSOSize    uint16 // MSS: payload bytes per segment
	CsumStart  uint16 // offset of the checksummed range from the frame start
	CsumOffset uint16 // where the checksum goes, from CsumStart
}

// virtio_net_hdr flags and gso_type values (include/uapi/linux/virtio_net.h).
const (
	VnetFlagNeedsCsum = 1
	VnetFlagDataValid = 2

	VnetGSONone  = 0
	VnetGSOTCPv4 = 1
	VnetGSOUDP   = 3 // UFO
	VnetGSOTCPv6 = 4
	VnetGSOUDPL4 = 5 // USO
	VnetGSOECN   = 0x80

	// VnetHdrLen is sizeof(struct virtio_net_hdr); VnetHdrLenV1 adds
	// num_buffers (VERSION_1 or MRG_RXBUF).
	VnetHdrLen   = 10
	VnetHdrLenV1 = 12
)

// gsoByFrags is GSO_BY_FRAGS (0xFFFF), which virtio_net_hdr_to_skb() rejects.
const gsoByFrags = 0xffff

// DecodeVnetHdr reads a little-endian (VERSION_1) virtio_net_hdr from the
// first 10 bytes of b. ok is false if b is shorter than 10 bytes.
func DecodeVnetHdr(b []byte) (h VnetHdr, ok bool) {
	if len(b) < VnetHdrLen {
		return VnetHdr{}, false
	}
	return VnetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
	}, true
}

// Encode writes h into b as a little-endian virtio_net_hdr. b must be 10 or
// more bytes long; bytes 10 and beyond (num_buffers, hash fields) are zeroed.
func (h VnetHdr) Encode(b []byte) {
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
	clear(b[VnetHdrLen:])
}
