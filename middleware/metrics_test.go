package middleware_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

func TestMetricsCountsExactlyUnderLoad(t *testing.T) {
	t.Parallel()
	m := middleware.NewMetrics()
	bus, _ := jobBus(t, m)
	const goroutines, each = 16, 400
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				job := Job{ID: i}
				if (g+i)%5 == 0 {
					job.Do = "fail"
				}
				_, _ = run(bus, job)
			}
		})
	}
	wg.Wait()
	snap := m.Snapshot()
	require.Len(t, snap, 1)
	assert.Equal(t, "middleware_test.Job", snap[0].Name)
	assert.Equal(t, cqrs.KindCommand, snap[0].Kind)
	assert.Equal(t, uint64(goroutines*each), snap[0].Calls)
	assert.Equal(t, uint64(goroutines*each/5), snap[0].Errors)
}

func TestMetricsLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := middleware.NewMetrics()
		queries := cqrs.NewQueryBus(cqrs.WithInterceptors(m))
		require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[time.Duration, cqrs.NoResult](func(_ context.Context, d time.Duration) (cqrs.NoResult, error) {
			time.Sleep(d)
			return cqrs.NoResult{}, nil
		})))
		commands, _ := jobBus(t, m) // one Metrics serves several buses
		for i := 1; i <= 100; i++ {
			_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), queries, time.Duration(i)*time.Millisecond)
			require.NoError(t, err)
		}
		_, err := run(commands, Job{})
		require.NoError(t, err)

		snap := m.Snapshot()
		require.Len(t, snap, 2)
		assert.Equal(t, "command middleware_test.Job", snap[0].Kind.String()+" "+snap[0].Name)
		q := snap[1]
		assert.Equal(t, "time.Duration", q.Name)
		assert.Equal(t, uint64(100), q.Calls)
		assert.Equal(t, time.Millisecond, q.Min)
		assert.Equal(t, 100*time.Millisecond, q.Max)
		assert.Equal(t, 50500*time.Microsecond, q.Mean, "a true mean, not a moving average")
		assert.InDelta(t, float64(99*time.Millisecond), float64(q.P99), float64(99*time.Millisecond)/16)
	})
}

func TestMetricsDoesNotAllocate(t *testing.T) {
	bus, _ := jobBus(t, middleware.NewMetrics())
	assert.Zero(t, allocsPerJob(t, bus, Job{ID: 1}))
	assert.Zero(t, allocsPerJob(t, bus, Job{Do: "fail"}), "nor when the handler fails")
}

// TestMetricsZeroValue: a Metrics need not be made with NewMetrics.
func TestMetricsZeroValue(t *testing.T) {
	t.Parallel()
	var m middleware.Metrics
	assert.Empty(t, m.Snapshot())
	bus, _ := jobBus(t, &m)
	_, err := run(bus, Job{})
	require.NoError(t, err)
	_, err = run(bus, Job{Do: "fail"})
	require.ErrorIs(t, err, errJob)
	snap := m.Snapshot()
	require.Len(t, snap, 1)
	assert.Equal(t, uint64(2), snap[0].Calls)
	assert.Equal(t, uint64(1), snap[0].Errors)
}
