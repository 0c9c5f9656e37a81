// Package stats keeps the counts and latency histogram of one message type,
// cheaply enough to record every dispatch: no allocation, no lock, hot
// counters spread over shards of one cache line each, picked by a hash of
// the dispatching goroutine's stack, and one
// shared histogram that the shards write to only now and then.
package stats

import (
	"math"
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// Snapshot is what [Stats.Snapshot] reads.
type Snapshot struct {
	// Calls counts dispatches, failed ones included.
	Calls uint64
	// Errors counts the dispatches that failed.
	Errors uint64

	// Min, Max and Mean are exact.
	Min, Max, Mean time.Duration
	// P50, P95 and P99 are percentiles read from a fixed histogram whose
	// buckets are 1/8 of a power of two wide, so each is within about 6% of
	// the true value (and always between Min and Max).
	P50, P95, P99 time.Duration
}

// The latency histogram: durations below 2^subBits ns have a bucket each;
// above, each power of two is split into 2^subBits buckets. Durations from
// 2^maxExp ns (about 18 minutes) up share the last bucket.
const (
	subBits  = 3
	subCount = 1 << subBits
	maxExp   = 40
	nBuckets = (maxExp-subBits)*subCount + subCount
)

// bucketOf returns the histogram bucket of a duration of ns nanoseconds.
func bucketOf(ns uint64) int {
	if ns < subCount {
		return int(ns)
	}
	exp := bits.Len64(ns) - 1
	if exp >= maxExp {
		return nBuckets - 1
	}
	mantissa := ns >> (exp - subBits) // in [subCount, 2*subCount)
	return (exp-subBits)*subCount + int(mantissa)
}

// bucketBounds returns the durations bucket i holds: [lo, hi).
func bucketBounds(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i) + 1
	}
	shift := i/subCount - 1
	mantissa := uint64(i%subCount + subCount)
	return mantissa << shift, (mantissa + 1) << shift
}

// epoch is the origin of [Now]: a fixed instant, never changed.
var epoch = time.Now()

// Now reads the monotonic clock alone, which costs half of [time.Now]: that
// reads the wall clock too.
func Now() time.Duration { return time.Since(epoch) }

// Time returns the current time from one reading of the monotonic clock,
// where [time.Now] reads the wall clock too: for code that only subtracts
// times, such as a token bucket.
func Time() time.Time { return epoch.Add(time.Since(epoch)) }

// Stats are the metrics of one message type: counts and a latency
// histogram. A Stats is safe for concurrent use; make one with [New].
//
// The memory of a Stats does not grow with the number of processors
// beyond a 64-byte shard each (at most [maxShards]): the histogram is one,
// shared by every processor, and a processor seldom writes it. Each shard
// keeps the hot counters (errors, sum, min, max) and a small write-combining
// cache of histogram buckets: a dispatch adds one to the count of its
// bucket there, and the shard moves a count into the shared histogram only
// when another bucket takes its slot. Latencies of one message type fall in
// few buckets, so the shared histogram is written far less often than once
// per dispatch, and goroutines running at once on different processors
// seldom write one cache line on the path (only when their stacks hash to
// one shard).
type Stats struct {
	shards []shard
	mask   uint64
	hist   [nBuckets]atomic.Uint64
}

// shard is the part of a message type's metrics that one dispatch updates:
// one cache line. A dispatch picks its shard by its goroutine's stack
// (see [StackHash]), so a goroutine keeps writing the same shard, and
// goroutines running at once on different processors seldom write the
// same line.
type shard struct {
	errors atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	min    atomic.Int64
	max    atomic.Int64
	// slots are the shard's pending histogram counts, direct-mapped by
	// bucket: each holds (bucket+1)<<countBits | count, or zero.
	slots [nSlots]atomic.Uint64
}

const (
	nSlots    = 4
	countBits = 48
	countMask = 1<<countBits - 1
)

// maxShards bounds the memory of one message type's metrics: 64 bytes a
// shard, besides the shared histogram's 2.4 KiB, so that a type's metrics
// stay near 3 KiB (and the bus's whole share of a type under 4 KiB) at any
// GOMAXPROCS. Past 4 processors, goroutines running at once share shards
// more often: still less than every processor sharing one histogram.
const maxShards = 8

// New returns empty Stats.
func New() *Stats {
	// Twice as many shards as processors, so that two goroutines running
	// at once seldom hash to the same one.
	n := 1 << bits.Len(uint(2*runtime.GOMAXPROCS(0)-1))
	n = min(n, maxShards)
	// A shard is 64 bytes and n a power of two, so the allocation is
	// aligned to a cache line and each shard has one to itself.
	s := &Stats{shards: make([]shard, n), mask: uint64(n - 1)}
	for i := range s.shards {
		s.shards[i].min.Store(math.MaxInt64)
	}
	return s
}

