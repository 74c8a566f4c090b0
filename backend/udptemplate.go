package backend

import "github.com/vhostd/vhostd/virtionet/vnet"

// UDPTemplate builds the RX packet of a Null backend that generates traffic
// (NullConfig.RXTemplate, vhostd --null-rx-size): a 12-byte virtio_net_hdr
// (no offloads) and an Ethernet/IPv4/UDP frame of size bytes with a valid
// IPv4 header checksum and no UDP checksum, as DPDK testpmd's txonly engine
// sends. It lives with the backend it feeds, not in the command. A 10-byte header negotiation reads the same bytes: the
// Null backend copies what it is given, so SetVnetHdrLen(10) would shift the
// frame; vhostd offers VERSION_1, so the header is 12 bytes in practice.
func UDPTemplate(size int) []byte {
	const hdr = 12
	p := make([]byte, hdr+size)
	f := p[hdr:]
	copy(f[0:6], []byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56})  // dst
	copy(f[6:12], []byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}) // src
	f[12], f[13] = 0x08, 0x00
	ip := f[14:34]
	ip[0] = 0x45
	tot := size - 14
	ip[2], ip[3] = byte(tot>>8), byte(tot)
	ip[8], ip[9] = 64, 17
	copy(ip[12:16], []byte{198, 18, 0, 1})
	copy(ip[16:20], []byte{198, 18, 0, 2})
	c := ^vnet.Checksum(ip, 0)
	ip[10], ip[11] = byte(c>>8), byte(c)
	udp := f[34:]
	udp[0], udp[1], udp[2], udp[3] = 0x04, 0x00, 0x04, 0x01
	ul := tot - 20
	udp[4], udp[5] = byte(ul>>8), byte(ul)
	return p
}
