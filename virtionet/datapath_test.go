package virtionet_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/backend/backendtest"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtionet/vnet"
)

func TestTxPlainPacketReachesBackend(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	r := newRig(t, pipe, rigOpts{})
	frame := testpkt.UDP4(100, testpkt.CsumNone)
	head := r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), frame[:30], frame[30:])
	got, ok := pipe.WaitWritten(1, 5e9)
	if !ok {
		t.Fatal("backend got nothing")
	}
	if want := append(testpkt.VnetHdr(0, 0, 0, 0, 0), frame...); !bytes.Equal(got[0], want) {
		t.Fatalf("backend got % x\nwant % x", got[0], want)
	}
	used := r.reap(r.tx, 1)
	if used[0].ID != uint32(head) || used[0].Len != 0 {
		t.Errorf("used %+v, want id %d len 0 (TX writes nothing)", used[0], head)
	}
	st := r.stats()
	eventually(t, "counters", func() bool { return st.Load(virtionet.CtrTxPackets.At(int(virtionet.PathPlain))) == 1 })
	if st.Load(virtionet.CtrTxBytes.At(int(virtionet.PathPlain))) != 100 || st.Load(virtionet.CtrTxPosted) != 1 {
		t.Errorf("bytes %d posted %d", st.Load(virtionet.CtrTxBytes.At(int(virtionet.PathPlain))), st.Load(virtionet.CtrTxPosted))
	}
}

func TestTxBadHeadersAreCountedDrops(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	r := newRig(t, pipe, rigOpts{})
	frame := testpkt.UDP4(200, testpkt.CsumPartial)
	cases := []struct {
		name   string
		hdr    []byte
		reason vnet.HdrReason
	}{
		{"gso size zero", testpkt.VnetHdr(1, vnet.GSOTCPv4, 0, 34, 16), vnet.HdrGSOSizeZero},
		{"unknown gso type", testpkt.VnetHdr(1, 7, 1000, 34, 16), vnet.HdrGSOUnknownType},
		{"csum outside frame", testpkt.VnetHdr(1, 0, 0, 199, 6), vnet.HdrCsumOutOfFrame},
		{"gso without needs_csum", testpkt.VnetHdr(0, vnet.GSOUDPL4, 100, 34, 6), vnet.HdrGSONoCsum},
	}
	for _, c := range cases {
		r.sendTx(c.hdr, frame)
	}
	r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0)[:5]) // shorter than the header: the chain holds 5 bytes
	r.reap(r.tx, len(cases)+1)
	st := r.stats()
	eventually(t, "drops", func() bool { return st.TxDropTotal() == uint64(len(cases)+1) })
	for _, c := range cases {
		if st.Load(virtionet.CtrTxHdrErrors.At(int(c.reason))) != 1 {
			t.Errorf("%s: reason %v counted %d times", c.name, c.reason, st.Load(virtionet.CtrTxHdrErrors.At(int(c.reason))))
		}
	}
	if st.Load(virtionet.CtrTxHdrErrors.At(int(vnet.HdrShort))) != 1 {
		t.Errorf("short header not counted")
	}
	if st.Load(virtionet.CtrTxDrops.At(int(virtionet.DropHdrInvalid))) != uint64(len(cases)+1) {
		t.Errorf("hdr_invalid drops %d", st.Load(virtionet.CtrTxDrops.At(int(virtionet.DropHdrInvalid))))
	}
	if n := len(pipe.Written()); n != 0 {
		t.Errorf("backend got %d packets", n)
	}
	if st.Load(virtionet.CtrTxPosted) != st.TxWritten()+st.TxDropTotal() {
		t.Error("accounting: posted != written + dropped")
	}
}

