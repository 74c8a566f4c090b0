package virtionet_test

import (
	"bytes"
	"fmt"
	"testing"
	"unsafe"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/backend/backendtest"
	"github.com/vhostd/vhostd/internal/testing/testpkt"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
	"github.com/vhostd/vhostd/virtionet"
	"github.com/vhostd/vhostd/virtqueue"
)

const page = vhostuser.LogPageSize

// pagesOf adds the pages of [gpa, gpa+n) to set.
func pagesOf(set map[uint64]bool, gpa, n uint64) {
	if n == 0 {
		return
	}
	for p := gpa / page; p <= (gpa+n-1)/page; p++ {
		set[p] = true
	}
}

// gpaOf returns the guest-physical address of b inside region 0.
func (r *rig) gpaOf(b []byte) uint64 {
	reg := r.fe.Mem.Regions[0]
	return reg.GPA + uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))-uintptr(unsafe.Pointer(unsafe.SliceData(reg.B))))
}

// alignNext moves the bump allocator to the next page boundary (in GPA) and
// one page further, so the next buffers share no page with earlier ones.
func (r *rig) alignNext() {
	gpa := r.fe.Mem.Regions[0].GPA + r.fe.DataOffset + r.area.Next()
	r.area.Skip((gpa+2*page)&^(page-1) - gpa)
}

// TestDirtyLogMarksEveryWrite drives TX and RX traffic with dirty logging on
// and holds the log against what really changed in guest memory: every page
// vhostd wrote (RX buffers with their virtio_net_hdr and num_buffers, used
// rings) is marked, and no page it only read (TX buffers, descriptor tables,
// avail rings) is. Pages the front-end itself wrote are left out of the
// comparison: QEMU tracks its own writes. It runs over split and packed
// rings (a packed ring's device writes are its used descriptors, in the
// descriptor ring, and its device event suppression area).
func TestDirtyLogMarksEveryWrite(t *testing.T) {
	t.Run("split", func(t *testing.T) { testDirtyLogMarksEveryWrite(t, false) })
	t.Run("packed", func(t *testing.T) { testDirtyLogMarksEveryWrite(t, true) })
}

// ringAreas adds to dev the pages of q's areas the device writes, and to
// drv those the driver writes.
func ringAreas(q *frontend.Queue, packed bool, dev, drv map[uint64]bool) {
	desc, drvArea, devArea := q.Ring.RingAddrs()
	n := q.Ring.Size()
	if packed {
		pagesOf(dev, desc, virtqueue.PackedRingSize(n)) // used descriptors
		pagesOf(dev, devArea, virtqueue.EventSuppressSize)
		pagesOf(drv, desc, virtqueue.PackedRingSize(n))
		pagesOf(drv, drvArea, virtqueue.EventSuppressSize)
		return
	}
	pagesOf(dev, devArea, virtqueue.UsedRingSize(n))
	pagesOf(drv, desc, virtqueue.DescTableSize(n))
	pagesOf(drv, drvArea, virtqueue.AvailRingSize(n))
}

