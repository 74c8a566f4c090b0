package virtionet

import (
	"strings"
	"testing"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

func TestCloseDeps(t *testing.T) {
	cases := []struct {
		name         string
		in, provided vnet.Feature
		want         vnet.Feature
	}{
		{"host tso needs csum", vnet.NetHostTSO4 | vnet.NetHostTSO6 | vnet.NetHostECN | vnet.NetHostUSO | vnet.NetHostUFO, 0, 0},
		{"host ecn needs a tso", vnet.NetCsum | vnet.NetHostECN, 0, vnet.NetCsum},
		{"host ecn with tso6 only", vnet.NetCsum | vnet.NetHostTSO6 | vnet.NetHostECN, 0, vnet.NetCsum | vnet.NetHostTSO6 | vnet.NetHostECN},
		{"guest chain", vnet.NetGuestTSO4 | vnet.NetGuestECN | vnet.NetGuestUSO4 | vnet.NetGuestUFO, 0, 0},
		{"guest ecn needs a guest tso", vnet.NetGuestCsum | vnet.NetGuestECN, 0, vnet.NetGuestCsum},
		{"mq needs ctrl vq", vnet.NetMQ | vnet.NetGuestAnnounce, 0, 0},
		{"mq with front-end ctrl vq", vnet.NetMQ | vnet.NetGuestAnnounce, FrontEndProvided, vnet.NetMQ | vnet.NetGuestAnnounce},
		{"rsc ext needs host tso", vnet.NetRSCExt | vnet.NetCsum, 0, vnet.NetCsum},
		{"provided bits not added", vnet.NetCsum, vnet.NetCtrlVQ, vnet.NetCsum},
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
	if offer&vnet.NetHostUSO != 0 {
		t.Errorf("backend without USO writes: offer %v has HOST_USO", offer)
	}
	if dropped != vnet.NetHostUSO {
		t.Errorf("dropped = %v, want HOST_USO (so the CLI says why)", dropped)
	}
	// A toggle cannot force it either.
	var tg Toggles
	if err := tg.Set("uso", true); err != nil {
		t.Fatal(err)
	}
	if offer, _ := Offer(BackendOffloads{}, tg); offer&vnet.NetHostUSO != 0 {
		t.Errorf("--offload-uso=on forced HOST_USO onto a backend that refuses USO writes")
	}
	if offer, _ := Offer(BackendOffloads{TxUSO: true}, Toggles{}); offer&vnet.NetHostUSO == 0 {
		t.Errorf("backend with USO writes: HOST_USO missing from %v", offer)
	}
}

func TestOffer(t *testing.T) {
	offer, dropped := Offer(BackendOffloads{TxUSO: true}, Toggles{})
	if offer != DefaultOffer || dropped != 0 {
		t.Errorf("Offer(noUSO) = %v dropped %v, want %v", offer, dropped, DefaultOffer)
	}
	if offer&vnet.NetCtrlVQ != 0 {
		t.Errorf("offer includes CTRL_VQ; QEMU provides it")
	}
	offer, _ = Offer(BackendOffloads{RxUSO: true, TxUSO: true}, Toggles{})
	if !offer.Has(vnet.NetGuestUSO4 | vnet.NetGuestUSO6) {
		t.Errorf("Offer(USO) = %v, want GUEST_USO4|GUEST_USO6", offer)
	}

	var tg Toggles
	if err := tg.Parse("--offload-csum=off"); err != nil {
		t.Fatal(err)
	}
	offer, dropped = Offer(BackendOffloads{RxUSO: true, TxUSO: true}, tg)
	if offer&(vnet.NetCsum|vnet.NetHostTSO4|vnet.NetHostTSO6|vnet.NetHostECN|vnet.NetHostUSO) != 0 {
		t.Errorf("csum=off: offer %v still has host offloads", offer)
	}
	if dropped != vnet.NetHostTSO4|vnet.NetHostTSO6|vnet.NetHostECN|vnet.NetHostUSO {
		t.Errorf("csum=off: dropped %v", dropped)
	}
	if !offer.Has(vnet.NetGuestCsum | vnet.NetGuestTSO4 | vnet.NetGuestUSO4) {
		t.Errorf("csum=off removed guest offloads: %v", offer)
	}

	tg = Toggles{}
	for _, a := range []string{"guest-uso=on", "offload-mq=off", "tso4=off"} {
		if err := tg.Parse(a); err != nil {
			t.Fatal(err)
		}
	}
	offer, dropped = Offer(BackendOffloads{TxUSO: true}, tg)
	if offer&(vnet.NetGuestUSO4|vnet.NetGuestUSO6|vnet.NetMQ|vnet.NetHostTSO4) != 0 {
		t.Errorf("offer %v", offer)
	}
	if dropped != vnet.NetGuestUSO4|vnet.NetGuestUSO6 {
		t.Errorf("guest-uso=on without backend USO: dropped %v, want GUEST_USO4|GUEST_USO6", dropped)
	}
	if !offer.Has(vnet.NetHostECN | vnet.NetHostTSO6) {
		t.Errorf("tso4=off must keep HOST_ECN via HOST_TSO6: %v", offer)
	}

	// Last setting wins.
	tg = Toggles{}
	_ = tg.Set("event-idx", false)
	_ = tg.Set("event-idx", true)
	if offer, _ = Offer(BackendOffloads{TxUSO: true}, tg); !offer.Has(vnet.FeatureEventIdx) {
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
	all := DefaultOffer | vnet.NetGuestUSO4 | vnet.NetGuestUSO6
	if missing := all &^ QEMUUserFeatureBits; missing != 0 {
		t.Errorf("offered bits QEMU would not pass to the guest: %v", missing)
	}
	if QEMUUserFeatureBits&vnet.NetCtrlVQ != 0 {
		t.Errorf("CTRL_VQ is QEMU-owned")
	}
}
