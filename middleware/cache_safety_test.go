package middleware_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// ListOrders is a query whose result is a slice: callers could share it.
type ListOrders struct{ Customer string }

// TestCachePanicKeepsItsShape: a panic under the cache comes back as the
// bus's *cqrs.PanicError with the value passed to panic, not the cache
// library's wrapper, and its message stays one line.
func TestCachePanicKeepsItsShape(t *testing.T) {
	errBoom := errors.New("boom")
	for name, value := range map[string]any{"string": "job exploded", "error": errBoom} {
		t.Run(name, func(t *testing.T) {
			cache, err := middleware.NewCache[ListOrders, []string](middleware.CacheConfig{TTL: time.Minute})
			require.NoError(t, err)
			defer cache.Close()
			bus := cqrs.NewQueryBus()
			require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[ListOrders, []string](func(context.Context, ListOrders) ([]string, error) {
				panic(value)
			}), cache.Middleware()))

			for range 2 { // a panic is not cached either
				_, err = cqrs.Dispatch[[]string](context.Background(), bus, ListOrders{})
				var pe *cqrs.PanicError
				require.ErrorAs(t, err, &pe)
				assert.Equal(t, value, pe.Value)
				assert.NotContains(t, pe.Error(), "\n")
				assert.Equal(t, "query middleware_test.ListOrders", pe.Message)
			}
		})
	}
}

// TestCachePanicReachesEveryWaiter: callers waiting on a load that
// panics each get the panic's value.
func TestCachePanicReachesEveryWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cache, err := middleware.NewCache[ListOrders, []string](middleware.CacheConfig{TTL: time.Minute})
		require.NoError(t, err)
		defer cache.Close()
		release := make(chan struct{})
		bus := cqrs.NewQueryBus()
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[ListOrders, []string](func(context.Context, ListOrders) ([]string, error) {
			<-release
			panic("late")
		}), cache.Middleware()))
		var wg sync.WaitGroup
		errs := make([]error, 5)
		for i := range errs {
			wg.Go(func() { _, errs[i] = cqrs.Dispatch[[]string](context.Background(), bus, ListOrders{}) })
		}
		synctest.Wait()
		close(release)
		wg.Wait()
		for _, err := range errs {
			var pe *cqrs.PanicError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "late", pe.Value)
		}
	})
}

// TestCacheSharesResultsUnlessCloned: without WithClone every caller gets
// the same result, so a slice one caller changes changes for all; with it
// each caller gets its own copy.
func TestCacheSharesResultsUnlessCloned(t *testing.T) {
	for name, tc := range map[string]struct {
		opts   []middleware.CacheOption[[]string]
		shared bool
	}{
		"default":    {shared: true},
		"with clone": {opts: []middleware.CacheOption[[]string]{middleware.WithClone(slices.Clone[[]string])}},
	} {
		t.Run(name, func(t *testing.T) {
			cache, err := middleware.NewCache[ListOrders, []string](middleware.CacheConfig{TTL: time.Minute}, tc.opts...)
			require.NoError(t, err)
			defer cache.Close()
			bus := cqrs.NewQueryBus()
			require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[ListOrders, []string](func(context.Context, ListOrders) ([]string, error) {
				return []string{"o-1", "o-2"}, nil
			}), cache.Middleware()))

			first, err := cqrs.Dispatch[[]string](context.Background(), bus, ListOrders{})
			require.NoError(t, err)
			first[0] = "changed by the first caller" // the miss's caller
			second, err := cqrs.Dispatch[[]string](context.Background(), bus, ListOrders{})
			require.NoError(t, err)
			second[1] = "changed by the second caller" // a hit's caller
			third, err := cqrs.Dispatch[[]string](context.Background(), bus, ListOrders{})
			require.NoError(t, err)
			if tc.shared {
				assert.Equal(t, []string{"changed by the first caller", "changed by the second caller"}, third)
				return
			}
			assert.Equal(t, []string{"o-1", "o-2"}, third)
			assert.False(t, strings.HasPrefix(second[0], "changed"))
		})
	}
}

// TestCacheZeroValue: a zero Cache caches nothing and does not panic.
func TestCacheZeroValue(t *testing.T) {
	var cache middleware.Cache[ListOrders, int]
	calls := 0
	bus := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[ListOrders, int](func(context.Context, ListOrders) (int, error) {
		calls++
		return calls, nil
	}), cache.Middleware()))
	for want := 1; want <= 2; want++ {
		n, err := cqrs.Dispatch[int](context.Background(), bus, ListOrders{})
		require.NoError(t, err)
		assert.Equal(t, want, n, "every dispatch reaches the handler")
	}
	cache.Invalidate(ListOrders{})
	cache.InvalidateAll()
	assert.Equal(t, middleware.CacheStats{}, cache.Stats())
	cache.Close()
}

// TestPanicShapeThroughTheWholeStack: under every layer of a stack, the
// cache included, a handler's panic is the bus's *cqrs.PanicError with the
// value passed to panic.
func TestPanicShapeThroughTheWholeStack(t *testing.T) {
	cfg, err := middleware.ParseConfig([]byte(`
validation: true
timeout: 1s
rate_limit: {rate: 1000}
breaker: {}
logging: {}
metrics: true
queries:
  retry: {max_attempts: 3}
  cache: {ttl: 1m}
`))
	require.NoError(t, err)
	stack, err := cfg.Build(nil)
	require.NoError(t, err)
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
	cache, err := middleware.NewQueryCache[ListOrders, []string](stack, queries)
	require.NoError(t, err)
	defer cache.Close()
	errBoom := errors.New("boom")
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[ListOrders, []string](func(context.Context, ListOrders) ([]string, error) {
		panic(errBoom)
	}), cache.Middleware()))
	_, err = cqrs.Dispatch[[]string](context.Background(), queries, ListOrders{})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, errBoom, pe.Value)
	assert.NotContains(t, pe.Error(), "\n")
	require.ErrorIs(t, err, errBoom)
}
