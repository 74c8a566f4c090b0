// Package vhostuser implements the back-end side of the vhost-user protocol
// (QEMU docs/interop/vhost-user.rst): wire types, message I/O with SCM_RIGHTS,
// a table-driven dispatcher, guest memory mapping and one Session per
// front-end connection.
//
// wire.go holds the wire types and their validation. It does no I/O, so every
// decoder here can be fuzzed in isolation.
package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// All vhost-user numbers are "in the machine native byte order"
// (vhost-user.rst, "Message Specification").
var native = binary.NativeEndian

// Wire limits.
const (
	// HeaderSize is the size of the message header: request, flags, size (u32 each).
	HeaderSize = 12
	// MaxPayloadSize bounds the payload of one message. No front-end request
	// defined by the spec comes close; rust-vmm uses the same limit (MAX_MSG_SIZE).
	MaxPayloadSize = 0x1000
	// MaxFds is the number of file descriptors accepted with one message
	// (VHOST_MEMORY_BASELINE_NREGIONS: SET_MEM_TABLE carries one per region).
	MaxFds = 8
	// MaxMemRegions is the region count limit of SET_MEM_TABLE and the number
	// of slots reported by GET_MAX_MEM_SLOTS.
	MaxMemRegions = 8
	// MaxConfigSize bounds the config-space payload of GET/SET_CONFIG
	// (VHOST_USER_MAX_CONFIG_SIZE in QEMU).
	MaxConfigSize = 256
)

// Feature bits in GET_FEATURES/SET_FEATURES that belong to vhost-user rather
// than to the virtio device.
const (
	// FeatureProtocolFeatures (VHOST_USER_F_PROTOCOL_FEATURES) is bit 30, the
	// reserved virtio bit reused to signal protocol feature negotiation
	// (vhost-user.rst, "Communication").
	// The bit numbers live in vnet's one feature table.
	FeatureProtocolFeatures = uint64(vnet.FeatureProtocolFeatures)
	// FeatureLogAll (VHOST_F_LOG_ALL) asks for dirty logging during migration.
	FeatureLogAll = uint64(vnet.FeatureLogAll)
)

// Flags is the header flags field (vhost-user.rst, "Header").
type Flags uint32

const (
	// FlagVersionMask covers the protocol version in bits 0-1.
	FlagVersionMask Flags = 0x3
	// Version1 is the only protocol version defined.
	Version1 Flags = 0x1
	// FlagReply marks every reply sent by the back-end.
	FlagReply Flags = 0x4
	// FlagNeedReply asks for a u64 status reply (REPLY_ACK, "REPLY_ACK" section).
	FlagNeedReply Flags = 0x8
	// flagsKnown are all defined bits; the rest are reserved and rejected.
	flagsKnown = FlagVersionMask | FlagReply | FlagNeedReply
)

func (f Flags) String() string {
	s := "v" + strconv.Itoa(int(f&FlagVersionMask))
	if f&FlagReply != 0 {
		s += "|REPLY"
	}
	if f&FlagNeedReply != 0 {
		s += "|NEED_REPLY"
	}
	if r := f &^ flagsKnown; r != 0 {
		s += fmt.Sprintf("|reserved(%#x)", uint32(r))
	}
	return s
}

// Request is a front-end request id (vhost-user.rst, "Front-end message types").
type Request uint32

