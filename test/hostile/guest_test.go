package hostile_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/internal/counters"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vhostd/vhostd/virtqueue"
)

// The hostile-guest suite (issue 6). Each case plays a misbehaving guest on
// queue pair 0 of a virtionet.Device (served by a vhostuser.Session over a
// socketpair, backends are Pipes) while a well-behaved guest keeps TX and RX
// traffic going on queue pair 1 of the same device. A case expects exactly
// one outcome:
//
//   - a counted drop: the chain comes back on the used ring with length 0,
//     exactly one drop is counted under the named reason (plus the header or
//     GSO reason where given), and the same ring then carries a good packet;
//   - the ring marked broken: TxBroken/RxBroken set, the ring's error eventfd
//     (SET_VRING_ERR) signalled and GET_STATUS reporting DEVICE_NEEDS_RESET;
//   - a refused ring set-up: SET_VRING_KICK is NACKed (REPLY_ACK) or the ring
//     never starts and the error eventfd is signalled.
//
// The process never panics (a panic in any goroutine ends the test binary).

// statusNeedsReset is DEVICE_NEEDS_RESET (virtio 1.x §2.1).
const statusNeedsReset = 0x40

type outcome struct {
	txDrop   virtionet.Drop
	rxDrop   virtionet.Drop
	hdr      vnet.HdrReason // with txDrop == DropHdrInvalid
	gso      gso.Reason     // decision reason counted with the drop
	txBroken bool
	rxBroken bool
	// refused: the ring set-up is refused; attack returns the NACK.
	refused bool
	// notStarted: SET_VRING_KICK is accepted but the ring never starts
	// (it cannot be built); the error eventfd is signalled.
	notStarted bool
	// segments: an accepted super-packet cut into this many segments.
	segments uint64
	// ignored: the device does not see the buffer at all (a packed
	// descriptor whose flags do not mark it available): nothing is popped,
	// counted or broken, and a good packet the guest then writes at the
	// same place goes through.
	ignored bool
}

func (o outcome) String() string {
	switch {
	case o.txBroken:
		return "tx ring broken"
	case o.rxBroken:
		return "rx ring broken"
	case o.refused:
		return "ring set-up refused (NACK)"
	case o.notStarted:
		return "ring not started, error eventfd signalled"
	case o.segments != 0:
		return fmt.Sprintf("accepted: %d segments", o.segments)
	case o.ignored:
		return "ignored (not available)"
	case o.txDrop != virtionet.DropNone:
		s := "tx drop " + o.txDrop.String()
		if o.hdr != vnet.HdrOK {
			s += "/" + o.hdr.String()
		}
		if o.gso != gso.ReasonNone {
			s += "/" + o.gso.String()
		}
		return s
	case o.rxDrop != virtionet.DropNone:
		return "rx drop " + o.rxDrop.String()
	}
	return "?"
}

type guestCase struct {
	name   string
	cfg    portConfig
	attack func(p *port) error
	want   outcome
}

func txDrop(d virtionet.Drop) outcome { return outcome{txDrop: d} }
func hdrDrop(r vnet.HdrReason) outcome {
	return outcome{txDrop: virtionet.DropHdrInvalid, hdr: r}
}
func gsoDrop(r gso.Reason) outcome    { return outcome{txDrop: virtionet.DropGSOMalformed, gso: r} }
func rxDrop(d virtionet.Drop) outcome { return outcome{rxDrop: d} }

// noTSO is a backend that takes partial checksums but no super-packets, so
// vhostd must parse and segment every GSO packet itself.
var noTSO = backend.Capabilities{Offloads: vnet.OffloadCSUM, GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500}

const (
	fNext  = virtqueue.DescFNext
	fWrite = virtqueue.DescFWrite
	fInd   = virtqueue.DescFIndirect
)

// goodTxBufs returns the guest address of a valid 12-byte header and of a
// valid 100-byte UDP frame in the victim's TX area.
func (p *port) goodTxBufs() (hdr, frame uint64) {
	h := p.copyIn(victimTx, testpkt.VnetHdr(0, 0, 0, 0, 0))
	f := p.copyIn(victimTx, testpkt.UDP4(100, testpkt.CsumNone))
	return p.gpa(h), p.gpa(f)
}

// rawChain writes descs into ring's table at consecutive indices from base
// and posts base as a head.
func (p *port) rawChain(ring int, base uint16, descs ...virtqueue.Desc) {
	d := p.queue(ring).Driver
	for i, desc := range descs {
		d.SetDesc(base+uint16(i), desc)
	}
	d.PostRaw(base)
	p.publishKick(ring)
}

// indirectTable writes descs as an indirect table in ring's data area and
// returns its guest address.
func (p *port) indirectTable(ring int, descs ...virtqueue.Desc) uint64 {
	b := p.buf(ring, len(descs)*virtqueue.DescSize)
	for i, d := range descs {
		virtqueue.PutDesc(b[i*virtqueue.DescSize:], d)
	}
	return p.gpa(b)
}

// txHdrFrame posts a TX packet given as header and frame.
func txHdrFrame(hdr []byte, frame []byte) func(p *port) error {
	return func(p *port) error {
		p.sendTx(victimTx, hdr, frame)
		return nil
	}
}

