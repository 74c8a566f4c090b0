// Package vnet is the virtio-net wire format, written once: the feature bits
// (virtio spec 6 and 5.1.3) and their names, the offloads a backend takes
// whole and their mapping to the tun TUN_F_* flags, struct virtio_net_hdr
// (spec 5.1.6) with its flag and gso_type values, the one validator of a
// driver's header (the kernel's virtio_net_hdr_to_skb rules plus the spec's
// 5.1.6.2 MUSTs), and the Internet checksum (RFC 1071).
//
// It imports nothing else from vhostd, so every layer can use it: vhostuser
// for the ring bits, backend for the offload flags, gso for the header
// rules and the checksum, virtionet for all of it. It does not allocate on
// any per-packet path.
package vnet
