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
)

// TestStackRetriesCommandsOnlyWhenAsked: the same config on both buses
// retries queries, and commands only with commands.retry.
func TestStackRetriesCommandsOnlyWhenAsked(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml                     string
		commandCalls, queryCalls int64
	}{
		"queries only":  {"queries:\n  retry: {max_attempts: 3, base_delay: 1ms}\n", 1, 3},
		"commands also": {"commands:\n  retry: {max_attempts: 2, base_delay: 1ms}\nqueries:\n  retry: {max_attempts: 3, base_delay: 1ms}\n", 2, 3},
		"neither":       {"timeout: 1s\n", 1, 1},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg, err := middleware.ParseConfig([]byte(tc.yaml))
				require.NoError(t, err)
				stack, err := cfg.Build(nil)
				require.NoError(t, err)

				commands, j := jobBus(t, stack.Commands...)
				_, err = run(commands, Job{Do: "fail"})
				require.ErrorIs(t, err, errJob)
				assert.Equal(t, tc.commandCalls, j.calls.Load(), "command attempts")

				queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
				d := &directory{}
				d.fail.Store(true)
				require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[FindUser, Profile](d.find)))
				_, err = cqrs.Dispatch[Profile](context.Background(), queries, FindUser{ID: 1})
				require.ErrorIs(t, err, errJob)
				assert.Equal(t, tc.queryCalls, d.calls.Load(), "query attempts")
			})
		})
	}
}

// TestStackCacheHitsSkipTheInnerLayers: with a stack's cache, a burst of
// hits spends no rate-limit token, while misses still do, and queries
// without a cache are limited on the bus as before.
func TestStackCacheHitsSkipTheInnerLayers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, err := middleware.ParseConfig([]byte(`
metrics: true
rate_limit: {rate: 1, burst: 1}
breaker: {consecutive_failures: 1}
queries:
  cache: {ttl: 1m, count_hits: true}
`))
		require.NoError(t, err)
		stack, err := cfg.Build(nil)
		require.NoError(t, err)
		queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
		cache, err := middleware.NewQueryCache[FindUser, Profile](stack, queries)
		require.NoError(t, err)
		defer cache.Close()
		d := &directory{}
		require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[FindUser, Profile](d.find), cache.Middleware()))
		require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Search, int](func(context.Context, Search) (int, error) {
			return 1, nil
		})))

		find(t, queries, FindUser{ID: 1}) // a miss: the one token
		for range 20 {
			find(t, queries, FindUser{ID: 1}) // hits: no token
		}
		assert.Equal(t, middleware.CacheStats{Hits: 20, Misses: 1}, cache.Stats())
		_, err = cqrs.Dispatch[Profile](context.Background(), queries, FindUser{ID: 2})
		require.ErrorIs(t, err, cqrs.ErrRateLimited, "a miss is still limited")

		time.Sleep(time.Second) // one token back
		find(t, queries, FindUser{ID: 2})
		_, err = cqrs.Dispatch[int](context.Background(), queries, Search{})
		require.NoError(t, err, "a bucket of its own")
		_, err = cqrs.Dispatch[int](context.Background(), queries, Search{})
		require.ErrorIs(t, err, cqrs.ErrRateLimited, "a query without a cache is limited on the bus")

		// Hits are answered while the breaker is open, and counted by the
		// metrics outside the cache.
		d.fail.Store(true)
		_, err = cqrs.Dispatch[Profile](context.Background(), queries, FindUser{ID: 3})
		require.ErrorIs(t, err, cqrs.ErrRateLimited)
		time.Sleep(time.Second)
		_, err = cqrs.Dispatch[Profile](context.Background(), queries, FindUser{ID: 3})
		require.ErrorIs(t, err, errJob)
		state, ok := stack.Breaker.State(cqrs.SpecFor[FindUser, Profile](queries))
		require.True(t, ok)
		require.Equal(t, "open", state.String())
		assert.Equal(t, int64(1), find(t, queries, FindUser{ID: 1}).Version, "a hit through an open breaker")
		var calls uint64
		for _, m := range stack.Metrics.Snapshot() {
			if m.Name == "middleware_test.FindUser" {
				calls = m.Calls
			}
		}
		assert.Equal(t, uint64(26), calls, "metrics see every dispatch: 22 of ID 1, a refusal and another of IDs 2 and 3")
	})
}

