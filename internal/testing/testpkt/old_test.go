package testpkt

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// udpFrame builds an Ethernet/IPv4/UDP frame of size bytes with a valid IPv4
// header checksum; the UDP checksum field holds the pseudo-header sum when
// partial is set (for NEEDS_CSUM), else 0.
func udpFrame(size int, partial bool) []byte {
	f := make([]byte, size)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8], ip[9] = 64, 17
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip, 0))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], 1234)
	binary.BigEndian.PutUint16(udp[2:], 5678)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-34))
	for i := 42; i < size; i++ {
		f[i] = byte(i)
	}
	if partial {
		binary.BigEndian.PutUint16(udp[6:], vnet.PseudoHeaderSum(17, ip[12:16], ip[16:20], uint32(size-34)))
	}
	return f
}

// tcpSuper builds an Ethernet/IPv4/TCP super-packet with payload bytes of
// payload and the pseudo-header checksum in the TCP checksum field (what a
// guest sends with NEEDS_CSUM + GSO_TCPV4).
func tcpSuper(payload int) []byte {
	size := 14 + 20 + 20 + payload
	f := make([]byte, size)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	binary.BigEndian.PutUint16(ip[4:], 0x1000)
	ip[6] = 0x40 // DF
	ip[8], ip[9] = 64, 6
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip, 0))
	tcp := f[34:54]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // PSH|ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	for i := 54; i < size; i++ {
		f[i] = byte(i * 7)
	}
	binary.BigEndian.PutUint16(tcp[16:], vnet.PseudoHeaderSum(6, ip[12:16], ip[16:20], uint32(size-34)))
	return f
}
func ethHeader(f []byte, etherType uint16) {
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], etherType)
}

// udpFrame is an Ethernet/IPv4/UDP frame of size bytes without checksum.
func hUdpFrame(size int) []byte {
	f := make([]byte, size)
	ethHeader(f, 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8], ip[9] = 64, 17
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip, 0))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], 1234)
	binary.BigEndian.PutUint16(udp[2:], 5678)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-34))
	for i := 42; i < size; i++ {
		f[i] = byte(i)
	}
	return f
}

// udpSuper is udpFrame with the pseudo-header checksum in the UDP checksum
// field, as a guest sends with NEEDS_CSUM (+ GSO_UDP_L4).
func hUdpSuperX(size int) []byte {
	if size < 42 { return UDP4(size, CsumPartial) }
	f := hUdpFrame(size)
	binary.BigEndian.PutUint16(f[40:], vnet.PseudoHeaderSum(17, f[26:30], f[30:34], uint32(size-34)))
	return f
}

// tcp4Super is an Ethernet/IPv4/TCP super-packet with payload bytes of
// payload and the pseudo-header checksum in the TCP checksum field.
func hTcp4Super(payload int) []byte {
	size := 14 + 20 + 20 + payload
	f := make([]byte, size)
	ethHeader(f, 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	binary.BigEndian.PutUint16(ip[4:], 0x1000)
	ip[6] = 0x40
	ip[8], ip[9] = 64, 6
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip, 0))
	tcp := f[34:54]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x18
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	for i := 54; i < size; i++ {
		f[i] = byte(i * 7)
	}
	binary.BigEndian.PutUint16(tcp[16:], vnet.PseudoHeaderSum(6, ip[12:16], ip[16:20], uint32(size-34)))
	return f
}

// fixIPv4 recomputes the IPv4 header checksum after a test edited it.
func hFixIPv4(f []byte) {
	ihl := int(f[14]&0xf) * 4
	if ihl < 20 || 14+ihl > len(f) {
		return
	}
	ip := f[14 : 14+ihl]
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip, 0))
}


