package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// sizeRule bounds a request's payload size; min == max for fixed sizes.
type sizeRule struct{ min, max uint32 }

func exact(n uint32) sizeRule        { return sizeRule{n, n} }
func between(lo, hi uint32) sizeRule { return sizeRule{lo, hi} }

func (r sizeRule) String() string {
	if r.min == r.max {
		return fmt.Sprintf("exactly %d bytes", r.min)
	}
	return fmt.Sprintf("%d..%d bytes", r.min, r.max)
}

// replyRule says what the front-end waits for after a request.
type replyRule uint8

const (
	// replyAck: no reply unless NEED_REPLY is set, then a u64 status
	// (0 success, non-zero failure; vhost-user.rst "REPLY_ACK").
	replyAck replyRule = iota
	// replyValue: a mandatory reply carrying a value (GET_FEATURES,
	// GET_VRING_BASE, ...). There is no way to report failure in it, so when
	// the value cannot be produced the connection is closed: the front-end
	// must never be left blocked waiting.
	replyValue
	// replyStatus: a mandatory u64 status reply (IOTLB_MSG, POSTCOPY_END,
	// CHECK_DEVICE_STATE).
	replyStatus
	// replyConfig: a mandatory reply where a zero-length payload reports
	// failure (GET_CONFIG).
	replyConfig
)

// handlerFunc runs one request. Its payload size and fd count have been
// checked against the table already. It returns the reply payload for
// replyValue/replyConfig requests (appended to s.reply[:0]). Fds it keeps
// are taken with m.TakeFd; the dispatcher closes the rest.
type handlerFunc func(s *Session, m *Message) (reply []byte, err error)

// requestSpec is one row of the dispatch table.
type requestSpec struct {
	handle         handlerFunc // nil: not implemented, answered as unsupported
	minFds, maxFds int
	size           sizeRule
	reply          replyRule
	// gate is the protocol feature that must have been negotiated (with
	// SET_PROTOCOL_FEATURES) for the request to be legal; 0 for none.
	gate ProtocolFeatures
}

// offeredProtocolFeatures is what GET_PROTOCOL_FEATURES returns: only what
// this package serves. LOG_SHMFD and RARP make live migration work (QEMU
// refuses to migrate without LOG_SHMFD). No BACKEND_REQ, INFLIGHT_SHMFD,
// HOST_NOTIFIER: nothing here would use them. No PAGEFAULT: postcopy
// migration is not supported, and QEMU refuses to start it without it.
const offeredProtocolFeatures = ProtoMQ | ProtoReplyAck | ProtoMTU | ProtoConfigureMemSlots | ProtoStatus | ProtoLogShmfd | ProtoRARP