func TestTxGSOPassthroughAndSoftwareSegmentation(t *testing.T) {
	const mss = 1448
	payload := 10*mss + 100 // 11 segments, the last one short
	frame := testpkt.TCP4Super(payload)
	hdr := testpkt.VnetHdr(vnet.FlagNeedsCsum, vnet.GSOTCPv4, mss, 34, 16)

	t.Run("backend with TSO4 takes it whole", func(t *testing.T) {
		pipe := backendtest.NewPipe(backend.Capabilities{})
		r := newRig(t, pipe, rigOpts{})
		r.sendTx(hdr, frame[:54], frame[54:])
		got, ok := pipe.WaitWritten(1, 5e9)
		if !ok || len(got[0]) != 12+len(frame) {
			t.Fatalf("want one %d-byte packet, got %d packets", 12+len(frame), len(got))
		}
		st := r.stats()
		eventually(t, "passthrough", func() bool { return st.Load(virtionet.CtrTxPackets.At(int(virtionet.PathPassthrough))) == 1 })
	})

	t.Run("backend without TSO4 gets MSS segments with complete checksums", func(t *testing.T) {
		pipe := backendtest.NewPipe(backend.Capabilities{Offloads: 0, GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500})
		r := newRig(t, pipe, rigOpts{})
		r.sendTx(hdr, frame[:54], frame[54:])
		got, ok := pipe.WaitWritten(11, 5e9)
		if !ok {
			t.Fatalf("want 11 segments, got %d", len(got))
		}
		var seq uint32 = 1000
		for i, p := range got {
			if !bytes.Equal(p[:12], make([]byte, 12)) {
				t.Errorf("segment %d: vnet header % x, want zero (checksum complete)", i, p[:12])
			}
			pkt := gopacket.NewPacket(p[12:], layers.LayerTypeEthernet, gopacket.Default)
			ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if ip == nil || tcp == nil {
				t.Fatalf("segment %d does not decode: %v", i, pkt.ErrorLayer())
			}
			if tcp.Seq != seq {
				t.Errorf("segment %d seq %d want %d", i, tcp.Seq, seq)
			}
			seq += uint32(len(tcp.Payload))
			if ip.Id != 0x1000+uint16(i) {
				t.Errorf("segment %d IP id %#x", i, ip.Id)
			}
			if last := i == len(got)-1; tcp.PSH != last {
				t.Errorf("segment %d PSH=%t", i, tcp.PSH)
			}
			// Verify the TCP checksum independently with gopacket.
			want := tcp.Checksum
			if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			buf := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, tcp, gopacket.Payload(tcp.Payload)); err != nil {
				t.Fatal(err)
			}
			if got := binary.BigEndian.Uint16(buf.Bytes()[16:]); got != want {
				t.Errorf("segment %d TCP checksum %#x, gopacket computes %#x", i, want, got)
			}
		}
		if seq != 1000+uint32(payload) {
			t.Errorf("payload total %d want %d", seq-1000, payload)
		}
		st := r.stats()
		eventually(t, "segmented", func() bool { return st.Load(virtionet.CtrTxPackets.At(int(virtionet.PathSegmented))) == 1 })
		if st.Load(virtionet.CtrTxSegments) != 11 {
			t.Errorf("segments %d", st.Load(virtionet.CtrTxSegments))
		}
	})

	t.Run("gso_max_size below the packet resegments", func(t *testing.T) {
		pipe := backendtest.NewPipe(backend.Capabilities{Offloads: backend.DefaultNullCaps.Offloads, GSOMaxSize: 4 * mss, GSOMaxSegs: 65535, MTU: 1500})
		r := newRig(t, pipe, rigOpts{})
		r.sendTx(hdr, frame[:54], frame[54:])
		st := r.stats()
		eventually(t, "resegmented", func() bool { return st.Load(virtionet.CtrTxPackets.At(int(virtionet.PathResegmented))) == 1 })
		got := pipe.Written()
		total := 0
		for _, p := range got {
			if len(p)-12 >= 4*mss {
				t.Errorf("resegmented packet of %d bytes is not below gso_max_size %d", len(p)-12, 4*mss)
			}
			total += len(p) - 12 - 54
		}
		if total != payload || len(got) < 2 {
			t.Errorf("%d packets carry %d payload bytes, want %d", len(got), total, payload)
		}
	})

	t.Run("policy software segments even with TSO", func(t *testing.T) {
		pipe := backendtest.NewPipe(backend.Capabilities{})
		r := newRig(t, pipe, rigOpts{policy: "software"})
		r.sendTx(hdr, frame)
		if _, ok := pipe.WaitWritten(11, 5e9); !ok {
			t.Fatal("want 11 segments")
		}
		// Switch to defer at run time: the next packet passes whole.
		r.dev.SetPolicy(mustPolicy(t, "defer"))
		pipe.TakeWritten()
		r.sendTx(hdr, frame)
		got, ok := pipe.WaitWritten(1, 5e9)
		if !ok || len(got[0]) != 12+len(frame) {
			t.Fatal("after switching to defer the packet did not pass whole")
		}
	})
}

