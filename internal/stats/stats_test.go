package stats

import (
	"math/rand/v2"
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
