package stats

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBucketsCoverEveryDuration(t *testing.T) {
	t.Parallel()
	values := []uint64{0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 1000, 1 << 20, 1<<39 - 1}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		values = append(values, r.Uint64N(1<<maxExp))
	}
	for _, v := range values {
		i := bucketOf(v)
		require.GreaterOrEqual(t, i, 0)
		require.Less(t, i, nBuckets)
		lo, hi := bucketBounds(i)
		require.True(t, lo <= v && v < hi, "%d not in bucket %d [%d, %d)", v, i, lo, hi)
		if lo >= subCount {
			assert.LessOrEqual(t, (hi-lo)*subCount, lo, "bucket %d is wider than 1/8 of its start", i)
		}
	}
	// Durations past the last bucket share it.
	assert.Equal(t, nBuckets-1, bucketOf(1<<maxExp))
	assert.Equal(t, nBuckets-1, bucketOf(1<<63))
}

func TestBucketsAreOrdered(t *testing.T) {
	t.Parallel()
	_, prevHi := bucketBounds(0)
	for i := 1; i < nBuckets; i++ {
		lo, hi := bucketBounds(i)
		require.Equal(t, prevHi, lo, "bucket %d does not start where %d ends", i, i-1)
		require.Greater(t, hi, lo)
		prevHi = hi
	}
}

func TestSnapshot(t *testing.T) {
	t.Parallel()
	s := New()
	assert.Equal(t, Snapshot{}, s.Snapshot(), "nothing recorded")
	for i := 1; i <= 1000; i++ {
		s.Record(time.Duration(i)*time.Microsecond, i%4 == 0)
	}
	snap := s.Snapshot()
	assert.Equal(t, uint64(1000), snap.Calls)
	assert.Equal(t, uint64(250), snap.Errors)
	assert.Equal(t, time.Microsecond, snap.Min)
	assert.Equal(t, time.Millisecond, snap.Max)
	assert.Equal(t, 500500*time.Nanosecond, snap.Mean)
	assert.InDelta(t, 500*time.Microsecond, snap.P50, float64(500*time.Microsecond)/16)
	assert.InDelta(t, 950*time.Microsecond, snap.P95, float64(950*time.Microsecond)/16)
	assert.InDelta(t, 990*time.Microsecond, snap.P99, float64(990*time.Microsecond)/16)
}

func TestNegativeDurationCountsAsZero(t *testing.T) {
	t.Parallel()
	s := New()
	s.Record(-time.Second, false)
	snap := s.Snapshot()
	assert.Equal(t, uint64(1), snap.Calls)
	assert.Zero(t, snap.Min)
	assert.Zero(t, snap.Max)
}

func TestNowInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := Now()
		time.Sleep(3 * time.Second)
		assert.Equal(t, 3*time.Second, Now()-start, "Now follows the bubble's fake clock")
	})
}

func TestRecordDoesNotAllocate(t *testing.T) {
	s := New()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { s.Record(time.Millisecond, false) }))
}

func TestCounterIsExactUnderConcurrency(t *testing.T) {
	c := NewCounter()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 1000 {
				c.Add(1)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, uint64(32000), c.Load())
	assert.Zero(t, testing.AllocsPerRun(100, func() { c.Add(2) }))
}

func TestCountsAreExactUnderConcurrency(t *testing.T) {
	s := New()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 5000 {
				// Many buckets, so that slots change hands and spill
				// into the shared histogram all the time.
				s.Record(time.Duration(r.Uint64N(1<<30)), i%10 == 0)
			}
		})
	}
	wg.Wait()
	snap := s.Snapshot()
	assert.Equal(t, uint64(40000), snap.Calls)
	assert.Equal(t, uint64(4000), snap.Errors)
}

func TestFullSlotSpills(t *testing.T) {
	t.Parallel()
	s := New()
	b := bucketOf(1000)
	for i := range s.shards {
		s.shards[i].slots[b%nSlots].Store(uint64(b+1)<<countBits | countMask)
	}
	s.Record(1000*time.Nanosecond, false)
	var total uint64
	for i := range s.shards {
		total += s.shards[i].slots[b%nSlots].Load() & countMask
	}
	total += s.hist[b].Load()
	assert.Equal(t, uint64(len(s.shards))*countMask+1, total, "a full slot moves its count to the histogram")
}

// TestMemoryPerType bounds the heap one message type's metrics take, at
// a processor count of 16, where a histogram per processor would take ten
// times as much.
func TestMemoryPerType(t *testing.T) {
	for _, procs := range []int{2, 16, 64} {
		t.Run(strconv.Itoa(procs), func(t *testing.T) {
			bytes := HeapPerType(procs, 1000)
			assert.LessOrEqual(t, bytes, 4096.0, "heap per message type at GOMAXPROCS=%d", procs)
		})
	}
}

// BenchmarkHeapPerType reports the heap of one message type's metrics at
// each GOMAXPROCS given with -cpu.
func BenchmarkHeapPerType(b *testing.B) {
	var bytes float64
	for b.Loop() {
		bytes = HeapPerType(runtime.GOMAXPROCS(0), 1000)
	}
	b.ReportMetric(bytes, "B/type")
}

func BenchmarkRecord(b *testing.B) {
	s := New()
	b.Run("Serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.Record(80*time.Nanosecond, false)
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Record(80*time.Nanosecond, false)
			}
		})
	})
}

var sinkDuration time.Duration

// BenchmarkNow is the price of one reading of the clock: a dispatch with
// metrics pays two.
func BenchmarkNow(b *testing.B) {
	var d time.Duration
	for b.Loop() {
		d += Now()
	}
	sinkDuration = d
}

// TestStackHashSpreadsEvenlySpacedStacks hashes addresses 2 KiB and 8 KiB
// apart, as goroutine stacks often are, into 8 slots, as the free lists
// and shards use it: they must land in several slots, where the address's
// own bits above 2 KiB put 8 KiB strides in 2 slots of 8.
func TestStackHashSpreadsEvenlySpacedStacks(t *testing.T) {
	buf := make([]byte, 8*8192)
	for _, stride := range []int{2048, 8192} {
		seen := map[uint64]bool{}
		for k := range 8 {
			seen[StackHash(&buf[k*stride])>>61] = true
		}
		assert.GreaterOrEqual(t, len(seen), 4, "slots of 8 addresses %d bytes apart", stride)
	}
}

// TestRecordFromManyGoroutines records from more goroutines than there
// are shards: every dispatch must be counted, whichever shard it went to.
func TestRecordFromManyGoroutines(t *testing.T) {
	s := New()
	const goroutines, each = 32, 1000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				s.Record(time.Duration(g*each+i), i%10 == 0)
			}
		})
	}
	wg.Wait()
	snap := s.Snapshot()
	assert.Equal(t, uint64(goroutines*each), snap.Calls)
	assert.Equal(t, uint64(goroutines*each/10), snap.Errors)
	assert.Equal(t, time.Duration(0), snap.Min)
	assert.Equal(t, time.Duration(goroutines*each-1), snap.Max)
}
