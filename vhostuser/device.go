package vhostuser

import "github.com/vhostd/vhostd/vdev"

// Device is the virtio device behind a session. It is defined in vdev, with
// the Queue a session hands it, so that the device does not depend on
// vhost-user and another transport (VDUSE) can drive it too; the alias
// keeps vhost-user callers (Server.Serve's factory) reading naturally.
type Device = vdev.Device

// Announcer is vdev.Announcer: a device that can answer
// VHOST_USER_SEND_RARP.
type Announcer = vdev.Announcer

// StatusNeedsReset is DEVICE_NEEDS_RESET in the virtio device status (virtio
// 1.x §2.1): the device hit an error it cannot recover from and the driver
// must reset it. GET_STATUS reports it once a device called vdev.Queue.Fail
// on one of the session's rings, until the front-end resets the device
// (SET_STATUS 0) or sets the ring up again (SET_VRING_KICK).
const StatusNeedsReset = 0x40
