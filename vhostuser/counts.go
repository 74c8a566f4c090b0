package vhostuser

import "sync/atomic"

// MessageCounts counts received messages by request id; slot 0 holds ids
// this back-end does not know. Counting is one atomic add per message.
type MessageCounts [maxRequest + 1]atomic.Uint64

func (c *MessageCounts) add(r Request) {
	if c == nil {
		return
	}
	if r.Known() {
		c[r].Add(1)
	} else {
		c[0].Add(1)
	}
}

// Each calls fn for every request with a non-zero count.
func (c *MessageCounts) Each(fn func(req string, n uint64)) {
	for i := range c {
		n := c[i].Load()
		if n == 0 {
			continue
		}
		name := "UNKNOWN"
		if i > 0 {
			name = Request(i).String()
		}
		fn(name, n)
	}
}

// MessageCounts reports this session's message counts.
func (s *Session) MessageCounts(fn func(req string, n uint64)) { s.counts.Each(fn) }
