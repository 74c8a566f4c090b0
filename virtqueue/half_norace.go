//go:build !race

package virtqueue

// load16 and store16 access the 16-bit ring fields that share no aligned
// 32-bit word with anything this side may also store (used_event, avail_event,
// and avail.flags of a ring that is only 2-byte aligned). Go has no 16-bit
// atomics; an aligned *uint16 access compiles to one 16-bit load or store,
// which every Go target performs single-copy atomically, and the compiler does
// not move plain accesses across the sync/atomic operations that the callers
// place around them (see access.go for the fences). In the Go memory model the
// access is still a data race with the other side; race builds use
// half_race.go so that tests running both sides in one process stay clean.
func load16(p *uint16) uint16 { return fromLE16(*p) }

func store16(p *uint16, v uint16) { *p = fromLE16(v) }
