//go:build race

package virtqueue

import "sync"

// eventFieldMu serialises load16/store16 in race builds only. The hardware
// guarantees we rely on in normal builds (see half_norace.go) are invisible
// to the race detector; the mutex gives it the happens-before edges so tests
// that run a Driver and a Split in different goroutines are race-clean.
var eventFieldMu sync.Mutex

func load16(p *uint16) uint16 {
	eventFieldMu.Lock()
	v := *p
	eventFieldMu.Unlock()
	return fromLE16(v)
}

func store16(p *uint16, v uint16) {
	eventFieldMu.Lock()
	*p = fromLE16(v)
	eventFieldMu.Unlock()
}