// rxAttack posts a raw RX chain and injects one packet so the device pops it.
func rxAttack(descs ...virtqueue.Desc) func(p *port) error {
	return func(p *port) error {
		p.rawChain(victimRx, 200, descs...)
		return p.pipes[0].Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone)))
	}
}

// setVictimTxAddr re-sends SET_VRING_ADDR for the victim TX ring with edit
// applied to its UVAs, then SET_VRING_KICK (and a kick).
func setVictimTxAddr(edit func(a *vhostuser.VringAddr, r0 frontend.MemRegion)) func(p *port) error {
	return func(p *port) error {
		q := p.queue(victimTx)
		desc, avail, used := q.Ring.RingAddrs()
		r0 := p.fe.Mem.Regions[0]
		uva := func(gpa uint64) uint64 { return gpa - r0.GPA + r0.UVA }
		a := vhostuser.VringAddr{Index: victimTx, Desc: uva(desc), Avail: uva(avail), Used: uva(used)}
		edit(&a, r0)
		if _, err := p.fe.Request(vhostuser.ReqSetVringAddr, a.Encode(nil), nil); err != nil {
			return err
		}
		if err := p.fe.SetVringFd(vhostuser.ReqSetVringKick, victimTx, q.KickFd); err != nil {
			return err
		}
		return q.Kick()
	}
}

