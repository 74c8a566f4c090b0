package vhostuser

import (
	"encoding/binary"
	"testing"
)

// TestFixedPayloadSizes: the payloads decodeFixed and appendFixed handle
// take their wire size from their Go declaration; it must be the size the
// protocol gives.
func TestFixedPayloadSizes(t *testing.T) {
	for _, c := range []struct {
		name string
		v    any
		want int
	}{
		{"Header", Header{}, HeaderSize},
		{"U64", U64(0), U64Size},
		{"VringState", VringState{}, VringStateSize},
		{"VringAddr", VringAddr{}, VringAddrSize},
		{"MemoryRegion", MemoryRegion{}, MemoryRegionSize},
		{"Log", Log{}, LogSize},
		{"Inflight", Inflight{}, InflightSize},
		{"IOTLBMsg", IOTLBMsg{}, IOTLBMsgSize},
		{"DeviceStateParams", DeviceStateParams{}, DeviceStateParamsSize},
		{"SharedObject", SharedObject{}, SharedObjectSize},
	} {
		if got := binary.Size(c.v); got != c.want {
			t.Errorf("%s: binary.Size %d, wire size %d", c.name, got, c.want)
		}
	}
}
