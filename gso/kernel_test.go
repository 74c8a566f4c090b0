//go:build linux

package gso

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/vhostd/vhostd/virtionet/vnet"
	"golang.org/x/sys/unix"
)

// Byte-exact comparisons of Segment, Resegment and CompleteCsum with the
// running kernel's own software GSO; see kernelLab for the set-up.

// kernelCase is one packet to push through the kernel.
type kernelCase struct {
	name string
	spec pktSpec
}

var kernelSegmentCases = []kernelCase{
	{"tcp4", pktSpec{payloadLen: 60000, mss: 1448, gsoType: vnet.GSOTCPv4, tcpOpts: tcpOptsTS, ipID: 0xfff0, df: true, seq: 0xfffff000, tcpFlags: TCPFlagACK | TCPFlagPSH}},
	{"tcp4 ip options", pktSpec{payloadLen: 20000, mss: 1400, gsoType: vnet.GSOTCPv4, ipv4Opts: []byte{1, 1, 1, 0, 7, 7, 4, 0, 0, 0, 0, 0}}},
	{"tcp6", pktSpec{ipv6: true, payloadLen: 60000, mss: 1428, gsoType: vnet.GSOTCPv6, tcpOpts: tcpOptsTS, tcpFlags: TCPFlagACK | TCPFlagPSH}},
	{"tcp6 extension headers", pktSpec{ipv6: true, payloadLen: 20000, mss: 1400, gsoType: vnet.GSOTCPv6,
		v6Ext: []v6ext{{ProtoHopByHop, 8}, {ProtoDestOpts, 16}}}},
	{"tcp4 ecn cwr", pktSpec{payloadLen: 20000, mss: 1448, gsoType: vnet.GSOTCPv4 | vnet.GSOECN, tos: 0x02, tcpFlags: TCPFlagACK | TCPFlagCWR | TCPFlagECE}},
	{"tcp6 ecn cwr", pktSpec{ipv6: true, payloadLen: 20000, mss: 1448, gsoType: vnet.GSOTCPv6 | vnet.GSOECN, tos: 0x02, tcpFlags: TCPFlagACK | TCPFlagCWR}},
	{"tcp4 fin psh", pktSpec{payloadLen: 10000, mss: 1448, gsoType: vnet.GSOTCPv4, tcpFlags: TCPFlagACK | TCPFlagPSH | TCPFlagFIN}},
	{"tcp4 short last segment", pktSpec{payloadLen: 4000, mss: 1448, gsoType: vnet.GSOTCPv4}},
	{"tcp4 odd mss", pktSpec{payloadLen: 9999, mss: 1001, gsoType: vnet.GSOTCPv4}},
	{"tcp4 without needs_csum", pktSpec{payloadLen: 10000, mss: 1448, gsoType: vnet.GSOTCPv4, noCsum: true}},
	{"uso4", pktSpec{udp: true, payloadLen: 30000, mss: 1472, gsoType: vnet.GSOUDPL4, ipID: 99}},
	{"uso6", pktSpec{udp: true, ipv6: true, payloadLen: 30001, mss: 1452, gsoType: vnet.GSOUDPL4}},
	{"vlan tcp4", pktSpec{vlanTPIDs: []uint16{EtherTypeVLAN}, payloadLen: 20000, mss: 1448, gsoType: vnet.GSOTCPv4}},
	{"vlan tcp6", pktSpec{vlanTPIDs: []uint16{EtherTypeVLAN}, ipv6: true, payloadLen: 20000, mss: 1448, gsoType: vnet.GSOTCPv6}},
	{"qinq tcp4", pktSpec{vlanTPIDs: []uint16{EtherTypeQinQ, EtherTypeVLAN}, payloadLen: 20000, mss: 1448, gsoType: vnet.GSOTCPv4}},
	{"vlan uso4", pktSpec{vlanTPIDs: []uint16{EtherTypeVLAN}, udp: true, payloadLen: 10000, mss: 1400, gsoType: vnet.GSOUDPL4}},
	{"ufo4", pktSpec{udp: true, payloadLen: 20000, mss: 1480, gsoType: vnet.GSOUDP, ipID: 0x4242, df: true}},
	{"ufo6", pktSpec{udp: true, ipv6: true, payloadLen: 20000, mss: 1448, gsoType: vnet.GSOUDP}},
}