func TestOldSame(t *testing.T) {
	for _, n := range []int{40, 41, 42, 60, 200, 300, 1514, 9000} {
		if !bytes.Equal(udpFrame(n, false), UDP4(n, CsumNone)) || !bytes.Equal(hUdpFrame(n), UDP4(n, CsumNone)) || !bytes.Equal(hUdpSuperX(n), UDP4(n, CsumPartial)) {
			t.Errorf("udp %d", n)
		}
		if n >= 42 && !bytes.Equal(udpFrame(n, true), UDP4(n, CsumPartial)) {
			t.Errorf("udp partial %d", n)
		}
	}
	for _, n := range []int{0, 20, 1000, 3000, 30000, 65000} {
		if !bytes.Equal(tcpSuper(n), TCP4Super(n)) || !bytes.Equal(hTcp4Super(n), TCP4Super(n)) {
			t.Errorf("tcp %d", n)
		}
	}
	f := TCP4Super(100); f[20] = 0x20; g := append([]byte(nil), f...)
	hFixIPv4(f); FixIPv4(g[14:])
	if !bytes.Equal(f, g) { t.Error("fix") }
}
// ipv4Frame lays out Ethernet + IPv4 (protocol proto) for a frame of size
// bytes and returns it with the L4 header at offset 34.
func ipv4Frame(size int, proto byte) []byte {
	f := make([]byte, size)
	copy(f[0:6], []byte{0x52, 0x54, 0, 0, 0, 2})
	copy(f[6:12], []byte{0x52, 0x54, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[6] = 0x40 // DF
	ip[8], ip[9] = 64, proto
	copy(ip[12:], []byte{192, 0, 2, 1})
	copy(ip[16:], []byte{192, 0, 2, 2})
	binary.BigEndian.PutUint16(ip[10:], ^vnet.Checksum(ip, 0))
	for i := 34; i < size; i++ {
		f[i] = byte(i * 13)
	}
	return f
}

// TCPPacket is a TCP/IPv4 frame with payload bytes of data and the
// pseudo-header sum in the checksum field, as a guest sends with
// NEEDS_CSUM (and GSO when payload exceeds the MSS).
func oTCPPacket(payload int) []byte {
	size := 14 + 20 + 20 + payload
	f := ipv4Frame(size, 6)
	tcp := f[34:54]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 1)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x10 // ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	binary.BigEndian.PutUint16(tcp[16:], 0)
	binary.BigEndian.PutUint16(tcp[18:], 0)
	binary.BigEndian.PutUint16(tcp[16:], vnet.PseudoHeaderSum(6, f[26:30], f[30:34], uint32(size-34)))
	return f
}

// UDPPacket is a UDP/IPv4 frame; with partial the checksum field holds the
// pseudo-header sum (NEEDS_CSUM), else 0 (no checksum).
func oUDPPacket(size int, partial bool) []byte {
	f := ipv4Frame(size, 17)
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], 1234)
	binary.BigEndian.PutUint16(udp[2:], 5678)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-34))
	binary.BigEndian.PutUint16(udp[6:], 0)
	if partial {
		binary.BigEndian.PutUint16(udp[6:], vnet.PseudoHeaderSum(17, f[26:30], f[30:34], uint32(size-34)))
	}
	return f
}


var rigFrame = Frame{
	Eth:  Ethernet{Dst: []byte{0x52, 0x54, 0, 0, 0, 2}, Src: []byte{0x52, 0x54, 0, 0, 0, 1}},
	IPv4: IPv4{DF: true, Src: []byte{192, 0, 2, 1}, Dst: []byte{192, 0, 2, 2}},
	Fill: IndexFill(13),
}

func TestOldRig(t *testing.T) {
	for _, n := range []int{0, 1000, 8000, 30000} {
		f := rigFrame
		f.Csum = CsumPartial
		if !bytes.Equal(oTCPPacket(n), f.TCP(TCP{SrcPort: 40000, DstPort: 5201, Seq: 1, Ack: 1, Flags: TCPFlagACK, Window: 65535}, n)) {
			t.Errorf("tcp %d", n)
		}
	}
	for _, n := range []int{42, 200, 300, 1514} {
		for _, p := range []bool{false, true} {
			f := rigFrame
			if p { f.Csum = CsumPartial }
			if !bytes.Equal(oUDPPacket(n, p), f.UDP(GuestUDP, n-42)) {
				t.Errorf("udp %d %v", n, p)
			}
		}
	}
}
