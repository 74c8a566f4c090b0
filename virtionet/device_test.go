package virtionet

import (
	"errors"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/backend"
)

// steeredQueue is a backend queue whose attachment the test watches: a
// stand-in for one queue of a multiqueue tap (backend.QueueAttacher) that
// can also be given an MTU (backend.MTUSetter).
type steeredQueue struct {
	*backend.Null
	attached bool
	calls    int
	mtu      int
	mtuErr   error
}

func (q *steeredQueue) SetQueueAttached(on bool) error {
	q.calls++
	q.attached = on
	return nil
}
func (q *steeredQueue) QueueAttached() bool { return q.attached }
func (q *steeredQueue) SetLinkMTU(mtu int) error {
	if q.mtuErr != nil {
		return q.mtuErr
	}
	q.mtu = mtu
	return nil
}

func newSteeredDevice(t *testing.T, pairs int, mtu int) (*Device, []*steeredQueue) {
	t.Helper()
	qs := make([]*steeredQueue, pairs)
	bes := make([]backend.Backend, pairs)
	for i := range qs {
		qs[i] = &steeredQueue{Null: backend.NewNull(backend.NullConfig{}), attached: true}
		bes[i] = qs[i]
	}
	d, err := New(Config{Name: "p", Offer: uint64(DefaultOffer), Backends: bes, MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	return d, qs
}

// TestQueueAttachFollowsEnable: a pair's backend queue is attached exactly
// while the guest has the pair's receive ring enabled, so the host never
// steers a flow to a queue nobody reads. On main every queue stayed attached
// and a 1-vCPU guest on a 2-queue port lost half of its inbound flows.
func TestQueueAttachFollowsEnable(t *testing.T) {
	d, qs := newSteeredDevice(t, 3, 0)
	// At creation only pair 0 is attached: no guest reads the others yet.
	if !qs[0].attached || qs[1].attached || qs[2].attached {
		t.Fatalf("after New: attached %v %v %v, want true false false", qs[0].attached, qs[1].attached, qs[2].attached)
	}
	st := func(i int) *QueueStats { return d.QueuePairs()[i].Stats() }
	// The guest enables pair 1 (rings 2 and 3): ethtool -L combined 2.
	d.SetQueueEnabled(2, true)
	d.SetQueueEnabled(3, true)
	if !qs[1].attached || qs[2].attached {
		t.Errorf("pair 1 enabled: attached %v %v", qs[1].attached, qs[2].attached)
	}
	// TX ring enables do not steer anything.
	d.SetQueueEnabled(5, true)
	if qs[2].attached {
		t.Error("enabling a TX ring attached the pair's queue")
	}
	// Back to one pair.
	d.SetQueueEnabled(2, false)
	if qs[1].attached {
		t.Error("pair 1 disabled but still attached")
	}
	if a, dt := st(1).Load(CtrBackendAttaches), st(1).Load(CtrBackendDetaches); a != 1 || dt != 2 {
		t.Errorf("pair 1 counted %d attaches, %d detaches; want 1 and 2 (New, then disable)", a, dt)
	}
	if st(1).BackendAttached.Load() {
		t.Error("pair 1 gauge says attached")
	}
	// Pair 0 stays attached whatever the guest says: every driver uses it,
	// and a tap with no attached queue drops everything.
	d.SetQueueEnabled(0, false)
	if !qs[0].attached || !st(0).BackendAttached.Load() {
		t.Error("pair 0 detached")
	}
	// The session ends: every queue but pair 0's is detached.
	d.SetQueueEnabled(2, true)
	d.Reset()
	if !qs[0].attached || qs[1].attached {
		t.Errorf("after Reset: attached %v %v", qs[0].attached, qs[1].attached)
	}
}

// TestSetMTUReachesBackend: VHOST_USER_NET_SET_MTU sets the backend link's
// MTU, or fails so that QEMU stops with "MTU not supported by the backend".
// On main it was accepted and ignored.
func TestSetMTUReachesBackend(t *testing.T) {
	d, qs := newSteeredDevice(t, 2, 0)
	if err := d.SetMTU(9000); err != nil {
		t.Fatal(err)
	}
	if qs[0].mtu != 9000 {
		t.Errorf("backend MTU %d, want 9000", qs[0].mtu)
	}
	if m := d.MTU(); !m.Applied || m.Requested != 9000 || !strings.Contains(m.Detail, "9000") {
		t.Errorf("MTU state %+v", m)
	}

	qs[0].mtuErr = errors.New("operation not permitted")
	err := d.SetMTU(9000)
	if err == nil || !strings.Contains(err.Error(), "not supported by the backend") {
		t.Errorf("refused MTU: err %v", err)
	}
	if m := d.MTU(); m.Applied || !strings.Contains(m.Detail, "operation not permitted") {
		t.Errorf("refused MTU state %+v", m)
	}
	if err := d.SetMTU(67); err == nil {
		t.Error("MTU 67 accepted")
	}

	// --mtu pins it: another MTU from the guest is refused with advice.
	pinned, _ := newSteeredDevice(t, 1, 1500)
	if err := pinned.SetMTU(9000); err == nil || !strings.Contains(err.Error(), "--mtu 1500") {
		t.Errorf("pinned MTU: %v", err)
	}
	if err := pinned.SetMTU(1500); err != nil {
		t.Errorf("pinned MTU, same value: %v", err)
	}

	// A backend without a link MTU accepts any.
	null, err := New(Config{Name: "n", Offer: uint64(DefaultOffer), Backends: []backend.Backend{backend.NewNull(backend.NullConfig{})}})
	if err != nil {
		t.Fatal(err)
	}
	if err := null.SetMTU(9000); err != nil || !null.MTU().Applied {
		t.Errorf("null backend: %v %+v", err, null.MTU())
	}
}
