package hostile_test

import (
	"errors"
	"math"
	"testing"

	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
	"github.com/vhostd/vhostd/virtqueue"
)

// The hostile-guest suite over packed rings (VIRTIO_F_RING_PACKED), with and
// without VIRTIO_F_IN_ORDER: the same outcomes as for split rings (a counted
// drop, a broken ring with NEEDS_RESET and the error eventfd, a refused or
// never started ring), plus "ignored" for descriptors whose flags do not
// make them available. A packed ring has no next field and no avail index,
// so its own attacks are wrap flags, buffer ids and lists without an end.

// pdesc is a packed descriptor without id (AddRaw fills it in) and without
// AVAIL/USED bits (the driver sets those of its wrap counter).
func pdesc(addr uint64, n uint32, flags uint16) virtqueue.PackedDesc {
	return virtqueue.PackedDesc{Addr: addr, Len: n, Flags: flags}
}

// rawList posts descs as one buffer through PackedDriver.AddRaw (the driver
// tracks its id, so the used descriptor for it can be reaped) and kicks.
func (p *port) rawList(ring int, descs ...virtqueue.PackedDesc) error {
	if _, err := p.queue(ring).Packed.AddRaw(descs...); err != nil {
		return err
	}
	p.publishKick(ring)
	return nil
}

// packedTable writes descs as a packed indirect table in ring's data area
// and returns its guest address.
func (p *port) packedTable(ring int, descs ...virtqueue.PackedDesc) uint64 {
	b := p.buf(ring, len(descs)*virtqueue.DescSize)
	for i, d := range descs {
		virtqueue.PutPackedDesc(b[i*virtqueue.DescSize:], d)
	}
	return p.gpa(b)
}

// packedRxAttack posts a raw RX buffer and injects one packet so the device
// pops it.
func packedRxAttack(descs ...virtqueue.PackedDesc) func(p *port) error {
	return func(p *port) error {
		if err := p.rawList(victimRx, descs...); err != nil {
			return err
		}
		return p.pipes[0].Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone)))
	}
}

