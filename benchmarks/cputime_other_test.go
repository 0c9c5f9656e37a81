//go:build !unix

package benchmarks

import "time"

// cpuTime returns 0: the benchmarks report CPU time only where
// getrusage tells it.
func cpuTime() time.Duration { return 0 }
