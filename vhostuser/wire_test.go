package vhostuser

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestHeaderDecode(t *testing.T) {
	tests := []struct {
		name    string
		h       Header
		short   bool
		wantErr bool
	}{
		{name: "request", h: Header{Request: ReqGetFeatures, Flags: Version1}},
		{name: "need reply", h: Header{Request: ReqSetMemTable, Flags: Version1 | FlagNeedReply, Size: 40}},
		{name: "reply", h: Header{Request: ReqGetFeatures, Flags: Version1 | FlagReply, Size: 8}},
		{name: "max payload", h: Header{Request: ReqSetConfig, Flags: Version1, Size: MaxPayloadSize}},
		{name: "unknown request passes", h: Header{Request: 999, Flags: Version1}},
		{name: "version 0", h: Header{Request: ReqGetFeatures, Flags: 0}, wantErr: true},
		{name: "version 2", h: Header{Request: ReqGetFeatures, Flags: 2}, wantErr: true},
		{name: "reserved bit 4", h: Header{Request: ReqGetFeatures, Flags: Version1 | 0x10}, wantErr: true},
		{name: "reserved bit 31", h: Header{Request: ReqGetFeatures, Flags: Version1 | 1<<31}, wantErr: true},
		{name: "oversized", h: Header{Request: ReqSetConfig, Flags: Version1, Size: MaxPayloadSize + 1}, wantErr: true},
		{name: "huge size", h: Header{Request: ReqSetConfig, Flags: Version1, Size: math.MaxUint32}, wantErr: true},
		{name: "short", h: Header{Request: ReqGetFeatures, Flags: Version1}, short: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.h.Encode(nil)
			if len(b) != HeaderSize {
				t.Fatalf("encoded %d bytes", len(b))
			}
			if tt.short {
				b = b[:HeaderSize-1]
			}
			var got Header
			err := got.Decode(b)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Decode err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrHeader) {
					t.Errorf("error %v is not ErrHeader", err)
				}
				return
			}
			if got != tt.h {
				t.Errorf("got %+v, want %+v", got, tt.h)
			}
		})
	}
}

func TestRequestNames(t *testing.T) {
	for r := ReqGetFeatures; r <= maxRequest; r++ {
		s := r.String()
		if s == "" || strings.HasPrefix(s, "UNKNOWN") {
			t.Errorf("request %d has no name", r)
		}
	}
	if got := Request(0).String(); got != "UNKNOWN(0)" {
		t.Errorf("Request(0) = %q", got)
	}
	if got := Request(45).String(); got != "UNKNOWN(45)" {
		t.Errorf("Request(45) = %q", got)
	}
	if ReqSetVringEnable.String() != "SET_VRING_ENABLE" || ReqGetShmemConfig != 44 || ReqSetStatus != 39 {
		t.Error("request ids or names do not match the spec")
	}
}

func TestProtocolFeaturesString(t *testing.T) {
	if got := (ProtoMQ | ProtoReplyAck | ProtoStatus).String(); got != "MQ|REPLY_ACK|STATUS" {
		t.Errorf("got %q", got)
	}
	if got := ProtocolFeatures(1 << 40).String(); got != "bit40" {
		t.Errorf("got %q", got)
	}
	if got := ProtocolFeatures(0).String(); got != "none" {
		t.Errorf("got %q", got)
	}
	if ProtoConfigureMemSlots != 1<<15 || ProtoMTU != 1<<4 {
		t.Error("protocol feature bits do not match the spec")
	}
}

func TestFlagsString(t *testing.T) {
	if got := (Version1 | FlagNeedReply | 0x100).String(); got != "v1|NEED_REPLY|reserved(0x100)" {
		t.Errorf("got %q", got)
	}
}