func packedGuestCases(inOrder bool) []guestCase {
	var cases []guestCase
	pk := portConfig{packed: true, inOrder: inOrder}
	add := func(name string, cfg portConfig, want outcome, attack func(p *port) error) {
		cfg.packed, cfg.inOrder = true, inOrder
		checked := func(p *port) error {
			if rs := p.sess.RingStates()[victimTx]; !rs.Packed || p.queue(victimTx).Packed == nil {
				return errors.New("the port did not negotiate packed rings")
			}
			return attack(p)
		}
		cases = append(cases, guestCase{name: name, cfg: cfg, want: want, attack: checked})
	}
	// txList posts a TX buffer: a good header, then descs.
	txList := func(tail func(p *port, frame uint64) []virtqueue.PackedDesc) func(p *port) error {
		return func(p *port) error {
			h, f := p.goodTxBufs()
			return p.rawList(victimTx, append([]virtqueue.PackedDesc{pdesc(h, 12, fNext)}, tail(p, f)...)...)
		}
	}
	badFrame := func(addr uint64, n uint32) func(p *port) error {
		return txList(func(*port, uint64) []virtqueue.PackedDesc { return []virtqueue.PackedDesc{pdesc(addr, n, 0)} })
	}

	// --- wrap flags ---
	// A descriptor is available when AVAIL equals the driver wrap counter
	// and USED does not. Anything else at the next avail position is not a
	// buffer yet, whatever else it holds.
	stale := func(flags func(wrap bool) uint16) func(p *port) error {
		return func(p *port) error {
			_, f := p.goodTxBufs()
			d := p.queue(victimTx).Packed
			pos, wrap := d.NextAvail()
			d.SetDesc(pos, virtqueue.PackedDesc{Addr: f, Len: 100, ID: 3, Flags: flags(wrap)})
			return p.queue(victimTx).Kick()
		}
	}
	add("packed/wrap/head_marked_used", pk, outcome{ignored: true}, stale(func(w bool) uint16 { return virtqueue.UsedBits(w) }))
	add("packed/wrap/head_with_previous_lap_bits", pk, outcome{ignored: true}, stale(func(w bool) uint16 { return virtqueue.AvailBits(!w) }))
	add("packed/wrap/head_with_neither_bit_right", pk, outcome{ignored: true}, stale(func(w bool) uint16 {
		return virtqueue.AvailBits(w) ^ (virtqueue.DescFAvail | virtqueue.DescFUsed)
	}))
	add("packed/wrap/second_descriptor_of_list_not_available", pk, outcome{txBroken: true}, func(p *port) error {
		// The head says NEXT, the next descriptor carries last lap's
		// bits: the list never ends as far as the device can see.
		h, f := p.goodTxBufs()
		d := p.queue(victimTx).Packed
		pos, wrap := d.NextAvail()
		next := (pos + 1) % queueSize
		nextWrap := wrap != (next == 0)
		d.SetDesc(next, virtqueue.PackedDesc{Addr: f, Len: 100, ID: 1, Flags: virtqueue.AvailBits(!nextWrap)})
		d.SetDesc(pos, virtqueue.PackedDesc{Addr: h, Len: 12, ID: 1, Flags: fNext | virtqueue.AvailBits(wrap)})
		return p.queue(victimTx).Kick()
	})

	// --- buffer ids ---
	add("packed/id/reused_while_in_flight", pk, outcome{txBroken: true}, func(p *port) error {
		h, f := p.goodTxBufs()
		d := p.queue(victimTx).Packed
		id, err := d.AddSegs([]virtqueue.Seg{{Addr: h, Len: 12}, {Addr: f, Len: 100}}, nil)
		if err != nil {
			return err
		}
		// Same id again, before the device returned the first buffer
		// (both become available before the first kick).
		d.PostRaw(virtqueue.PackedDesc{Addr: h, Len: 12, ID: id, Flags: fNext}, virtqueue.PackedDesc{Addr: f, Len: 100, ID: id})
		return p.queue(victimTx).Kick()
	})
	add("packed/id/rx_reused_while_in_flight", pk, outcome{rxBroken: true}, func(p *port) error {
		d := p.queue(victimRx).Packed
		b1, b2 := p.gpa(p.buf(victimRx, 2048)), p.gpa(p.buf(victimRx, 2048))
		d.PostRaw(virtqueue.PackedDesc{Addr: b1, Len: 2048, ID: 9, Flags: fWrite}, virtqueue.PackedDesc{Addr: b2, Len: 2048, ID: 9, Flags: fWrite})
		p.publishKick(victimRx)
		return p.pipes[0].Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone)))
	})
	add("packed/id/beyond_queue_size", pk, outcome{txBroken: true}, func(p *port) error {
		h, f := p.goodTxBufs()
		p.queue(victimTx).Packed.PostRaw(virtqueue.PackedDesc{Addr: h, Len: 12, ID: 0x7fff, Flags: fNext}, virtqueue.PackedDesc{Addr: f, Len: 100, ID: 0x7fff})
		return p.queue(victimTx).Kick()
	})
	add("packed/id/0xffff", pk, outcome{txBroken: true}, func(p *port) error {
		h, _ := p.goodTxBufs()
		p.queue(victimTx).Packed.PostRaw(virtqueue.PackedDesc{Addr: h, Len: 112, ID: 0xffff})
		return p.queue(victimTx).Kick()
	})

	// --- lists that never end ---
	add("packed/chain/every_descriptor_has_next", pk, outcome{txBroken: true}, func(p *port) error {
		// The whole ring available, every descriptor with NEXT.
		h, _ := p.goodTxBufs()
		descs := make([]virtqueue.PackedDesc, queueSize)
		for i := range descs {
			descs[i] = virtqueue.PackedDesc{Addr: h, Len: 1, ID: uint16(i), Flags: fNext}
		}
		p.queue(victimTx).Packed.PostRaw(descs...)
		return p.queue(victimTx).Kick()
	})
	add("packed/chain/last_available_has_next", pk, outcome{txBroken: true}, func(p *port) error {
		h, _ := p.goodTxBufs()
		p.queue(victimTx).Packed.PostRaw(virtqueue.PackedDesc{Addr: h, Len: 12, ID: 2, Flags: fNext})
		return p.queue(victimTx).Kick()
	})
	add("packed/chain/rx_last_available_has_next", pk, outcome{rxBroken: true}, func(p *port) error {
		b := p.gpa(p.buf(victimRx, 2048))
		p.queue(victimRx).Packed.PostRaw(virtqueue.PackedDesc{Addr: b, Len: 2048, ID: 2, Flags: fWrite | fNext})
		p.publishKick(victimRx)
		return p.pipes[0].Inject(concat(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone)))
	})
	add("packed/chain/1024_descriptors/queue_1024", portConfig{queueSize: 1024}, txDrop(virtionet.DropTxTooLarge), func(p *port) error {
		// More buffers than writev takes (IOV_MAX), in a legal list.
		h, f := p.goodTxBufs()
		descs := []virtqueue.PackedDesc{pdesc(h, 12, fNext)}
		for i := 1; i < 1023; i++ {
			descs = append(descs, pdesc(f+uint64(i%100), 1, fNext))
		}
		return p.rawList(victimTx, append(descs, pdesc(f, 100, 0))...)
	})

	// --- addresses and lengths ---
	add("packed/addr/outside_every_region", pk, txDrop(virtionet.DropDescAddress), badFrame(1<<40, 100))
	add("packed/addr/in_hole_between_regions", pk, txDrop(virtionet.DropDescAddress), badFrame(holeGPA, 100))
	add("packed/addr/straddles_two_regions", pk, txDrop(virtionet.DropDescAddress), badFrame(region1GPA-50, 100))
	add("packed/addr/runs_past_last_region", pk, txDrop(virtionet.DropDescAddress), badFrame(region2GPA+region2Size-50, 100))
	add("packed/addr/addr_plus_len_wraps", pk, txDrop(virtionet.DropDescAddress), badFrame(math.MaxUint64-50, 100))
	add("packed/addr/len_4GiB_minus_1", pk, txDrop(virtionet.DropDescAddress), badFrame(0, math.MaxUint32))
	add("packed/addr/zero_length_buffer", pk, txDrop(virtionet.DropZeroLen), txList(func(_ *port, f uint64) []virtqueue.PackedDesc {
		return []virtqueue.PackedDesc{pdesc(f, 0, fNext), pdesc(f, 100, 0)}
	}))
	add("packed/addr/header_outside_memory", pk, txDrop(virtionet.DropDescAddress), func(p *port) error {
		return p.rawList(victimTx, pdesc(1<<50, 112, 0))
	})

	// --- indirect descriptors ---
	indirect := func(tableLen uint32, table func(p *port) uint64) func(p *port) error {
		return func(p *port) error { return p.rawList(victimTx, pdesc(table(p), tableLen, fInd)) }
	}
	goodTable := func(p *port) uint64 {
		h, f := p.goodTxBufs()
		return p.packedTable(victimTx, pdesc(h, 12, 0), pdesc(f, 100, 0))
	}
	add("packed/indirect/len_not_multiple_of_16", pk, txDrop(virtionet.DropIndirectLen), indirect(24, goodTable))
	add("packed/indirect/len_zero", pk, txDrop(virtionet.DropIndirectLen), indirect(0, goodTable))
	add("packed/indirect/huge_len", pk, txDrop(virtionet.DropIndirectLen), indirect(0xfffffff0, goodTable))
	add("packed/indirect/more_entries_than_queue_size", pk, txDrop(virtionet.DropIndirectLen), indirect(16*(queueSize+1), goodTable))
	add("packed/indirect/with_next_flag", pk, txDrop(virtionet.DropIndirectNext), func(p *port) error {
		_, f := p.goodTxBufs()
		return p.rawList(victimTx, pdesc(goodTable(p), 32, fInd|fNext), pdesc(f, 100, 0))
	})
	add("packed/indirect/in_second_descriptor_of_list", pk, txDrop(virtionet.DropIndirectNext), func(p *port) error {
		h, _ := p.goodTxBufs()
		return p.rawList(victimTx, pdesc(h, 12, fNext), pdesc(goodTable(p), 32, fInd))
	})
	add("packed/indirect/nested", pk, txDrop(virtionet.DropNestedIndirect), indirect(16, func(p *port) uint64 {
		return p.packedTable(victimTx, pdesc(goodTable(p), 32, fInd))
	}))
	add("packed/indirect/table_outside_memory", pk, txDrop(virtionet.DropDescAddress), indirect(32, func(*port) uint64 { return 1 << 40 }))
	add("packed/indirect/table_straddles_regions", pk, txDrop(virtionet.DropDescAddress), indirect(32, func(*port) uint64 { return region1GPA - 16 }))
	add("packed/indirect/entry_outside_memory", pk, txDrop(virtionet.DropDescAddress), indirect(32, func(p *port) uint64 {
		h, _ := p.goodTxBufs()
		return p.packedTable(victimTx, pdesc(h, 12, 0), pdesc(holeGPA, 100, 0))
	}))
	add("packed/indirect/not_negotiated", portConfig{clearFeatures: vnet.FeatureIndirectDesc},
		txDrop(virtionet.DropIndirectNotNegotiated), indirect(32, goodTable))
	add("packed/indirect/chain_over_4GiB", pk, txDrop(virtionet.DropChainTooLong), func(p *port) error {
		descs := make([]virtqueue.PackedDesc, queueSize)
		for i := range descs {
			descs[i] = pdesc(0, region0Size, 0)
		}
		return p.rawList(victimTx, pdesc(p.packedTable(victimTx, descs...), queueSize*16, fInd))
	})

	// --- buffer direction and headers ---
	add("packed/dir/tx_write_only_buffer", pk, txDrop(virtionet.DropTxWritableBuffer), func(p *port) error {
		h, f := p.goodTxBufs()
		return p.rawList(victimTx, pdesc(h, 12, fWrite|fNext), pdesc(f, 100, fWrite))
	})
	add("packed/dir/tx_readable_after_writable", pk, txDrop(virtionet.DropWriteBeforeRead), func(p *port) error {
		h, f := p.goodTxBufs()
		return p.rawList(victimTx, pdesc(h, 12, fWrite|fNext), pdesc(f, 100, 0))
	})
	add("packed/hdr/chain_shorter_than_vnet_hdr", pk, hdrDrop(vnet.HdrShort), func(p *port) error {
		p.sendTx(victimTx, make([]byte, 8))
		return nil
	})
	add("packed/hdr/gso_size_zero", pk, hdrDrop(vnet.HdrGSOSizeZero), txHdrFrame(testpkt.TSO4Hdr(0), testpkt.TCP4Super(3000)))

	// --- RX ---
	rxBuf := func(p *port) uint64 { return p.gpa(p.buf(victimRx, 2048)) }
	add("packed/rx/read_only_buffer", pk, rxDrop(virtionet.DropRxReadableBuffer), func(p *port) error {
		return packedRxAttack(pdesc(rxBuf(p), 2048, 0))(p)
	})
	add("packed/rx/buffer_outside_memory", pk, rxDrop(virtionet.DropDescAddress), func(p *port) error {
		return packedRxAttack(pdesc(holeGPA, 2048, fWrite))(p)
	})
	add("packed/rx/buffer_straddles_regions", pk, rxDrop(virtionet.DropDescAddress), func(p *port) error {
		return packedRxAttack(pdesc(region1GPA-1000, 2048, fWrite))(p)
	})
	add("packed/rx/zero_length_buffer", pk, rxDrop(virtionet.DropZeroLen), func(p *port) error {
		return packedRxAttack(pdesc(rxBuf(p), 0, fWrite))(p)
	})
	add("packed/rx/indirect_table_outside_memory", pk, rxDrop(virtionet.DropDescAddress), func(p *port) error {
		return packedRxAttack(pdesc(1<<40, 32, fInd))(p)
	})

	// --- ring areas (SET_VRING_ADDR: descriptor ring, driver and device
	// event suppression areas) ---
	add("packed/ring/desc_ring_outside_memory", pk, outcome{refused: true}, setVictimTxAddr(func(a *vhostuser.VringAddr, _ frontend.MemRegion) {
		a.Desc = math.MaxUint64 - 4095
	}))
	add("packed/ring/desc_ring_past_region_end", pk, outcome{refused: true}, setVictimTxAddr(func(a *vhostuser.VringAddr, r0 frontend.MemRegion) {
		a.Desc = r0.UVA + uint64(len(r0.B)) - 64
	}))
	add("packed/ring/device_area_outside_memory", pk, outcome{refused: true}, setVictimTxAddr(func(a *vhostuser.VringAddr, _ frontend.MemRegion) {
		a.Used = 0x1000
	}))
	add("packed/ring/device_area_misaligned", pk, outcome{notStarted: true}, setVictimTxAddr(func(a *vhostuser.VringAddr, _ frontend.MemRegion) {
		a.Used += 2
	}))
	add("packed/ring/driver_area_misaligned", pk, outcome{notStarted: true}, setVictimTxAddr(func(a *vhostuser.VringAddr, _ frontend.MemRegion) {
		a.Avail += 1
	}))
	return cases
}

// TestHostileGuestPacked runs the packed cases, without and with IN_ORDER.
func TestHostileGuestPacked(t *testing.T) {
	for _, inOrder := range []bool{false, true} {
		mode := "packed"
		if inOrder {
			mode = "packed_inorder"
		}
		t.Run(mode, func(t *testing.T) {
			for _, c := range packedGuestCases(inOrder) {
				t.Run(c.name, func(t *testing.T) { runGuestCase(t, c) })
			}
		})
	}
}
