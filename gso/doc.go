// Package gso decides whether a guest's GSO super-packet can go to the
// backend whole, and segments it in software when it cannot, byte for byte as
// the Linux kernel would.
//
// The TX path calls, per packet:
//
//	m, _ := gso.ParseHead(head, frameLen, hdr) // or gso.Parse(frame, hdr)
//	switch dec, reason := gso.Decide(m, features, limits, policy); dec {
//	case gso.DecisionPassWhole:    // write hdr + frame unchanged (no copy)
//	case gso.DecisionPassPlain:    // write m.PlainVnetHdr() + frame unchanged
//	case gso.DecisionCompleteCsum: // gso.FinishCsum / gso.CompleteCsum, zero header
//	case gso.DecisionSegment:      // gso.Segment into scratch buffers
//	case gso.DecisionResegment:    // gso.Resegment: header scratch + views of the frame
//	case gso.DecisionDrop:         // count reason
//	}
//
// Everything is pure (no I/O) and allocation-free: outputs go into
// caller-provided buffers. Frames are accepted as lists of byte slices (the
// guest buffers of a descriptor chain), so a super-packet is never
// linearised: Segment copies each payload byte once into its segment and
// Resegment copies none. Only the headers must be contiguous for parsing
// (ParseHead says ReasonHeadTooShort otherwise).
//
// Parse mirrors virtio_net_hdr_to_skb() and the header checks of the
// kernel's GSO callbacks; Decide mirrors netif_skb_features() /
// gso_features_check() / harmonize_features() / net_gso_ok(); Segment
// mirrors skb_gso_segment() with tcp_gso_segment(), __udp_gso_segment() and
// the UFO fragmenters; Resegment has no kernel counterpart (see
// docs/gso.md). Kernel tests in this package compare Segment's output with
// the kernel's byte for byte.
package gso
