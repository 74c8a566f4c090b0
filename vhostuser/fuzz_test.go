package vhostuser

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

const (
	// fuzzMemSize is the size of the memfd attached to fuzzed memory messages.
	fuzzMemSize = 64 << 10
	// fuzzDeviceFeatures: VERSION_1, EVENT_IDX, INDIRECT_DESC, MRG_RXBUF,
	// MTU, CSUM.
	fuzzDeviceFeatures = 1<<32 | 1<<29 | 1<<28 | 1<<15 | 1<<3 | 1<<0
)

// FuzzDecodeMessage feeds a byte stream of vhost-user messages to the
// decoders and then, message by message, to the dispatcher of a fresh
// Session with a fake device. Memory messages get a real memfd and
// SET_VRING_KICK/CALL/ERR a real eventfd when the payload asks for one, so
// mapping, ring building and first-kick waits are exercised too. Every
// input must leave no fd behind.
func FuzzDecodeMessage(f *testing.F) {
	// The seed corpus is testdata/fuzz/FuzzDecodeMessage (TestWriteFuzzSeeds).
	a, b := socketPair(f)
	go io.Copy(io.Discard, b) // replies
	f.Cleanup(func() { a.Close(); b.Close() })
	memfd, err := unix.MemfdCreate("vhostuser-fuzz", unix.MFD_CLOEXEC)
	if err != nil {
		f.Fatal(err)
	}
	if err := unix.Ftruncate(memfd, fuzzMemSize); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { unix.Close(memfd) })
	log := slog.New(slog.DiscardHandler)

	f.Fuzz(func(t *testing.T, data []byte) {
		fdsBefore := openFds(t)
		dev := NewFakeDevice(fuzzDeviceFeatures, 4)
		s, err := NewSession(a, dev, log)
		if err != nil {
			t.Fatal(err)
		}
		rest := data
		for len(rest) >= HeaderSize {
			var h Header
			if h.Decode(rest) != nil {
				break
			}
			n := min(int(h.Size), len(rest)-HeaderSize)
			h.Size = uint32(n)
			raw := append(h.Encode(nil), rest[HeaderSize:HeaderSize+n]...)
			rest = rest[HeaderSize+n:]
			checkDecode(t, raw)

			m := Message{Header: h, Payload: raw[HeaderSize:]}
			m.Fds = fuzzFds(t, h.Request, m.Payload, memfd)
			if err := s.dispatch(&m); err != nil {
				break // the connection would be closed
			}
		}
		s.shutdown()
		if after := openFds(t); after != fdsBefore {
			t.Fatalf("fd leak: %d before, %d after", fdsBefore, after)
		}
	})
}