// requestTable is the one declarative description of every front-end
// request (vhost-user.rst, "Front-end message types"). Sizes come from the
// payload layouts; fd counts from "Communication".
var requestTable = [maxRequest + 1]requestSpec{
	ReqGetFeatures: {handle: (*Session).getFeatures, size: exact(0), reply: replyValue},
	ReqSetFeatures: {handle: (*Session).setFeatures, size: exact(U64Size)},
	ReqSetOwner:    {handle: (*Session).setOwner, size: exact(0)},
	ReqResetOwner:  {handle: (*Session).resetOwner, size: exact(0)},
	ReqSetMemTable: {handle: (*Session).setMemTable, size: between(MemoryRegionsMinSize, MemoryRegionsMaxSize), minFds: 1, maxFds: MaxMemRegions},
	// SET_LOG_BASE owes a reply with LOG_SHMFD (the only way it is served
	// here). QEMU does not look at its value, so a log that cannot be
	// mapped closes the connection rather than let a migration run with no
	// pages logged.
	ReqSetLogBase:          {handle: (*Session).setLogBase, size: exact(LogSize), minFds: 1, maxFds: 1, reply: replyValue, gate: ProtoLogShmfd},
	ReqSetLogFd:            {handle: (*Session).setLogFd, size: exact(0), minFds: 1, maxFds: 1, gate: ProtoLogShmfd},
	ReqSetVringNum:         {handle: (*Session).setVringNum, size: exact(VringStateSize)},
	ReqSetVringAddr:        {handle: (*Session).setVringAddr, size: exact(VringAddrSize)},
	ReqSetVringBase:        {handle: (*Session).setVringBase, size: exact(VringStateSize)},
	ReqGetVringBase:        {handle: (*Session).getVringBase, size: exact(VringStateSize), reply: replyValue},
	ReqSetVringKick:        {handle: (*Session).setVringKick, size: exact(U64Size), maxFds: 1},
	ReqSetVringCall:        {handle: (*Session).setVringCall, size: exact(U64Size), maxFds: 1},
	ReqSetVringErr:         {handle: (*Session).setVringErr, size: exact(U64Size), maxFds: 1},
	ReqGetProtocolFeatures: {handle: (*Session).getProtocolFeatures, size: exact(0), reply: replyValue},
	ReqSetProtocolFeatures: {handle: (*Session).setProtocolFeatures, size: exact(U64Size)},
	ReqGetQueueNum:         {handle: (*Session).getQueueNum, size: exact(0), reply: replyValue, gate: ProtoMQ},
	// SET_VRING_ENABLE has no gate: QEMU 7.2 sends it before SET_FEATURES.
	ReqSetVringEnable:      {handle: (*Session).setVringEnable, size: exact(VringStateSize)},
	ReqSendRARP:            {handle: (*Session).sendRARP, size: exact(U64Size), gate: ProtoRARP},
	ReqNetSetMTU:           {handle: (*Session).netSetMTU, size: exact(U64Size), gate: ProtoMTU},
	ReqSetBackendReqFd:     {size: exact(0), minFds: 1, maxFds: 1, gate: ProtoBackendReq},
	ReqIOTLBMsg:            {size: between(IOTLBMsgSize, 32), reply: replyStatus},
	ReqSetVringEndian:      {size: exact(VringStateSize), gate: ProtoCrossEndian},
	ReqGetConfig:           {size: between(configHeaderSize, configHeaderSize+MaxConfigSize), reply: replyConfig, gate: ProtoConfig},
	ReqSetConfig:           {size: between(configHeaderSize, configHeaderSize+MaxConfigSize), gate: ProtoConfig},
	ReqCreateCryptoSession: {size: between(0, MaxPayloadSize), reply: replyValue, gate: ProtoCryptoSession},
	ReqCloseCryptoSession:  {size: exact(U64Size), gate: ProtoCryptoSession},
	ReqPostcopyAdvise:      {size: exact(0), reply: replyValue, gate: ProtoPagefault},
	ReqPostcopyListen:      {size: exact(0), gate: ProtoPagefault},
	ReqPostcopyEnd:         {size: exact(0), reply: replyStatus, gate: ProtoPagefault},
	ReqGetInflightFd:       {size: between(InflightSize, InflightSize+4), reply: replyValue, gate: ProtoInflightShmfd},
	ReqSetInflightFd:       {size: between(InflightSize, InflightSize+4), minFds: 1, maxFds: 1, gate: ProtoInflightShmfd},
	ReqGPUSetSocket:        {size: exact(0), minFds: 1, maxFds: 1},
	ReqResetDevice:         {size: exact(0), gate: ProtoResetDevice},
	ReqVringKick:           {size: exact(VringStateSize), gate: ProtoInbandNotifications},
	ReqGetMaxMemSlots:      {handle: (*Session).getMaxMemSlots, size: exact(0), reply: replyValue, gate: ProtoConfigureMemSlots},
	ReqAddMemReg:           {handle: (*Session).addMemReg, size: exact(SingleMemRegionSize), minFds: 1, maxFds: 1, gate: ProtoConfigureMemSlots},
	// REM_MEM_REG "SHOULD" carry no fd but the back-end MAY accept one and
	// must close it; the dispatcher closes it.
	ReqRemMemReg:        {handle: (*Session).remMemReg, size: exact(SingleMemRegionSize), maxFds: 1, gate: ProtoConfigureMemSlots},
	ReqSetStatus:        {handle: (*Session).setStatus, size: exact(U64Size), gate: ProtoStatus},
	ReqGetStatus:        {handle: (*Session).getStatus, size: exact(0), reply: replyValue, gate: ProtoStatus},
	ReqGetSharedObject:  {size: exact(SharedObjectSize), reply: replyValue, gate: ProtoSharedObject},
	ReqSetDeviceStateFd: {size: exact(DeviceStateParamsSize), minFds: 1, maxFds: 1, reply: replyValue, gate: ProtoDeviceState},
	ReqCheckDeviceState: {size: exact(0), reply: replyStatus, gate: ProtoDeviceState},
	ReqGetShmemConfig:   {size: exact(0), reply: replyValue},
}

// errCloseConnection is returned by dispatch when the only safe reaction is
// to drop the connection.
var errCloseConnection = errors.New("vhost-user: closing the connection")

// Failure reasons decided before a handler runs.
var (
	errUnsupported = errors.New("request not supported by this back-end")
	errFdCount     = errors.New("wrong number of file descriptors")
)

// statusFailure is the u64 sent for a failed request: any non-zero value.
const statusFailure = 1

