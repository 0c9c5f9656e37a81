package stats

import (
	"math/bits"
	"runtime"
	"sync/atomic"
)

// Counter is a count that many goroutines add to at once without writing
// the same cache line: it is spread over cells, and a goroutine picks its
// cell by the address of its stack (see [StackHash]). A Counter is safe for
// concurrent use; make one with [NewCounter].
type Counter struct {
	cells []cell
	mask  uint64
}

type cell struct {
	n atomic.Uint64
	_ [56]byte // one cell per cache line
}

// NewCounter returns a zero Counter.
func NewCounter() *Counter {
	n := 1 << bits.Len(uint(4*runtime.GOMAXPROCS(0)-1))
	n = min(n, 64)
	return &Counter{cells: make([]cell, n), mask: uint64(n - 1)}
}

// Add adds n.
func (c *Counter) Add(n uint64) {
	var probe byte
	c.cells[StackHash(&probe)>>32&c.mask].n.Add(n)
}

// Load returns the count. Additions made meanwhile may or may not be in it.
func (c *Counter) Load() uint64 {
	var sum uint64
	for i := range c.cells {
		sum += c.cells[i].n.Load()
	}
	return sum
}