func guestCases() []guestCase {
	var cases []guestCase
	add := func(name string, cfg portConfig, want outcome, attack func(p *port) error) {
		cases = append(cases, guestCase{name: name, cfg: cfg, want: want, attack: attack})
	}
	none := portConfig{}

	// --- descriptor chains ---
	add("chain/desc_loop_two", none, txDrop(virtionet.DropChainTooLong), func(p *port) error {
		h, f := p.goodTxBufs()
		p.rawChain(victimTx, 200,
			virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: 201},
			virtqueue.Desc{Addr: f, Len: 100, Flags: fNext, Next: 200})
		return nil
	})
	add("chain/desc_self_loop", none, txDrop(virtionet.DropChainTooLong), func(p *port) error {
		h, _ := p.goodTxBufs()
		p.rawChain(victimTx, 200, virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: 200})
		return nil
	})
	add("chain/longer_than_queue_size", none, txDrop(virtionet.DropChainTooLong), func(p *port) error {
		// queueSize descriptors, each one byte of a valid packet, the last
		// linking back to the first: the walk passes queueSize+1.
		h, _ := p.goodTxBufs()
		d := p.queue(victimTx).Driver
		for i := 0; i < queueSize; i++ {
			d.SetDesc(uint16(i), virtqueue.Desc{Addr: h, Len: 1, Flags: fNext, Next: uint16((i + 1) % queueSize)})
		}
		d.PostRaw(0)
		p.publishKick(victimTx)
		return nil
	})
	add("chain/next_index_equals_size", none, txDrop(virtionet.DropDescIndex), func(p *port) error {
		h, _ := p.goodTxBufs()
		p.rawChain(victimTx, 200, virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: queueSize})
		return nil
	})
	add("chain/next_index_0xffff", none, txDrop(virtionet.DropDescIndex), func(p *port) error {
		h, _ := p.goodTxBufs()
		p.rawChain(victimTx, 200, virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: 0xffff})
		return nil
	})
	add("chain/1024_descriptors/queue_1024", portConfig{queueSize: 1024}, txDrop(virtionet.DropTxTooLarge), func(p *port) error {
		// More buffers than writev takes (IOV_MAX), in a legal chain.
		h, f := p.goodTxBufs()
		d := p.queue(victimTx).Driver
		d.SetDesc(0, virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: 1})
		for i := 1; i < 1024; i++ {
			d.SetDesc(uint16(i), virtqueue.Desc{Addr: f + uint64(i%100), Len: 1, Flags: fNext, Next: uint16(i + 1)})
		}
		d.SetDesc(1023, virtqueue.Desc{Addr: f, Len: 100})
		d.PostRaw(0)
		p.publishKick(victimTx)
		return nil
	})
	add("chain/head_index_beyond_size", none, outcome{txBroken: true}, func(p *port) error {
		d := p.queue(victimTx).Driver
		d.PostRaw(queueSize + 7)
		p.publishKick(victimTx)
		return nil
	})

	// --- addresses and lengths ---
	badFrame := func(addr uint64, n uint32) func(p *port) error {
		return func(p *port) error {
			h, _ := p.goodTxBufs()
			p.rawChain(victimTx, 200,
				virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: 201},
				virtqueue.Desc{Addr: addr, Len: n})
			return nil
		}
	}
	add("addr/outside_every_region", none, txDrop(virtionet.DropDescAddress), badFrame(1<<40, 100))
	add("addr/in_hole_between_regions", none, txDrop(virtionet.DropDescAddress), badFrame(holeGPA, 100))
	add("addr/straddles_two_regions", none, txDrop(virtionet.DropDescAddress), badFrame(region1GPA-50, 100))
	add("addr/runs_past_last_region", none, txDrop(virtionet.DropDescAddress), badFrame(region2GPA+region2Size-50, 100))
	add("addr/addr_plus_len_wraps", none, txDrop(virtionet.DropDescAddress), badFrame(math.MaxUint64-50, 100))
	add("addr/len_4GiB_minus_1", none, txDrop(virtionet.DropDescAddress), badFrame(0, math.MaxUint32))
	add("addr/zero_length_buffer", none, txDrop(virtionet.DropZeroLen), func(p *port) error {
		h, f := p.goodTxBufs()
		p.rawChain(victimTx, 200,
			virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: 201},
			virtqueue.Desc{Addr: f, Len: 0, Flags: fNext, Next: 202},
			virtqueue.Desc{Addr: f, Len: 100})
		return nil
	})
	add("addr/header_outside_memory", none, txDrop(virtionet.DropDescAddress), func(p *port) error {
		p.rawChain(victimTx, 200, virtqueue.Desc{Addr: 1 << 50, Len: 112})
		return nil
	})

	// --- indirect descriptors ---
	indirect := func(tableLen uint32, flags uint16, table func(p *port) uint64) func(p *port) error {
		return func(p *port) error {
			p.rawChain(victimTx, 200, virtqueue.Desc{Addr: table(p), Len: tableLen, Flags: fInd | flags, Next: 201})
			return nil
		}
	}
	goodTable := func(p *port) uint64 {
		h, f := p.goodTxBufs()
		return p.indirectTable(victimTx,
			virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: 1},
			virtqueue.Desc{Addr: f, Len: 100})
	}
	add("indirect/len_not_multiple_of_16", none, txDrop(virtionet.DropIndirectLen), indirect(24, 0, goodTable))
	add("indirect/len_zero", none, txDrop(virtionet.DropIndirectLen), indirect(0, 0, goodTable))
	add("indirect/huge_len", none, txDrop(virtionet.DropIndirectLen), indirect(0xfffffff0, 0, goodTable))
	add("indirect/more_entries_than_queue_size", none, txDrop(virtionet.DropIndirectLen), indirect(16*(queueSize+1), 0, goodTable))
	add("indirect/with_next_flag", none, txDrop(virtionet.DropIndirectNext), indirect(32, fNext, goodTable))
	add("indirect/nested", none, txDrop(virtionet.DropNestedIndirect), indirect(16, 0, func(p *port) uint64 {
		inner := goodTable(p)
		return p.indirectTable(victimTx, virtqueue.Desc{Addr: inner, Len: 32, Flags: fInd})
	}))
	add("indirect/table_outside_memory", none, txDrop(virtionet.DropDescAddress), indirect(32, 0, func(*port) uint64 { return 1 << 40 }))
	add("indirect/table_straddles_regions", none, txDrop(virtionet.DropDescAddress), indirect(32, 0, func(*port) uint64 { return region1GPA - 16 }))
	add("indirect/loop_inside_table", none, txDrop(virtionet.DropChainTooLong), indirect(32, 0, func(p *port) uint64 {
		h, f := p.goodTxBufs()
		return p.indirectTable(victimTx,
			virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: 1},
			virtqueue.Desc{Addr: f, Len: 100, Flags: fNext, Next: 0})
	}))
	add("indirect/next_beyond_table", none, txDrop(virtionet.DropDescIndex), indirect(32, 0, func(p *port) uint64 {
		h, f := p.goodTxBufs()
		return p.indirectTable(victimTx,
			virtqueue.Desc{Addr: h, Len: 12, Flags: fNext, Next: 2},
			virtqueue.Desc{Addr: f, Len: 100})
	}))
	add("indirect/not_negotiated", portConfig{clearFeatures: vnet.FeatureIndirectDesc},
		txDrop(virtionet.DropIndirectNotNegotiated), indirect(32, 0, goodTable))
	add("indirect/chain_over_4GiB", none, txDrop(virtionet.DropChainTooLong), func(p *port) error {
		// 256 readable descriptors covering all of region 0: 4 GiB in total,
		// one byte more than a chain may carry (virtio 1.x §2.7.5.2).
		descs := make([]virtqueue.Desc, queueSize)
		for i := range descs {
			descs[i] = virtqueue.Desc{Addr: 0, Len: region0Size, Flags: fNext, Next: uint16(i + 1)}
		}
		descs[queueSize-1].Flags = 0
		t := p.indirectTable(victimTx, descs...)
		p.rawChain(victimTx, 200, virtqueue.Desc{Addr: t, Len: queueSize * 16, Flags: fInd})
		return nil
	})

	// --- ring indices and ring addresses ---
	add("ring/avail_idx_jump_beyond_size", none, outcome{txBroken: true}, func(p *port) error {
		p.queue(victimTx).Driver.SetAvailIdx(queueSize + 1)
		return p.queue(victimTx).Kick()
	})
	add("ring/avail_idx_moves_backwards", none, outcome{txBroken: true}, func(p *port) error {
		p.queue(victimTx).Driver.SetAvailIdx(0xffff)
		return p.queue(victimTx).Kick()
	})
	add("ring/rx_avail_idx_jump", none, outcome{rxBroken: true}, func(p *port) error {
		p.queue(victimRx).Driver.SetAvailIdx(queueSize * 3)
		return p.queue(victimRx).Kick()
	})
	add("ring/rx_head_index_beyond_size", none, outcome{rxBroken: true}, func(p *port) error {
		d := p.queue(victimRx).Driver
		d.PostRaw(0x8000)
		p.publishKick(victimRx)
		return p.pipes[0].Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone)))
	})
	add("ring/used_ring_outside_memory", none, outcome{refused: true}, setVictimTxAddr(func(a *vhostuser.VringAddr, _ frontend.MemRegion) {
		a.Used = 0x1000
	}))
	add("ring/used_ring_past_region_end", none, outcome{refused: true}, setVictimTxAddr(func(a *vhostuser.VringAddr, r0 frontend.MemRegion) {
		a.Used = r0.UVA + uint64(len(r0.B)) - 64
	}))
	add("ring/desc_table_outside_memory", none, outcome{refused: true}, setVictimTxAddr(func(a *vhostuser.VringAddr, _ frontend.MemRegion) {
		a.Desc = math.MaxUint64 - 4095
	}))
	add("ring/used_ring_misaligned", none, outcome{notStarted: true}, setVictimTxAddr(func(a *vhostuser.VringAddr, _ frontend.MemRegion) {
		a.Used += 2
	}))

	// --- packet headers (validator: every policy, every backend) ---
	frame := testpkt.UDP4(200, testpkt.CsumNone)
	add("hdr/chain_shorter_than_vnet_hdr", none, hdrDrop(vnet.HdrShort), func(p *port) error {
		p.sendTx(victimTx, make([]byte, 8))
		return nil
	})
	add("hdr/frame_shorter_than_ethernet", none, hdrDrop(vnet.HdrFrameShort), txHdrFrame(testpkt.VnetHdr(0, 0, 0, 0, 0), frame[:10]))
	add("hdr/gso_size_zero", none, hdrDrop(vnet.HdrGSOSizeZero), txHdrFrame(testpkt.TSO4Hdr(0), testpkt.TCP4Super(3000)))
	add("hdr/gso_size_0xffff", none, hdrDrop(vnet.HdrGSOSizeByFrags), txHdrFrame(testpkt.TSO4Hdr(0xffff), testpkt.TCP4Super(3000)))
	add("hdr/gso_type_unknown", none, hdrDrop(vnet.HdrGSOUnknownType), txHdrFrame(testpkt.VnetHdr(1, 2, 1448, 34, 16), testpkt.TCP4Super(3000)))
	add("hdr/gso_type_udp_tunnel", none, hdrDrop(vnet.HdrGSOUnknownType), txHdrFrame(testpkt.VnetHdr(1, 0x20, 1448, 34, 16), testpkt.TCP4Super(3000)))
	add("hdr/gso_ecn_on_udp", none, hdrDrop(vnet.HdrGSOECNNotTCP), txHdrFrame(testpkt.VnetHdr(1, vnet.GSOUDPL4|vnet.GSOECN, 1000, 34, 6), testpkt.UDP4(3000, testpkt.CsumPartial)))
	add("hdr/gso_without_needs_csum", none, hdrDrop(vnet.HdrGSONoCsum), txHdrFrame(testpkt.VnetHdr(0, vnet.GSOTCPv4, 1448, 34, 16), testpkt.TCP4Super(3000)))
	add("hdr/csum_start_outside_frame", none, hdrDrop(vnet.HdrCsumOutOfFrame), txHdrFrame(testpkt.VnetHdr(1, 0, 0, 60000, 6), frame))
	add("hdr/csum_offset_outside_frame", none, hdrDrop(vnet.HdrCsumOutOfFrame), txHdrFrame(testpkt.VnetHdr(1, 0, 0, 34, 65000), frame))
	add("hdr/csum_start_inside_l2", none, hdrDrop(vnet.HdrCsumStartTooSmall), txHdrFrame(testpkt.VnetHdr(1, 0, 0, 4, 6), frame))
	add("hdr/tso_csum_offset_not_16", none, hdrDrop(vnet.HdrCsumOffsetBad), txHdrFrame(testpkt.VnetHdr(1, vnet.GSOTCPv4, 1448, 34, 6), testpkt.TCP4Super(3000)))
	add("hdr/tcp_header_cut_by_frame_end", none, hdrDrop(vnet.HdrCsumOutOfFrame), txHdrFrame(testpkt.TSO4Hdr(1448), testpkt.TCP4Super(0)[:44]))
	add("hdr/uso_more_than_128_segments", none, hdrDrop(vnet.HdrUSOTooManySegs), txHdrFrame(testpkt.VnetHdr(1, vnet.GSOUDPL4, 1, 34, 6), testpkt.UDP4(2000, testpkt.CsumPartial)))

	// --- packet headers the parser must catch (GSO: auto policy always
	// parses; a no-TSO backend also makes vhostd segment, so both the
	// parse and the segmenter see the packet) ---
	for _, pc := range []struct {
		suffix string
		cfg    portConfig
	}{{"auto_tso", none}, {"auto_notso", portConfig{caps: noTSO}}} {
		cfg := pc.cfg
		gsoCase := func(name string, r gso.Reason, hdr []byte, f []byte) {
			add("gso/"+name+"/"+pc.suffix, cfg, gsoDrop(r), txHdrFrame(hdr, f))
		}
		arp := testpkt.TCP4Super(3000)
		binary.BigEndian.PutUint16(arp[12:], 0x0806)
		gsoCase("non_ip_frame_arp", gso.ReasonMalformedEtherType, testpkt.TSO4Hdr(1448), arp)
		v6 := testpkt.TCP4Super(3000)
		binary.BigEndian.PutUint16(v6[12:], 0x86dd)
		gsoCase("tcpv4_gso_on_ipv6_ethertype", gso.ReasonMalformedEtherType, testpkt.TSO4Hdr(1448), v6)
		ihl := testpkt.TCP4Super(3000)
		ihl[14] = 0x44
		testpkt.FixIPv4(ihl[testpkt.EthLen:])
		gsoCase("ipv4_ihl_below_5", gso.ReasonMalformedIPv4, testpkt.TSO4Hdr(1448), ihl)
		ver := testpkt.TCP4Super(3000)
		ver[14] = 0x65
		gsoCase("ipv4_version_6_in_v4_header", gso.ReasonMalformedIPv4, testpkt.TSO4Hdr(1448), ver)
		tot := testpkt.TCP4Super(3000)
		binary.BigEndian.PutUint16(tot[16:], 60000)
		testpkt.FixIPv4(tot[testpkt.EthLen:])
		gsoCase("ipv4_total_length_mismatch", gso.ReasonMalformedIPv4Length, testpkt.TSO4Hdr(1448), tot)
		frag := testpkt.TCP4Super(3000)
		frag[20] = 0x20 // MF
		testpkt.FixIPv4(frag[testpkt.EthLen:])
		gsoCase("ipv4_fragment", gso.ReasonMalformedIPv4Fragment, testpkt.TSO4Hdr(1448), frag)
		proto := testpkt.TCP4Super(3000)
		proto[23] = 17
		testpkt.FixIPv4(proto[testpkt.EthLen:])
		gsoCase("l4_proto_udp_under_tcpv4_gso", gso.ReasonMalformedL4Proto, testpkt.TSO4Hdr(1448), proto)
		doff := testpkt.TCP4Super(20)
		doff[46] = 15 << 4 // 60-byte TCP header in a 40-byte transport part
		gsoCase("tcp_data_offset_past_frame", gso.ReasonMalformedTCP, testpkt.VnetHdr(1, vnet.GSOTCPv4, 8, 34, 16), doff)
		small := testpkt.TCP4Super(3000)
		small[46] = 4 << 4
		gsoCase("tcp_data_offset_below_5", gso.ReasonMalformedTCP, testpkt.TSO4Hdr(1448), small)
		gsoCase("csum_start_not_transport_header", gso.ReasonMalformedCsumStart, testpkt.VnetHdr(1, vnet.GSOTCPv4, 1448, 38, 16), testpkt.TCP4Super(3000))
		vlan := make([]byte, 0, 3100)
		vlan = append(vlan, testpkt.TCP4Super(3000)[:12]...)
		for i := 0; i < 9; i++ {
			vlan = append(vlan, 0x81, 0x00, 0x00, byte(i+1))
		}
		vlan = append(vlan, testpkt.TCP4Super(3000)[12:]...)
		gsoCase("nine_vlan_tags", gso.ReasonMalformedVLAN, testpkt.VnetHdr(1, vnet.GSOTCPv4, 1448, 34+36, 16), vlan)
	}
	// GSO that would need more than 65535 segments: with gso_size 1 that
	// takes a frame over 64 KiB, which no IPv4/IPv6 length field can
	// describe and no backend takes.
	add("gso/over_65535_segments/software", portConfig{policy: "software"}, txDrop(virtionet.DropTxTooLarge), func(p *port) error {
		big := testpkt.TCP4Super(100_000)
		p.sendTx(victimTx, testpkt.VnetHdr(1, vnet.GSOTCPv4, 1, 34, 16), big)
		return nil
	})
	add("gso/over_65535_segments/auto_notso", portConfig{caps: noTSO}, txDrop(virtionet.DropTxTooLarge), func(p *port) error {
		p.sendTx(victimTx, testpkt.VnetHdr(1, vnet.GSOTCPv4, 1, 34, 16), testpkt.TCP4Super(100_000))
		return nil
	})
	add("size/plain_frame_of_1MiB", none, txDrop(virtionet.DropTxTooLarge), func(p *port) error {
		f := testpkt.UDP4(1<<20, testpkt.CsumNone)
		p.sendTx(victimTx, testpkt.VnetHdr(0, 0, 0, 0, 0), f)
		return nil
	})
	// The largest legal amplification: a 64 KiB super-packet with an MSS of
	// one byte is cut into 65495 segments, every one written and counted.
	add("gso/mss_1_on_64KiB/software", portConfig{policy: "software"}, outcome{segments: 65535 - 20 - 20}, func(p *port) error {
		p.sendTx(victimTx, testpkt.VnetHdr(1, vnet.GSOTCPv4, 1, 34, 16), testpkt.TCP4Super(65535-40))
		return nil
	})

	// --- buffer direction ---
	add("dir/tx_write_only_buffer", none, txDrop(virtionet.DropTxWritableBuffer), func(p *port) error {
		h, f := p.goodTxBufs()
		p.rawChain(victimTx, 200,
			virtqueue.Desc{Addr: h, Len: 12, Flags: fWrite | fNext, Next: 201},
			virtqueue.Desc{Addr: f, Len: 100, Flags: fWrite})
		return nil
	})
	add("dir/tx_readable_after_writable", none, txDrop(virtionet.DropWriteBeforeRead), func(p *port) error {
		h, f := p.goodTxBufs()
		p.rawChain(victimTx, 200,
			virtqueue.Desc{Addr: h, Len: 12, Flags: fWrite | fNext, Next: 201},
			virtqueue.Desc{Addr: f, Len: 100})
		return nil
	})
	rxBuf := func(p *port) uint64 { return p.gpa(p.buf(victimRx, 2048)) }
	add("dir/rx_read_only_buffer", none, rxDrop(virtionet.DropRxReadableBuffer), func(p *port) error {
		return rxAttack(virtqueue.Desc{Addr: rxBuf(p), Len: 2048})(p)
	})
	add("rx/buffer_outside_memory", none, rxDrop(virtionet.DropDescAddress), func(p *port) error {
		return rxAttack(virtqueue.Desc{Addr: holeGPA, Len: 2048, Flags: fWrite})(p)
	})
	add("rx/desc_loop", none, rxDrop(virtionet.DropChainTooLong), func(p *port) error {
		b := rxBuf(p)
		return rxAttack(
			virtqueue.Desc{Addr: b, Len: 1024, Flags: fWrite | fNext, Next: 201},
			virtqueue.Desc{Addr: b + 1024, Len: 1024, Flags: fWrite | fNext, Next: 200})(p)
	})
	add("rx/zero_length_buffer", none, rxDrop(virtionet.DropZeroLen), func(p *port) error {
		return rxAttack(virtqueue.Desc{Addr: rxBuf(p), Len: 0, Flags: fWrite})(p)
	})
	add("rx/buffer_straddles_regions", none, rxDrop(virtionet.DropDescAddress), func(p *port) error {
		return rxAttack(virtqueue.Desc{Addr: region1GPA - 1000, Len: 2048, Flags: fWrite})(p)
	})
	return cases
}

