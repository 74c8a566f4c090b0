package vnet

import (
	"fmt"
	"math/bits"
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
