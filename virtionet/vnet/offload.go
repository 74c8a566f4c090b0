package vnet

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Offloads is what a backend takes whole on transmit: partial checksums and
// GSO super-packets by type, i.e. the NETIF_F_* bits of the device a packet
// would leave through, reduced to what virtio can express. backend reports
// it (Capabilities.Offloads) and gso decides with it; being one type, the
// two cannot drift apart.
type Offloads uint32

const (
	// OffloadCSUM: the backend finishes partial checksums (NEEDS_CSUM), for
	// any protocol: NETIF_F_HW_CSUM, which is what a tap has (tun.c
	// set_offload: TUN_F_CSUM -> NETIF_F_HW_CSUM).
	OffloadCSUM   Offloads = 1 << iota
	OffloadTSO4            // GSO_TCPV4: NETIF_F_TSO
	OffloadTSO6            // GSO_TCPV6: NETIF_F_TSO6
	OffloadTSOECN          // the GSO_ECN bit on TCP super-packets: NETIF_F_TSO_ECN
	OffloadUSO             // GSO_UDP_L4, IPv4 and IPv6: NETIF_F_GSO_UDP_L4
	OffloadUFO             // GSO_UDP: NETIF_F_UFO (gone from the kernel; taps still accept GSO_UDP writes)
	// OffloadCSUMProtoSpecific narrows OffloadCSUM to NETIF_F_IP_CSUM |
	// NETIF_F_IPV6_CSUM semantics: no checksum offload (hence no TSO6/USO)
	// for IPv6 packets with extension headers (gso_features_check), and none
	// for multi-tagged VLAN packets (vlan_features_check keeps only
	// NETIF_F_HW_CSUM). A tap does not set it.
	OffloadCSUMProtoSpecific
)

var offloadNames = [...]string{"csum", "tso4", "tso6", "tso_ecn", "uso", "ufo", "csum_proto_specific"}

// String lists the offloads, e.g. "csum|tso4|tso6", or "none"; bits without
// a name are shown in hex. It allocates: not for the per-packet path.
func (o Offloads) String() string {
	if o == 0 {
		return "none"
	}
	var b strings.Builder
	for i, n := range offloadNames {
		if o&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n)
		}
	}
	if rest := o &^ (1<<len(offloadNames) - 1); rest != 0 {
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		fmt.Fprintf(&b, "%#x", uint32(rest))
	}
	return b.String()
}

// TUN_F_* flags for TUNSETOFFLOAD (include/uapi/linux/if_tun.h): what a tap
// or macvtap may hand us on read.
const (
	TunFCsum   = unix.TUN_F_CSUM
	TunFTSO4   = unix.TUN_F_TSO4
	TunFTSO6   = unix.TUN_F_TSO6
	TunFTSOECN = unix.TUN_F_TSO_ECN
	TunFUFO    = unix.TUN_F_UFO
	TunFUSO4   = unix.TUN_F_USO4
	TunFUSO6   = unix.TUN_F_USO6
)

// TunOffloads maps the guest's acked virtio features to the TUN_F_* flags
// a tap or macvtap will take: GUEST_CSUM->CSUM, GUEST_TSO4->TSO4,
// GUEST_TSO6->TSO6, GUEST_ECN->TSO_ECN, GUEST_UFO->UFO, and
// GUEST_USO4+GUEST_USO6->USO4|USO6 only together.
//
// The kernel's rules (tun.c set_offload, tap.c set_offload) decide the
// shape: every GSO flag is only taken together with TUN_F_CSUM (without it
// any other bit is EINVAL), TSO_ECN only beside TSO4 or TSO6, and USO only as
// the pair (one alone is an unknown bit). A guest may ack GUEST_TSO4 without
// GUEST_CSUM (QEMU's csum=off,guest_csum=off masks GUEST_CSUM only), so the
// flags follow the rules rather than the bits one by one: such a guest gets
// plain, fully checksummed frames, which it can always take. HOST_* bits do
// not matter here: they concern what the guest sends, which the tap accepts
// regardless.
func TunOffloads(guest Feature) uint32 {
	if guest&NetGuestCsum == 0 {
		return 0
	}
	f := uint32(TunFCsum)
	if guest&NetGuestTSO4 != 0 {
		f |= TunFTSO4
	}
	if guest&NetGuestTSO6 != 0 {
		f |= TunFTSO6
	}
	if guest&NetGuestECN != 0 && f&(TunFTSO4|TunFTSO6) != 0 {
		f |= TunFTSOECN
	}
	if guest&NetGuestUFO != 0 {
		f |= TunFUFO
	}
	if guest.Has(NetGuestUSO4 | NetGuestUSO6) {
		f |= TunFUSO4 | TunFUSO6
	}
	return f
}