func testDirtyLogMarksEveryWrite(t *testing.T, packed bool) {
	pipe := backendtest.NewPipe(backend.Capabilities{Offloads: backend.DefaultNullCaps.Offloads, GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500})
	r := newRig(t, pipe, rigOpts{memSize: 16 << 20, packed: packed})
	if p, _, _ := r.fe.Layout(); p != packed || r.sess.RingStates()[0].Packed != packed {
		t.Fatalf("rings packed=%t (session %t), want %t", p, r.sess.RingStates()[0].Packed, packed)
	}
	mem := r.fe.Mem.Regions[0].B
	if r.fe.Mem.Regions[0].GPA != 0 {
		t.Fatal("the test assumes region 0 at GPA 0")
	}

	// Warm up with logging off: nothing may be marked later for it.
	warm := r.postRx(4, 2048) // posted now, filled later with logging on
	r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(200, testpkt.CsumNone))
	r.reap(r.tx, 1)
	if _, ok := pipe.WaitWritten(1, 5e9); !ok {
		t.Fatal("warm-up packet not written")
	}

	log, err := r.fe.StartLogging((16 << 20) / page / 8)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if st := r.sess.LogStats(); !st.Active || st.Size != 512 {
		t.Fatalf("log stats %+v, want active with 512 bytes", st)
	}
	// Restarting the rings for logging may already write their used rings
	// (avail_event, flags): nothing else may be marked yet.
	usedPages := map[uint64]bool{}
	for _, q := range r.fe.Queues[:2] {
		ringAreas(q, packed, usedPages, map[uint64]bool{})
	}
	for p := uint64(0); p < uint64(len(log.Bitmap))*8; p++ {
		if log.Marked(p*page) && !usedPages[p] {
			t.Fatalf("page %#x marked before any traffic", p*page)
		}
	}

	// Front-end writes from here on: RX buffers are fresh (post), TX
	// buffers get the frames, descriptors and avail rings are the driver's.
	r.alignNext() // RX buffers on pages of their own
	before := bytes.Clone(mem)
	frontWrites := map[uint64]bool{}
	rxPages := map[uint64]bool{}
	for _, b := range warm {
		pagesOf(rxPages, r.gpaOf(b), uint64(len(b)))
	}
	var rxBufs [][]byte
	for i := 0; i < 8; i++ {
		b := r.buf(3000)
		rxBufs = append(rxBufs, b)
		pagesOf(rxPages, r.gpaOf(b), uint64(len(b)))
		if _, err := r.rx.Ring.Add(nil, [][]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	r.alignNext() // TX buffers on other pages
	txStart := r.gpaOf(r.fe.Buffer(r.area.Next(), 1))
	var txFrames [][]byte
	for i := 0; i < 6; i++ {
		txFrames = append(txFrames, r.copyIn(testpkt.UDP4(1000+100*i, testpkt.CsumNone)))
	}
	txEnd := r.gpaOf(r.fe.Buffer(r.area.Next(), 1))
	pagesOf(frontWrites, txStart, txEnd-txStart)
	txPages := map[uint64]bool{}
	pagesOf(txPages, txStart, txEnd-txStart)
	for _, q := range r.fe.Queues[:2] {
		ringAreas(q, packed, map[uint64]bool{}, frontWrites)
	}
	r.publishKick(r.rx)
	hdr := r.copyIn(testpkt.VnetHdr(0, 0, 0, 0, 0))
	pagesOf(frontWrites, r.gpaOf(hdr), uint64(len(hdr)))
	for _, f := range txFrames {
		if _, err := r.tx.Ring.Add([][]byte{hdr, f}, nil); err != nil {
			t.Fatal(err)
		}
	}
	r.publishKick(r.tx)
	r.reap(r.tx, 6)
	if _, ok := pipe.WaitWritten(7, 5e9); !ok {
		t.Fatal("TX packets not written")
	}
	// RX: packets from the backend into the guest's buffers.
	for i := 0; i < 5; i++ {
		if err := pipe.Inject(append(make([]byte, 12), testpkt.UDP4(600+200*i, testpkt.CsumNone)...)); err != nil {
			t.Fatal(err)
		}
	}
	r.reap(r.rx, 5)

	changed := map[uint64]bool{}
	for p := uint64(0); p < uint64(len(mem))/page; p++ {
		if !bytes.Equal(mem[p*page:(p+1)*page], before[p*page:(p+1)*page]) {
			changed[p] = true
		}
	}
	nChanged, nMarked := 0, 0
	for p := range changed {
		if frontWrites[p] {
			continue
		}
		nChanged++
		if !log.Marked(p * page) {
			t.Errorf("page %#x changed by vhostd but not marked (rx buffer %v, used ring %v)", p*page, rxPages[p], usedPages[p])
		}
	}
	for p := uint64(0); p < uint64(len(log.Bitmap))*8; p++ {
		if !log.Marked(p * page) {
			continue
		}
		nMarked++
		if !rxPages[p] && !usedPages[p] {
			t.Errorf("page %#x marked but vhostd never writes it (tx buffer page: %v)", p*page, txPages[p])
		}
	}
	if nChanged == 0 || nMarked == 0 {
		t.Fatalf("test drove no logged writes: %d changed, %d marked", nChanged, nMarked)
	}
	if packed {
		// The front-end writes the descriptor ring too, so the check above
		// skips it; the used descriptors vhostd wrote there must be marked.
		for _, q := range r.fe.Queues[:2] {
			desc, _, _ := q.Ring.RingAddrs()
			if !log.Marked(desc) {
				t.Errorf("ring %d: packed descriptor ring page %#x not marked after vhostd used descriptors in it", q.Index, desc)
			}
		}
	}
	if st := r.sess.LogStats(); st.Pages != uint64(nMarked) || st.Overflows != 0 {
		t.Errorf("log stats %+v, want %d pages marked, no overflow", st, nMarked)
	}
	t.Logf("%d pages changed by vhostd, %d marked (RX buffers and used rings)", nChanged, nMarked)

	// Logging off: RX goes on and marks nothing more.
	if err := r.fe.StopLogging(); err != nil {
		t.Fatal(err)
	}
	r.reap(r.rx, 0)
	clear(log.Bitmap)
	if err := pipe.Inject(append(make([]byte, 12), testpkt.UDP4(300, testpkt.CsumNone)...)); err != nil {
		t.Fatal(err)
	}
	r.reap(r.rx, 1)
	for i, b := range log.Bitmap {
		if b != 0 {
			t.Fatalf("log byte %d = %#x after logging stopped", i, b)
		}
	}
	if st := r.sess.LogStats(); st.Active {
		t.Errorf("log still active after LOG_ALL was cleared")
	}
}

// TestSendRARPAnnounces: QEMU's SEND_RARP after a migration makes vhostd
// inject a RARP broadcast from the guest's MAC into the backend, written by
// the TX worker (the backend's one writer) while it runs, and counted.
func TestSendRARPAnnounces(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{Offloads: backend.DefaultNullCaps.Offloads, GSOMaxSize: 65536, GSOMaxSegs: 65535, MTU: 1500})
	r := newRig(t, pipe, rigOpts{})
	// Start the TX worker with one guest packet.
	r.sendTx(testpkt.VnetHdr(0, 0, 0, 0, 0), testpkt.UDP4(100, testpkt.CsumNone))
	r.reap(r.tx, 1)
	if _, ok := pipe.WaitWritten(1, 5e9); !ok {
		t.Fatal("guest packet not written")
	}
	mac := [6]byte{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}
	var payload [8]byte
	copy(payload[:], mac[:])
	if _, err := r.fe.Request(vhostuser.ReqSendRARP, payload[:], nil); err != nil {
		t.Fatal(err)
	}
	got, ok := pipe.WaitWritten(2, 5e9)
	if !ok {
		t.Fatal("no RARP written")
	}
	pkt := got[1]
	if len(pkt) != 12+60 {
		t.Fatalf("RARP packet is %d bytes, want 12+60", len(pkt))
	}
	f := pkt[12:]
	if !bytes.Equal(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) || !bytes.Equal(f[6:12], mac[:]) ||
		f[12] != 0x80 || f[13] != 0x35 || f[21] != 3 || !bytes.Equal(f[22:28], mac[:]) || !bytes.Equal(f[32:38], mac[:]) {
		t.Errorf("not a RARP request from %x: % x", mac, f)
	}
	if n := r.dev.RARPsSent(); n != 1 {
		t.Errorf("RARPs counted %d, want 1", n)
	}
	// The TX accounting is the guest's: the announce is not in it.
	if st := r.stats(); st.Load(virtionet.CtrTxPosted) != 1 || st.TxWritten() != 1 {
		t.Errorf("TX accounting changed: posted %d written %d", st.Load(virtionet.CtrTxPosted), st.TxWritten())
	}
}

