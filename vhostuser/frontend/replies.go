package frontend

import "github.com/vhostd/vhostd/vhostuser"

// Reply is what a front-end waits for after sending a request without
// NEED_REPLY.
type Reply uint8

const (
	// ReplyNone: nothing, unless NEED_REPLY was set (with REPLY_ACK
	// negotiated), then a u64 status.
	ReplyNone Reply = iota
	// ReplyValue: a reply carrying the request's result (a value, a
	// structure, possibly fds).
	ReplyValue
	// ReplyStatus: a u64 status, 0 for success.
	ReplyStatus
)

func (r Reply) String() string {
	switch r {
	case ReplyValue:
		return "value"
	case ReplyStatus:
		return "status"
	}
	return "none"
}

// OwedReply is the reply the vhost-user specification makes mandatory for
// request r, whatever NEED_REPLY says (QEMU docs/interop/vhost-user.rst,
// "Front-end message types": the requests whose "Back-end payload" is not
// N/A, and "REPLY_ACK": "For the message types that already solicit a
// reply from the back-end, the presence of VHOST_USER_PROTOCOL_F_REPLY_ACK
// or need_reply bit being set brings no behavioural change").
//
// It is written from the specification on purpose, not derived from the
// back-end's dispatch table: this front-end is the test double that holds
// the back-end to the protocol, so a wrong table entry there must make a
// test fail here (TestDispatchTableOwesSpecReplies) rather than pass
// because both sides read the same mistake.
func OwedReply(r vhostuser.Request) Reply {
	switch r {
	case vhostuser.ReqGetFeatures, // u64 features
		vhostuser.ReqGetProtocolFeatures, // u64 protocol features
		vhostuser.ReqGetVringBase,        // vring state
		vhostuser.ReqGetQueueNum,         // u64
		vhostuser.ReqGetConfig,           // config space; a zero-length reply is a failure
		vhostuser.ReqCreateCryptoSession, // session info
		vhostuser.ReqPostcopyAdvise,      // the userfaultfd
		vhostuser.ReqGetInflightFd,       // inflight description and its fd
		vhostuser.ReqGetMaxMemSlots,      // u64
		vhostuser.ReqGetStatus,           // u64 device status
		vhostuser.ReqGetSharedObject,     // u64 and a dmabuf fd
		vhostuser.ReqSetDeviceStateFd,    // u64 (error bits, no-fd bit), maybe an fd
		vhostuser.ReqGetShmemConfig:      // shared memory regions
		return ReplyValue
	case vhostuser.ReqSetLogBase:
		// "When the back-end has VHOST_USER_PROTOCOL_F_LOG_SHMFD ... the
		// back-end replies" once the log is mapped; without LOG_SHMFD the
		// request is not used by a vhost-user front-end at all.
		return ReplyValue
	case vhostuser.ReqIOTLBMsg, // "success or failure of the update"
		vhostuser.ReqPostcopyEnd,      // u64 status
		vhostuser.ReqCheckDeviceState: // u64 status
		return ReplyStatus
	}
	// Everything else, SET_MEM_TABLE and ADD_MEM_REG included: those reply
	// only in postcopy mode, which needs PAGEFAULT.
	return ReplyNone
}
