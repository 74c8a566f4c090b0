// Package vdev is the seam between a virtio transport and the device behind
// it. A transport (vhost-user today, VDUSE later) negotiates with the
// driver, maps guest memory and builds the rings; the device (virtionet)
// only sees a started ring with its notifiers (Queue) and the calls of the
// Device interface. Keeping both here, not in the vhost-user package, lets
// a second transport drive the same device without the device importing
// vhost-user.
package vdev

import (
	"sync/atomic"

	"github.com/vhostd/vhostd/virtqueue"
)

// Device is the virtio device behind a transport session (docs/design.md).
// The session calls it from one goroutine only, so implementations need no
// locking against the session itself.
type Device interface {
	// DeviceFeatures returns the virtio feature bits offered; the transport
	// adds its own (vhost-user: FeatureProtocolFeatures).
	DeviceFeatures() uint64
	// SetFeatures receives the acked virtio bits (without transport bits).
	// It may be called again on one connection (DPDK virtio-user
	// reconfigures that way).
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
	// SetQueueEnabled reports that the driver enabled or disabled a ring
	// (vhost-user: SET_VRING_ENABLE, or the enable implied by SET_FEATURES
	// without PROTOCOL_FEATURES). The transport also updates Queue.Enabled,
	// which a running worker reads per batch.
	SetQueueEnabled(index int, on bool)
	// SetMTU handles the driver's MTU (vhost-user: NET_SET_MTU).
	SetMTU(mtu uint16) error
	// Reset stops every queue and forgets the features: disconnect or reset.
	Reset()
}

// Announcer is implemented by devices that can announce the guest's new
// location after a live migration (vhost-user: VHOST_USER_SEND_RARP):
// inject a RARP broadcast from the guest's MAC into the backend so that
// bridges and switches learn where the guest is now.
type Announcer interface {
	SendRARP(mac [6]byte) error
}

// Queue is a started ring handed to Device.StartQueue.
type Queue struct {
	Index int
	// VQ is the device side of the ring: a *virtqueue.Split, or a
	// *virtqueue.Packed when VIRTIO_F_RING_PACKED was acked. With
	// VIRTIO_F_IN_ORDER acked the ring was built in-order and the device
	// must return buffers in the order it popped them.
	VQ      virtqueue.Ring
	Kick    *virtqueue.Kick // nil when the driver polls (vhost-user NOFD)
	Call    *virtqueue.Call // nil when the driver polls
	Err     *virtqueue.Call // nil when not configured
	Enabled *atomic.Bool    // read by the worker per batch
	// Log is non-nil while the guest migrates (vhost-user: VHOST_F_LOG_ALL
	// acked and a log given with SET_LOG_BASE): the device must mark every
	// guest byte it writes outside the used ring (RX buffers, num_buffers)
	// with Log.MarkHost after writing it. The ring marks its own used-ring
	// writes. It does not change while the queue runs: the transport
	// restarts the rings when logging starts or stops. It is an interface,
	// not the vhost-user log itself, so the device needs nothing of the
	// transport to honour it; a transport must leave it a nil interface
	// (not a typed nil) when logging is off.
	Log virtqueue.DirtyLogger

	// Failed is the transport's record of Fail (vhost-user: GET_STATUS then
	// reports NEEDS_RESET). Set by the transport when it builds the Queue;
	// devices call Fail and never touch it. nil outside a transport.
	Failed *atomic.Bool
}

// Fail reports that the device gave up on the ring because the driver broke
// the ring protocol (an avail index jump, a head out of range, guest memory
// that faults). It signals the ring's error notifier (vhost-user:
// SET_VRING_ERR) if one is configured and records the failure in Failed;
// the transport then reports DEVICE_NEEDS_RESET until the driver resets the
// device or sets the ring up again. The device must not touch the ring
// afterwards. Fail may be called from the device's worker goroutine.
func (q *Queue) Fail() {
	if q.Failed != nil {
		q.Failed.Store(true)
	}
	_ = q.Err.Signal()
}