// StackHash hashes the address of probe, a variable on the calling
// goroutine's stack, into 64 bits whose high bits are well mixed:
// goroutines have stacks of their own, so it tells them apart, for the
// price of a multiplication, where a sync.Pool token costs a Get and a
// Put. Stacks are 2 KiB or more and often laid out a fixed distance apart,
// so the bits below 2 KiB are dropped and the rest multiplied by 2^64
// divided by the golden ratio, which spreads evenly spaced addresses over
// the high bits. Two goroutines may still hash alike; callers use it to
// spread writes, never to tell goroutines apart for certain. The address
// is only hashed, never used. Pass the address of a local variable of the
// function that uses the hash:
//
//	var probe byte
//	i := stats.StackHash(&probe) >> (64 - bits)
func StackHash(probe *byte) uint64 {
	return uint64(uintptr(unsafe.Pointer(probe))>>11) * 0x9E3779B97F4A7C15
}

// Record adds one dispatch that took d and failed when failed is true. It
// does not allocate.
func (s *Stats) Record(d time.Duration, failed bool) {
	// The shard is the calling goroutine's, by its stack: a goroutine
	// keeps writing the same shard, and two goroutines seldom share one.
	var probe byte
	sh := &s.shards[StackHash(&probe)>>32&s.mask]

	ns := max(int64(d), 0)
	if failed {
		sh.errors.Add(1)
	}
	sh.sum.Add(uint64(ns))
	s.count(sh, bucketOf(uint64(ns)))
	lower(&sh.min, ns)
	raise(&sh.max, ns)
}

// count adds one to bucket b through the shard's slot for it.
func (s *Stats) count(sh *shard, b int) {
	slot := &sh.slots[b%nSlots]
	tag := uint64(b+1) << countBits
	for {
		old := slot.Load()
		if old&^countMask == tag && old&countMask != countMask {
			if slot.CompareAndSwap(old, old+1) {
				return
			}
			continue
		}
		// Another bucket holds the slot (or none, or it is full): take
		// it, and move its count to the shared histogram.
		if slot.CompareAndSwap(old, tag|1) {
			if old != 0 {
				s.hist[old>>countBits-1].Add(old & countMask)
			}
			return
		}
	}
}

// lower sets v to x if x is smaller. Once the minimum is known it seldom
// changes, so this is almost always a single load.
func lower(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x >= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// raise sets v to x if x is larger.
func raise(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// Snapshot sums the shards. Dispatches that run meanwhile may be counted in
// some fields and not yet in others.
func (s *Stats) Snapshot() Snapshot {
	var m Snapshot
	var hist [nBuckets]uint64
	// The shared histogram first, the shards' slots after: a count moves
	// from a slot to the histogram after the slot is taken, so read in
	// this order it is never counted twice (only, for an instant, not
	// yet).
	for b := range hist {
		hist[b] = s.hist[b].Load()
	}
	var sum uint64
	lo, hi := int64(math.MaxInt64), int64(0)
	for i := range s.shards {
		sh := &s.shards[i]
		m.Errors += sh.errors.Load()
		sum += sh.sum.Load()
		lo = min(lo, sh.min.Load())
		hi = max(hi, sh.max.Load())
		for j := range sh.slots {
			if v := sh.slots[j].Load(); v != 0 {
				hist[v>>countBits-1] += v & countMask
			}
		}
	}
	for _, n := range hist {
		m.Calls += n
	}
	if m.Calls == 0 {
		return m
	}
	m.Min, m.Max = time.Duration(lo), time.Duration(hi)
	m.Mean = time.Duration(sum / m.Calls)
	m.P50 = percentile(&hist, m.Calls, 0.50, m.Min, m.Max)
	m.P95 = percentile(&hist, m.Calls, 0.95, m.Min, m.Max)
	m.P99 = percentile(&hist, m.Calls, 0.99, m.Min, m.Max)
	return m
}

// percentile returns the q-quantile of the histogram, which holds total
// durations, interpolated linearly inside its bucket and clamped to [lo, hi].
func percentile(hist *[nBuckets]uint64, total uint64, q float64, lo, hi time.Duration) time.Duration {
	rank := q * float64(total) // the rank-th smallest duration, counting from 0
	var seen uint64
	for i, n := range hist {
		if n == 0 || float64(seen+n) <= rank {
			seen += n
			continue
		}
		from, to := bucketBounds(i)
		frac := (rank - float64(seen)) / float64(n)
		d := time.Duration(float64(from) + frac*float64(to-from))
		return min(max(d, lo), hi)
	}
	return hi
}
