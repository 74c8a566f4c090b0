package virtionet

import (
	"encoding/binary"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// completeRxChecksum finishes the partial checksum of a non-GSO packet that
// the backend handed over with NEEDS_CSUM, for a guest that did not negotiate
// GUEST_CSUM (virtio spec 5.1.6.4.1: without GUEST_CSUM the device must not
// set NEEDS_CSUM). pkt is virtio_net_hdr + frame. The csum field already holds
// the pseudo-header sum (that is what "partial" means), so folding the
// one's-complement sum of [csum_start, end) completes it. Returns false (and
// leaves the packet as it is) when the offsets do not fit the frame.
func completeRxChecksum(pkt []byte, hdrLen int) bool {
	if pkt[1] != vnet.GSONone {
		return false
	}
	frame := pkt[hdrLen:]
	start := int(binary.LittleEndian.Uint16(pkt[6:8]))
	off := int(binary.LittleEndian.Uint16(pkt[8:10]))
	if start > len(frame) || start+off+2 > len(frame) {
		return false
	}
	field := frame[start+off : start+off+2]
	c := ^vnet.Checksum(frame[start:], 0)
	if c == 0 && off == 6 { // UDP: 0 means "no checksum", send 0xffff (RFC 768)
		c = 0xffff
	}
	binary.BigEndian.PutUint16(field, c)
	pkt[0] = (pkt[0] &^ vnet.FlagNeedsCsum) | vnet.FlagDataValid
	return true
}
