package virtqueue

// VringBase is the GET_VRING_BASE reply of a split ring: LastAvail (Ring
// interface; the packed ring encodes more, see PackedState).
func (q *Split) VringBase() uint32 { return uint32(q.lastAvail) }

// recordInOrder remembers, for PushInOrder, whether a popped chain may be
// skipped over: well formed, and how many bytes make it completely written.
func (q *Split) recordInOrder(c *Chain) {
	if c.Err != nil {
		q.full[c.Head] = 0
		return
	}
	q.full[c.Head] = 1<<32 | uint64(c.WriteLen)
}

// PushInOrder returns chains in the order Pop returned them (the caller
// guarantees it, as VIRTIO_F_IN_ORDER requires). With Config.InOrder it
// writes a single used ring entry for each run of chains, with the id and
// length of the run's last chain, and advances used.idx by the run's length
// (virtio 1.2 §2.7.9, In-order use of descriptors: the entry lands at the
// slot of the run's first chain). The driver takes the skipped chains as
// completely used, so a run only continues past a chain whose Len equals its
// whole writable length (0 for a device-readable chain) and which was well
// formed. used.idx is published once for the whole call. Without InOrder it
// is Push.
func (q *Split) PushInOrder(used []UsedElem) {
	if !q.inOrder {
		q.Push(used)
		return
	}
	if len(used) == 0 {
		return
	}
	idx := q.usedIdx
	run := uint16(0)
	for i, e := range used {
		run++
		if i < len(used)-1 && e.ID < uint32(q.size) && q.full[e.ID] == 1<<32|uint64(e.Len) {
			continue // skipped: the run goes on
		}
		off := 4 + 8*int(idx&q.mask)
		b := q.used[off : off+8 : off+8]
		le.PutUint32(b[0:4], e.ID)
		le.PutUint32(b[4:8], e.Len)
		idx += run
		run = 0
	}
	q.usedIdx = idx
	q.unpushed = max(q.unpushed-len(used), 0)
	// Release: the entries above become visible no later than the new idx.
	storeWord(q.f.usedWord, q.usedFlags, idx)
	q.logUsed()
}