// Front-end request ids. SET_BACKEND_REQ_FD was called SET_SLAVE_REQ_FD in
// older spec versions.
const (
	ReqGetFeatures         Request = 1
	ReqSetFeatures         Request = 2
	ReqSetOwner            Request = 3
	ReqResetOwner          Request = 4
	ReqSetMemTable         Request = 5
	ReqSetLogBase          Request = 6
	ReqSetLogFd            Request = 7
	ReqSetVringNum         Request = 8
	ReqSetVringAddr        Request = 9
	ReqSetVringBase        Request = 10
	ReqGetVringBase        Request = 11
	ReqSetVringKick        Request = 12
	ReqSetVringCall        Request = 13
	ReqSetVringErr         Request = 14
	ReqGetProtocolFeatures Request = 15
	ReqSetProtocolFeatures Request = 16
	ReqGetQueueNum         Request = 17
	ReqSetVringEnable      Request = 18
	ReqSendRARP            Request = 19
	ReqNetSetMTU           Request = 20
	ReqSetBackendReqFd     Request = 21
	ReqIOTLBMsg            Request = 22
	ReqSetVringEndian      Request = 23
	ReqGetConfig           Request = 24
	ReqSetConfig           Request = 25
	ReqCreateCryptoSession Request = 26
	ReqCloseCryptoSession  Request = 27
	ReqPostcopyAdvise      Request = 28
	ReqPostcopyListen      Request = 29
	ReqPostcopyEnd         Request = 30
	ReqGetInflightFd       Request = 31
	ReqSetInflightFd       Request = 32
	ReqGPUSetSocket        Request = 33
	ReqResetDevice         Request = 34
	ReqVringKick           Request = 35
	ReqGetMaxMemSlots      Request = 36
	ReqAddMemReg           Request = 37
	ReqRemMemReg           Request = 38
	ReqSetStatus           Request = 39
	ReqGetStatus           Request = 40
	ReqGetSharedObject     Request = 41
	ReqSetDeviceStateFd    Request = 42
	ReqCheckDeviceState    Request = 43
	ReqGetShmemConfig      Request = 44
	maxRequest                     = ReqGetShmemConfig
)

var requestNames = [...]string{
	ReqGetFeatures:         "GET_FEATURES",
	ReqSetFeatures:         "SET_FEATURES",
	ReqSetOwner:            "SET_OWNER",
	ReqResetOwner:          "RESET_OWNER",
	ReqSetMemTable:         "SET_MEM_TABLE",
	ReqSetLogBase:          "SET_LOG_BASE",
	ReqSetLogFd:            "SET_LOG_FD",
	ReqSetVringNum:         "SET_VRING_NUM",
	ReqSetVringAddr:        "SET_VRING_ADDR",
	ReqSetVringBase:        "SET_VRING_BASE",
	ReqGetVringBase:        "GET_VRING_BASE",
	ReqSetVringKick:        "SET_VRING_KICK",
	ReqSetVringCall:        "SET_VRING_CALL",
	ReqSetVringErr:         "SET_VRING_ERR",
	ReqGetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	ReqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	ReqGetQueueNum:         "GET_QUEUE_NUM",
	ReqSetVringEnable:      "SET_VRING_ENABLE",
	ReqSendRARP:            "SEND_RARP",
	ReqNetSetMTU:           "NET_SET_MTU",
	ReqSetBackendReqFd:     "SET_BACKEND_REQ_FD",
	ReqIOTLBMsg:            "IOTLB_MSG",
	ReqSetVringEndian:      "SET_VRING_ENDIAN",
	ReqGetConfig:           "GET_CONFIG",
	ReqSetConfig:           "SET_CONFIG",
	ReqCreateCryptoSession: "CREATE_CRYPTO_SESSION",
	ReqCloseCryptoSession:  "CLOSE_CRYPTO_SESSION",
	ReqPostcopyAdvise:      "POSTCOPY_ADVISE",
	ReqPostcopyListen:      "POSTCOPY_LISTEN",
	ReqPostcopyEnd:         "POSTCOPY_END",
	ReqGetInflightFd:       "GET_INFLIGHT_FD",
	ReqSetInflightFd:       "SET_INFLIGHT_FD",
	ReqGPUSetSocket:        "GPU_SET_SOCKET",
	ReqResetDevice:         "RESET_DEVICE",
	ReqVringKick:           "VRING_KICK",
	ReqGetMaxMemSlots:      "GET_MAX_MEM_SLOTS",
	ReqAddMemReg:           "ADD_MEM_REG",
	ReqRemMemReg:           "REM_MEM_REG",
	ReqSetStatus:           "SET_STATUS",
	ReqGetStatus:           "GET_STATUS",
	ReqGetSharedObject:     "GET_SHARED_OBJECT",
	ReqSetDeviceStateFd:    "SET_DEVICE_STATE_FD",
	ReqCheckDeviceState:    "CHECK_DEVICE_STATE",
	ReqGetShmemConfig:      "GET_SHMEM_CONFIG",
}