// TestHostileGuest runs every case on a fresh port.
func TestHostileGuest(t *testing.T) {
	for _, c := range guestCases() {
		t.Run(c.name, func(t *testing.T) { runGuestCase(t, c) })
	}
}

func runGuestCase(t *testing.T, c guestCase) {
	p := newPort(t, c.cfg)
	by := startBystander(t, p)
	err := c.attack(p)
	w := c.want
	switch {
	case w.refused:
		if !errors.Is(err, frontend.ErrNack) {
			t.Fatalf("attack: got %v, want a NACK", err)
		}
	case err != nil:
		t.Fatalf("attack: %v", err)
	}
	checkOutcome(t, p, w)
	by.finish(t)
	// The session still answers.
	if _, err := p.fe.GetU64(vhostuser.ReqGetFeatures); err != nil {
		t.Fatalf("session stopped answering: %v", err)
	}
	st := p.stats(0)
	if st.Load(virtionet.CtrTxPosted) != st.TxWritten()+st.TxDropTotal() {
		t.Errorf("accounting: posted %d != written %d + dropped %d", st.Load(virtionet.CtrTxPosted), st.TxWritten(), st.TxDropTotal())
	}
}

func checkOutcome(t *testing.T, p *port, w outcome) {
	t.Helper()
	st := p.stats(0)
	switch {
	case w.txBroken || w.rxBroken:
		broken, ring := &st.TxBroken, victimTx
		if w.rxBroken {
			broken, ring = &st.RxBroken, victimRx
		}
		if !eventually(broken.Load) {
			t.Fatal("ring not marked broken")
		}
		if !waitEventfd(p.queue(ring).ErrFd, 5*time.Second) {
			t.Error("error eventfd (SET_VRING_ERR) not signalled")
		}
		status, err := p.fe.GetU64(vhostuser.ReqGetStatus)
		if err != nil {
			t.Fatal(err)
		}
		if status&statusNeedsReset == 0 {
			t.Errorf("GET_STATUS %#x lacks DEVICE_NEEDS_RESET", status)
		}
	case w.refused:
		if p.sess.RingStates()[victimTx].Started {
			t.Error("ring started although its set-up was refused")
		}
	case w.notStarted:
		if !waitEventfd(p.queue(victimTx).ErrFd, 5*time.Second) {
			t.Error("error eventfd not signalled for a ring that cannot start")
		}
		if p.sess.RingStates()[victimTx].Started {
			t.Error("ring started with unusable addresses")
		}
	case w.ignored:
		time.Sleep(50 * time.Millisecond)
		if st.Load(virtionet.CtrTxPosted) != 0 || st.TxDropTotal() != 0 || st.TxBroken.Load() || st.RxBroken.Load() {
			t.Fatalf("posted %d, drops %v, broken %t/%t: the device took a descriptor that was not available",
				st.Load(virtionet.CtrTxPosted), dropList(st, virtionet.CtrTxDrops), st.TxBroken.Load(), st.RxBroken.Load())
		}
		checkTxStillWorks(t, p)
	case w.segments != 0:
		if !eventually(func() bool { return st.Load(virtionet.CtrTxSegments) == w.segments }) {
			t.Fatalf("segments %d, want %d (drops %v)", st.Load(virtionet.CtrTxSegments), w.segments, dropList(st, virtionet.CtrTxDrops))
		}
		if got := len(p.pipes[0].TakeWritten()); uint64(got) != w.segments {
			t.Errorf("backend got %d packets, want %d", got, w.segments)
		}
		checkTxStillWorks(t, p)
	case w.txDrop != virtionet.DropNone:
		if !eventually(func() bool { return st.Load(virtionet.CtrTxDrops.At(int(w.txDrop))) >= 1 }) {
			t.Fatalf("no %v drop; drops: %v, hdr %v, written %d", w.txDrop, dropList(st, virtionet.CtrTxDrops), hdrList(st), st.TxWritten())
		}
		used, err := p.reap(victimTx, 1)
		if err != nil {
			t.Fatalf("dropped chain not returned: %v", err)
		}
		if used[0].Len != 0 {
			t.Errorf("dropped chain returned with len %d", used[0].Len)
		}
		if d := dropList(st, virtionet.CtrTxDrops); len(d) != 1 || d[w.txDrop.String()] != 1 {
			t.Errorf("drops %v, want exactly one %v", d, w.txDrop)
		}
		if w.hdr != vnet.HdrOK && st.Load(virtionet.CtrTxHdrErrors.At(int(w.hdr))) != 1 {
			t.Errorf("header reasons %v, want %v", hdrList(st), w.hdr)
		}
		if w.gso != gso.ReasonNone && st.Load(virtionet.CtrTxDecisions.At(int(w.gso))) != 1 {
			t.Errorf("decision %v counted %d times", w.gso, st.Load(virtionet.CtrTxDecisions.At(int(w.gso))))
		}
		if n := len(p.pipes[0].Written()); n != 0 {
			t.Errorf("backend got %d packets from a dropped chain", n)
		}
		if st.TxBroken.Load() {
			t.Error("a dropped chain broke the ring")
		}
		checkTxStillWorks(t, p)
	case w.rxDrop != virtionet.DropNone:
		if !eventually(func() bool { return st.Load(virtionet.CtrRxDrops.At(int(w.rxDrop))) >= 1 }) {
			t.Fatalf("no rx %v drop; rx drops %v", w.rxDrop, dropList(st, virtionet.CtrRxDrops))
		}
		used, err := p.reap(victimRx, 1)
		if err != nil {
			t.Fatalf("dropped rx chain not returned: %v", err)
		}
		if used[0].Len != 0 {
			t.Errorf("dropped rx chain returned with len %d", used[0].Len)
		}
		if d := dropList(st, virtionet.CtrRxDrops); len(d) != 1 || d[w.rxDrop.String()] != 1 {
			t.Errorf("rx drops %v, want exactly one %v", d, w.rxDrop)
		}
		// The packet is still held: a good buffer receives it.
		b := p.buf(victimRx, 2048)
		if _, err := p.queue(victimRx).Ring.Add(nil, [][]byte{b}); err != nil {
			t.Fatal(err)
		}
		p.publishKick(victimRx)
		used, err = p.reap(victimRx, 1)
		if err != nil || used[0].Len != 112 {
			t.Fatalf("rx ring does not work after the drop: %v %+v", err, used)
		}
		if st.RxBroken.Load() {
			t.Error("a dropped chain broke the rx ring")
		}
	default:
		t.Fatal("case has no expected outcome")
	}
}

