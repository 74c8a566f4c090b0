package virtqueue

// Unpop gives back the n most recently popped chains, which the device has
// not pushed: the next Pop returns them again, and LastAvail (the
// GET_VRING_BASE reply) no longer counts them. An RX worker uses it on stop
// for buffers it popped ahead of need, so a restarted or reconnected device
// resumes at exactly the first buffer it did not fill.
//
// The caller guarantees the n chains are the tail of what Pop consumed and
// that none of them was pushed. If n is more than the chains popped and not
// yet pushed (so it would hand out chains the driver already got back, or
// ones a previous device instance consumed), Unpop does nothing.
func (q *Split) Unpop(n int) {
	if n <= 0 || n > q.unpushed {
		return
	}
	q.lastAvail -= uint16(n)
	q.unpushed -= n
}
