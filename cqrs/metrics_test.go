package cqrs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Sleep is a query whose handler sleeps for D and fails when Fail is set.
// Inside a synctest bubble the sleep takes exactly D of fake time, so the
// latencies the metrics see are known.
type Sleep struct {
	D    time.Duration
	Fail bool
}

var errSleep = errors.New("sleep failed")

func sleep(_ context.Context, s Sleep) (cqrs.NoResult, error) {
	time.Sleep(s.D)
	if s.Fail {
		return cqrs.NoResult{}, errSleep
	}
	return cqrs.NoResult{}, nil
}

func TestMetricsLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		queries := cqrs.NewQueryBus(cqrs.WithMetrics())
		require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Sleep, cqrs.NoResult](sleep)))
		ctx := context.Background()

		// 1ms, 2ms, … 100ms: the true p50 is 50ms, p95 95ms, p99 99ms.
		for i := 1; i <= 100; i++ {
			_, err := cqrs.Dispatch[cqrs.NoResult](ctx, queries, Sleep{D: time.Duration(i) * time.Millisecond, Fail: i%10 == 0})
			if i%10 == 0 {
				require.ErrorIs(t, err, errSleep)
			} else {
				require.NoError(t, err)
			}
		}

		metrics := queries.Metrics()
		require.Len(t, metrics, 1)
		m := metrics[0]
		assert.Equal(t, cqrs.KindQuery, m.Kind)
		assert.Equal(t, "cqrs_test.Sleep", m.Name)
		assert.Equal(t, uint64(100), m.Calls)
		assert.Equal(t, uint64(10), m.Errors)
		assert.Equal(t, time.Millisecond, m.Min)
		assert.Equal(t, 100*time.Millisecond, m.Max)
		assert.Equal(t, 50500*time.Microsecond, m.Mean, "the mean is exact")
		assertWithin(t, 50*time.Millisecond, m.P50)
		assertWithin(t, 95*time.Millisecond, m.P95)
		assertWithin(t, 99*time.Millisecond, m.P99)
		assert.LessOrEqual(t, m.P50, m.P95)
		assert.LessOrEqual(t, m.P95, m.P99)
		assert.LessOrEqual(t, m.P99, m.Max)
	})
}

// assertWithin checks that a percentile read from the histogram is within
// the 1/16 that its bucket width allows.
func assertWithin(t *testing.T, want, got time.Duration) {
	t.Helper()
	assert.InDelta(t, float64(want), float64(got), float64(want)/16, "want about %v, got %v", want, got)
}

func TestMetricsSkewedDistribution(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		commands := cqrs.NewCommandBus(cqrs.WithMetrics())
		require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[Sleep, cqrs.NoResult](sleep)))
		// 98 fast calls and 2 slow ones: p50 and p95 are fast, p99 slow,
		// which a moving average would blur.
		for i := range 100 {
			d := 3 * time.Microsecond
			if i >= 98 {
				d = 2 * time.Second
			}
			_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Sleep{D: d})
			require.NoError(t, err)
		}
		m := commands.Metrics()[0]
		assert.Equal(t, cqrs.KindCommand, m.Kind)
		assertWithin(t, 3*time.Microsecond, m.P50)
		assertWithin(t, 3*time.Microsecond, m.P95)
		assertWithin(t, 2*time.Second, m.P99)
		assert.Equal(t, 3*time.Microsecond, m.Min)
		assert.Equal(t, 2*time.Second, m.Max)
	})
}

func TestMetricsCountRejectedDispatches(t *testing.T) {
	t.Parallel()
	_, queries := newBuses(t, cqrs.WithMetrics())
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := cqrs.Dispatch[UserView](cancelled, queries, GetUser{})
	require.ErrorIs(t, err, context.Canceled)
	_, err = cqrs.Dispatch[UserView](context.Background(), queries, GetUser{})
	require.NoError(t, err)

	m := queries.Metrics()[0]
	assert.Equal(t, uint64(2), m.Calls)
	assert.Equal(t, uint64(1), m.Errors)
}

func TestMetricsOneEntryPerType(t *testing.T) {
	t.Parallel()
	queries := cqrs.NewQueryBus(cqrs.WithMetrics())
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](getUser)))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Renamed, cqrs.NoResult](noop[Renamed])))
	_, err := cqrs.ExecuteTyped[UserView](context.Background(), queries, GetUser{})
	require.NoError(t, err)

	metrics := queries.Metrics()
	require.Len(t, metrics, 2)
	assert.Equal(t, "cqrs_test.GetUser", metrics[0].Name)
	assert.Equal(t, uint64(1), metrics[0].Calls)
	assert.Equal(t, "users.renamed", metrics[1].Name)
	assert.Zero(t, metrics[1].Calls)
	assert.Zero(t, metrics[1].Min, "no latency without calls")
}

// TestMetricsExactUnderConcurrency: many goroutines dispatching at once lose
// no count.
func TestMetricsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	commands, _ := newBuses(t, cqrs.WithMetrics())
	const goroutines, each = 16, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				name := "x"
				if (g+i)%4 == 0 {
					name = "" // fails with errEmptyName
				}
				_, _ = cqrs.Dispatch[UserCreated](context.Background(), commands, CreateUser{Name: name})
			}
		})
	}
	wg.Wait()
	m := commands.Metrics()[0]
	assert.Equal(t, uint64(goroutines*each), m.Calls)
	assert.Equal(t, uint64(goroutines*each/4), m.Errors)
	assert.LessOrEqual(t, m.Min, m.P50)
	assert.LessOrEqual(t, m.P99, m.Max)
}

func TestRecorder(t *testing.T) {
	spec := cqrs.SpecFor[Sleep, cqrs.NoResult](cqrs.NewQueryBus())
	r := cqrs.NewRecorder(spec)
	assert.Equal(t, spec, r.Spec())
	assert.Equal(t, cqrs.MessageMetrics{Kind: cqrs.KindQuery, Name: spec.Name}, r.Metrics(), "nothing recorded")

	for i := 1; i <= 100; i++ {
		r.Record(time.Duration(i)*time.Millisecond, i%10 == 0)
	}
	r.Record(-time.Second, false)
	m := r.Metrics()
	assert.Equal(t, cqrs.KindQuery, m.Kind)
	assert.Equal(t, spec.Name, m.Name)
	assert.Equal(t, uint64(101), m.Calls)
	assert.Equal(t, uint64(10), m.Errors)
	assert.Zero(t, m.Min, "a negative duration counts as zero")
	assert.Equal(t, 100*time.Millisecond, m.Max)
	assertWithin(t, 50*time.Millisecond, m.P50)
	assertWithin(t, 99*time.Millisecond, m.P99)
	assert.Zero(t, testing.AllocsPerRun(100, func() { r.Record(time.Millisecond, false) }))

	var zero cqrs.Recorder
	zero.Record(time.Second, true)
	assert.Zero(t, zero.Metrics().Calls, "the zero Recorder records nothing")
}
