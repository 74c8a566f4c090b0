package virtionet

import (
	"strings"
	"testing"

	"github.com/vhostd/vhostd/backend"
)

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

func TestCloseDeps(t *testing.T) {
	cases := []struct {
		name         string
		in, provided Feature
		want         Feature
	}{
		{"host tso needs csum", NetHostTSO4 | NetHostTSO6 | NetHostECN | NetHostUSO | NetHostUFO, 0, 0},
		{"host ecn needs a tso", NetCsum | NetHostECN, 0, NetCsum},
		{"host ecn with tso6 only", NetCsum | NetHostTSO6 | NetHostECN, 0, NetCsum | NetHostTSO6 | NetHostECN},
		{"guest chain", NetGuestTSO4 | NetGuestECN | NetGuestUSO4 | NetGuestUFO, 0, 0},
		{"guest ecn needs a guest tso", NetGuestCsum | NetGuestECN, 0, NetGuestCsum},
		{"mq needs ctrl vq", NetMQ | NetGuestAnnounce, 0, 0},
		{"mq with front-end ctrl vq", NetMQ | NetGuestAnnounce, FrontEndProvided, NetMQ | NetGuestAnnounce},
		{"rsc ext needs host tso", NetRSCExt | NetCsum, 0, NetCsum},
		{"provided bits not added", NetCsum, NetCtrlVQ, NetCsum},
		{"default offer is closed", DefaultOffer, FrontEndProvided, DefaultOffer},
	}
	for _, c := range cases {
		if got := CloseDeps(c.in, c.provided); got != c.want {
			t.Errorf("%s: CloseDeps(%v) = %v, want %v", c.name, c.in, got, c.want)
		}
	}
}

// TestOfferHostUSOFollowsBackend: HOST_USO is offered only when the backend
// takes USO super-packets whole (a tap on Linux 6.2+). Before, it was offered
// whatever the tap could do, and with --policy defer a guest's USO packets
// then hit EINVAL on kernels before 6.2 and were dropped (issue 10, point 5).
func TestOfferHostUSOFollowsBackend(t *testing.T) {
	offer, dropped := Offer(BackendOffloads{}, Toggles{})
	if offer&NetHostUSO != 0 {
		t.Errorf("backend without USO writes: offer %v has HOST_USO", offer)
	}
	if dropped != NetHostUSO {
		t.Errorf("dropped = %v, want HOST_USO (so the CLI says why)", dropped)
	}
	// A toggle cannot force it either.
	var tg Toggles
	if err := tg.Set("uso", true); err != nil {
		t.Fatal(err)
	}
	if offer, _ := Offer(BackendOffloads{}, tg); offer&NetHostUSO != 0 {
		t.Errorf("--offload-uso=on forced HOST_USO onto a backend that refuses USO writes")
	}
	if offer, _ := Offer(BackendOffloads{TxUSO: true}, Toggles{}); offer&NetHostUSO == 0 {
		t.Errorf("backend with USO writes: HOST_USO missing from %v", offer)
	}
}