// Known reports whether r is a request id defined by the spec.
func (r Request) Known() bool { return r >= ReqGetFeatures && r <= maxRequest }

func (r Request) String() string {
	if r.Known() {
		return requestNames[r]
	}
	return "UNKNOWN(" + strconv.FormatUint(uint64(r), 10) + ")"
}

// ProtocolFeatures is the bitmask of GET/SET_PROTOCOL_FEATURES
// (vhost-user.rst, "Protocol features").
type ProtocolFeatures uint64

// Protocol feature bits. SLAVE_REQ/SLAVE_SEND_FD were renamed BACKEND_*.
const (
	ProtoMQ                  ProtocolFeatures = 1 << 0
	ProtoLogShmfd            ProtocolFeatures = 1 << 1
	ProtoRARP                ProtocolFeatures = 1 << 2
	ProtoReplyAck            ProtocolFeatures = 1 << 3
	ProtoMTU                 ProtocolFeatures = 1 << 4
	ProtoBackendReq          ProtocolFeatures = 1 << 5
	ProtoCrossEndian         ProtocolFeatures = 1 << 6
	ProtoCryptoSession       ProtocolFeatures = 1 << 7
	ProtoPagefault           ProtocolFeatures = 1 << 8
	ProtoConfig              ProtocolFeatures = 1 << 9
	ProtoBackendSendFd       ProtocolFeatures = 1 << 10
	ProtoHostNotifier        ProtocolFeatures = 1 << 11
	ProtoInflightShmfd       ProtocolFeatures = 1 << 12
	ProtoResetDevice         ProtocolFeatures = 1 << 13
	ProtoInbandNotifications ProtocolFeatures = 1 << 14
	ProtoConfigureMemSlots   ProtocolFeatures = 1 << 15
	ProtoStatus              ProtocolFeatures = 1 << 16
	ProtoXenMmap             ProtocolFeatures = 1 << 17
	ProtoSharedObject        ProtocolFeatures = 1 << 18
	ProtoDeviceState         ProtocolFeatures = 1 << 19
)

var protocolFeatureNames = [...]string{
	"MQ", "LOG_SHMFD", "RARP", "REPLY_ACK", "MTU", "BACKEND_REQ", "CROSS_ENDIAN",
	"CRYPTO_SESSION", "PAGEFAULT", "CONFIG", "BACKEND_SEND_FD", "HOST_NOTIFIER",
	"INFLIGHT_SHMFD", "RESET_DEVICE", "INBAND_NOTIFICATIONS", "CONFIGURE_MEM_SLOTS",
	"STATUS", "XEN_MMAP", "SHARED_OBJECT", "DEVICE_STATE",
}

// String lists the set bits by name, e.g. "MQ|REPLY_ACK|bit40".
func (p ProtocolFeatures) String() string {
	if p == 0 {
		return "none"
	}
	var names []string
	for bit := 0; bit < 64; bit++ {
		if p&(1<<bit) == 0 {
			continue
		}
		if bit < len(protocolFeatureNames) {
			names = append(names, protocolFeatureNames[bit])
		} else {
			names = append(names, "bit"+strconv.Itoa(bit))
		}
	}
	return strings.Join(names, "|")
}

// Errors returned by the decoders. They are wrapped with details; test with errors.Is.
var (
	ErrHeader       = errors.New("vhost-user: malformed message header")
	ErrPayloadSize  = errors.New("vhost-user: payload size does not match the request")
	ErrPayloadValue = errors.New("vhost-user: invalid payload value")
)

