package middleware_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// FindUser is a comparable query: the whole value is the cache key.
type FindUser struct {
	ID     int
	Tenant string
}

// Profile is what FindUser returns.
type Profile struct {
	ID      int
	Tenant  string
	Version int64
}

// Search is not comparable, so it names its own key.
type Search struct{ Terms []string }

func (s Search) CacheKey() string { return fmt.Sprint(s.Terms) }

// directory answers FindUser, counting calls; a version that grows with
// each call shows whether an answer came from the cache.
type directory struct {
	calls   atomic.Int64
	fail    atomic.Bool
	release chan struct{}
}

func (d *directory) find(ctx context.Context, q FindUser) (Profile, error) {
	n := d.calls.Add(1)
	if d.release != nil {
		<-d.release
	}
	if d.fail.Load() {
		return Profile{}, errJob
	}
	return Profile{ID: q.ID, Tenant: q.Tenant, Version: n}, nil
}

func cachedBus(t *testing.T, d *directory, cfg middleware.CacheConfig) (*cqrs.QueryBus, *middleware.Cache[FindUser, Profile]) {
	t.Helper()
	cache, err := middleware.NewCache[FindUser, Profile](cfg)
	require.NoError(t, err)
	t.Cleanup(cache.Close)
	bus := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[FindUser, Profile](d.find), cache.Middleware()))
	return bus, cache
}

func find(t *testing.T, bus cqrs.Bus, q FindUser) Profile {
	t.Helper()
	p, err := cqrs.Dispatch[Profile](context.Background(), bus, q)
	require.NoError(t, err)
	return p
}

func TestCacheHitsAndKeys(t *testing.T) {
	d := &directory{}
	bus, cache := cachedBus(t, d, middleware.CacheConfig{TTL: time.Minute, CountHits: true})

	first := find(t, bus, FindUser{ID: 1, Tenant: "a"})
	assert.Equal(t, first, find(t, bus, FindUser{ID: 1, Tenant: "a"}), "the second is a hit")
	assert.Equal(t, int64(1), d.calls.Load())
	assert.Equal(t, middleware.CacheStats{Hits: 1, Misses: 1}, cache.Stats())

	// Queries that differ in any field never share an entry.
	other := find(t, bus, FindUser{ID: 1, Tenant: "b"})
	assert.Equal(t, "b", other.Tenant)
	find(t, bus, FindUser{ID: 2, Tenant: "a"})
	assert.Equal(t, int64(3), d.calls.Load())
	assert.Equal(t, middleware.CacheStats{Hits: 1, Misses: 3}, cache.Stats())
}

func TestCacheCountsNoHitsUnlessAsked(t *testing.T) {
	d := &directory{}
	bus, cache := cachedBus(t, d, middleware.CacheConfig{TTL: time.Minute})
	find(t, bus, FindUser{ID: 1})
	find(t, bus, FindUser{ID: 1})
	assert.Equal(t, middleware.CacheStats{Hits: 0, Misses: 1}, cache.Stats())
}

func TestCacheHitDoesNotAllocate(t *testing.T) {
	d := &directory{}
	bus, _ := cachedBus(t, d, middleware.CacheConfig{TTL: time.Minute})
	q := FindUser{ID: 1 << 20, Tenant: "acme"}
	find(t, bus, q)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := cqrs.Dispatch[Profile](context.Background(), bus, q); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
	assert.Equal(t, int64(1), d.calls.Load())
}

func TestCacheDoesNotCacheErrors(t *testing.T) {
	d := &directory{}
	bus, _ := cachedBus(t, d, middleware.CacheConfig{TTL: time.Minute})
	d.fail.Store(true)
	_, err := cqrs.Dispatch[Profile](context.Background(), bus, FindUser{ID: 1})
	require.ErrorIs(t, err, errJob)
	d.fail.Store(false)
	p := find(t, bus, FindUser{ID: 1})
	assert.Equal(t, 1, p.ID)
	assert.Equal(t, int64(2), d.calls.Load(), "the error was not served from the cache")
}

func TestCacheExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &directory{}
		cache, err := middleware.NewCache[FindUser, Profile](middleware.CacheConfig{TTL: time.Minute})
		require.NoError(t, err)
		defer cache.Close()
		bus := cqrs.NewQueryBus()
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[FindUser, Profile](d.find), cache.Middleware()))

		find(t, bus, FindUser{ID: 1})
		time.Sleep(59 * time.Second)
		find(t, bus, FindUser{ID: 1})
		assert.Equal(t, int64(1), d.calls.Load(), "still fresh")
		time.Sleep(2 * time.Second)
		p := find(t, bus, FindUser{ID: 1})
		assert.Equal(t, int64(2), p.Version, "expired, so computed again")
	})
}

func TestCacheRunsConcurrentMissesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &directory{release: make(chan struct{})}
		cache, err := middleware.NewCache[FindUser, Profile](middleware.CacheConfig{TTL: time.Minute})
		require.NoError(t, err)
		defer cache.Close()
		bus := cqrs.NewQueryBus()
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[FindUser, Profile](d.find), cache.Middleware()))

		var wg sync.WaitGroup
		results := make([]Profile, 20)
		for i := range results {
			wg.Go(func() { results[i] = find(t, bus, FindUser{ID: 7}) })
		}
		synctest.Wait() // every caller is waiting on the one load
		close(d.release)
		wg.Wait()
		assert.Equal(t, int64(1), d.calls.Load(), "one handler call for twenty concurrent misses")
		assert.Equal(t, uint64(1), cache.Stats().Misses)
		for _, r := range results {
			assert.Equal(t, Profile{ID: 7, Version: 1}, r)
		}
	})
}