func TestOffer(t *testing.T) {
	offer, dropped := Offer(BackendOffloads{TxUSO: true}, Toggles{})
	if offer != DefaultOffer || dropped != 0 {
		t.Errorf("Offer(noUSO) = %v dropped %v, want %v", offer, dropped, DefaultOffer)
	}
	if offer&NetCtrlVQ != 0 {
		t.Errorf("offer includes CTRL_VQ; QEMU provides it")
	}
	offer, _ = Offer(BackendOffloads{RxUSO: true, TxUSO: true}, Toggles{})
	if !offer.Has(NetGuestUSO4 | NetGuestUSO6) {
		t.Errorf("Offer(USO) = %v, want GUEST_USO4|GUEST_USO6", offer)
	}

	var tg Toggles
	if err := tg.Parse("--offload-csum=off"); err != nil {
		t.Fatal(err)
	}
	offer, dropped = Offer(BackendOffloads{RxUSO: true, TxUSO: true}, tg)
	if offer&(NetCsum|NetHostTSO4|NetHostTSO6|NetHostECN|NetHostUSO) != 0 {
		t.Errorf("csum=off: offer %v still has host offloads", offer)
	}
	if dropped != NetHostTSO4|NetHostTSO6|NetHostECN|NetHostUSO {
		t.Errorf("csum=off: dropped %v", dropped)
	}
	if !offer.Has(NetGuestCsum | NetGuestTSO4 | NetGuestUSO4) {
		t.Errorf("csum=off removed guest offloads: %v", offer)
	}

	tg = Toggles{}
	for _, a := range []string{"guest-uso=on", "offload-mq=off", "tso4=off"} {
		if err := tg.Parse(a); err != nil {
			t.Fatal(err)
		}
	}
	offer, dropped = Offer(BackendOffloads{TxUSO: true}, tg)
	if offer&(NetGuestUSO4|NetGuestUSO6|NetMQ|NetHostTSO4) != 0 {
		t.Errorf("offer %v", offer)
	}
	if dropped != NetGuestUSO4|NetGuestUSO6 {
		t.Errorf("guest-uso=on without backend USO: dropped %v, want GUEST_USO4|GUEST_USO6", dropped)
	}
	if !offer.Has(NetHostECN | NetHostTSO6) {
		t.Errorf("tso4=off must keep HOST_ECN via HOST_TSO6: %v", offer)
	}

	// Last setting wins.
	tg = Toggles{}
	_ = tg.Set("event-idx", false)
	_ = tg.Set("event-idx", true)
	if offer, _ = Offer(BackendOffloads{TxUSO: true}, tg); !offer.Has(FeatureEventIdx) {
		t.Errorf("event-idx off then on: %v", offer)
	}
}

func TestTogglesErrors(t *testing.T) {
	var tg Toggles
	for _, a := range []string{"tso4", "tso5=off", "tso4=maybe", "--offload-=on"} {
		if err := tg.Parse(a); err == nil {
			t.Errorf("Parse(%q) succeeded", a)
		}
	}
	err := tg.Set("tso5", true)
	if err == nil || !strings.Contains(err.Error(), "guest-tso4") {
		t.Errorf("unknown name error should list valid names: %v", err)
	}
	for _, n := range ToggleNames() {
		if f, ok := ToggleBits(n); !ok || f == 0 {
			t.Errorf("ToggleBits(%q) = %v, %v", n, f, ok)
		}
	}
	if len(ToggleNames()) != 18 {
		t.Errorf("ToggleNames() = %v", ToggleNames())
	}
}

// TestQEMUPassThrough checks that everything vhostd offers by default is in
// QEMU's user_feature_bits, so QEMU does not silently strip it, and that the
// only dependency the offer leans on outside it is CTRL_VQ.
func TestQEMUPassThrough(t *testing.T) {
	all := DefaultOffer | NetGuestUSO4 | NetGuestUSO6
	if missing := all &^ QEMUUserFeatureBits; missing != 0 {
		t.Errorf("offered bits QEMU would not pass to the guest: %v", missing)
	}
	if QEMUUserFeatureBits&NetCtrlVQ != 0 {
		t.Errorf("CTRL_VQ is QEMU-owned")
	}
}

// TestTunOffloadMapping cross-checks backend.TunOffloadFlags against the
// virtio bit numbers defined here (backend cannot import virtionet).
func TestTunOffloadMapping(t *testing.T) {
	cases := []struct {
		acked Feature
		want  uint32
	}{
		{0, 0},
		{NetGuestCsum, backend.TunFCsum},
		{NetGuestCsum | NetGuestTSO4 | NetGuestTSO6 | NetGuestECN,
			backend.TunFCsum | backend.TunFTSO4 | backend.TunFTSO6 | backend.TunFTSOECN},
		{NetGuestCsum | NetGuestUSO4, backend.TunFCsum},
		{NetGuestCsum | NetGuestUSO4 | NetGuestUSO6, backend.TunFCsum | backend.TunFUSO4 | backend.TunFUSO6},
		{NetGuestCsum | NetGuestUFO, backend.TunFCsum | backend.TunFUFO},
		// Host-side bits do not program the tap's transmit offloads.
		{NetCsum | NetHostTSO4 | NetHostUSO, 0},
	}
	for _, c := range cases {
		if got := backend.TunOffloadFlags(uint64(c.acked)); got != c.want {
			t.Errorf("TunOffloadFlags(%v) = %#x, want %#x", c.acked, got, c.want)
		}
	}
}
