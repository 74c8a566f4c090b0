package portlink

import "sync/atomic"

// Switch is a small learning L2 switch across ports: each port's TX goes to
// the port that owns the destination MAC, or to every other port for
// broadcast, multicast and unknown unicast (flooding). Source MACs are
// learned from each transmitted frame. Delivery is the same one-copy path
// as Link (sender TX buffers -> receiver RX buffers, GSO kept whole and
// translated by each receiver).
//
// The MAC table is a fixed open-addressing array of packed atomic entries
// (mac<<16 | port+1), so lookups and learning take no lock and allocate
// nothing; entries are never aged out (a moved MAC is relearned on its
// first frame from the new port). A full probe window overwrites its first
// slot.
type Switch struct {
	ports []*SwitchPort
	table [macTableSize]atomic.Uint64
	// Floods counts frames sent to every other port.
	Floods atomic.Uint64
}

const (
	macTableSize  = 4096 // power of two
	macTableProbe = 8

	// batchHint sizes the per-destination batches; a device's default TX
	// batch. Larger batches grow them once.
	batchHint = 64
)

// SwitchPort is one switch port.
type SwitchPort struct {
	inbox
	sw    *Switch
	index int
	// Per-destination batch scratch, used only by this port's sender (one
	// TX worker at a time, see Port.Send).
	out [][][][]byte
}

var _ Port = (*SwitchPort)(nil)

// NewSwitch returns a switch with n ports.
func NewSwitch(n int) *Switch {
	sw := &Switch{}
	for i := 0; i < n; i++ {
		sw.ports = append(sw.ports, &SwitchPort{sw: sw, index: i})
	}
	for _, p := range sw.ports {
		p.out = make([][][][]byte, n)
		for j := range p.out {
			p.out[j] = make([][][]byte, 0, batchHint)
		}
	}
	return sw
}

// Port returns port i.
func (sw *Switch) Port(i int) *SwitchPort { return sw.ports[i] }

// Send implements Port: learn, look up, deliver. Packets to one destination
// are delivered as one batch.
func (p *SwitchPort) Send(pkts [][][]byte) {
	sw := p.sw
	for j := range p.out {
		p.out[j] = p.out[j][:0]
	}
	var eth [12]byte
	for _, pkt := range pkts {
		if !frameMACs(pkt, &eth) {
			continue // shorter than two MACs: header validation already dropped such frames
		}
		src := macKey(eth[6:12])
		if eth[6]&1 == 0 {
			sw.learn(src, p.index)
		}
		dst := -1
		if eth[0]&1 == 0 { // unicast
			dst = sw.lookup(macKey(eth[0:6]))
		}
		switch {
		case dst == p.index:
			// Hairpin: the destination sits behind the sender; a learning
			// switch filters it.
		case dst >= 0:
			p.out[dst] = append(p.out[dst], pkt)
		default:
			sw.Floods.Add(1)
			for j := range sw.ports {
				if j != p.index {
					p.out[j] = append(p.out[j], pkt)
				}
			}
		}
	}
	for j, list := range p.out {
		if len(list) > 0 {
			sw.ports[j].deliver(list)
		}
	}
}

// frameMACs copies the destination and source MAC of the frame that
// follows the virtio_net_hdr (pkt[0]) into eth.
func frameMACs(pkt [][]byte, eth *[12]byte) bool {
	if len(pkt) == 0 {
		return false
	}
	n := 0
	for _, b := range pkt[1:] {
		n += copy(eth[n:], b)
		if n == len(eth) {
			return true
		}
	}
	return false
}

func macKey(m []byte) uint64 {
	return uint64(m[0])<<40 | uint64(m[1])<<32 | uint64(m[2])<<24 | uint64(m[3])<<16 | uint64(m[4])<<8 | uint64(m[5])
}

func macSlot(mac uint64) int {
	return int((mac * 0x9E3779B97F4A7C15) >> (64 - 12))
}

func (sw *Switch) lookup(mac uint64) int {
	h := macSlot(mac)
	for i := 0; i < macTableProbe; i++ {
		e := sw.table[(h+i)&(macTableSize-1)].Load()
		if e == 0 {
			return -1
		}
		if e>>16 == mac {
			return int(e&0xffff) - 1
		}
	}
	return -1
}

func (sw *Switch) learn(mac uint64, port int) {
	want := mac<<16 | uint64(port+1)
	h := macSlot(mac)
	for i := 0; i < macTableProbe; i++ {
		slot := &sw.table[(h+i)&(macTableSize-1)]
		e := slot.Load()
		switch {
		case e == want:
			return
		case e>>16 == mac:
			slot.CompareAndSwap(e, want) // the MAC moved ports
			return
		case e == 0:
			if slot.CompareAndSwap(0, want) {
				return
			}
			i-- // lost a race for this slot: look at it again
		}
	}
	sw.table[h].Store(want)
}