// checkTxStillWorks sends a good packet on the victim TX ring.
func checkTxStillWorks(t *testing.T, p *port) {
	t.Helper()
	before := len(p.pipes[0].Written())
	p.sendTx(victimTx, testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone))
	if _, ok := p.pipes[0].WaitWritten(before+1, 5*time.Second); !ok {
		t.Fatal("victim TX ring does not carry a good packet after the attack")
	}
	if _, err := p.reap(victimTx, 1); err != nil {
		t.Fatal(err)
	}
}

func dropList(st *virtionet.QueueStats, id counters.ID) map[string]uint64 {
	m := map[string]uint64{}
	for i := 0; i < virtionet.NumDrops; i++ {
		if n := st.Load(id.At(i)); n != 0 {
			m[virtionet.Drop(i).String()] = n
		}
	}
	return m
}

func hdrList(st *virtionet.QueueStats) map[string]uint64 {
	m := map[string]uint64{}
	for i := 0; i < vnet.NumHdrReasons; i++ {
		if n := st.Load(virtionet.CtrTxHdrErrors.At(int(i))); n != 0 {
			m[vnet.HdrReason(i).String()] = n
		}
	}
	return m
}

// bystander is a well-behaved guest on queue pair 1: it sends a packet,
// waits for its completion, receives one, and again, until told to stop.
type bystander struct {
	p      *port
	stop   chan struct{}
	done   chan struct{}
	rounds atomic.Int64
	once   sync.Once
	mu     sync.Mutex
	err    error
}