func TestNewQueryCacheErrors(t *testing.T) {
	t.Parallel()
	noCache, err := middleware.Config{}.Build(nil)
	require.NoError(t, err)
	_, err = middleware.NewQueryCache[FindUser, Profile](noCache, cqrs.NewQueryBus())
	require.ErrorIs(t, err, middleware.ErrConfig)
	assert.Contains(t, err.Error(), "queries.cache is not set")
	_, err = middleware.NewQueryCache[FindUser, Profile](&middleware.Stack{}, cqrs.NewQueryBus())
	require.ErrorIs(t, err, middleware.ErrConfig, "a zero Stack has no cache settings")
	_, err = middleware.NewQueryCache[FindUser, Profile](nil, cqrs.NewQueryBus())
	require.ErrorIs(t, err, middleware.ErrConfig, "nor has a nil one")

	stack, err := middleware.Config{Queries: middleware.QueryConfig{Cache: &middleware.CacheConfig{TTL: time.Minute}}}.Build(nil)
	require.NoError(t, err)
	_, err = middleware.NewQueryCache[FindUser, Profile](stack, cqrs.NewCommandBus())
	require.ErrorContains(t, err, "a cache is for a query bus, not a command bus")
	_, err = middleware.NewKeyedQueryCache[Search, int](stack, nil)
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = middleware.NewQueryCache[ByPointer, int](stack, cqrs.NewQueryBus())
	require.ErrorContains(t, err, "implement CacheKey() string")

	keyed, err := middleware.NewKeyedQueryCache[Search, int](stack, cqrs.NewQueryBus())
	require.NoError(t, err)
	keyed.Close()
}

// Countdown is a streaming query: its handler yields N, N-1, … 1.
type Countdown struct {
	cqrs.StreamQuery[int]
	N int
}

func countdown(_ context.Context, q Countdown, yield func(int) bool) error {
	for i := q.N; i > 0; i-- {
		if !yield(i) {
			return nil
		}
	}
	return nil
}

// stream reads a whole Countdown, and returns its items and its error.
func stream(bus *cqrs.QueryBus, q Countdown) ([]int, error) {
	var items []int
	for item, err := range cqrs.Stream(context.Background(), bus, q) {
		if err != nil {
			return items, err
		}
		items = append(items, item)
	}
	return items, nil
}

// TestStackCachePlacementBesideAStream: on a query bus that also serves a
// streaming query, a stack built by hand (NewStack, a cache of its own
// placed with PlaceCache) places the cache where Config.Build's stack
// does: hits skip the rate limit, misses and the stream (which takes no
// middleware) are limited on the bus, and the outer metrics see it all.
func TestStackCachePlacementBesideAStream(t *testing.T) {
	for name, makeStack := range map[string]func(t *testing.T) (*middleware.Stack, *middleware.Metrics, func(*cqrs.QueryBus) *middleware.Cache[FindUser, Profile]){
		"Config.Build": func(t *testing.T) (*middleware.Stack, *middleware.Metrics, func(*cqrs.QueryBus) *middleware.Cache[FindUser, Profile]) {
			stack, err := middleware.Config{
				Metrics:   true,
				RateLimit: &middleware.RateLimitConfig{Rate: 1, Burst: 1},
				Queries:   middleware.QueryConfig{Cache: &middleware.CacheConfig{TTL: time.Minute, CountHits: true}},
			}.Build(nil)
			require.NoError(t, err)
			return stack, stack.Metrics, func(queries *cqrs.QueryBus) *middleware.Cache[FindUser, Profile] {
				cache, err := middleware.NewQueryCache[FindUser, Profile](stack, queries)
				require.NoError(t, err)
				return cache
			}
		},
		"NewStack": func(t *testing.T) (*middleware.Stack, *middleware.Metrics, func(*cqrs.QueryBus) *middleware.Cache[FindUser, Profile]) {
			metrics := middleware.NewMetrics()
			stack := middleware.NewStack(middleware.Layers{
				Outer:   []cqrs.Interceptor{metrics},
				Queries: []cqrs.Interceptor{middleware.RateLimiter(middleware.RateLimitConfig{Rate: 1, Burst: 1})},
			})
			return stack, metrics, func(queries *cqrs.QueryBus) *middleware.Cache[FindUser, Profile] {
				cache, err := middleware.NewCache[FindUser, Profile](middleware.CacheConfig{TTL: time.Minute, CountHits: true})
				require.NoError(t, err)
				require.NoError(t, middleware.PlaceCache(stack, queries, cache))
				return cache
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				stack, metrics, newCache := makeStack(t)
				queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
				cache := newCache(queries)
				defer cache.Close()
				d := &directory{}
				require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[FindUser, Profile](d.find), cache.Middleware()))
				require.NoError(t, cqrs.HandleStream(queries, countdown))

				for range 20 {
					find(t, queries, FindUser{ID: 1}) // one miss, the one token; then hits
				}
				assert.Equal(t, middleware.CacheStats{Hits: 19, Misses: 1}, cache.Stats())
				_, err := cqrs.Dispatch[Profile](context.Background(), queries, FindUser{ID: 2})
				require.ErrorIs(t, err, cqrs.ErrRateLimited, "a miss is limited")

				items, err := stream(queries, Countdown{N: 3})
				require.NoError(t, err, "the stream's own bucket")
				assert.Equal(t, []int{3, 2, 1}, items)
				_, err = stream(queries, Countdown{N: 3})
				require.ErrorIs(t, err, cqrs.ErrRateLimited, "the stream is limited on the bus")

				calls := map[string]uint64{}
				for _, m := range metrics.Snapshot() {
					calls[m.Name] = m.Calls
				}
				assert.Equal(t, map[string]uint64{"middleware_test.FindUser": 21, "middleware_test.Countdown": 2}, calls)
			})
		})
	}
}