// roundTrip encodes p, decodes it into a fresh value of the same type and
// compares.
func roundTrip(t *testing.T, p Payload) {
	t.Helper()
	b := p.Encode(nil)
	q := reflect.New(reflect.TypeOf(p).Elem()).Interface().(Payload)
	if err := q.Decode(b); err != nil {
		t.Fatalf("%T: decode of own encoding: %v", p, err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("%T: round trip: got %+v, want %+v", p, q, p)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	u := U64(0x1122334455667788)
	table := &MemoryRegions{NRegions: 2}
	table.Regions[0] = MemoryRegion{GuestPhysAddr: 0, Size: 0x100000, UserAddr: 0x7f0000000000, MmapOffset: 0}
	table.Regions[1] = MemoryRegion{GuestPhysAddr: 0x100000000, Size: 0x200000, UserAddr: 0x7f1000000000, MmapOffset: 0x100000}
	payloads := []Payload{
		&u,
		&VringState{Index: 3, Num: 256},
		&VringAddr{Index: 1, Flags: VringAddrFlagLog, Desc: 1, Used: 2, Avail: 3, Log: 4},
		&VringFile{Index: 7},
		&VringFile{Index: 255, NoFd: true},
		table,
		&SingleMemRegion{Region: MemoryRegion{GuestPhysAddr: 0x1000, Size: 0x1000, UserAddr: 0x2000, MmapOffset: 0x3000}},
		&Log{Size: 0x1000, Offset: 0x2000},
		&Config{Offset: 4, Size: 3, Flags: 1, Data: []byte{1, 2, 3}},
		&Inflight{MmapSize: 4096, MmapOffset: 0, NumQueues: 2, QueueSize: 256},
		&IOTLBMsg{IOVA: 1, Size: 2, UserAddr: 3, Perm: 3, Type: IOTLBUpdate},
		&DeviceStateParams{Direction: 1},
		&SharedObject{UUID: [16]byte{1, 2, 3}},
		&Empty{},
	}
	for _, p := range payloads {
		roundTrip(t, p)
	}
}

func TestPayloadSizes(t *testing.T) {
	// Every fixed-size payload refuses one byte more and one byte less.
	fixed := map[Payload]int{
		new(U64):             U64Size,
		&VringState{}:        VringStateSize,
		&VringAddr{}:         VringAddrSize,
		&VringFile{}:         U64Size,
		&SingleMemRegion{}:   SingleMemRegionSize,
		&Log{}:               LogSize,
		&DeviceStateParams{}: DeviceStateParamsSize,
		&SharedObject{}:      SharedObjectSize,
		&Empty{}:             0,
	}
	for p, n := range fixed {
		for _, size := range []int{n - 1, n + 1} {
			if size < 0 {
				continue
			}
			b := make([]byte, size)
			if _, ok := p.(*SingleMemRegion); ok && size > 8+16 {
				native.PutUint64(b[16:], 1) // non-zero region size, so only the length can fail
			}
			err := p.Decode(b)
			if !errors.Is(err, ErrPayloadSize) {
				t.Errorf("%T with %d bytes: err = %v, want ErrPayloadSize", p, size, err)
			}
		}
	}
}

func TestVringFileValidation(t *testing.T) {
	for _, tt := range []struct {
		v    uint64
		ok   bool
		want VringFile
	}{
		{0, true, VringFile{}},
		{0xff, true, VringFile{Index: 255}},
		{0x100, true, VringFile{NoFd: true}},
		{0x105, true, VringFile{Index: 5, NoFd: true}},
		{0x200, false, VringFile{}},
		{1 << 63, false, VringFile{}},
	} {
		var f VringFile
		err := f.Decode(U64(tt.v).Encode(nil))
		if (err == nil) != tt.ok {
			t.Errorf("%#x: err = %v", tt.v, err)
			continue
		}
		if err == nil && f != tt.want {
			t.Errorf("%#x: got %+v, want %+v", tt.v, f, tt.want)
		}
		if err != nil && !errors.Is(err, ErrPayloadValue) {
			t.Errorf("%#x: err %v is not ErrPayloadValue", tt.v, err)
		}
	}
}

func TestVringAddrFlags(t *testing.T) {
	var a VringAddr
	if err := a.Decode(VringAddr{Flags: 2}.Encode(nil)); !errors.Is(err, ErrPayloadValue) {
		t.Errorf("unknown flag bit accepted: %v", err)
	}
}

func TestMemoryRegionValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    MemoryRegion
		ok   bool
	}{
		{"ok", MemoryRegion{GuestPhysAddr: 0, Size: 4096, UserAddr: 0x1000}, true},
		{"ends one byte before 2^64", MemoryRegion{GuestPhysAddr: math.MaxUint64 - 4096, Size: 4096, UserAddr: 0}, true},
		{"ends exactly at 2^64 (end not representable)", MemoryRegion{GuestPhysAddr: math.MaxUint64 - 4095, Size: 4096, UserAddr: 0}, false},
		{"zero size", MemoryRegion{Size: 0}, false},
		{"gpa wraps", MemoryRegion{GuestPhysAddr: math.MaxUint64 - 4094, Size: 4096}, false},
		{"uva wraps", MemoryRegion{UserAddr: math.MaxUint64, Size: 2}, false},
		{"offset wraps", MemoryRegion{MmapOffset: math.MaxUint64, Size: 2}, false},
	} {
		err := tt.r.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v", tt.name, err)
		}
	}
}