// Header is the 12-byte message header (vhost-user.rst, "Header").
type Header struct {
	Request Request
	Flags   Flags
	Size    uint32 // payload size in bytes
}

// Decode parses and validates a header: version 1, no reserved flag bits,
// payload size at most MaxPayloadSize. It accepts any request id; unknown ids
// are the dispatcher's business.
func (h *Header) Decode(b []byte) error {
	if len(b) < HeaderSize {
		return fmt.Errorf("%w: %d bytes, need %d", ErrHeader, len(b), HeaderSize)
	}
	decodePrefix(b[:HeaderSize], h)
	if v := h.Flags & FlagVersionMask; v != Version1 {
		return fmt.Errorf("%w: version %d in flags %#x, only version 1 exists", ErrHeader, v, uint32(h.Flags))
	}
	if r := h.Flags &^ flagsKnown; r != 0 {
		return fmt.Errorf("%w: reserved flag bits %#x set", ErrHeader, uint32(r))
	}
	if h.Size > MaxPayloadSize {
		return fmt.Errorf("%w: payload size %d exceeds the limit %d", ErrHeader, h.Size, MaxPayloadSize)
	}
	return nil
}

// Encode appends the header to b.
func (h Header) Encode(b []byte) []byte { return appendFixed(b, h) }

// NeedReply reports whether the front-end set NEED_REPLY.
func (h Header) NeedReply() bool { return h.Flags&FlagNeedReply != 0 }

func sizeError(name string, got, want int) error {
	return fmt.Errorf("%w: %s payload is %d bytes, want %d", ErrPayloadSize, name, got, want)
}

// The payloads below that are plain records of fixed-size integers are
// declared in wire order, so one codec serves them all: encoding/binary
// lays a struct out field by field with no padding, in the native order.
// (The control plane only: these run once per vhost-user message.)

// decodeFixed decodes b, which must be exactly the wire size of *v, into *v.
func decodeFixed(name string, b []byte, v any) error {
	if n := binary.Size(v); len(b) != n {
		return sizeError(name, len(b), n)
	}
	_, err := binary.Decode(b, native, v)
	return err
}

// decodePrefix decodes the first wire-size-of-*v bytes of b, which the
// caller has checked are there, into *v.
func decodePrefix(b []byte, v any) {
	if _, err := binary.Decode(b, native, v); err != nil {
		panic(err) // a payload type that is not fixed-size, or a short b: a bug here
	}
}

// appendFixed appends v's wire form to b.
func appendFixed(b []byte, v any) []byte {
	b, err := binary.Append(b, native, v)
	if err != nil {
		panic(err) // a payload type that is not fixed-size: a bug here
	}
	return b
}

// U64 is the single 64-bit integer payload.
type U64 uint64

// U64Size is the payload size of U64.
const U64Size = 8

func (v *U64) Decode(b []byte) error {
	return decodeFixed("u64", b, v)
}

func (v U64) Encode(b []byte) []byte { return native.AppendUint64(b, uint64(v)) }

// VringState is the vring state description: index and num
// (SET_VRING_NUM, SET/GET_VRING_BASE, SET_VRING_ENABLE, ...).
type VringState struct {
	Index uint32
	Num   uint32
}

// VringStateSize is the payload size of VringState.
const VringStateSize = 8

func (v *VringState) Decode(b []byte) error { return decodeFixed("vring state", b, v) }

func (v VringState) Encode(b []byte) []byte { return appendFixed(b, v) }

// VringAddrFlagLog (VHOST_VRING_F_LOG) asks for used-ring dirty logging.
const VringAddrFlagLog = 1 << 0

