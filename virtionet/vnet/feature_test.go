package vnet

import "testing"

// TestFeatureBitNumbers pins the bit numbers to the spec table in
// wire-facts.md ("virtio-net feature bits", "Generic virtio feature bits").
func TestFeatureBitNumbers(t *testing.T) {
	cases := []struct {
		f   Feature
		bit uint
	}{
		{NetCsum, 0}, {NetGuestCsum, 1}, {NetCtrlGuestOffload, 2}, {NetMTU, 3},
		{NetMAC, 5}, {NetGSO, 6}, {NetGuestTSO4, 7}, {NetGuestTSO6, 8},
		{NetGuestECN, 9}, {NetGuestUFO, 10}, {NetHostTSO4, 11}, {NetHostTSO6, 12},
		{NetHostECN, 13}, {NetHostUFO, 14}, {NetMrgRxbuf, 15}, {NetStatus, 16},
		{NetCtrlVQ, 17}, {NetCtrlRx, 18}, {NetCtrlVLAN, 19}, {NetCtrlRxExtra, 20},
		{NetGuestAnnounce, 21}, {NetMQ, 22}, {NetCtrlMACAddr, 23},
		{NetDeviceStats, 50}, {NetHashTunnel, 51}, {NetVQNotfCoal, 52},
		{NetNotfCoal, 53}, {NetGuestUSO4, 54}, {NetGuestUSO6, 55}, {NetHostUSO, 56},
		{NetHashReport, 57}, {NetGuestHdrLen, 59}, {NetRSS, 60}, {NetRSCExt, 61},
		{NetStandby, 62}, {NetSpeedDuplex, 63},
		{FeatureNotifyOnEmpty, 24}, {FeatureLogAll, 26}, {FeatureAnyLayout, 27},
		{FeatureIndirectDesc, 28}, {FeatureEventIdx, 29}, {FeatureProtocolFeatures, 30},
		{FeatureVersion1, 32}, {FeatureAccessPlatform, 33}, {FeatureRingPacked, 34},
		{FeatureInOrder, 35}, {FeatureOrderPlatform, 36}, {FeatureSRIOV, 37},
		{FeatureNotificationData, 38}, {FeatureNotifConfigData, 39},
		{FeatureRingReset, 40}, {FeatureAdminVQ, 41},
	}
	for _, c := range cases {
		if c.f != 1<<c.bit {
			t.Errorf("%v = %#x, want bit %d", c.f, uint64(c.f), c.bit)
		}
	}
}

func TestFeatureString(t *testing.T) {
	cases := []struct {
		f    Feature
		want string
	}{
		{0, "none"},
		{NetCsum, "CSUM"},
		{NetCsum | NetHostTSO4 | FeatureVersion1, "CSUM|HOST_TSO4|VERSION_1"},
		{1 << 4, "bit4"},
		{NetMQ | 1<<58, "MQ|bit58"},
	}
	for _, c := range cases {
		if got := c.f.String(); got != c.want {
			t.Errorf("%#x.String() = %q, want %q", uint64(c.f), got, c.want)
		}
	}
}

func TestHdrLen(t *testing.T) {
	if got := HdrLen(uint64(0)); got != 10 {
		t.Errorf("HdrLen(0) = %d, want 10", got)
	}
	if got := HdrLen(FeatureVersion1); got != 12 {
		t.Errorf("HdrLen(VERSION_1) = %d, want 12", got)
	}
	if got := HdrLen(uint64(NetMrgRxbuf)); got != 12 {
		t.Errorf("HdrLen(MRG_RXBUF) = %d, want 12", got)
	}
	if got := HdrLen(NetCsum | NetGuestCsum); got != 10 {
		t.Errorf("HdrLen(CSUM|GUEST_CSUM) = %d, want 10", got)
	}
}
