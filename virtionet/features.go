package virtionet

import (
	"fmt"
	"math/bits"
	"sort"
	"strings"
)

// Feature is a set of virtio feature bits as exchanged in vhost-user
// GET_FEATURES / SET_FEATURES (a u64: bits 64 and up of the virtio spec, such
// as the UDP tunnel GSO bits 65-68, cannot be negotiated over vhost-user).
type Feature uint64

// Device-independent feature bits (virtio spec 6 "Reserved Feature Bits").
const (
	FeatureNotifyOnEmpty    Feature = 1 << 24 // legacy
	FeatureLogAll           Feature = 1 << 26 // vhost VHOST_F_LOG_ALL (dirty logging), not a virtio bit
	FeatureAnyLayout        Feature = 1 << 27 // legacy; implied by VERSION_1
	FeatureIndirectDesc     Feature = 1 << 28
	FeatureEventIdx         Feature = 1 << 29
	FeatureProtocolFeatures Feature = 1 << 30 // vhost-user VHOST_USER_F_PROTOCOL_FEATURES (the session adds it)
	FeatureVersion1         Feature = 1 << 32
	FeatureAccessPlatform   Feature = 1 << 33 // ex IOMMU_PLATFORM
	FeatureRingPacked       Feature = 1 << 34
	FeatureInOrder          Feature = 1 << 35
	FeatureOrderPlatform    Feature = 1 << 36
	FeatureSRIOV            Feature = 1 << 37
	FeatureNotificationData Feature = 1 << 38
	FeatureNotifConfigData  Feature = 1 << 39
	FeatureRingReset        Feature = 1 << 40
	FeatureAdminVQ          Feature = 1 << 41
	FeatureSuspend          Feature = 1 << 43 // proposal; earlier drafts used 42
)

// virtio-net feature bits (virtio spec 5.1.3 "Feature bits",
// device-types/net/description.tex).
const (
	NetCsum             Feature = 1 << 0 // device handles packets with partial checksum (guest TX csum offload)
	NetGuestCsum        Feature = 1 << 1 // driver handles packets with partial checksum (guest RX)
	NetCtrlGuestOffload Feature = 1 << 2
	NetMTU              Feature = 1 << 3
	NetMAC              Feature = 1 << 5
	NetGSO              Feature = 1 << 6 // legacy "any GSO"
	NetGuestTSO4        Feature = 1 << 7
	NetGuestTSO6        Feature = 1 << 8
	NetGuestECN         Feature = 1 << 9
	NetGuestUFO         Feature = 1 << 10
	NetHostTSO4         Feature = 1 << 11
	NetHostTSO6         Feature = 1 << 12
	NetHostECN          Feature = 1 << 13
	NetHostUFO          Feature = 1 << 14
	NetMrgRxbuf         Feature = 1 << 15
	NetStatus           Feature = 1 << 16
	NetCtrlVQ           Feature = 1 << 17
	NetCtrlRx           Feature = 1 << 18
	NetCtrlVLAN         Feature = 1 << 19
	NetCtrlRxExtra      Feature = 1 << 20
	NetGuestAnnounce    Feature = 1 << 21
	NetMQ               Feature = 1 << 22
	NetCtrlMACAddr      Feature = 1 << 23
	NetGuestRSC4        Feature = 1 << 41 // legacy only (Windows certification); overlaps ADMIN_VQ in modern devices
	NetGuestRSC6        Feature = 1 << 42 // legacy only
	NetDeviceStats      Feature = 1 << 50
	NetHashTunnel       Feature = 1 << 51
	NetVQNotfCoal       Feature = 1 << 52
	NetNotfCoal         Feature = 1 << 53
	NetGuestUSO4        Feature = 1 << 54
	NetGuestUSO6        Feature = 1 << 55
	NetHostUSO          Feature = 1 << 56
	NetHashReport       Feature = 1 << 57
	NetGuestHdrLen      Feature = 1 << 59
	NetRSS              Feature = 1 << 60
	NetRSCExt           Feature = 1 << 61
	NetStandby          Feature = 1 << 62
	NetSpeedDuplex      Feature = 1 << 63
)