// VringAddr is the vring address description of SET_VRING_ADDR. Desc, Used
// and Avail are front-end virtual addresses (user addresses), not GPAs; the
// order on the wire is desc, used, avail, log.
type VringAddr struct {
	Index uint32
	Flags uint32
	Desc  uint64
	Used  uint64
	Avail uint64
	Log   uint64 // guest-physical address used for dirty logging
}

// VringAddrSize is the payload size of VringAddr.
const VringAddrSize = 40

// Decode parses a vring address and rejects flag bits other than VHOST_VRING_F_LOG.
func (v *VringAddr) Decode(b []byte) error {
	if err := decodeFixed("vring address", b, v); err != nil {
		return err
	}
	if v.Flags&^VringAddrFlagLog != 0 {
		return fmt.Errorf("%w: vring address flags %#x, only bit 0 (LOG) is defined", ErrPayloadValue, v.Flags)
	}
	return nil
}

func (v VringAddr) Encode(b []byte) []byte { return appendFixed(b, v) }

// VringFile is the u64 payload of SET_VRING_KICK/CALL/ERR: ring index in
// bits 0-7, bit 8 set when no fd accompanies the message (the ring is polled).
type VringFile struct {
	Index uint8
	NoFd  bool
}

const (
	vringFileIndexMask = 0xff
	vringFileNoFd      = 1 << 8
)

// Decode parses the u64 and rejects any bit other than the index and NOFD.
func (v *VringFile) Decode(b []byte) error {
	var u U64
	if err := u.Decode(b); err != nil {
		return err
	}
	if u&^(vringFileIndexMask|vringFileNoFd) != 0 {
		return fmt.Errorf("%w: vring file value %#x has bits other than index (0-7) and NOFD (8)", ErrPayloadValue, uint64(u))
	}
	v.Index = uint8(u & vringFileIndexMask)
	v.NoFd = u&vringFileNoFd != 0
	return nil
}

func (v VringFile) Encode(b []byte) []byte {
	u := U64(v.Index)
	if v.NoFd {
		u |= vringFileNoFd
	}
	return u.Encode(b)
}

// MemoryRegion is one region of SET_MEM_TABLE and ADD/REM_MEM_REG.
type MemoryRegion struct {
	GuestPhysAddr uint64
	Size          uint64
	UserAddr      uint64 // front-end virtual address
	MmapOffset    uint64 // offset of the region in the fd
}

// MemoryRegionSize is the wire size of MemoryRegion.
const MemoryRegionSize = 32

func (r *MemoryRegion) decode(b []byte) { decodePrefix(b[:MemoryRegionSize], r) }

// Validate checks what every region must satisfy: a non-zero size, and
// guest address, user address and file offset ranges whose end (start+size)
// is representable, i.e. does not wrap past 2^64.
func (r MemoryRegion) Validate() error {
	if r.Size == 0 {
		return fmt.Errorf("%w: memory region at gpa %#x has size 0", ErrPayloadValue, r.GuestPhysAddr)
	}
	if r.GuestPhysAddr+r.Size <= r.GuestPhysAddr {
		return fmt.Errorf("%w: memory region gpa %#x + size %#x wraps past 2^64", ErrPayloadValue, r.GuestPhysAddr, r.Size)
	}
	if r.UserAddr+r.Size <= r.UserAddr {
		return fmt.Errorf("%w: memory region uva %#x + size %#x wraps past 2^64", ErrPayloadValue, r.UserAddr, r.Size)
	}
	if r.MmapOffset+r.Size <= r.MmapOffset {
		return fmt.Errorf("%w: memory region mmap offset %#x + size %#x wraps past 2^64", ErrPayloadValue, r.MmapOffset, r.Size)
	}
	return nil
}

func (r MemoryRegion) Encode(b []byte) []byte { return appendFixed(b, r) }

func (r MemoryRegion) String() string {
	return fmt.Sprintf("gpa=%#x size=%#x uva=%#x offset=%#x", r.GuestPhysAddr, r.Size, r.UserAddr, r.MmapOffset)
}