// startBystander starts the well-behaved guest. It is stopped before the
// port closes (t.Cleanup runs last-in first-out), also when a case fails.
func startBystander(t *testing.T, p *port) *bystander {
	b := &bystander{p: p, stop: make(chan struct{}), done: make(chan struct{})}
	go b.run()
	t.Cleanup(b.halt)
	return b
}

func (b *bystander) halt() {
	b.once.Do(func() { close(b.stop) })
	<-b.done
}

func (b *bystander) fail(err error) {
	b.mu.Lock()
	b.err = err
	b.mu.Unlock()
}

func (b *bystander) run() {
	defer close(b.done)
	p := b.p
	tx, rx := p.queue(bystanderTx), p.queue(bystanderRx)
	frame := testpkt.UDP4(200, testpkt.CsumNone)
	pkt := concat(testpkt.VnetHdr(0, 0, 0, 0, 0), frame)
	hb, fb := p.copyIn(bystanderTx, testpkt.VnetHdr(0, 0, 0, 0, 0)), p.copyIn(bystanderTx, frame)
	rb := p.buf(bystanderRx, 2048)
	for i := 0; ; i++ {
		select {
		case <-b.stop:
			return
		default:
		}
		if _, err := tx.Ring.Add([][]byte{hb, fb}, nil); err != nil {
			b.fail(err)
			return
		}
		tx.Ring.Publish()
		tx.Kick()
		if _, err := p.reap(bystanderTx, 1); err != nil {
			b.fail(fmt.Errorf("bystander TX round %d: %w", i, err))
			return
		}
		if got, ok := p.pipes[1].WaitWritten(i+1, 5*time.Second); !ok || len(got) != i+1 {
			b.fail(fmt.Errorf("bystander TX round %d: backend has %d packets", i, len(got)))
			return
		}
		if _, err := rx.Ring.Add(nil, [][]byte{rb}); err != nil {
			b.fail(err)
			return
		}
		rx.Ring.Publish()
		rx.Kick()
		if err := p.pipes[1].Inject(pkt); err != nil {
			b.fail(err)
			return
		}
		used, err := p.reap(bystanderRx, 1)
		if err != nil || used[0].Len != uint32(len(pkt)) {
			b.fail(fmt.Errorf("bystander RX round %d: %v %+v", i, err, used))
			return
		}
		b.rounds.Add(1)
	}
}

