// Package virtqueue implements the device side of a virtio 1.x split
// virtqueue (virtio spec 1.2, §2.7 "Split Virtqueues") over guest memory,
// a driver side for tests and the Go front-end, and eventfd wrappers for
// kick and call notifications.
//
// The package knows nothing about vhost-user or networking. The caller
// translates the three ring areas to host bytes and supplies a Memory that
// translates descriptor addresses.
//
// Everything the driver writes is untrusted: Split.Pop validates each
// descriptor chain (index range, chain length and loops, indirect table
// rules, buffer bounds, readable-before-writable ordering) and reports a
// malformed chain in Chain.Err instead of panicking or touching memory
// outside the regions Memory hands out. See access.go for how the two sides
// order their accesses to the shared rings without 16-bit atomics.
//
// A Split is used by one goroutine at a time (the queue worker); it does no
// locking.
//
// Packed virtqueues (virtio 1.2 §2.8, VIRTIO_F_RING_PACKED) have their own
// device side, Packed, built by NewPacked over the descriptor ring and the
// driver and device event suppression areas, and a driver side for tests,
// PackedDriver. Ring is the interface both *Split and *Packed implement, so
// a queue worker need not know which one it drives. PushInOrder returns
// chains in the order they were popped and, with VIRTIO_F_IN_ORDER, writes
// one used entry per run of them, on both kinds of ring.
package virtqueue
