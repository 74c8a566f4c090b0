package gso

import "github.com/vhostd/vhostd/virtionet/vnet"

// Partial re-segmentation: a super-packet that the backend could take but
// for gso_max_size or gso_max_segs is split into the fewest super-packets
// that fit, each a valid GSO packet the backend's TSO/USO then cuts to MSS.
// The kernel has no such path (it falls back to MSS-sized software
// segmentation, the "TSO enabled but segmented early" problem); docs/gso.md
// describes the algorithm.
//
// Output j carries MSS segments [j*K, min((j+1)*K, Segs)) of the original,
// K = segsPerChunk (the largest count that satisfies every limit). Its
// headers are the ones full segmentation would give its first segment,
// except that lengths cover the whole chunk and FIN/PSH stay only on the
// last chunk, CWR only on the first. Its L4 checksum field holds the
// pseudo-header sum for the chunk's length, so when the backend later
// segments the chunk with the kernel's own rules, every MSS segment comes
// out byte for byte as if the original had been segmented in one go: the
// IPv4 id of chunk j is id0 + j*K and the device adds 1 per segment, the
// sequence number advances by K*MSS per chunk, and the checksum
// adjustment is linear in the length.

// ResegmentOut receives Resegment's output packets.
type ResegmentOut struct {
	// Pkts[i] receives output i as an iovec list: its header bytes (from
	// Hdrs[i]) followed by views of the caller's source slices holding its
	// payload, which is not copied. Each Pkts[i] is truncated and appended
	// to; cap(Pkts[i]) must be at least 1+len(src) so that no append
	// allocates.
	Pkts [][][]byte
	// Hdrs[i] is scratch for output i's headers: the encoded
	// virtio_net_hdr (VnetHdrLen bytes) then the frame headers (m.HdrLen
	// bytes). cap(Hdrs[i]) must be at least VnetHdrLen + m.HdrLen.
	Hdrs [][]byte
	// VnetHdrs, if not nil, receives the virtio_net_hdr of each output.
	VnetHdrs []vnet.Hdr
	// VnetHdrLen is 0 (no header in Hdrs), 10 or 12: the size of the
	// virtio_net_hdr the backend expects in front of each frame.
	VnetHdrLen int
}

// ResegmentCount returns how many packets Resegment produces for m under l
// (0 if no chunk of one or more segments fits).
func ResegmentCount(m *Meta, l Limits) int {
	k := segsPerChunk(m, l)
	if k <= 0 || m.Segs == 0 {
		return 0
	}
	return (m.Segs + k - 1) / k
}

// Resegment splits the super-packet src (m from Parse of the same frame;
// TCP or USO, with NEEDS_CSUM) into super-packets that satisfy l, writing
// outputs from..from+n-1 into out[0..n-1], n = min(len(out.Pkts),
// ResegmentCount(m, l) - from). Each output's virtio_net_hdr keeps gso_type
// (the ECN bit only on the first output, the only one that keeps CWR) and
// gso_size, has NEEDS_CSUM with csum_start at the transport header, and
// hdr_len = m.HdrLen; an output whose payload fits in one MSS gets
// gso_type NONE. Nothing is allocated.
func Resegment(out *ResegmentOut, src [][]byte, m *Meta, l Limits, from int) (int, Reason) {
	if m.Malformed != ReasonNone {
		return 0, m.Malformed
	}
	if m.Kind != KindTCPv4 && m.Kind != KindTCPv6 && m.Kind != KindUSO {
		return 0, ReasonNone
	}
	k := segsPerChunk(m, l)
	if k <= 0 {
		return 0, limitReason(m, l)
	}
	total := (m.Segs + k - 1) / k
	if from < 0 || from >= total {
		return 0, ReasonNone
	}
	n := min(len(out.Pkts), total-from)
	vl := out.VnetHdrLen
	if len(out.Hdrs) < n || (out.VnetHdrs != nil && len(out.VnetHdrs) < n) ||
		(vl != 0 && vl < vnet.HdrLenLegacy) {
		return 0, ReasonShortBuffer
	}
	for i := range n {
		if cap(out.Hdrs[i]) < vl+m.HdrLen || cap(out.Pkts[i]) < 1+len(src) {
			return 0, ReasonShortBuffer
		}
	}
	if iovLen(src) < m.FrameLen {
		return 0, ReasonShortBuffer
	}

	hl := m.HdrLen
	mss := m.GSOSize
	r := iovReader{src: src}
	t := out.Hdrs[0][vl : vl+hl]
	r.read(t)
	tp := m.readTemplate(t)
	for i := 1; i < n; i++ {
		copy(out.Hdrs[i][vl:vl+hl], t)
	}
	vh := vnet.Hdr{
		Flags:      vnet.FlagNeedsCsum,
		GSOType:    m.Hdr.GSOType,
		HdrLen:     uint16(hl),
		GSOSize:    m.Hdr.GSOSize,
		CsumStart:  uint16(m.L4Off),
		CsumOffset: TCPChecksumOffset,
	}
	if m.Kind == KindUSO {
		vh.CsumOffset = UDPChecksumOffset
	}
	r.seek(hl + from*k*mss)
	for i := range n {
		j := from + i
		s0 := j * k
		plen := min(k*mss, m.PayloadLen-s0*mss)
		h := out.Hdrs[i][:vl+hl]
		m.fixHeaders(h[vl:], &tp, s0, plen, j == 0, j == total-1)
		v := vh
		if j != 0 {
			v.GSOType &^= vnet.GSOECN
		}
		if plen <= mss {
			v.GSOType, v.GSOSize = vnet.GSONone, 0
		}
		if vl != 0 {
			clear(h[:vl]) // bytes past num_buffers (hash fields) are zero
			v.Encode(h[:vl])
		}
		if out.VnetHdrs != nil {
			out.VnetHdrs[i] = v
		}
		pkt := append(out.Pkts[i][:0], h)
		pkt, _ = r.views(pkt, plen)
		out.Pkts[i] = pkt
	}
	return n, ReasonNone
}