// finish lets the bystander complete a few more rounds after the attack's
// outcome was checked, stops it and reports its failures.
func (b *bystander) finish(t *testing.T) {
	t.Helper()
	target := b.rounds.Load() + 5
	ok := eventually(func() bool {
		select {
		case <-b.done:
			return true
		default:
		}
		return b.rounds.Load() >= target
	})
	b.halt()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		t.Fatalf("the second queue pair stopped passing traffic: %v", b.err)
	}
	if !ok {
		t.Fatalf("the second queue pair stalled at %d rounds", b.rounds.Load())
	}
}

// TestRxPacketsTheGuestCannotHold: a guest posts RX buffers too small for
// what arrives. With MRG_RXBUF a packet needing more buffers than the whole
// ring holds is dropped (rx_no_room) and the buffers stay for the next
// packet; without MRG_RXBUF a packet larger than the one buffer is dropped
// (rx_buffer_too_small) and the buffer stays too.
func TestRxPacketsTheGuestCannotHold(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   portConfig
		bufs  int
		size  int
		drop  virtionet.Drop
		small int // a packet that fits afterwards
	}{
		{"mrg_rxbuf/ring_of_4_byte_buffers", portConfig{}, queueSize, 4, virtionet.DropRxNoRoom, 100},
		{"no_mrg_rxbuf/one_64_byte_buffer", portConfig{clearFeatures: vnet.NetMrgRxbuf}, 1, 64, virtionet.DropRxBufferTooSmall, 40},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPort(t, c.cfg)
			by := startBystander(t, p)
			d := p.queue(victimRx).Driver
			for i := 0; i < c.bufs; i++ {
				if _, err := d.Add(nil, [][]byte{p.buf(victimRx, c.size)}); err != nil {
					t.Fatal(err)
				}
			}
			p.publishKick(victimRx)
			st := p.stats(0)
			must(t, p.pipes[0].Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(2000, testpkt.CsumNone))))
			if !eventually(func() bool { return st.Load(virtionet.CtrRxDrops.At(int(c.drop))) == 1 }) {
				t.Fatalf("rx drops %v, want one %v", dropList(st, virtionet.CtrRxDrops), c.drop)
			}
			hdrLen := 12
			if c.cfg.clearFeatures != 0 {
				hdrLen = vnet.HdrLen(p.dev.Acked())
			}
			must(t, p.pipes[0].Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0)[:hdrLen], testpkt.UDP4(c.small, testpkt.CsumNone))))
			want := (hdrLen + c.small + c.size - 1) / c.size
			used, err := p.reap(victimRx, want)
			if err != nil {
				t.Fatalf("the buffers were not kept for the next packet: %v", err)
			}
			total := 0
			for _, u := range used {
				total += int(u.Len)
			}
			if total != hdrLen+c.small || st.Load(virtionet.CtrRxPackets) != 1 || st.RxBroken.Load() {
				t.Errorf("delivered %d bytes in %d buffers, packets %d, broken %v", total, len(used), st.Load(virtionet.CtrRxPackets), st.RxBroken.Load())
			}
			by.finish(t)
		})
	}
}