// MemoryRegions is the memory regions description of SET_MEM_TABLE:
// nregions u32, padding u32, then the regions. The front-end may send only
// nregions entries (QEMU does) or all eight; bytes after the last region
// and the padding field are ignored.
type MemoryRegions struct {
	NRegions uint32
	Regions  [MaxMemRegions]MemoryRegion
}

// Payload sizes of the memory table: the header plus 1..8 regions.
const (
	memoryRegionsHeaderSize = 8
	MemoryRegionsMinSize    = memoryRegionsHeaderSize + MemoryRegionSize
	MemoryRegionsMaxSize    = memoryRegionsHeaderSize + MaxMemRegions*MemoryRegionSize
)

// Decode parses and validates the table: 1..8 regions, the payload long
// enough for them, every region valid on its own. Overlap between regions is
// checked when they are mapped.
func (t *MemoryRegions) Decode(b []byte) error {
	if len(b) < memoryRegionsHeaderSize {
		return fmt.Errorf("%w: memory table payload is %d bytes, need at least %d", ErrPayloadSize, len(b), memoryRegionsHeaderSize)
	}
	n := native.Uint32(b[0:])
	if n == 0 || n > MaxMemRegions {
		return fmt.Errorf("%w: memory table has %d regions, want 1..%d", ErrPayloadValue, n, MaxMemRegions)
	}
	if need := memoryRegionsHeaderSize + int(n)*MemoryRegionSize; len(b) < need {
		return fmt.Errorf("%w: memory table with %d regions needs %d bytes, got %d", ErrPayloadSize, n, need, len(b))
	}
	t.NRegions = n
	for i := range t.Regions[:n] {
		t.Regions[i].decode(b[memoryRegionsHeaderSize+i*MemoryRegionSize:])
		if err := t.Regions[i].Validate(); err != nil {
			return fmt.Errorf("region %d: %w", i, err)
		}
	}
	return nil
}

// Encode appends nregions, zero padding and the first NRegions regions.
func (t MemoryRegions) Encode(b []byte) []byte {
	b = native.AppendUint32(b, t.NRegions)
	b = native.AppendUint32(b, 0)
	for _, r := range t.Regions[:min(t.NRegions, MaxMemRegions)] {
		b = r.Encode(b)
	}
	return b
}

// SingleMemRegion is the payload of ADD_MEM_REG and REM_MEM_REG: u64 padding
// (ignored) followed by one region.
type SingleMemRegion struct {
	Region MemoryRegion
}

// SingleMemRegionSize is the payload size of SingleMemRegion.
const SingleMemRegionSize = 8 + MemoryRegionSize

func (s *SingleMemRegion) Decode(b []byte) error {
	if len(b) != SingleMemRegionSize {
		return sizeError("single memory region", len(b), SingleMemRegionSize)
	}
	s.Region.decode(b[8:])
	return s.Region.Validate()
}

func (s SingleMemRegion) Encode(b []byte) []byte {
	b = native.AppendUint64(b, 0)
	return s.Region.Encode(b)
}

// Log is the log description of SET_LOG_BASE.
type Log struct {
	Size   uint64
	Offset uint64
}

// LogSize is the payload size of Log.
const LogSize = 16

func (l *Log) Decode(b []byte) error {
	if err := decodeFixed("log", b, l); err != nil {
		return err
	}
	if l.Offset+l.Size < l.Offset {
		return fmt.Errorf("%w: log offset %#x + size %#x wraps", ErrPayloadValue, l.Offset, l.Size)
	}
	return nil
}

func (l Log) Encode(b []byte) []byte { return appendFixed(b, l) }

// Config is the device config space payload of GET/SET_CONFIG.
type Config struct {
	Offset uint32
	Size   uint32
	Flags  uint32 // 0: writable fields, 1: live migration
	Data   []byte // Size bytes; aliases the decoded buffer
}

const configHeaderSize = 12

