package vnet

import "testing"

func TestTunOffloads(t *testing.T) {
	cases := []struct {
		guest Feature
		want  uint32
	}{
		{0, 0},
		{NetGuestCsum, TunFCsum},
		{NetGuestCsum | NetGuestTSO4 | NetGuestTSO6 | NetGuestECN | NetGuestUFO, TunFCsum | TunFTSO4 | TunFTSO6 | TunFTSOECN | TunFUFO},
		{NetGuestCsum | NetGuestUSO4, TunFCsum},
		{NetGuestCsum | NetGuestUSO6, TunFCsum},
		{NetGuestCsum | NetGuestUSO4 | NetGuestUSO6, TunFCsum | TunFUSO4 | TunFUSO6},
		{NetCsum | NetHostTSO4 | NetHostTSO6 | NetHostUSO, 0}, // CSUM, HOST_TSO4/6, HOST_USO: guest TX side
		// QEMU csum=off,guest_csum=off: GUEST_CSUM masked but GUEST_TSO4/6
		// and ECN still acked. The kernel takes no GSO flag without CSUM
		// (tun.c set_offload: EINVAL), so nothing is asked for.
		{NetGuestTSO4 | NetGuestTSO6 | NetGuestECN, 0},
		{NetGuestTSO4 | NetGuestUFO | NetGuestUSO4 | NetGuestUSO6, 0},
		// TSO_ECN needs TSO4 or TSO6 beside it.
		{NetGuestCsum | NetGuestECN, TunFCsum},
	}
	for _, c := range cases {
		if got := TunOffloads(c.guest); got != c.want {
			t.Errorf("TunOffloads(%#x) = %#x, want %#x", c.guest, got, c.want)
		}
	}
}

func TestOffloadsString(t *testing.T) {
	if s := (OffloadCSUM | OffloadTSO6 | OffloadUFO).String(); s != "csum|tso6|ufo" {
		t.Errorf("got %q", s)
	}
	if s := Offloads(0).String(); s != "none" {
		t.Errorf("got %q", s)
	}
	if s := (OffloadUSO | 1<<10).String(); s != "uso|0x400" {
		t.Errorf("got %q", s)
	}
}
