package middleware_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	aorders "github.com/typedcqrs/dispatch/middleware/internal/twin/a/orders"
	borders "github.com/typedcqrs/dispatch/middleware/internal/twin/b/orders"
)

// twins returns two command buses sharing ics, one with a handler of
// a/orders.Place that succeeds, one with a handler of b/orders.Place that
// fails: two types that print alike as orders.Place.
func twins(t *testing.T, ics ...cqrs.Interceptor) (a, b *cqrs.CommandBus) {
	t.Helper()
	a = cqrs.NewCommandBus(cqrs.WithInterceptors(ics...))
	b = cqrs.NewCommandBus(cqrs.WithInterceptors(ics...))
	require.NoError(t, cqrs.Register(a, cqrs.HandlerFunc[aorders.Place, cqrs.NoResult](func(context.Context, aorders.Place) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, nil
	})))
	require.NoError(t, cqrs.Register(b, cqrs.HandlerFunc[borders.Place, cqrs.NoResult](func(context.Context, borders.Place) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, errJob
	})))
	require.Equal(t, cqrs.SpecFor[aorders.Place, cqrs.NoResult](a).String(), cqrs.SpecFor[borders.Place, cqrs.NoResult](b).String(),
		"the two types print alike")
	return a, b
}

func TestBreakerKeyedByTypeNotName(t *testing.T) {
	br := middleware.NewBreaker(gobreakerTripAfter(2))
	a, b := twins(t, br)
	for range 3 {
		_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), b, borders.Place{})
		require.Error(t, err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), a, aorders.Place{})
	require.NoError(t, err, "b/orders.Place's failures did not open a/orders.Place's breaker")

	stateA, ok := br.State(cqrs.SpecFor[aorders.Place, cqrs.NoResult](a))
	require.True(t, ok)
	stateB, ok := br.State(cqrs.SpecFor[borders.Place, cqrs.NoResult](b))
	require.True(t, ok)
	assert.Equal(t, "closed", stateA.String())
	assert.Equal(t, "open", stateB.String())

	n := 0
	for spec, state := range br.All() {
		n++
		want := "closed"
		if spec.MessageType == cqrs.SpecFor[borders.Place, cqrs.NoResult](b).MessageType {
			want = "open"
		}
		assert.Equal(t, want, state.String(), spec.MessageType.PkgPath())
	}
	assert.Equal(t, 2, n, "one breaker per type")
}

func TestRateLimitKeyedByTypeNotName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rl, err := middleware.NewRateLimit(middleware.RateLimitConfig{Rate: 1, Burst: 1})
		require.NoError(t, err)
		a, b := twins(t, rl)
		_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), b, borders.Place{})
		require.ErrorIs(t, err, errJob, "b's token")
		_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), a, aorders.Place{})
		require.NoError(t, err, "a has a bucket of its own")
	})
}

// TestStackCacheKeyedByTypeNotName: a/orders.Place has the stack's cache,
// b/orders.Place, which prints alike, does not: b's queries must still go
// through the rate limit on the bus.
func TestStackCacheKeyedByTypeNotName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stack, err := middleware.Config{
			RateLimit: &middleware.RateLimitConfig{Rate: 1, Burst: 1},
			Queries:   middleware.QueryConfig{Cache: &middleware.CacheConfig{TTL: time.Minute}},
		}.Build(nil)
		require.NoError(t, err)
		queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
		cache, err := middleware.NewQueryCache[aorders.Place, int](stack, queries)
		require.NoError(t, err)
		defer cache.Close()
		require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[aorders.Place, int](func(context.Context, aorders.Place) (int, error) {
			return 1, nil
		}), cache.Middleware()))
		other := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
		require.NoError(t, cqrs.Register(other, cqrs.HandlerFunc[borders.Place, int](func(context.Context, borders.Place) (int, error) {
			return 2, nil
		})))
		_, err = cqrs.Dispatch[int](context.Background(), other, borders.Place{})
		require.NoError(t, err)
		_, err = cqrs.Dispatch[int](context.Background(), other, borders.Place{})
		require.ErrorIs(t, err, cqrs.ErrRateLimited, "b/orders.Place has no cache, so the bus limits it")
	})
}