// featureNames names every bit above, in the spec's spelling, for String.
var featureNames = map[Feature]string{
	FeatureNotifyOnEmpty:    "NOTIFY_ON_EMPTY",
	FeatureLogAll:           "LOG_ALL",
	FeatureAnyLayout:        "ANY_LAYOUT",
	FeatureIndirectDesc:     "INDIRECT_DESC",
	FeatureEventIdx:         "EVENT_IDX",
	FeatureProtocolFeatures: "PROTOCOL_FEATURES",
	FeatureVersion1:         "VERSION_1",
	FeatureAccessPlatform:   "ACCESS_PLATFORM",
	FeatureRingPacked:       "RING_PACKED",
	FeatureInOrder:          "IN_ORDER",
	FeatureOrderPlatform:    "ORDER_PLATFORM",
	FeatureSRIOV:            "SR_IOV",
	FeatureNotificationData: "NOTIFICATION_DATA",
	FeatureNotifConfigData:  "NOTIF_CONFIG_DATA",
	FeatureRingReset:        "RING_RESET",
	FeatureAdminVQ:          "ADMIN_VQ/GUEST_RSC4", // bit 41: ADMIN_VQ (modern), GUEST_RSC4 (legacy net)
	NetGuestRSC6:            "GUEST_RSC6",
	FeatureSuspend:          "SUSPEND",

	NetCsum:             "CSUM",
	NetGuestCsum:        "GUEST_CSUM",
	NetCtrlGuestOffload: "CTRL_GUEST_OFFLOADS",
	NetMTU:              "MTU",
	NetMAC:              "MAC",
	NetGSO:              "GSO",
	NetGuestTSO4:        "GUEST_TSO4",
	NetGuestTSO6:        "GUEST_TSO6",
	NetGuestECN:         "GUEST_ECN",
	NetGuestUFO:         "GUEST_UFO",
	NetHostTSO4:         "HOST_TSO4",
	NetHostTSO6:         "HOST_TSO6",
	NetHostECN:          "HOST_ECN",
	NetHostUFO:          "HOST_UFO",
	NetMrgRxbuf:         "MRG_RXBUF",
	NetStatus:           "STATUS",
	NetCtrlVQ:           "CTRL_VQ",
	NetCtrlRx:           "CTRL_RX",
	NetCtrlVLAN:         "CTRL_VLAN",
	NetCtrlRxExtra:      "CTRL_RX_EXTRA",
	NetGuestAnnounce:    "GUEST_ANNOUNCE",
	NetMQ:               "MQ",
	NetCtrlMACAddr:      "CTRL_MAC_ADDR",
	NetDeviceStats:      "DEVICE_STATS",
	NetHashTunnel:       "HASH_TUNNEL",
	NetVQNotfCoal:       "VQ_NOTF_COAL",
	NetNotfCoal:         "NOTF_COAL",
	NetGuestUSO4:        "GUEST_USO4",
	NetGuestUSO6:        "GUEST_USO6",
	NetHostUSO:          "HOST_USO",
	NetHashReport:       "HASH_REPORT",
	NetGuestHdrLen:      "GUEST_HDRLEN",
	NetRSS:              "RSS",
	NetRSCExt:           "RSC_EXT",
	NetStandby:          "STANDBY",
	NetSpeedDuplex:      "SPEED_DUPLEX",
}

// String lists the set bits by name, lowest bit first, joined by "|"
// ("none" for the empty set, "bitN" for a bit without a name).
func (f Feature) String() string {
	if f == 0 {
		return "none"
	}
	var sb strings.Builder
	for rest := uint64(f); rest != 0; rest &= rest - 1 {
		bit := Feature(1) << bits.TrailingZeros64(rest)
		if sb.Len() > 0 {
			sb.WriteByte('|')
		}
		if name, ok := featureNames[bit]; ok {
			sb.WriteString(name)
		} else {
			fmt.Fprintf(&sb, "bit%d", bits.TrailingZeros64(rest))
		}
	}
	return sb.String()
}

// Has reports whether every bit of want is in f.
func (f Feature) Has(want Feature) bool { return f&want == want }

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
const QEMUUserFeatureBits = FeatureNotifyOnEmpty | FeatureNotificationData |
	FeatureIndirectDesc | FeatureEventIdx | FeatureAnyLayout | FeatureVersion1 |
	NetCsum | NetGuestCsum | NetGSO | NetGuestTSO4 | NetGuestTSO6 | NetGuestECN |
	NetGuestUFO | NetHostTSO4 | NetHostTSO6 | NetHostECN | NetHostUFO |
	NetMrgRxbuf | NetMTU | FeatureAccessPlatform | FeatureRingPacked |
	FeatureRingReset | FeatureInOrder | NetRSS | NetRSCExt | NetHashReport |
	NetGuestUSO4 | NetGuestUSO6 | NetHostUSO | NetGuestAnnounce | NetMQ

