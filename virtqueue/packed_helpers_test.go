package virtqueue

import (
	"testing"
)

// packedTestRing is a packed driver and an in-process device over one guest
// memory at testBase. Rings from offset 0, indirect tables at ind, payload
// buffers from data (both at least the split tests' offsets).
type packedTestRing struct {
	mem  []byte
	drv  *PackedDriver
	dev  *Packed
	ind  int
	data int
}

type packedOpts struct {
	size        uint16
	eventIdx    bool
	indirect    bool // VIRTIO_F_INDIRECT_DESC negotiated on the device
	inOrder     bool
	indirectMax uint16 // driver side; defaults to 4 when indirect
}

func newPackedTestRing(t testing.TB, o packedOpts) *packedTestRing {
	t.Helper()
	if o.size == 0 {
		o.size = 8
	}
	l := LayoutPacked(0, o.size)
	ind := max(indirectArea, int(alignUp(l.End, 16)))
	imax := o.indirectMax
	if o.indirect && imax == 0 {
		imax = 4
	}
	data := max(dataArea, int(alignUp(uint64(ind)+IndirectAreaSize(o.size, imax), 4096)))
	mem := make([]byte, max(testMemSize, data+max(0x30000, 16*(int(o.size)+1))))
	cfg := PackedDriverConfig{Size: o.size, Mem: mem, Base: testBase, Rings: l, EventIdx: o.eventIdx, InOrder: o.inOrder}
	if imax > 0 {
		cfg.IndirectMax, cfg.IndirectOff = imax, uint64(ind)
	}
	drv, err := NewPackedDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dcfg := drv.DeviceConfig()
	dcfg.Indirect = o.indirect
	dev, err := NewPacked(dcfg, drv.Memory())
	if err != nil {
		t.Fatal(err)
	}
	return &packedTestRing{mem: mem, drv: drv, dev: dev, ind: ind, data: data}
}

// buf is a subslice of guest memory at data offset off.
func (r *packedTestRing) buf(off, n int) []byte { return r.mem[r.data+off : r.data+off+n] }

// addr is the guest address of data offset off.
func (r *packedTestRing) addr(off int) uint64 { return gaddr(r.data + off) }

// pop publishes what the driver added and pops exactly want buffers.
func (r *packedTestRing) pop(t testing.TB, want int) []Chain {
	t.Helper()
	r.drv.Publish()
	return popPacked(t, r.dev, want)
}

// popPacked pops exactly want buffers.
func popPacked(t testing.TB, q *Packed, want int) []Chain {
	t.Helper()
	chains := make([]Chain, want+1)
	n, err := q.Pop(chains)
	if err != nil || n != want {
		t.Fatalf("Pop = %d, %v; want %d buffers", n, err, want)
	}
	return chains[:n]
}

// usedOf returns used elements for chains with length 0.
func usedOf(chains []Chain) []UsedElem {
	u := make([]UsedElem, len(chains))
	for i, c := range chains {
		u[i] = UsedElem{ID: uint32(c.Head)}
	}
	return u
}