// expectKernel sends frame with vh and checks the kernel's output against
// want byte for byte. partial says whether the kernel is expected to leave
// transport checksums partial.
func (k *kernelLab) expectKernel(t *testing.T, vh vnet.Hdr, frame []byte, mac byte, want [][]byte, partial bool) []captured {
	t.Helper()
	k.drain()
	if err := k.send(vh, frame); err != nil {
		t.Fatal(err)
	}
	got, err := k.capture(len(want), mac, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing more may follow.
	if extra, _ := k.capture(1, mac, 100*time.Millisecond); len(extra) != 0 {
		got = append(got, extra...)
	}
	if len(got) != len(want) {
		t.Fatalf("kernel produced %d frames, gso %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i].frame, want[i]) {
			t.Fatalf("frame %d of %d differs (want = gso package, got = kernel):\n%s", i, len(want), hexDiff(want[i], got[i].frame))
		}
		notReady := got[i].status&unix.TP_STATUS_CSUMNOTREADY != 0
		if !partial && notReady {
			t.Fatalf("frame %d: kernel left the checksum partial although tx-checksumming is off", i)
		}
	}
	return got
}

// startKernelLab builds the lab and waits until the bridge forwards.
func startKernelLab(t *testing.T) *kernelLab {
	k := newKernelLab(t)
	probe, h := pktSpec{payloadLen: 100, noCsum: true, srcMAC: 0xf0}.build()
	for range 50 {
		if err := k.send(h, probe); err != nil {
			t.Fatal(err)
		}
		if got, _ := k.capture(1, 0xf0, 100*time.Millisecond); len(got) == 1 {
			return k
		}
	}
	t.Fatal("the bridge in the test namespace never forwarded a frame")
	return nil
}

func TestKernelSegment(t *testing.T) {
	k := startKernelLab(t)
	for i, c := range kernelSegmentCases {
		t.Run(c.name, func(t *testing.T) {
			s := c.spec
			s.srcMAC = byte(2 * (i + 1))
			s.seed = byte(i)
			frame, vh := s.build()
			m, r := Parse(frame, vh)
			if r != ReasonNone || m.Kind == KindPlain {
				t.Fatalf("parse: %v %v", r, m.Kind)
			}
			if m.Kind == KindUFO && m.IPv6 {
				// The kernel's fragment id is a keyed hash (ipv6_proxy_select_ident):
				// take it from the capture, then compare every byte.
				k.drain()
				if err := k.send(vh, frame); err != nil {
					t.Fatal(err)
				}
				got, err := k.capture(m.Segs, s.srcMAC, 3*time.Second)
				if err != nil || len(got) == 0 {
					t.Fatalf("capture: %v (%d frames)", err, len(got))
				}
				m.IPv6FragID = binary.BigEndian.Uint32(got[0].frame[m.L4Off+4:])
				want := segmentAll(t, [][]byte{frame}, &m, 0, 0)
				if len(got) != len(want) {
					t.Fatalf("kernel produced %d fragments, gso %d", len(got), len(want))
				}
				for j := range want {
					if !bytes.Equal(got[j].frame, want[j]) {
						t.Fatalf("fragment %d differs:\n%s", j, hexDiff(want[j], got[j].frame))
					}
				}
				return
			}
			want := segmentAll(t, [][]byte{frame}, &m, 0, 0)
			k.expectKernel(t, vh, frame, s.srcMAC, want, false)
		})
	}
}

// With checksum offload on the veth the kernel leaves the segments'
// checksums partial; Segment with vnet.OffloadCSUM must write the same values.
func TestKernelSegmentPartialChecksum(t *testing.T) {
	k := startKernelLab(t)
	if err := k.SetTxCsum(true); err != nil {
		t.Fatal(err)
	}
	cases := []kernelCase{
		kernelSegmentCases[0], kernelSegmentCases[2], kernelSegmentCases[3], kernelSegmentCases[4],
		kernelSegmentCases[7], kernelSegmentCases[10], kernelSegmentCases[11], kernelSegmentCases[12],
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.spec
			s.srcMAC = byte(2 * (i + 1))
			frame, vh := s.build()
			m, _ := Parse(frame, vh)
			want := segmentAll(t, [][]byte{frame}, &m, vnet.OffloadCSUM, 0)
			got := k.expectKernel(t, vh, frame, s.srcMAC, want, true)
			for j := range got {
				if got[j].status&unix.TP_STATUS_CSUMNOTREADY == 0 {
					t.Fatalf("frame %d: kernel completed the checksum; the comparison is not of partial values", j)
				}
			}
		})
	}
}

