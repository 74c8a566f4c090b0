package virtionet

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

// QEMUUserFeatureBits are the bits QEMU's vhost-user net client negotiates with
// the back-end: `user_feature_bits` in hw/net/vhost_net.c (QEMU 9.x/10.x).
// For each listed bit QEMU clears it from the guest's offer when the back-end's
// GET_FEATURES lacks it, and SET_FEATURES carries only listed bits the guest
// acked. Every other bit (CTRL_VQ, CTRL_RX, CTRL_VLAN, CTRL_RX_EXTRA,
// CTRL_MAC_ADDR, CTRL_GUEST_OFFLOADS, STATUS, MAC, SPEED_DUPLEX, ...) is
// decided by QEMU alone: QEMU emulates the control virtqueue and config space
// itself and never tells the back-end. That is why vhostd offers MQ without
// CTRL_VQ: the guest sees CTRL_VQ from QEMU, and the back-end only serves the
// data queue pairs. (DPDK's virtio-user front-end likewise emulates the
// control queue itself.)
const QEMUUserFeatureBits = vnet.FeatureNotifyOnEmpty | vnet.FeatureNotificationData |
	vnet.FeatureIndirectDesc | vnet.FeatureEventIdx | vnet.FeatureAnyLayout | vnet.FeatureVersion1 |
	vnet.NetCsum | vnet.NetGuestCsum | vnet.NetGSO | vnet.NetGuestTSO4 | vnet.NetGuestTSO6 | vnet.NetGuestECN |
	vnet.NetGuestUFO | vnet.NetHostTSO4 | vnet.NetHostTSO6 | vnet.NetHostECN | vnet.NetHostUFO |
	vnet.NetMrgRxbuf | vnet.NetMTU | vnet.FeatureAccessPlatform | vnet.FeatureRingPacked |
	vnet.FeatureRingReset | vnet.FeatureInOrder | vnet.NetRSS | vnet.NetRSCExt | vnet.NetHashReport |
	vnet.NetGuestUSO4 | vnet.NetGuestUSO6 | vnet.NetHostUSO | vnet.NetGuestAnnounce | vnet.NetMQ

// FrontEndProvided are bits that vhost-user front-ends implement themselves
// (see QEMUUserFeatureBits). Dependency checks on an offer treat them as
// present even though the back-end does not offer them.
const FrontEndProvided = vnet.NetCtrlVQ

// featureDep says: bit requires at least one bit of anyOf (virtio spec 5.1.3.1
// "Feature bit requirements").
type featureDep struct {
	bit   vnet.Feature
	anyOf vnet.Feature
}

var featureDeps = [...]featureDep{
	{vnet.NetGuestTSO4, vnet.NetGuestCsum},
	{vnet.NetGuestTSO6, vnet.NetGuestCsum},
	{vnet.NetGuestECN, vnet.NetGuestTSO4 | vnet.NetGuestTSO6},
	{vnet.NetGuestUFO, vnet.NetGuestCsum},
	{vnet.NetGuestUSO4, vnet.NetGuestCsum},
	{vnet.NetGuestUSO6, vnet.NetGuestCsum},
	{vnet.NetHostTSO4, vnet.NetCsum},
	{vnet.NetHostTSO6, vnet.NetCsum},
	{vnet.NetHostECN, vnet.NetHostTSO4 | vnet.NetHostTSO6},
	{vnet.NetHostUFO, vnet.NetCsum},
	{vnet.NetHostUSO, vnet.NetCsum},
	{vnet.NetRSCExt, vnet.NetHostTSO4 | vnet.NetHostTSO6},
	{vnet.NetCtrlRx, vnet.NetCtrlVQ},
	{vnet.NetCtrlVLAN, vnet.NetCtrlVQ},
	{vnet.NetCtrlRxExtra, vnet.NetCtrlVQ},
	{vnet.NetGuestAnnounce, vnet.NetCtrlVQ},
	{vnet.NetMQ, vnet.NetCtrlVQ},
	{vnet.NetCtrlMACAddr, vnet.NetCtrlVQ},
	{vnet.NetVQNotfCoal, vnet.NetCtrlVQ},
	{vnet.NetNotfCoal, vnet.NetCtrlVQ},
	{vnet.NetRSS, vnet.NetCtrlVQ},
	{vnet.NetHashTunnel, vnet.NetCtrlVQ},
}

// CloseDeps removes from f every bit whose required bits are missing, until no
// more change (GUEST_ECN goes when both GUEST_TSO go, which go when GUEST_CSUM
// goes). Bits in provided count as present for the check but are not added.
func CloseDeps(f, provided vnet.Feature) vnet.Feature {
	for {
		changed := false
		have := f | provided
		for _, d := range featureDeps {
			if f&d.bit != 0 && have&d.anyOf == 0 {
				f &^= d.bit
				have &^= d.bit
				changed = true
			}
		}
		if !changed {
			return f
		}
	}
}

