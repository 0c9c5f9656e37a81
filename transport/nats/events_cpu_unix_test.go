//go:build unix

package nats_test

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time this process has used, in user and
// system mode, or 0 if it cannot tell. On a shared machine it measures
// the work of a benchmark better than the time it took.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