func TestMemoryTableDecode(t *testing.T) {
	region := MemoryRegion{GuestPhysAddr: 0, Size: 0x1000, UserAddr: 0x10000}
	build := func(n uint32, regions int, pad uint32) []byte {
		b := native.AppendUint32(nil, n)
		b = native.AppendUint32(b, pad)
		for i := 0; i < regions; i++ {
			r := region
			r.GuestPhysAddr = uint64(i) * 0x1000
			b = r.Encode(b)
		}
		return b
	}
	var tbl MemoryRegions
	if err := tbl.Decode(build(1, 1, 0xdeadbeef)); err != nil || tbl.NRegions != 1 || tbl.Regions[0] != region {
		t.Errorf("one region with padding: %v %+v", err, tbl)
	}
	if err := tbl.Decode(build(2, 8, 0)); err != nil || tbl.NRegions != 2 {
		t.Errorf("2 regions in a full 8-region payload: %v", err)
	}
	if err := tbl.Decode(build(8, 8, 0)); err != nil || tbl.NRegions != 8 {
		t.Errorf("8 regions: %v", err)
	}
	if err := tbl.Decode(build(0, 0, 0)); !errors.Is(err, ErrPayloadValue) {
		t.Errorf("0 regions: %v", err)
	}
	if err := tbl.Decode(build(9, 9, 0)); !errors.Is(err, ErrPayloadValue) {
		t.Errorf("9 regions: %v", err)
	}
	if err := tbl.Decode(build(3, 2, 0)); !errors.Is(err, ErrPayloadSize) {
		t.Errorf("3 regions announced, 2 sent: %v", err)
	}
	if err := tbl.Decode(build(1, 1, 0)[:7]); !errors.Is(err, ErrPayloadSize) {
		t.Errorf("truncated: %v", err)
	}
	bad := build(2, 2, 0)
	native.PutUint64(bad[8+MemoryRegionSize+8:], 0) // region 1 size = 0
	if err := tbl.Decode(bad); !errors.Is(err, ErrPayloadValue) {
		t.Errorf("zero-size region: %v", err)
	}
}

func TestConfigDecode(t *testing.T) {
	var c Config
	if err := c.Decode(Config{Offset: 0, Size: 2, Data: []byte{1, 2}}.Encode(nil)); err != nil {
		t.Fatal(err)
	}
	b := Config{Data: []byte{1, 2}}.Encode(nil)
	native.PutUint32(b[4:], 3) // size field says 3, 2 bytes follow
	if err := c.Decode(b); !errors.Is(err, ErrPayloadSize) {
		t.Errorf("size mismatch: %v", err)
	}
	if err := c.Decode(Config{Offset: 255, Data: []byte{1, 2}}.Encode(nil)); !errors.Is(err, ErrPayloadValue) {
		t.Errorf("offset past config space: %v", err)
	}
	if err := c.Decode(Config{Offset: math.MaxUint32, Data: []byte{1}}.Encode(nil)); !errors.Is(err, ErrPayloadValue) {
		t.Errorf("offset wrap: %v", err)
	}
}

func TestDecodeMessage(t *testing.T) {
	msg := Header{Request: ReqSetVringNum, Flags: Version1, Size: 8}.Encode(nil)
	msg = VringState{Index: 1, Num: 256}.Encode(msg)
	h, p, err := DecodeMessage(msg)
	if err != nil || h.Request != ReqSetVringNum || *p.(*VringState) != (VringState{1, 256}) {
		t.Fatalf("got %v %v %v", h, p, err)
	}
	if _, _, err := DecodeMessage(msg[:len(msg)-1]); !errors.Is(err, ErrPayloadSize) {
		t.Errorf("short payload: %v", err)
	}
	// A mandatory-empty request with a payload.
	bad := Header{Request: ReqGetFeatures, Flags: Version1, Size: 8}.Encode(nil)
	bad = U64(1).Encode(bad)
	if _, _, err := DecodeMessage(bad); !errors.Is(err, ErrPayloadSize) {
		t.Errorf("GET_FEATURES with payload: %v", err)
	}
	for r := ReqGetFeatures; r <= maxRequest; r++ {
		switch r {
		case ReqCreateCryptoSession, ReqCloseCryptoSession, ReqGetShmemConfig:
			if NewPayload(r) != nil {
				t.Errorf("%v has a payload type", r)
			}
		default:
			if NewPayload(r) == nil {
				t.Errorf("%v has no payload type", r)
			}
		}
	}
}
