package nats

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// latency counts one message type's handled requests and their latency
// in a fixed histogram: each power of two of nanoseconds is split into
// four buckets, so a percentile read from it is within about 19% of the
// true value. It is safe for concurrent use; the zero value is empty.
type latency struct {
	calls, errors, sum atomic.Uint64
	buckets            [64 * 4]atomic.Uint64
}

// bucketOf returns the bucket of a duration of ns nanoseconds.
func bucketOf(ns uint64) int {
	if ns < 4 {
		return int(ns)
	}
	exp := bits.Len64(ns) - 1 // 2 or more
	return exp*4 + int(ns>>(exp-2)&3)
}

// lowerBound returns the shortest duration bucket i holds.
func lowerBound(i int) uint64 {
	if i < 4*2 {
		return uint64(min(i, 4))
	}
	exp := i / 4
	return (4 | uint64(i%4)) << (exp - 2)
}

func (l *latency) record(d time.Duration, failed bool) {
	ns := uint64(max(d, 0))
	l.calls.Add(1)
	if failed {
		l.errors.Add(1)
	}
	l.sum.Add(ns)
	l.buckets[bucketOf(ns)].Add(1)
}

// percentile returns the q-quantile, as the lower bound of its bucket.
func (l *latency) percentile(q float64) time.Duration {
	var counts [len(l.buckets)]uint64
	var total uint64
	for i := range l.buckets {
		counts[i] = l.buckets[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q * float64(total-1))
	var seen uint64
	for i, n := range counts {
		seen += n
		if seen > rank {
			return time.Duration(lowerBound(i))
		}
	}
	return 0
}
