package gso

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/vhostd/vhostd/internal/testing/refcsum"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

// Test packet construction. Everything here is written independently of the
// package's own header views and checksum code (plain byte offsets and a
// naive 16-bit checksum loop), so tests do not check the code with itself.

// v6ext is an IPv6 extension header to put in a test packet.
type v6ext struct {
	proto uint8 // ProtoHopByHop, ProtoRouting, ProtoDestOpts
	len   int   // bytes, a multiple of 8
}

// pktSpec describes a test frame.
type pktSpec struct {
	vlanTPIDs  []uint16 // outermost first
	ipv6       bool
	ipv4Opts   []byte // multiple of 4, <= 40
	v6Ext      []v6ext
	udp        bool
	tcpOpts    []byte // multiple of 4, <= 40
	tcpFlags   uint8  // default ACK
	tos        uint8
	ipID       uint16
	df         bool
	seq        uint32
	payloadLen int
	gsoType    uint8 // vnet.GSO*, ECN ORed in as needed
	mss        int
	noCsum     bool // no NEEDS_CSUM
	srcMAC     byte // last byte of the source MAC (to filter captures)
	seed       byte // payload pattern seed
}

var (
	testIPv4Src = []byte{10, 0, 0, 1}
	testIPv4Dst = []byte{10, 0, 0, 2}
	testIPv6Src = []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	testIPv6Dst = []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}
)

// build returns the frame and the virtio_net_hdr a Linux guest would send
// for it: NEEDS_CSUM with csum_start at the transport header and the
// pseudo-header sum in the checksum field (unless noCsum), hdr_len = the
// header length.
func (s pktSpec) build() ([]byte, vnet.Hdr) {
	var b []byte
	b = append(b, 0x02, 0, 0, 0, 0, 0x02) // dst MAC
	b = append(b, 0x02, 0, 0, 0, 0, s.srcMAC|1)
	for i, tpid := range s.vlanTPIDs {
		b = binary.BigEndian.AppendUint16(b, tpid)
		_ = i
		b = binary.BigEndian.AppendUint16(b, uint16(100+i)) // TCI
	}
	l3 := len(b) + 2
	l4proto := uint8(ProtoTCP)
	if s.udp {
		l4proto = ProtoUDP
	}
	l4hdr := 20 + len(s.tcpOpts)
	if s.udp {
		l4hdr = 8
	}
	var l3len int
	if s.ipv6 {
		b = binary.BigEndian.AppendUint16(b, EtherTypeIPv6)
		ext := 0
		for _, e := range s.v6Ext {
			ext += e.len
		}
		l3len = 40 + ext + l4hdr + s.payloadLen
		first := l4proto
		if len(s.v6Ext) > 0 {
			first = s.v6Ext[0].proto
		}
		b = append(b, 0x60|s.tos>>4, s.tos<<4|0x01, 0x23, 0x45)
		b = binary.BigEndian.AppendUint16(b, uint16(l3len-40))
		b = append(b, first, 64)
		b = append(b, testIPv6Src...)
		b = append(b, testIPv6Dst...)
		for i, e := range s.v6Ext {
			next := l4proto
			if i+1 < len(s.v6Ext) {
				next = s.v6Ext[i+1].proto
			}
			h := make([]byte, e.len)
			h[0] = next
			h[1] = byte(e.len/8 - 1)
			if e.proto == ProtoRouting {
				h[2] = 0 // routing type 0... segments left 0: no final-destination rewrite
				h[3] = 0
			} else {
				h[2] = 1 // PadN option filling the rest
				h[3] = byte(e.len - 4)
			}
			b = append(b, h...)
		}
	} else {
		b = binary.BigEndian.AppendUint16(b, EtherTypeIPv4)
		ihl := 20 + len(s.ipv4Opts)
		l3len = ihl + l4hdr + s.payloadLen
		b = append(b, 0x40|byte(ihl/4), s.tos)
		b = binary.BigEndian.AppendUint16(b, uint16(l3len))
		b = binary.BigEndian.AppendUint16(b, s.ipID)
		if s.df {
			b = append(b, 0x40, 0)
		} else {
			b = append(b, 0, 0)
		}
		b = append(b, 64, l4proto, 0, 0)
		b = append(b, testIPv4Src...)
		b = append(b, testIPv4Dst...)
		b = append(b, s.ipv4Opts...)
		ip := b[l3:]
		c := ^refcsum.Fold(refcsum.Sum(ip[:ihl], 0))
		binary.BigEndian.PutUint16(ip[10:], c)
	}
	l4 := len(b)
	if s.udp {
		b = binary.BigEndian.AppendUint16(b, 4000)
		b = binary.BigEndian.AppendUint16(b, 5000)
		b = binary.BigEndian.AppendUint16(b, uint16(8+s.payloadLen))
		b = append(b, 0, 0)
	} else {
		flags := s.tcpFlags
		if flags == 0 {
			flags = TCPFlagACK
		}
		b = binary.BigEndian.AppendUint16(b, 40000)
		b = binary.BigEndian.AppendUint16(b, 5201)
		b = binary.BigEndian.AppendUint32(b, s.seq)
		b = binary.BigEndian.AppendUint32(b, 0x01020304)
		b = append(b, byte(l4hdr/4)<<4, flags)
		b = binary.BigEndian.AppendUint16(b, 502)
		b = append(b, 0, 0, 0, 0)
		b = append(b, s.tcpOpts...)
	}
	hdrLen := len(b)
	for i := range s.payloadLen {
		b = append(b, byte(i*7+i>>8+int(s.seed)))
	}
	srcIP, dstIP := testIPv4Src, testIPv4Dst
	if s.ipv6 {
		srcIP, dstIP = testIPv6Src, testIPv6Dst
	}
	h := vnet.Hdr{GSOType: s.gsoType, HdrLen: uint16(hdrLen)}
	if s.gsoType != vnet.GSONone {
		h.GSOSize = uint16(s.mss)
	}
	csumOff := 16
	if s.udp {
		csumOff = 6
	}
	if s.noCsum {
		// A complete checksum, as a sender without offload would write.
		c := ^refcsum.Fold(refcsum.Sum(b[l4:], refcsum.Pseudo(srcIP, dstIP, l4proto, len(b)-l4)))
		if s.udp && c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(b[l4+csumOff:], c)
	} else {
		h.Flags = vnet.FlagNeedsCsum
		h.CsumStart = uint16(l4)
		h.CsumOffset = uint16(csumOff)
		binary.BigEndian.PutUint16(b[l4+csumOff:], refcsum.Fold(refcsum.Pseudo(srcIP, dstIP, l4proto, len(b)-l4)))
	}
	return b, h
}

// tcpOptsTS is a NOP NOP timestamp option block (12 bytes), what Linux puts
// on every data segment.
var tcpOptsTS = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}

// hexDiff renders a side-by-side hex dump of the first differences of two
// frames, for test failures.
func hexDiff(want, got []byte) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "len want %d got %d\n", len(want), len(got))
	n := max(len(want), len(got))
	shown := 0
	for off := 0; off < n && shown < 16; off += 16 {
		w := sliceAt(want, off)
		g := sliceAt(got, off)
		if string(w) == string(g) {
			continue
		}
		fmt.Fprintf(&sb, "%04x want % x\n%04x got  % x\n", off, w, off, g)
		shown++
	}
	return sb.String()
}

func sliceAt(b []byte, off int) []byte {
	if off >= len(b) {
		return nil
	}
	return b[off:min(off+16, len(b))]
}