// FrontEndProvided are bits that vhost-user front-ends implement themselves
// (see QEMUUserFeatureBits). Dependency checks on an offer treat them as
// present even though the back-end does not offer them.
const FrontEndProvided = NetCtrlVQ

// featureDep says: bit requires at least one bit of anyOf (virtio spec 5.1.3.1
// "Feature bit requirements").
type featureDep struct {
	bit   Feature
	anyOf Feature
}

var featureDeps = [...]featureDep{
	{NetGuestTSO4, NetGuestCsum},
	{NetGuestTSO6, NetGuestCsum},
	{NetGuestECN, NetGuestTSO4 | NetGuestTSO6},
	{NetGuestUFO, NetGuestCsum},
	{NetGuestUSO4, NetGuestCsum},
	{NetGuestUSO6, NetGuestCsum},
	{NetHostTSO4, NetCsum},
	{NetHostTSO6, NetCsum},
	{NetHostECN, NetHostTSO4 | NetHostTSO6},
	{NetHostUFO, NetCsum},
	{NetHostUSO, NetCsum},
	{NetRSCExt, NetHostTSO4 | NetHostTSO6},
	{NetCtrlRx, NetCtrlVQ},
	{NetCtrlVLAN, NetCtrlVQ},
	{NetCtrlRxExtra, NetCtrlVQ},
	{NetGuestAnnounce, NetCtrlVQ},
	{NetMQ, NetCtrlVQ},
	{NetCtrlMACAddr, NetCtrlVQ},
	{NetVQNotfCoal, NetCtrlVQ},
	{NetNotfCoal, NetCtrlVQ},
	{NetRSS, NetCtrlVQ},
	{NetHashTunnel, NetCtrlVQ},
}

// CloseDeps removes from f every bit whose required bits are missing, until no
// more change (GUEST_ECN goes when both GUEST_TSO go, which go when GUEST_CSUM
// goes). Bits in provided count as present for the check but are not added.
func CloseDeps(f, provided Feature) Feature {
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
const DefaultOffer = FeatureVersion1 | NetMrgRxbuf | FeatureEventIdx |
	FeatureIndirectDesc | NetCsum | NetGuestCsum | NetHostTSO4 | NetHostTSO6 |
	NetHostECN | NetHostUSO | NetGuestTSO4 | NetGuestTSO6 | NetGuestECN |
	NetMTU | NetMQ | NetGuestAnnounce | FeatureRingPacked | FeatureInOrder

// toggleBits maps the CLI names (--offload-NAME=on|off) to feature bits.
var toggleBits = map[string]Feature{
	"csum":           NetCsum,
	"guest-csum":     NetGuestCsum,
	"tso4":           NetHostTSO4,
	"tso6":           NetHostTSO6,
	"ecn":            NetHostECN,
	"uso":            NetHostUSO,
	"guest-tso4":     NetGuestTSO4,
	"guest-tso6":     NetGuestTSO6,
	"guest-ecn":      NetGuestECN,
	"guest-uso":      NetGuestUSO4 | NetGuestUSO6,
	"mrg-rxbuf":      NetMrgRxbuf,
	"event-idx":      FeatureEventIdx,
	"indirect":       FeatureIndirectDesc,
	"mtu":            NetMTU,
	"mq":             NetMQ,
	"guest-announce": NetGuestAnnounce,
	"packed":         FeatureRingPacked,
	"in-order":       FeatureInOrder,
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
func ToggleBits(name string) (Feature, bool) {
	f, ok := toggleBits[name]
	return f, ok
}

// Toggles records per-feature overrides from the command line. The zero value
// changes nothing.
type Toggles struct {
	On, Off Feature
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
func Offer(b BackendOffloads, t Toggles) (offer, dropped Feature) {
	want := DefaultOffer
	if b.RxUSO {
		want |= NetGuestUSO4 | NetGuestUSO6
	}
	want = (want | t.On) &^ t.Off
	offer = want
	if !b.RxUSO {
		offer &^= NetGuestUSO4 | NetGuestUSO6
	}
	if !b.TxUSO {
		offer &^= NetHostUSO
	}
	offer = CloseDeps(offer, FrontEndProvided)
	return offer, want &^ offer
}
