package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// TestPanicSeenByLoggingAndMetrics: a panicking handler under Logging and
// Metrics, on a bus with metrics of its own, shows up as one error record
// and one failed call in each count, with the original panic value.
func TestPanicSeenByLoggingAndMetrics(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	metrics := middleware.NewMetrics()
	var got error
	witness := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			got = next(ctx, c)
			return got
		}
	})
	bus := cqrs.NewCommandBus(cqrs.WithMetrics(), cqrs.WithInterceptors(
		middleware.Logging(middleware.LoggingConfig{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}),
		metrics,
		witness,
	))
	j := &jobs{}
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Job, Done](j.handle)))

	_, err := run(bus, Job{Do: "panic"})
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)

	var pe *cqrs.PanicError
	require.ErrorAs(t, got, &pe, "the innermost interceptor sees the panic as an error")
	assert.Equal(t, "job exploded", pe.Value)

	var records []map[string]any
	for line := range bytes.Lines(logs.Bytes()) {
		var r map[string]any
		require.NoError(t, json.Unmarshal(line, &r))
		records = append(records, r)
	}
	require.Len(t, records, 1, "one log record: %s", logs.String())
	assert.Equal(t, "ERROR", records[0]["level"])
	assert.Equal(t, "error", records[0]["outcome"])
	assert.Equal(t, "middleware_test.Job", records[0]["message"])

	for name, snap := range map[string][]cqrs.MessageMetrics{"middleware": metrics.Snapshot(), "bus": bus.Metrics()} {
		require.Len(t, snap, 1, name)
		assert.Equal(t, uint64(1), snap[0].Calls, name)
		assert.Equal(t, uint64(1), snap[0].Errors, name)
	}
}

// Quote is a query whose handler panics.
type Quote struct{ SKU string }

// TestPanicUnderCacheKeepsItsShape: the cache now sees a handler's panic
// as an error, recovered inside it; it must not cache it, and the caller
// gets the bus's *PanicError with the original value and a one-line
// message.
func TestPanicUnderCacheKeepsItsShape(t *testing.T) {
	t.Parallel()
	cache, err := middleware.NewCache[Quote, int](middleware.CacheConfig{TTL: time.Minute})
	require.NoError(t, err)
	t.Cleanup(cache.Close)
	queries := cqrs.NewQueryBus()
	calls := 0
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Quote, int](func(context.Context, Quote) (int, error) {
		calls++
		panic("price exploded")
	}), cache.Middleware()))

	for range 2 {
		_, err := cqrs.Dispatch[int](context.Background(), queries, Quote{SKU: "s-1"})
		var pe *cqrs.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "price exploded", pe.Value)
		assert.Equal(t, "cqrs: handler panicked: query middleware_test.Quote: price exploded", err.Error())
	}
	assert.Equal(t, 2, calls, "a panic is not cached")
}

// TestPanicIsNotRetried: Retry now sees a handler's panic as an error, and
// must not call the handler again for it.
func TestPanicIsNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, j := jobBus(t, middleware.Retry(middleware.RetryConfig{MaxAttempts: 3}))
		_, err := run(bus, Job{Do: "panic"})
		require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
		assert.Equal(t, int64(1), j.calls.Load(), "a panic is not retried")
	})
}