// RenameUser is the command that invalidates FindUser's cache.
type RenameUser struct{ ID int }

func TestCacheInvalidationFromACommand(t *testing.T) {
	d := &directory{}
	queries, cache := cachedBus(t, d, middleware.CacheConfig{TTL: time.Hour})
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[RenameUser, cqrs.NoResult](func(_ context.Context, c RenameUser) (cqrs.NoResult, error) {
		cache.Invalidate(FindUser{ID: c.ID})
		return cqrs.NoResult{}, nil
	})))

	find(t, queries, FindUser{ID: 1})
	find(t, queries, FindUser{ID: 2})
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, RenameUser{ID: 1})
	require.NoError(t, err)
	assert.Equal(t, int64(3), find(t, queries, FindUser{ID: 1}).Version, "invalidated, so computed again")
	assert.Equal(t, int64(2), find(t, queries, FindUser{ID: 2}).Version, "another key is untouched")

	cache.InvalidateAll()
	assert.Equal(t, int64(4), find(t, queries, FindUser{ID: 2}).Version)
}

func TestKeyedCache(t *testing.T) {
	cache, err := middleware.NewKeyedCache[Search, int](middleware.CacheConfig{TTL: time.Minute})
	require.NoError(t, err)
	defer cache.Close()
	var calls int
	bus := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Search, int](func(_ context.Context, s Search) (int, error) {
		calls++
		return len(s.Terms), nil
	}), cache.Middleware()))
	for range 3 {
		n, err := cqrs.Dispatch[int](context.Background(), bus, Search{Terms: []string{"a", "b"}})
		require.NoError(t, err)
		assert.Equal(t, 2, n)
	}
	assert.Equal(t, 1, calls)
	cache.Invalidate(Search{Terms: []string{"a", "b"}})
	_, err = cqrs.Dispatch[int](context.Background(), bus, Search{Terms: []string{"a", "b"}})
	require.NoError(t, err)
	assert.Equal(t, 2, calls)
}

// ByPointer compares by identity: its value does not say what it asks.
type ByPointer struct{ Filter *string }

// ByInterface may hold anything.
type ByInterface struct{ Filter any }

func TestCacheRejectsKeysThatLie(t *testing.T) {
	t.Parallel()
	_, err := middleware.NewCache[ByPointer, int](middleware.CacheConfig{TTL: time.Minute})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "implement CacheKey() string")
	_, err = middleware.NewCache[*FindUser, int](middleware.CacheConfig{TTL: time.Minute})
	require.Error(t, err)
	_, err = middleware.NewCache[ByInterface, int](middleware.CacheConfig{TTL: time.Minute})
	require.Error(t, err)
	arrays, err := middleware.NewCache[[2]FindUser, int](middleware.CacheConfig{TTL: time.Minute, MaxEntries: 5})
	require.NoError(t, err, "arrays of plain structs are fine")
	arrays.Close()

}

// TestCacheNormalisesItsConfig: a TTL <= 0 caches nothing, and a
// MaxEntries <= 0 means 10,000; neither is an error.
func TestCacheNormalisesItsConfig(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		d := &directory{}
		bus, _ := cachedBus(t, d, middleware.CacheConfig{TTL: ttl})
		find(t, bus, FindUser{ID: 1})
		find(t, bus, FindUser{ID: 1})
		assert.Equal(t, int64(2), d.calls.Load(), "TTL %v: nothing cached", ttl)
	}
	d := &directory{}
	bus, cache := cachedBus(t, d, middleware.CacheConfig{TTL: time.Minute, MaxEntries: -1})
	for i := range 200 {
		find(t, bus, FindUser{ID: i})
	}
	for i := range 200 {
		find(t, bus, FindUser{ID: i})
	}
	assert.Equal(t, uint64(200), cache.Stats().Misses, "room for every entry: the bound is not -1")
}

// FindTenant is a query keyed by its own CacheKey.
type FindTenant struct{ Name string }

func (t FindTenant) CacheKey() string { return t.Name }

// TestCacheCountsAndClonesOnEveryHandler: a cache keyed by value and one
// keyed by CacheKey each count their hits when asked and give a hit's
// caller a clone when given one.
func TestCacheCountsAndClonesOnEveryHandler(t *testing.T) {
	clone := func(s []string) []string { return append([]string{"clone"}, s...) }
	for name, newCache := range map[string]func(middleware.CacheConfig, ...middleware.CacheOption[[]string]) (*middleware.Cache[FindTenant, []string], error){
		"by value":    middleware.NewCache[FindTenant, []string],
		"by CacheKey": middleware.NewKeyedCache[FindTenant, []string],
	} {
		for _, cloned := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, cloned %t", name, cloned), func(t *testing.T) {
				var opts []middleware.CacheOption[[]string]
				if cloned {
					opts = append(opts, middleware.WithClone(clone))
				}
				cache, err := newCache(middleware.CacheConfig{TTL: time.Minute, CountHits: true}, opts...)
				require.NoError(t, err)
				defer cache.Close()
				bus := cqrs.NewQueryBus()
				require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[FindTenant, []string](func(_ context.Context, q FindTenant) ([]string, error) {
					return []string{q.Name}, nil
				}), cache.Middleware()))

				want := []string{"acme"}
				if cloned {
					want = clone(want)
				}
				for range 3 {
					got, err := cqrs.Dispatch[[]string](context.Background(), bus, FindTenant{Name: "acme"})
					require.NoError(t, err)
					assert.Equal(t, want, got)
				}
				assert.Equal(t, middleware.CacheStats{Hits: 2, Misses: 1}, cache.Stats())
			})
		}
	}
}
