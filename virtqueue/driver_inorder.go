package virtqueue

// ReapInOrder is Reap for a split ring with VIRTIO_F_IN_ORDER negotiated
// (virtio 1.2 §2.7.9): a used ring entry may stand for a batch of chains,
// every chain made available from the entry's slot on up to and including
// the one whose head is the entry's id, and used.idx then moves by the batch
// size. The chains before the last are reported with their whole writable
// length (the skipped chains are "used completely"), the last with the
// entry's len. Chains go back to the free list as in Reap.
//
// A batch is reported whole or not at all, so out must have room for the
// largest batch the device writes (Size entries always suffice); if it has
// not, ReapInOrder stops before that batch. An entry whose id matches no
// chain between its slot and used.idx is reported as is and counts as a
// batch of one, as Reap does for unknown ids.
func (d *Driver) ReapInOrder(out []UsedElem) int {
	_, usedIdx := loadWord(d.f.usedWord) // acquire: entries below are complete
	n := 0
	for d.lastUsed != usedIdx {
		off := 4 + 8*int(d.lastUsed&d.mask)
		id := le.Uint32(d.used[off:])
		length := le.Uint32(d.used[off+4:])
		avail := usedIdx - d.lastUsed
		k := uint16(0) // chains in the batch, minus one
		for k < avail && uint32(d.availEntryAt(d.lastUsed+k)) != id {
			k++
		}
		if k == avail { // unknown id: a batch of one, freeing nothing
			if n == len(out) {
				break
			}
			out[n] = UsedElem{ID: id, Len: length}
			n++
			d.lastUsed++
			continue
		}
		if int(k)+1 > len(out)-n {
			break
		}
		for j := uint16(0); j <= k; j++ {
			h := d.availEntryAt(d.lastUsed + j)
			e := UsedElem{ID: uint32(h), Len: length}
			if j < k {
				e.Len = d.chainWriteLen(h)
			}
			out[n] = e
			n++
			if h < d.size && d.chainLen[h] != 0 {
				d.freeChain(h)
			}
		}
		d.lastUsed += k + 1
	}
	return n
}

// availEntryAt reads back the head the driver put in avail.ring[pos].
func (d *Driver) availEntryAt(pos uint16) uint16 {
	slot := pos & d.mask
	if slot == 0 && !d.f.availIdxHi {
		return d.availRing0
	}
	return le.Uint16(d.avail[4+2*int(slot):])
}

// chainWriteLen sums the writable lengths of the in-flight chain at head,
// from the descriptors the driver wrote (following its own links, not the
// next fields in guest memory).
func (d *Driver) chainWriteLen(head uint16) uint32 {
	if head >= d.size {
		return 0
	}
	var sum uint32
	i := head
	for k := uint16(0); k < d.chainLen[head]; k++ {
		desc := d.Desc(i)
		switch {
		case desc.Flags&DescFIndirect != 0:
			off := desc.Addr - d.base
			for e := uint64(0); e < uint64(desc.Len)/DescSize; e++ {
				if t := ReadDesc(d.mem[off+e*DescSize:]); t.Flags&DescFWrite != 0 {
					sum += t.Len
				}
			}
		case desc.Flags&DescFWrite != 0:
			sum += desc.Len
		}
		i = d.next[i]
	}
	return sum
}