// Decode checks that the size field matches the bytes that follow and is
// at most MaxConfigSize, and that offset+size does not pass the config space.
func (c *Config) Decode(b []byte) error {
	if len(b) < configHeaderSize {
		return fmt.Errorf("%w: config payload is %d bytes, need at least %d", ErrPayloadSize, len(b), configHeaderSize)
	}
	c.Offset = native.Uint32(b[0:])
	c.Size = native.Uint32(b[4:])
	c.Flags = native.Uint32(b[8:])
	if c.Size > MaxConfigSize || int(c.Size) != len(b)-configHeaderSize {
		return fmt.Errorf("%w: config size field %d, %d data bytes follow (max %d)", ErrPayloadSize, c.Size, len(b)-configHeaderSize, MaxConfigSize)
	}
	if uint64(c.Offset)+uint64(c.Size) > MaxConfigSize {
		return fmt.Errorf("%w: config offset %d + size %d passes the %d-byte config space", ErrPayloadValue, c.Offset, c.Size, MaxConfigSize)
	}
	if c.Flags > 1 {
		return fmt.Errorf("%w: config flags %#x, want 0 or 1", ErrPayloadValue, c.Flags)
	}
	c.Data = b[configHeaderSize:]
	return nil
}

func (c Config) Encode(b []byte) []byte {
	b = native.AppendUint32(b, c.Offset)
	b = native.AppendUint32(b, uint32(len(c.Data)))
	b = native.AppendUint32(b, c.Flags)
	return append(b, c.Data...)
}

// Inflight is the inflight description of GET/SET_INFLIGHT_FD.
type Inflight struct {
	MmapSize   uint64
	MmapOffset uint64
	NumQueues  uint16
	QueueSize  uint16
}

// InflightSize is the payload size of Inflight; front-ends may pad it to 24.
const InflightSize = 20

func (f *Inflight) Decode(b []byte) error {
	if len(b) < InflightSize || len(b) > InflightSize+4 {
		return fmt.Errorf("%w: inflight payload is %d bytes, want %d..%d", ErrPayloadSize, len(b), InflightSize, InflightSize+4)
	}
	decodePrefix(b[:InflightSize], f)
	return nil
}

func (f Inflight) Encode(b []byte) []byte { return appendFixed(b, f) }

// IOTLB message types and permissions (struct vhost_iotlb_msg).
const (
	IOTLBMiss       = 1
	IOTLBUpdate     = 2
	IOTLBInvalidate = 3
	IOTLBAccessFail = 4
)

// IOTLBMsg is the payload of IOTLB_MSG.
type IOTLBMsg struct {
	IOVA     uint64
	Size     uint64
	UserAddr uint64
	Perm     uint8 // 0 none, 1 read, 2 write, 3 read/write
	Type     uint8
}

// IOTLBMsgSize is the packed size; QEMU sends the C struct padded to 32.
const IOTLBMsgSize = 26

func (m *IOTLBMsg) Decode(b []byte) error {
	if len(b) < IOTLBMsgSize || len(b) > 32 {
		return fmt.Errorf("%w: IOTLB payload is %d bytes, want %d..32", ErrPayloadSize, len(b), IOTLBMsgSize)
	}
	decodePrefix(b[:IOTLBMsgSize], m)
	if m.Perm > 3 || m.Type < IOTLBMiss || m.Type > IOTLBAccessFail {
		return fmt.Errorf("%w: IOTLB perm %d type %d", ErrPayloadValue, m.Perm, m.Type)
	}
	return nil
}

func (m IOTLBMsg) Encode(b []byte) []byte {
	b = appendFixed(b, m)
	return append(b, make([]byte, 6)...)
}

// DeviceStateParams is the payload of SET_DEVICE_STATE_FD.
type DeviceStateParams struct {
	Direction uint32 // 0 save, 1 load
	Phase     uint32 // 0 stopped
}

// DeviceStateParamsSize is the payload size of DeviceStateParams.
const DeviceStateParamsSize = 8

