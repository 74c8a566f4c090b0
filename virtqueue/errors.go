package virtqueue

import "errors"

// Chain errors, reported in Chain.Err. The chain was consumed from the avail
// ring; the caller returns Chain.Head to the used ring with length 0 and
// counts a drop (virtio 1.x §2.7 gives the device no other way to hand back a
// buffer it cannot use). They are sentinel values so that reporting them does
// not allocate; compare with errors.Is or ==.
var (
	// ErrDescIndex: a next field, or an index in an indirect table, points
	// past the end of its descriptor table.
	ErrDescIndex = errors.New("virtqueue: descriptor index out of range")
	// ErrChainTooLong: the chain has more descriptors than the queue size
	// (or than its indirect table has entries), which is also how a loop
	// shows up, or its buffers add up to more than 2^32-1 bytes
	// (virtio 1.x §2.7.5.2 and §2.7.5.3.1).
	ErrChainTooLong = errors.New("virtqueue: descriptor chain too long or looping")
	// ErrDescAddress: a buffer or indirect table is not inside one region of
	// guest memory (outside memory, straddling two regions, or wrapping past
	// 2^64).
	ErrDescAddress = errors.New("virtqueue: descriptor address outside guest memory")
	// ErrIndirectLen: an indirect table length is zero, not a multiple of
	// 16, or holds more descriptors than the queue size.
	ErrIndirectLen = errors.New("virtqueue: bad indirect table length")
	// ErrNestedIndirect: an indirect table contains an INDIRECT descriptor
	// (virtio 1.x §2.7.5.3.1).
	ErrNestedIndirect = errors.New("virtqueue: nested indirect descriptor")
	// ErrIndirectNext: a descriptor has both INDIRECT and NEXT set
	// (virtio 1.x §2.7.5.3.1: the driver MUST NOT; we reject the chain). In
	// a packed ring also an INDIRECT descriptor that is not the only one of
	// its list (virtio 1.2 §2.8, Indirect Descriptors: no INDIRECT in a list
	// linked by NEXT).
	ErrIndirectNext = errors.New("virtqueue: descriptor has both INDIRECT and NEXT")
	// ErrIndirectNotNegotiated: INDIRECT used without VIRTIO_F_INDIRECT_DESC.
	ErrIndirectNotNegotiated = errors.New("virtqueue: indirect descriptor without VIRTIO_F_INDIRECT_DESC")
	// ErrWriteBeforeRead: a device-readable descriptor follows a
	// device-writable one (virtio 1.x §2.7.4.2).
	ErrWriteBeforeRead = errors.New("virtqueue: readable descriptor after a writable one")
	// ErrZeroLen: a buffer descriptor has length 0.
	ErrZeroLen = errors.New("virtqueue: zero-length descriptor")
)

// Ring-fatal errors, returned by Pop and Pending. The driver broke the ring
// protocol; the ring must not be used again until it is set up anew (for
// vhost-user: stop the ring and log; the guest has to reset the device).
var (
	// ErrAvailIdxJump: avail.idx is more than the queue size ahead of the
	// last index the device consumed (virtio 1.x §2.7.13: the driver cannot
	// expose more than queue-size chains).
	ErrAvailIdxJump = errors.New("virtqueue: avail index moved by more than the queue size")
	// ErrHeadIndex: an avail ring entry names a head descriptor past the
	// end of the descriptor table, so there is no valid id to return it with.
	ErrHeadIndex = errors.New("virtqueue: avail ring entry out of range")
)

// Ring-fatal errors of a packed ring (Packed.Pop and Packed.Pending). As with
// ErrHeadIndex, the driver gave no usable buffer id, so there is no way to
// hand the descriptors back, and the ring must not be used again.
var (
	// ErrChainUnterminated: a packed descriptor list has NEXT set on a
	// descriptor followed by one the driver has not made available (wrong
	// AVAIL/USED wrap flags, or not written yet, which virtio 1.2 §2.8,
	// Scatter-Gather Support, forbids: the first descriptor of a list is
	// made available last), or on every one of queue-size descriptors:
	// the list never ends.
	ErrChainUnterminated = errors.New("virtqueue: packed descriptor list does not end (NEXT into a descriptor that is not available, or longer than the queue)")
	// ErrBufferID: the buffer id in the last descriptor of a packed list is
	// not below the queue size.
	ErrBufferID = errors.New("virtqueue: packed buffer id out of range")
	// ErrBufferIDInUse: the driver made a buffer available under an id the
	// device has not returned yet, so a used descriptor for that id would be
	// ambiguous.
	ErrBufferIDInUse = errors.New("virtqueue: packed buffer id reused while in flight")
)