// DefaultOffer is what vhostd offers before toggles (issue 3 "Feature offer").
// GUEST_USO4/6 are added by Offer only when the backend accepted
// TUN_F_USO4|TUN_F_USO6: the tap may then hand us USO super-packets to pass to
// the guest.
//
// GUEST_ANNOUNCE lets the guest announce itself after a live migration
// (QEMU raises VIRTIO_NET_S_ANNOUNCE and the guest sends gratuitous ARP and
// unsolicited neighbour advertisements); QEMU then skips SEND_RARP. Guests
// without it get vhostd's RARP (SEND_RARP).
//
// RING_PACKED: the front-end may pick packed virtqueues (QEMU packed=on,
// DPDK virtio-user packed_vq=1); vhostd serves either layout. IN_ORDER:
// vhostd uses buffers in the order they were made available, and returns a
// TX batch as one used entry; DPDK's virtio-user then picks its in-order
// datapath.
const DefaultOffer = vnet.FeatureVersion1 | vnet.NetMrgRxbuf | vnet.FeatureEventIdx |
	vnet.FeatureIndirectDesc | vnet.NetCsum | vnet.NetGuestCsum | vnet.NetHostTSO4 | vnet.NetHostTSO6 |
	vnet.NetHostECN | vnet.NetHostUSO | vnet.NetGuestTSO4 | vnet.NetGuestTSO6 | vnet.NetGuestECN |
	vnet.NetMTU | vnet.NetMQ | vnet.NetGuestAnnounce | vnet.FeatureRingPacked | vnet.FeatureInOrder

// toggleBits maps the CLI names (--offload-NAME=on|off) to feature bits.
var toggleBits = map[string]vnet.Feature{
	"csum":           vnet.NetCsum,
	"guest-csum":     vnet.NetGuestCsum,
	"tso4":           vnet.NetHostTSO4,
	"tso6":           vnet.NetHostTSO6,
	"ecn":            vnet.NetHostECN,
	"uso":            vnet.NetHostUSO,
	"guest-tso4":     vnet.NetGuestTSO4,
	"guest-tso6":     vnet.NetGuestTSO6,
	"guest-ecn":      vnet.NetGuestECN,
	"guest-uso":      vnet.NetGuestUSO4 | vnet.NetGuestUSO6,
	"mrg-rxbuf":      vnet.NetMrgRxbuf,
	"event-idx":      vnet.FeatureEventIdx,
	"indirect":       vnet.FeatureIndirectDesc,
	"mtu":            vnet.NetMTU,
	"mq":             vnet.NetMQ,
	"guest-announce": vnet.NetGuestAnnounce,
	"packed":         vnet.FeatureRingPacked,
	"in-order":       vnet.FeatureInOrder,
}

// ToggleNames returns the names accepted by Toggles.Set, sorted, for
// registering --offload-NAME flags.
func ToggleNames() []string {
	names := make([]string, 0, len(toggleBits))
	for n := range toggleBits {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ToggleBits returns the feature bits a toggle name controls.
func ToggleBits(name string) (vnet.Feature, bool) {
	f, ok := toggleBits[name]
	return f, ok
}

// Toggles records per-feature overrides from the command line. The zero value
// changes nothing.
type Toggles struct {
	On, Off vnet.Feature
}

// Set records that the feature called name is forced on or off; a later Set
// of the same name wins.
func (t *Toggles) Set(name string, on bool) error {
	f, ok := toggleBits[name]
	if !ok {
		return fmt.Errorf("unknown offload %q: use one of %s", name, strings.Join(ToggleNames(), ", "))
	}
	if on {
		t.On |= f
		t.Off &^= f
	} else {
		t.Off |= f
		t.On &^= f
	}
	return nil
}

// Parse records one toggle written as "NAME=on|off", optionally prefixed by
// "--offload-" or "offload-" (so "--offload-tso4=off", "tso4=off").
func (t *Toggles) Parse(arg string) error {
	s := strings.TrimPrefix(strings.TrimPrefix(arg, "--"), "offload-")
	name, val, found := strings.Cut(s, "=")
	if !found {
		return fmt.Errorf("offload toggle %q: want NAME=on or NAME=off (for example --offload-tso4=off)", arg)
	}
	on, err := ParseOnOff(val)
	if err != nil {
		return fmt.Errorf("offload toggle %q: %w", arg, err)
	}
	return t.Set(name, on)
}

// ParseOnOff accepts on/off, true/false, yes/no and 1/0.
func ParseOnOff(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "on", "true", "yes", "1":
		return true, nil
	case "off", "false", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("value %q is not on or off", s)
}

// BackendOffloads is what a port's backend can carry, as far as the offer
// depends on it.
type BackendOffloads struct {
	// RxUSO: the backend accepted TUN_F_USO4|TUN_F_USO6, so it may hand us
	// USO super-packets for the guest (GUEST_USO4/6).
	RxUSO bool
	// TxUSO: the backend takes USO super-packets whole on write (HOST_USO):
	// a tap or macvtap on Linux 6.2+, the null backend, a guest-to-guest
	// link. Kernels before 6.2 refuse them with EINVAL.
	TxUSO bool
}

// Offer computes the features to offer the front-end: DefaultOffer, plus
// GUEST_USO4/6 when the backend can hand USO super-packets to the guest, less
// HOST_USO when it cannot take them, with the toggles applied, then closed
// under the spec's dependencies (with FrontEndProvided counted as present).
// dropped lists bits that were asked for (by default or by a toggle) but are
// not offered, e.g. HOST_TSO4 when csum=off, or GUEST_USO when the backend
// lacks USO, so the CLI can say why. A toggle cannot force a bit the backend
// lacks: the guest would send packets nothing can carry.
func Offer(b BackendOffloads, t Toggles) (offer, dropped vnet.Feature) {
	want := DefaultOffer
	if b.RxUSO {
		want |= vnet.NetGuestUSO4 | vnet.NetGuestUSO6
	}
	want = (want | t.On) &^ t.Off
	offer = want
	if !b.RxUSO {
		offer &^= vnet.NetGuestUSO4 | vnet.NetGuestUSO6
	}
	if !b.TxUSO {
		offer &^= vnet.NetHostUSO
	}
	offer = CloseDeps(offer, FrontEndProvided)
	return offer, want &^ offer
}