// BenchmarkDirtyLogNull: TX and RX through the null backend with dirty
// logging off and on (a live migration in progress), in one run:
// BenchmarkDirtyLogNull/{off,on}/{tx,rx}/64B. Logging must add no
// allocation; its cost is a page-range OR per written buffer and per
// used-ring update.
func BenchmarkDirtyLogNull(b *testing.B) {
	for _, logging := range []bool{false, true} {
		name := "off"
		if logging {
			name = "on"
		}
		for _, size := range []int{64, 1518} {
			b.Run(fmt.Sprintf("%s/tx/%dB", name, size), func(b *testing.B) {
				r := newRig(b, backend.NewNull(backend.NullConfig{}), rigOpts{queueSize: 256})
				startBenchLog(b, r, logging)
				d := r.tx.Ring
				out := [][]byte{r.copyIn(testpkt.VnetHdr(0, 0, 0, 0, 0)), r.copyIn(testpkt.UDP4(size, testpkt.CsumNone))}
				used := make([]virtqueue.UsedElem, 256)
				inflight := 0
				b.ReportAllocs()
				b.SetBytes(int64(size))
				b.ResetTimer()
				for done := 0; done < b.N; {
					for inflight < 64 && done+inflight < b.N {
						if _, err := d.Add(out, nil); err != nil {
							b.Fatal(err)
						}
						inflight++
					}
					if d.Publish() {
						r.tx.Kick()
					}
					n := d.Reap(used)
					inflight -= n
					done += n
				}
			})
			b.Run(fmt.Sprintf("%s/rx/%dB", name, size), func(b *testing.B) {
				tmpl := append(make([]byte, 12), testpkt.UDP4(size, testpkt.CsumNone)...)
				r := newRig(b, backend.NewNull(backend.NullConfig{RXTemplate: tmpl}), rigOpts{queueSize: 256})
				startBenchLog(b, r, logging)
				bufs := make([][][]byte, 256)
				for i := range bufs {
					bufs[i] = [][]byte{r.buf(2048)}
				}
				d := r.rx.Ring
				used := make([]virtqueue.UsedElem, 256)
				next := 0
				b.ReportAllocs()
				b.SetBytes(int64(size))
				b.ResetTimer()
				for done := 0; done < b.N; {
					for d.NumFree() > 0 {
						if _, err := d.Add(nil, bufs[next]); err != nil {
							b.Fatal(err)
						}
						next = (next + 1) % len(bufs)
					}
					if d.Publish() {
						r.rx.Kick()
					}
					done += d.Reap(used)
				}
			})
		}
	}
}

func startBenchLog(b *testing.B, r *rig, on bool) {
	if !on {
		return
	}
	l, err := r.fe.StartLogging((16 << 20) / page / 8)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
}
