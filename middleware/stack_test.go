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