func mustPolicy(t *testing.T, s string) (p gsoPolicy) {
	p, err := parsePolicy(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTxCompletesChecksumForBackendWithoutCsum(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{Offloads: 0, GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500})
	r := newRig(t, pipe, rigOpts{})
	frame := testpkt.UDP4(300, testpkt.CsumPartial)
	// Split the frame so that the UDP checksum field (bytes 40-41) straddles
	// two descriptors.
	r.sendTx(testpkt.VnetHdr(vnet.FlagNeedsCsum, 0, 0, 34, 6), frame[:41], frame[41:])
	got, ok := pipe.WaitWritten(1, 5e9)
	if !ok {
		t.Fatal("nothing written")
	}
	p := got[0]
	if !bytes.Equal(p[:12], make([]byte, 12)) {
		t.Errorf("header % x, want zero", p[:12])
	}
	pkt := gopacket.NewPacket(p[12:], layers.LayerTypeEthernet, gopacket.Default)
	udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if udp == nil || ip == nil {
		t.Fatal("does not decode")
	}
	want := udp.Checksum
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, udp, gopacket.Payload(udp.Payload)); err != nil {
		t.Fatal(err)
	}
	if c := binary.BigEndian.Uint16(buf.Bytes()[6:]); c != want {
		t.Errorf("UDP checksum %#x, gopacket computes %#x", want, c)
	}
	if !bytes.Equal(p[12:12+40], frame[:40]) || !bytes.Equal(p[12+42:], frame[42:]) {
		t.Error("bytes other than the checksum changed")
	}
	st := r.stats()
	eventually(t, "csum path", func() bool { return st.Load(virtionet.CtrTxPackets.At(int(virtionet.PathCsumCompleted))) == 1 })
}

func TestTxDisabledRingDiscardsAndCounts(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	r := newRig(t, pipe, rigOpts{})
	if err := r.fe.SetVringEnable(1, false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(64, testpkt.CsumNone))
	}
	r.reap(r.tx, 3)
	st := r.stats()
	eventually(t, "ring_disabled drops", func() bool { return st.Load(virtionet.CtrTxDrops.At(int(virtionet.DropRingDisabled))) == 3 })
	if len(pipe.Written()) != 0 {
		t.Error("a disabled ring's packets reached the backend")
	}
}

func TestRxMergeableSpreadsAcrossBuffers(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	r := newRig(t, pipe, rigOpts{})
	bufs := r.postRx(8, 1024)
	frame := testpkt.UDP4(3000, testpkt.CsumNone)
	pkt := append(make([]byte, 12), frame...)
	if err := pipe.Inject(pkt); err != nil {
		t.Fatal(err)
	}
	used := r.reap(r.rx, 3) // 3012 bytes in 1024-byte buffers
	var got []byte
	for i, u := range used {
		got = append(got, bufs[u.ID][:u.Len]...)
		if i < 2 && u.Len != 1024 {
			t.Errorf("buffer %d len %d", i, u.Len)
		}
	}
	if n := binary.LittleEndian.Uint16(got[10:12]); n != 3 {
		t.Errorf("num_buffers %d, want 3", n)
	}
	if !bytes.Equal(got[12:], frame) {
		t.Error("frame corrupted")
	}
	st := r.stats()
	eventually(t, "rx counters", func() bool { return st.Load(virtionet.CtrRxPackets) == 1 && st.Load(virtionet.CtrRxBuffers) == 3 })
}