// Re-segmented outputs written to the tap and segmented by the kernel give
// exactly the segments of the original super-packet.
func TestKernelResegment(t *testing.T) {
	k := startKernelLab(t)
	cases := []struct {
		kernelCase
		l Limits
	}{
		{kernelSegmentCases[0], Limits{GSOMaxSize: 16384}},
		{kernelSegmentCases[0], Limits{GSOMaxSegs: 7}},
		{kernelSegmentCases[2], Limits{GSOMaxSize: 16384}},
		{kernelSegmentCases[4], Limits{GSOMaxSize: 8192}},
		{kernelSegmentCases[6], Limits{GSOMaxSize: 4000}},
		{kernelSegmentCases[10], Limits{GSOMaxSegs: 4}},
		{kernelSegmentCases[12], Limits{GSOMaxSize: 10000}},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s %+v", c.name, c.l), func(t *testing.T) {
			s := c.spec
			s.srcMAC = byte(2 * (i + 1))
			frame, vh := s.build()
			m, _ := Parse(frame, vh)
			if d, r := Decide(m, ^vnet.Offloads(0)&^vnet.OffloadCSUMProtoSpecific, c.l, PolicyAuto); d != DecisionResegment {
				t.Fatalf("Decide: %v %v", d, r)
			}
			want := segmentAll(t, [][]byte{frame}, &m, 0, 0)
			outs, vhs := resegmentAll(t, [][]byte{frame}, &m, c.l, 0, 0)
			k.drain()
			for j, o := range outs {
				if err := k.send(vhs[j], o); err != nil {
					t.Fatalf("output %d (%+v): %v", j, vhs[j], err)
				}
			}
			got, err := k.capture(len(want), s.srcMAC, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("kernel produced %d frames from %d outputs, want %d", len(got), len(outs), len(want))
			}
			for j := range want {
				if !bytes.Equal(got[j].frame, want[j]) {
					t.Fatalf("frame %d differs:\n%s", j, hexDiff(want[j], got[j].frame))
				}
			}
		})
	}
}

// A non-GSO packet with a partial checksum leaves a device without
// checksum offload completed by skb_checksum_help(); CompleteCsum must
// agree.
func TestKernelCompleteCsum(t *testing.T) {
	k := startKernelLab(t)
	specs := []pktSpec{
		{payloadLen: 1000, tcpOpts: tcpOptsTS},
		{ipv6: true, payloadLen: 1001},
		{udp: true, payloadLen: 777},
		{udp: true, ipv6: true, payloadLen: 1200, vlanTPIDs: []uint16{EtherTypeVLAN}},
		{payloadLen: 600, mss: 1448, gsoType: vnet.GSOTCPv4}, // GSO header, payload fits: not GSO
	}
	for i, s := range specs {
		s.srcMAC = byte(2 * (i + 1))
		frame, vh := s.build()
		m, _ := Parse(frame, vh)
		want := append([]byte(nil), frame...)
		if !CompleteCsum(want, &m) {
			t.Fatal("CompleteCsum failed")
		}
		k.expectKernel(t, vh, frame, s.srcMAC, [][]byte{want}, false)
	}
}
