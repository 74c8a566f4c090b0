package virtqueue

// Ring is the device side of a virtqueue, split or packed: what a queue
// worker needs. Both *Split and *Packed implement it; a vhost-user session
// builds one or the other depending on VIRTIO_F_RING_PACKED and hands it to
// the device.
//
// The methods behave as documented on Split; the packed-ring differences are
// documented on Packed: Chain.Head is a buffer id rather than a descriptor
// index, Pending walks descriptor flags, and LastAvail carries the avail
// wrap counter in bit 15.
type Ring interface {
	// Size is the number of ring entries.
	Size() uint16
	// Pop consumes up to len(chains) available chains; err != nil only
	// for ring-fatal errors.
	Pop(chains []Chain) (n int, err error)
	// Push returns used chains (ID = Chain.Head) and publishes them.
	Push(used []UsedElem)
	// PushInOrder returns chains in the order they were popped; with
	// VIRTIO_F_IN_ORDER negotiated it may write a single used entry for a
	// run of them. Without, it is Push.
	PushInOrder(used []UsedElem)
	// NeedNotify reports whether the driver wants a used buffer
	// notification for what was pushed since the last call.
	NeedNotify() bool
	// EnableNotify asks for available buffer notifications before the
	// worker sleeps; more is true if it must pop again first.
	EnableNotify() (more bool)
	// DisableNotify asks the driver not to notify while the worker polls.
	DisableNotify()
	// Pending counts available chains not yet popped. On a packed ring it
	// walks the descriptor flags (one load per available descriptor); use
	// HasAvail when a yes/no will do.
	Pending() (int, error)
	// HasAvail reports whether at least one chain is available to Pop, at
	// the cost of one load on either ring. err is the ring-fatal error of
	// a broken ring, as for Pending.
	HasAvail() (bool, error)
	// Unpop gives back the n most recently popped chains not yet pushed.
	Unpop(n int)
	// LastAvail is the next avail position (split: the GET_VRING_BASE
	// reply; packed: the low half of VringBase).
	LastAvail() uint16
	// VringBase is the GET_VRING_BASE reply: the split ring's next avail
	// index, or the packed ring's encoded PackedState.
	VringBase() uint32
}

var (
	_ Ring = (*Split)(nil)
	_ Ring = (*Packed)(nil)
)