// checkDecode decodes one message and checks that re-encoding what was
// decoded gives a message that decodes to the same value.
func checkDecode(t *testing.T, raw []byte) {
	h, p, err := DecodeMessage(raw)
	if err != nil || p == nil {
		return
	}
	again := p.Encode(nil)
	q := reflect.New(reflect.TypeOf(p).Elem()).Interface().(Payload)
	if err := q.Decode(again); err != nil {
		t.Fatalf("%v: re-encoded payload does not decode: %v", h.Request, err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("%v: decode(encode(p)) = %+v, want %+v", h.Request, q, p)
	}
}

// fuzzFds attaches the fds a well-behaved front-end would send.
func fuzzFds(t *testing.T, req Request, payload []byte, memfd int) []int {
	count, mem := 0, false
	switch req {
	case ReqSetMemTable:
		mem, count = true, 1
		if len(payload) >= 4 {
			count = min(int(native.Uint32(payload)), MaxFds)
		}
	case ReqAddMemReg:
		mem, count = true, 1
	case ReqSetVringKick, ReqSetVringCall, ReqSetVringErr:
		if len(payload) == 8 && native.Uint64(payload)&vringFileNoFd == 0 {
			count = 1
		}
	}
	fds := make([]int, 0, count)
	for range count {
		var fd int
		var err error
		if mem {
			fd, err = unix.Dup(memfd)
		} else {
			fd, err = unix.Eventfd(0, unix.EFD_CLOEXEC)
		}
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	return fds
}

// fuzzSeeds builds the seed inputs: handshakes in both orders over a
// 64 KiB region, every payload type, and some malformed messages.
func fuzzSeeds() map[string][]byte {
	msg := func(req Request, flags Flags, p []byte) []byte {
		return append(Header{Request: req, Flags: Version1 | flags, Size: uint32(len(p))}.Encode(nil), p...)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	const uva = 0x7f00_0000_0000
	table := MemoryRegions{NRegions: 1}
	table.Regions[0] = MemoryRegion{GuestPhysAddr: 0, Size: fuzzMemSize, UserAddr: uva}
	rings := func(base uint64, flags Flags, kick bool) []byte {
		var b []byte
		for i := uint32(0); i < 2; i++ {
			off := uint64(i) * 0x4000
			b = append(b, msg(ReqSetVringNum, flags, VringState{Index: i, Num: 256}.Encode(nil))...)
			b = append(b, msg(ReqSetVringBase, flags, VringState{Index: i, Num: 0}.Encode(nil))...)
			b = append(b, msg(ReqSetVringAddr, flags, VringAddr{Index: i, Desc: base + off, Avail: base + off + 4096, Used: base + off + 8192}.Encode(nil))...)
			b = append(b, msg(ReqSetVringKick, flags, VringFile{Index: uint8(i), NoFd: !kick}.Encode(nil))...)
		}
		return b
	}
	proto := U64(ProtoMQ | ProtoReplyAck | ProtoMTU | ProtoConfigureMemSlots | ProtoStatus).Encode(nil)
	feats := U64(fuzzDeviceFeatures | FeatureProtocolFeatures).Encode(nil)
	ack := FlagNeedReply
	seeds := map[string][]byte{
		"qemu-handshake": cat(
			msg(ReqGetFeatures, 0, nil),
			msg(ReqGetProtocolFeatures, 0, nil),
			msg(ReqSetProtocolFeatures, 0, proto),
			msg(ReqGetQueueNum, 0, nil),
			msg(ReqGetMaxMemSlots, 0, nil),
			msg(ReqSetOwner, 0, nil),
			msg(ReqSetVringCall, 0, VringFile{Index: 0}.Encode(nil)),
			msg(ReqSetVringErr, 0, VringFile{Index: 0}.Encode(nil)),
			msg(ReqSetVringEnable, 0, VringState{Index: 0, Num: 1}.Encode(nil)),
			msg(ReqSetFeatures, 0, feats),
			msg(ReqGetStatus, 0, nil),
			msg(ReqSetStatus, 0, U64(8 /* FEATURES_OK */).Encode(nil)),
			msg(ReqSetMemTable, ack, table.Encode(nil)),
			rings(uva, ack, true),
			msg(ReqSetStatus, 0, U64(0).Encode(nil)),
			msg(ReqGetVringBase, 0, VringState{Index: 0}.Encode(nil)),
			msg(ReqGetVringBase, 0, VringState{Index: 1}.Encode(nil)),
		),
		"virtio-user-handshake-polling": cat(
			msg(ReqSetOwner, 0, nil),
			msg(ReqGetFeatures, 0, nil),
			msg(ReqGetProtocolFeatures, 0, nil),
			msg(ReqSetProtocolFeatures, 0, U64(ProtoMQ|ProtoReplyAck|ProtoStatus).Encode(nil)),
			msg(ReqSetVringCall, ack, VringFile{Index: 0}.Encode(nil)),
			msg(ReqSetVringCall, ack, VringFile{Index: 1}.Encode(nil)),
			msg(ReqSetFeatures, ack, feats),
			msg(ReqSetStatus, ack, U64(0x0b).Encode(nil)),
			msg(ReqGetStatus, 0, nil),
			msg(ReqSetMemTable, ack, table.Encode(nil)),
			rings(uva, ack, false),
			msg(ReqSetVringEnable, ack, VringState{Index: 0, Num: 1}.Encode(nil)),
			msg(ReqSetMemTable, ack, table.Encode(nil)),
			msg(ReqSetFeatures, ack, feats),
			msg(ReqGetVringBase, 0, VringState{Index: 1}.Encode(nil)),
		),
		"mem-slots": cat(
			msg(ReqSetProtocolFeatures, 0, proto),
			msg(ReqAddMemReg, ack, SingleMemRegion{Region: MemoryRegion{Size: 0x8000, UserAddr: uva}}.Encode(nil)),
			msg(ReqAddMemReg, ack, SingleMemRegion{Region: MemoryRegion{GuestPhysAddr: 1 << 32, Size: 0x8000, UserAddr: uva + 0x8000, MmapOffset: 0x8000}}.Encode(nil)),
			rings(uva, ack, false),
			msg(ReqRemMemReg, ack, SingleMemRegion{Region: MemoryRegion{GuestPhysAddr: 1 << 32, Size: 0x8000, UserAddr: uva + 0x8000}}.Encode(nil)),
		),
		"set-log-base":     msg(ReqSetLogBase, ack, Log{Size: 4096}.Encode(nil)),
		"iotlb":            msg(ReqIOTLBMsg, 0, IOTLBMsg{IOVA: 1, Size: 2, UserAddr: 3, Perm: 3, Type: IOTLBUpdate}.Encode(nil)),
		"get-config":       msg(ReqGetConfig, 0, Config{Offset: 0, Data: make([]byte, 12)}.Encode(nil)),
		"set-config":       msg(ReqSetConfig, ack, Config{Offset: 6, Flags: 1, Data: []byte{1, 0}}.Encode(nil)),
		"inflight":         msg(ReqSetInflightFd, ack, Inflight{MmapSize: 4096, NumQueues: 2, QueueSize: 256}.Encode(nil)),
		"device-state":     msg(ReqSetDeviceStateFd, 0, DeviceStateParams{Direction: 1}.Encode(nil)),
		"shared-object":    msg(ReqGetSharedObject, 0, SharedObject{UUID: [16]byte{1}}.Encode(nil)),
		"net-set-mtu":      cat(msg(ReqSetProtocolFeatures, 0, proto), msg(ReqNetSetMTU, ack, U64(1500).Encode(nil))),
		"rarp":             msg(ReqSendRARP, ack, U64(0x5254_0012_3456).Encode(nil)),
		"unknown":          msg(99, ack, []byte{1, 2, 3}),
		"reserved-flags":   Header{Request: ReqGetFeatures, Flags: Version1 | 0x40}.Encode(nil),
		"oversized":        Header{Request: ReqSetConfig, Flags: Version1, Size: MaxPayloadSize + 1}.Encode(nil),
		"truncated-table":  msg(ReqSetMemTable, ack, table.Encode(nil)[:20]),
		"region-wraps":     msg(ReqAddMemReg, ack, SingleMemRegion{Region: MemoryRegion{GuestPhysAddr: 1<<64 - 4096, Size: 8192}}.Encode(nil)),
		"kick-bad-bits":    msg(ReqSetVringKick, ack, U64(0x200).Encode(nil)),
		"enable-bad-index": msg(ReqSetVringEnable, ack, VringState{Index: 200, Num: 1}.Encode(nil)),
	}
	return seeds
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzDecodeMessage from
// fuzzSeeds when VHOSTD_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("VHOSTD_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set VHOSTD_WRITE_FUZZ_SEEDS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeMessage")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range fuzzSeeds() {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