func TestRxWithoutMergeableDropsOversizedButKeepsBuffer(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	offer, _ := virtionet.Offer(virtionet.BackendOffloads{TxUSO: true}, virtionet.Toggles{})
	r := newRig(t, pipe, rigOpts{features: uint64(offer &^ vnet.NetMrgRxbuf)})
	bufs := r.postRx(1, 1600)
	pipe.Inject(append(make([]byte, 12), testpkt.UDP4(3000, testpkt.CsumNone)...)) // too big
	small := testpkt.UDP4(500, testpkt.CsumNone)
	pipe.Inject(append(make([]byte, 12), small...))
	used := r.reap(r.rx, 1)
	if !bytes.Equal(bufs[used[0].ID][12:used[0].Len], small) {
		t.Error("the buffer did not get the next packet")
	}
	if n := binary.LittleEndian.Uint16(bufs[used[0].ID][10:12]); n != 1 {
		t.Errorf("num_buffers %d, want 1", n)
	}
	st := r.stats()
	eventually(t, "drop", func() bool { return st.Load(virtionet.CtrRxDrops.At(int(virtionet.DropRxBufferTooSmall))) == 1 })
}

func TestRxBackpressureWaitsForBuffers(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	r := newRig(t, pipe, rigOpts{})
	r.postRx(1, 2048)
	for i := 0; i < 3; i++ {
		pipe.Inject(append(make([]byte, 12), testpkt.UDP4(1000+i, testpkt.CsumNone)...))
	}
	r.reap(r.rx, 1)
	st := r.stats()
	eventually(t, "stall", func() bool { return st.Load(virtionet.CtrRxStalls) >= 1 })
	// Nothing is dropped while the guest has no buffers: posting more
	// delivers the held packets.
	bufs := r.postRx(4, 2048)
	used := r.reap(r.rx, 2)
	for i, u := range used {
		if got := int(u.Len) - 12; got != 1001+i {
			t.Errorf("packet %d: %d bytes, want %d", i, got, 1001+i)
		}
		_ = bufs
	}
	if st.RxDropTotal() != 0 {
		t.Errorf("%d RX drops", st.RxDropTotal())
	}
}

func TestRxCompletesChecksumForGuestWithoutGuestCsum(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	offer, _ := virtionet.Offer(virtionet.BackendOffloads{TxUSO: true}, virtionet.Toggles{})
	acked := offer &^ (vnet.NetGuestCsum | vnet.NetGuestTSO4 | vnet.NetGuestTSO6 | vnet.NetGuestECN)
	r := newRig(t, pipe, rigOpts{features: uint64(acked)})
	bufs := r.postRx(2, 2048)
	frame := testpkt.UDP4(400, testpkt.CsumPartial)
	pipe.Inject(append(testpkt.VnetHdr(vnet.FlagNeedsCsum, 0, 0, 34, 6), frame...))
	u := r.reap(r.rx, 1)[0]
	got := bufs[u.ID][:u.Len]
	if got[0]&vnet.FlagNeedsCsum != 0 {
		t.Error("NEEDS_CSUM passed to a guest without GUEST_CSUM")
	}
	pkt := gopacket.NewPacket(got[12:], layers.LayerTypeEthernet, gopacket.Default)
	udp := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	want := udp.Checksum
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, udp, gopacket.Payload(udp.Payload))
	if c := binary.BigEndian.Uint16(buf.Bytes()[6:]); c != want {
		t.Errorf("UDP checksum %#x, gopacket computes %#x", want, c)
	}
}

func TestStopAndRestartKeepsIndices(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	r := newRig(t, pipe, rigOpts{})
	r.postRx(4, 2048)
	for i := 0; i < 5; i++ {
		r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(80, testpkt.CsumNone))
	}
	r.reap(r.tx, 5)
	pipe.Inject(append(make([]byte, 12), testpkt.UDP4(100, testpkt.CsumNone)...))
	r.reap(r.rx, 1)
	bases, err := r.fe.Stop()
	if err != nil {
		t.Fatal(err)
	}
	// RX: one buffer used; the three popped ahead of need are given back.
	if bases[0] != 1 || bases[1] != 5 {
		t.Errorf("GET_VRING_BASE = %v, want [1 5]", bases)
	}
}
