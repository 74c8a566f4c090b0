package backend

import (
	"net"
	"os"
	"testing"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
)

const benchBatch = 32

// plainBatch is benchBatch packets of a 12-byte header plus a 1514-byte frame
// addressed to a MAC that is not the tap's, so the stack drops it in ip_rcv
// (PACKET_OTHERHOST) and the benchmark measures the tap write itself.
func plainBatch() [][][]byte {
	frame := ethHeader(otherMAC, guestMAC, testpkt.EtherTypeIPv4)
	frame = append(frame, ipv4Header(net.IPv4(10, 9, 0, 2), net.IPv4(10, 9, 0, 1), testpkt.ProtoUDP, 1480, 1)...)
	frame = append(frame, make([]byte, 1480)...)
	hdr := vnetHeader(12, 0, 0, 0, 0, 0, 0)
	pkts := make([][][]byte, benchBatch)
	for i := range pkts {
		pkts[i] = [][]byte{hdr, frame}
	}
	return pkts
}

// tsoPacket is one 64 KB TCP super-packet (45 segments of 1448) to another
// host's MAC, passed whole.
func tsoPacket() [][]byte {
	payload := make([]byte, 45*1448)
	frame := tcpSegment(otherMAC, net.IPv4(10, 9, 0, 2), net.IPv4(10, 9, 0, 1), 1, 2, 1, 1, testpkt.TCPFlagACK, payload, true)
	return [][]byte{vnetHeader(12, 1, 1, 54, 1448, 34, 16), frame[:54], frame[54:]}
}

func BenchmarkNullWrite(b *testing.B) {
	n := NewNull(NullConfig{})
	pkts := plainBatch()
	b.SetBytes(int64(len(pkts) * packetLen(pkts[0])))
	b.ReportAllocs()
	for b.Loop() {
		n.WritePackets(pkts)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/pkt")
}

func BenchmarkNullReadTemplate(b *testing.B) {
	n := NewNull(NullConfig{RXTemplate: make([]byte, 12+1514)})
	bufs := make([][]byte, benchBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, benchBatch)
	b.SetBytes(benchBatch * (12 + 1514))
	b.ReportAllocs()
	for b.Loop() {
		n.ReadPackets(bufs, sizes, 0)
	}
}

// BenchmarkTapWrite writes through a real tap in a private namespace:
//
//	plain1514:    WritePackets, one writev per packet, iovecs into the caller's slices
//	copy1514:     baseline: copy header+frame into one buffer and os.File.Write
//	tso64k:       one 64 KB TSO super-packet per op, passed whole
//	tso64k-as-1514: baseline for tso64k: the same bytes as 45 plain 1514-byte frames
func BenchmarkTapWrite(b *testing.B) {
	ns := newTestNetns(b)
	tap := openTestTap(b, ns, TapConfig{Name: "vhbench"})
	benchWrites(b, tap, &tap.vnetFile)
}

// BenchmarkMacvtapWrite is BenchmarkTapWrite through a macvtap (bridge mode)
// on a veth whose peer sits in another namespace: each frame also crosses
// the macvlan and veth transmit paths and is dropped by the peer's stack.
func BenchmarkMacvtapWrite(b *testing.B) {
	ns := newTestNetns(b)
	newVethRig(b, ns, "vhblow", "vhbpeer", 30)
	m := openTestMacvtap(b, ns, MacvtapConfig{Name: "vhbmvt", Lower: "vhblow", MAC: guestMAC})
	benchWrites(b, m, &m.vnetFile)
}

// benchWrites runs the write sub-benchmarks on be; f is be's fd, for the
// copy-into-one-buffer baseline.
func benchWrites(b *testing.B, be Backend, f *vnetFile) {
	tap := struct {
		Backend
		file *os.File
	}{be, f.file}

	b.Run("plain1514", func(b *testing.B) {
		pkts := plainBatch()
		b.SetBytes(int64(len(pkts) * packetLen(pkts[0])))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tap.WritePackets(pkts); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/pkt")
	})
	b.Run("copy1514", func(b *testing.B) {
		pkts := plainBatch()
		buf := make([]byte, 0, 2048)
		b.SetBytes(int64(len(pkts) * packetLen(pkts[0])))
		b.ReportAllocs()
		for b.Loop() {
			for _, p := range pkts {
				buf = buf[:0]
				for _, s := range p {
					buf = append(buf, s...)
				}
				if _, err := tap.file.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/pkt")
	})
	b.Run("tso64k", func(b *testing.B) {
		pkts := [][][]byte{tsoPacket()}
		b.SetBytes(int64(packetLen(pkts[0])))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tap.WritePackets(pkts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tso64k-as-1514", func(b *testing.B) {
		one := plainBatch()[0]
		pkts := make([][][]byte, 45)
		for i := range pkts {
			pkts[i] = one
		}
		b.SetBytes(int64(45 * packetLen(one)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tap.WritePackets(pkts); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkTapPingRoundTrip is one echo request written and its reply read
// back through the kernel: the read path's allocations show here.
func BenchmarkTapPingRoundTrip(b *testing.B) {
	r := newPingRig(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := r.roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMacvtapPingRoundTrip is BenchmarkTapPingRoundTrip through a
// macvtap: the echo goes out through the veth and the peer namespace's
// reply comes back through it.
func BenchmarkMacvtapPingRoundTrip(b *testing.B) {
	r := newMacvtapPingRig(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := r.roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
}
