package vhostuser

import (
	"sync/atomic"

	"github.com/vhostd/vhostd/virtqueue"
)

// Device is the virtio device behind a session (docs/design.md). The session
// calls it from one goroutine only, so implementations need no locking
// against the session itself.
type Device interface {
	// DeviceFeatures returns the virtio feature bits offered; the session
	// adds FeatureProtocolFeatures.
	DeviceFeatures() uint64
	// SetFeatures receives the acked virtio bits (without bit 30). It may be
	// called again on one connection (DPDK virtio-user reconfigures that way).
	SetFeatures(acked uint64) error
	// NumQueues is the number of vrings served (2 * queue pairs).
	NumQueues() int
	// StartQueue hands a started ring to the device (after its first kick).
	// The device owns q until StopQueue(q.Index) returns. It must look at the
	// ring at once: the kick that started it has been consumed already.
	StartQueue(q *Queue) error
	// StopQueue returns once nothing touches the ring, its memory or its
	// eventfds any more.
	StopQueue(index int)
	// SetQueueEnabled reports SET_VRING_ENABLE (or the enable implied by
	// SET_FEATURES without PROTOCOL_FEATURES). The session also updates
	// Queue.Enabled, which a running worker reads per batch.
	SetQueueEnabled(index int, on bool)
	// SetMTU handles NET_SET_MTU.
	SetMTU(mtu uint16) error
	// Reset stops every queue and forgets the features: disconnect or reset.
	Reset()
}

// Queue is a started ring handed to Device.StartQueue.
type Queue struct {
	Index   int
	VQ      *virtqueue.Split
	Kick    *virtqueue.Kick // nil when the front-end polls (NOFD)
	Call    *virtqueue.Call // nil when NOFD
	Err     *virtqueue.Call // nil when not configured
	Enabled *atomic.Bool    // read by the worker per batch
}
