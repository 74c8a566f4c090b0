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
package virtqueue