func (p *DeviceStateParams) Decode(b []byte) error {
	if err := decodeFixed("device state", b, p); err != nil {
		return err
	}
	if p.Direction > 1 || p.Phase != 0 {
		return fmt.Errorf("%w: device state direction %d phase %d", ErrPayloadValue, p.Direction, p.Phase)
	}
	return nil
}

func (p DeviceStateParams) Encode(b []byte) []byte { return appendFixed(b, p) }

// SharedObject is the UUID payload of GET_SHARED_OBJECT.
type SharedObject struct {
	UUID [16]byte
}

// SharedObjectSize is the payload size of SharedObject.
const SharedObjectSize = 16

func (o *SharedObject) Decode(b []byte) error {
	return decodeFixed("shared object", b, o)
}

func (o SharedObject) Encode(b []byte) []byte { return appendFixed(b, o) }

// Empty is the payload of requests that carry none.
type Empty struct{}

func (Empty) Decode(b []byte) error {
	if len(b) != 0 {
		return sizeError("empty", len(b), 0)
	}
	return nil
}

func (Empty) Encode(b []byte) []byte { return b }

// Payload is implemented by every payload type above.
type Payload interface {
	Decode(b []byte) error
	Encode(b []byte) []byte
}

// NewPayload returns a zero payload of the type request r carries, or nil
// for requests this package has no type for (unknown ids, crypto sessions,
// GET_SHMEM_CONFIG).
func NewPayload(r Request) Payload {
	switch r {
	case ReqGetFeatures, ReqSetOwner, ReqResetOwner, ReqGetProtocolFeatures, ReqGetQueueNum,
		ReqPostcopyAdvise, ReqPostcopyListen, ReqPostcopyEnd, ReqResetDevice, ReqGetMaxMemSlots,
		ReqGetStatus, ReqCheckDeviceState, ReqSetLogFd, ReqSetBackendReqFd, ReqGPUSetSocket:
		return &Empty{}
	case ReqSetFeatures, ReqSetProtocolFeatures, ReqSendRARP, ReqNetSetMTU, ReqSetStatus:
		return new(U64)
	case ReqSetMemTable:
		return &MemoryRegions{}
	case ReqSetLogBase:
		return &Log{}
	case ReqSetVringNum, ReqSetVringBase, ReqGetVringBase, ReqSetVringEnable, ReqSetVringEndian, ReqVringKick:
		return &VringState{}
	case ReqSetVringAddr:
		return &VringAddr{}
	case ReqSetVringKick, ReqSetVringCall, ReqSetVringErr:
		return &VringFile{}
	case ReqIOTLBMsg:
		return &IOTLBMsg{}
	case ReqGetConfig, ReqSetConfig:
		return &Config{}
	case ReqGetInflightFd, ReqSetInflightFd:
		return &Inflight{}
	case ReqAddMemReg, ReqRemMemReg:
		return &SingleMemRegion{}
	case ReqGetSharedObject:
		return &SharedObject{}
	case ReqSetDeviceStateFd:
		return &DeviceStateParams{}
	}
	return nil
}

// DecodeMessage decodes a header and, when the request has a payload type,
// the payload that follows it. It is the pure counterpart of Conn.ReadMessage
// (no fds) and the entry point of the decoder fuzz target.
func DecodeMessage(b []byte) (Header, Payload, error) {
	var h Header
	if err := h.Decode(b); err != nil {
		return h, nil, err
	}
	body := b[HeaderSize:]
	if uint32(len(body)) != h.Size {
		return h, nil, fmt.Errorf("%w: header says %d payload bytes, %d follow", ErrPayloadSize, h.Size, len(body))
	}
	p := NewPayload(h.Request)
	if p == nil {
		return h, nil, nil
	}
	if err := p.Decode(body); err != nil {
		return h, nil, fmt.Errorf("%s: %w", h.Request, err)
	}
	return h, p, nil
}