// dispatch runs one message through the table and sends whatever reply the
// front-end waits for. It returns an error only when the connection must be
// closed. Before replying it closes the fds the handler did not take and
// publishes the new state, so that a front-end that got its reply observes
// the effect of its request.
func (s *Session) dispatch(m *Message) error {
	h := m.Header
	log := s.log.With("request", h.Request.String(), "flags", h.Flags.String(), "size", h.Size, "fds", len(m.Fds))
	log.Debug("vhost-user request")
	s.counts.add(h.Request)

	if !h.Request.Known() {
		m.CloseFds()
		// We cannot know whether a reply is owed; answer if one was asked for.
		log.Warn("unknown vhost-user request ignored; the front-end is newer than this back-end or broken")
		if h.NeedReply() {
			return s.sendStatus(h.Request, statusFailure)
		}
		return nil
	}
	spec := &requestTable[h.Request]
	reply, err := s.run(spec, m)
	m.CloseFds()
	s.publish()
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, errUnsupported) {
			level = slog.LevelError
		}
		log.Log(context.Background(), level, "vhost-user request failed", "err", err)
	}
	return s.answer(spec, m, reply, err)
}

// run checks the table's rules, then calls the handler.
func (s *Session) run(spec *requestSpec, m *Message) ([]byte, error) {
	h := m.Header
	if spec.handle == nil {
		return nil, fmt.Errorf("%w: %s is not implemented (it is not needed by a virtio-net back-end that offers protocol features %v)", errUnsupported, h.Request, offeredProtocolFeatures)
	}
	if spec.gate != 0 && s.protocol&spec.gate == 0 {
		return nil, fmt.Errorf("%w: %s needs protocol feature %v, which was not negotiated (negotiated: %v)", errUnsupported, h.Request, spec.gate, s.protocol)
	}
	if h.Size < spec.size.min || h.Size > spec.size.max {
		return nil, fmt.Errorf("%w: %s payload is %d bytes, want %v", ErrPayloadSize, h.Request, h.Size, spec.size)
	}
	if m.TooManyFds || len(m.Fds) < spec.minFds || len(m.Fds) > spec.maxFds {
		n := fmt.Sprint(len(m.Fds))
		if m.TooManyFds {
			n = fmt.Sprintf("more than %d", MaxFds)
		}
		return nil, fmt.Errorf("%w: %s came with %s fds, want %d..%d", errFdCount, h.Request, n, spec.minFds, spec.maxFds)
	}
	return spec.handle(s, m)
}

// answer sends the reply the front-end waits for, if any.
func (s *Session) answer(spec *requestSpec, m *Message, reply []byte, err error) error {
	req := m.Header.Request
	switch spec.reply {
	case replyValue:
		if err != nil {
			return fmt.Errorf("%w: %s owes a reply that cannot be produced: %w", errCloseConnection, req, err)
		}
		return s.sendReply(req, reply)
	case replyConfig:
		if err != nil {
			reply = nil // a zero-length config reply reports failure
		}
		return s.sendReply(req, reply)
	case replyStatus:
		return s.sendStatus(req, statusOf(err))
	default: // replyAck
		// libvhost-user honours NEED_REPLY whenever it is set; front-ends
		// only set it after negotiating REPLY_ACK, and answering is never
		// worse than leaving a waiting front-end blocked.
		if m.Header.NeedReply() {
			return s.sendStatus(req, statusOf(err))
		}
		// A request that failed without NEED_REPLY leaves the front-end
		// believing it took effect: it would drive rings, memory or
		// features the back-end does not have. Close the connection, as
		// DPDK's vhost library does (vhost_user_msg_handler failing closes
		// the socket): QEMU then sees the back-end go away (link down,
		// and a reconnect with reconnect=N or a vhostd --client restart
		// starts clean) instead of a NIC that silently moves nothing.
		// Requests this back-end does not implement or that were not
		// negotiated change no state; they are only logged.
		if err != nil && !errors.Is(err, errUnsupported) {
			return fmt.Errorf("%w: %s failed and the front-end asked for no reply, so it would run on with state this back-end does not have (negotiate REPLY_ACK to get a status instead): %w", errCloseConnection, req, err)
		}
		return nil
	}
}

// ReplyMandatory reports whether the front-end must wait for a reply to r
// even without NEED_REPLY (vhost-user.rst, "Communication"), as this
// back-end's dispatch table says.
func ReplyMandatory(r Request) bool {
	return r.Known() && requestTable[r].reply != replyAck
}

func statusOf(err error) uint64 {
	if err != nil {
		return statusFailure
	}
	return 0
}

func (s *Session) sendStatus(req Request, status uint64) error {
	s.reply = U64(status).Encode(s.reply[:0])
	return s.sendReply(req, s.reply)
}

func (s *Session) sendReply(req Request, payload []byte) error {
	if err := s.conn.WriteMessage(Header{Request: req, Flags: Version1 | FlagReply}, payload, nil); err != nil {
		return fmt.Errorf("%w: sending the %s reply: %w", errCloseConnection, req, err)
	}
	return nil
}