// TestPlaceCacheInABuiltStack: a cache made with settings of its own
// takes its place in a stack built from a config.
func TestPlaceCacheInABuiltStack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stack, err := middleware.Config{RateLimit: &middleware.RateLimitConfig{Rate: 1, Burst: 1}}.Build(nil)
		require.NoError(t, err)
		queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
		cache, err := middleware.NewKeyedCache[Search, int](middleware.CacheConfig{TTL: time.Second})
		require.NoError(t, err)
		defer cache.Close()
		require.NoError(t, middleware.PlaceCache(stack, queries, cache))
		calls := 0
		require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Search, int](func(context.Context, Search) (int, error) {
			calls++
			return calls, nil
		}), cache.Middleware()))
		for range 5 {
			n, err := cqrs.Dispatch[int](context.Background(), queries, Search{Terms: []string{"a"}})
			require.NoError(t, err, "hits spend no token")
			assert.Equal(t, 1, n)
		}
		time.Sleep(2 * time.Second) // the entry expires, a token comes back
		n, err := cqrs.Dispatch[int](context.Background(), queries, Search{Terms: []string{"a"}})
		require.NoError(t, err)
		assert.Equal(t, 2, n, "the cache's own TTL")
	})
}

func TestPlaceCacheErrors(t *testing.T) {
	t.Parallel()
	stack := middleware.NewStack(middleware.Layers{})
	cache, err := middleware.NewCache[FindUser, Profile](middleware.CacheConfig{TTL: time.Minute})
	require.NoError(t, err)
	defer cache.Close()

	err = middleware.PlaceCache(nil, cqrs.NewQueryBus(), cache)
	require.ErrorIs(t, err, middleware.ErrConfig)
	assert.Contains(t, err.Error(), "make the stack with NewStack or Config.Build")
	err = middleware.PlaceCache[FindUser, Profile](stack, cqrs.NewQueryBus(), nil)
	require.ErrorIs(t, err, middleware.ErrConfig)
	assert.Contains(t, err.Error(), "make it with NewCache or NewKeyedCache")
	require.ErrorIs(t, middleware.PlaceCache(stack, nil, cache), cqrs.ErrNilBus)
	require.ErrorContains(t, middleware.PlaceCache(stack, cqrs.NewCommandBus(), cache), "a cache is for a query bus, not a command bus")

	require.NoError(t, middleware.PlaceCache(stack, cqrs.NewQueryBus(), cache), "the failures placed nothing")
	err = middleware.PlaceCache(stack, cqrs.NewQueryBus(), cache)
	require.ErrorIs(t, err, middleware.ErrConfig)
	assert.Contains(t, err.Error(), "the cache of middleware_test.FindUser is already placed in a stack: make one cache per bus")

	_, err = middleware.NewQueryCache[FindUser, Profile](stack, cqrs.NewQueryBus())
	require.ErrorIs(t, err, middleware.ErrConfig, "a hand-built stack has no cache settings")
	assert.Contains(t, err.Error(), "place it with PlaceCache")
}

// TestNewStackLayers: the command bus gets Outer then Commands; the query
// bus Outer then Queries; in each list the first runs outermost.
func TestNewStackLayers(t *testing.T) {
	t.Parallel()
	var order []string
	layer := func(name string) cqrs.Interceptor {
		return cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
			return func(ctx context.Context, c cqrs.Call) error {
				order = append(order, name)
				return next(ctx, c)
			}
		})
	}
	stack := middleware.NewStack(middleware.Layers{
		Outer:    []cqrs.Interceptor{layer("outer1"), layer("outer2")},
		Commands: []cqrs.Interceptor{layer("command")},
		Queries:  []cqrs.Interceptor{layer("query1"), layer("query2")},
	})
	assert.Equal(t, stack.Commands, stack.Interceptors, "the deprecated field is the command stack")
	assert.Nil(t, stack.Metrics)
	assert.Nil(t, stack.Breaker)

	commands, _ := jobBus(t, stack.Commands...)
	_, err := run(commands, Job{})
	require.NoError(t, err)
	assert.Equal(t, []string{"outer1", "outer2", "command"}, order)

	order = nil
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
	require.NoError(t, cqrs.HandleStream(queries, countdown))
	_, err = stream(queries, Countdown{N: 1})
	require.NoError(t, err)
	assert.Equal(t, []string{"outer1", "outer2", "query1", "query2"}, order)
}

// TestPlaceCacheInAZeroStack: a zero Stack has no layers, and a cache
// placed in it caches as on its own.
func TestPlaceCacheInAZeroStack(t *testing.T) {
	t.Parallel()
	cache, err := middleware.NewCache[FindUser, Profile](middleware.CacheConfig{TTL: time.Minute})
	require.NoError(t, err)
	defer cache.Close()
	queries := cqrs.NewQueryBus()
	require.NoError(t, middleware.PlaceCache(&middleware.Stack{}, queries, cache))
	d := &directory{}
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[FindUser, Profile](d.find), cache.Middleware()))
	for range 3 {
		find(t, queries, FindUser{ID: 1})
	}
	assert.Equal(t, int64(1), d.calls.Load())
}
