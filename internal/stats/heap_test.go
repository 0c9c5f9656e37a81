package stats

import (
	"runtime"
	"runtime/debug"
)

// HeapPerType returns the heap taken by each of n Stats made at the given
// GOMAXPROCS, measured with runtime.MemStats: the least of three tries, so
// that what other goroutines allocate meanwhile does not count.
func HeapPerType(procs, n int) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	least := -1.0
	for range 3 {
		keep := make([]*Stats, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range keep {
			keep[i] = New()
		}
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(keep)
		perType := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
		if least < 0 || perType < least {
			least = perType
		}
	}
	return least
}
