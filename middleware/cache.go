package middleware

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/internal/stats"
)

// CacheConfig configures a [Cache].
type CacheConfig struct {
	// TTL is how long a result stays cached after it was computed. It
	// must be positive.
	TTL time.Duration `yaml:"ttl" json:"ttl"`
	// MaxEntries bounds the results kept; past it the cache evicts the
	// entries least likely to be asked for again. Zero means 10,000.
	MaxEntries int `yaml:"max_entries" json:"max_entries"`
	// CountHits makes the cache count its hits for [Cache.Stats], at
	// about 5ns a hit. Misses are always counted.
	CountHits bool `yaml:"count_hits" json:"count_hits"`
}

const defaultMaxEntries = 10_000

func (c CacheConfig) validate() error {
	switch {
	case c.TTL <= 0:
		return fmt.Errorf("middleware: cache: ttl must be positive, not %v", c.TTL)
	case c.MaxEntries < 0:
		return fmt.Errorf("middleware: cache: max_entries must not be negative, not %d", c.MaxEntries)
	}
	return nil
}

// Keyer is a query that names its own cache key: two queries with the same
// key must ask for the same result.
type Keyer interface {
	CacheKey() string
}

// Cache caches the results of one query type C, for TTL and up to a bound
// on the entries, with github.com/maypok86/otter/v2. Give its
// [Cache.Middleware] to [cqrs.Register] for C's handler.
//
// Only successful results are cached; errors never are. A hit costs no
// allocation. Concurrent misses for the same query run the handler once
// and share its result, so an expired popular entry causes no stampede.
// Invalidate and InvalidateAll drop entries, typically from the handler of
// a command that changed what the query reads.
//
// An entry lives for its TTL give or take 1% (the cache reads a clock
// that a goroutine updates every TTL/100, between 1ms and 1s, since
// reading the precise time would be a third of the cost of a hit).
//
// A Cache is safe for concurrent use. It runs two goroutines, one that
// expires entries and the clock's; Close stops them.
type Cache[C, R any] struct {
	store store[C, R]
}

// store is a cache keyed one way or another.
type store[C, R any] interface {
	wrap(next cqrs.Handler[C, R]) cqrs.Handler[C, R]
	invalidate(q C)
	invalidateAll()
	stats() CacheStats
	close()
}

// CacheStats counts what a [Cache] did.
type CacheStats struct {
	// Hits counts the queries answered from the cache; it stays zero
	// unless CacheConfig.CountHits is set.
	Hits uint64
	// Misses counts the handler calls made to fill the cache: concurrent
	// misses of one query that share a call count once.
	Misses uint64
}

// NewCache returns a cache of query type C keyed by the whole query value:
// two queries that differ in any field never share an entry. C's value
// must say all there is to the query, so it may not hold pointers,
// interfaces, channels or maps, which compare by identity or not at all;
// such a type gets an error, and should implement [Keyer] and use
// [NewKeyedCache].
func NewCache[C comparable, R any](cfg CacheConfig) (*Cache[C, R], error) {
	if err := keyable(reflect.TypeFor[C](), reflect.TypeFor[C]()); err != nil {
		return nil, err
	}
	return newCache[C, C, R](cfg, func(q C) C { return q })
}

// NewKeyedCache returns a cache of query type C keyed by C's CacheKey.
func NewKeyedCache[C Keyer, R any](cfg CacheConfig) (*Cache[C, R], error) {
	return newCache[string, C, R](cfg, C.CacheKey)
}

func newCache[K comparable, C, R any](cfg CacheConfig, key func(C) K) (*Cache[C, R], error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = defaultMaxEntries
	}
	// Reading the precise time is a third of a hit; a clock that a
	// goroutine reads every TTL/100 costs a load instead, and an entry
	// then lives within 1% of its TTL.
	clock := otter.NewCoarseClock(min(max(cfg.TTL/100, time.Millisecond), time.Second))
	c, err := otter.New(&otter.Options[K, R]{
		MaximumSize:      cfg.MaxEntries,
		ExpiryCalculator: otter.ExpiryWriting[K, R](cfg.TTL),
		Clock:            clock,
	})
	if err != nil {
		clock.Stop()
		return nil, fmt.Errorf("middleware: cache: %w", err)
	}
	k := &keyed[K, C, R]{cache: c, clock: clock, key: key}
	if cfg.CountHits {
		k.hits = stats.NewCounter()
	}
	return &Cache[C, R]{store: k}, nil
}

// Middleware returns the typed middleware that serves C's queries from the
// cache.
func (c *Cache[C, R]) Middleware() cqrs.Middleware[C, R] {
	return c.store.wrap
}

// Stats returns what the cache has done so far.
func (c *Cache[C, R]) Stats() CacheStats { return c.store.stats() }

// Invalidate drops the cached result of q, if any.
func (c *Cache[C, R]) Invalidate(q C) { c.store.invalidate(q) }

// InvalidateAll drops every cached result.
func (c *Cache[C, R]) InvalidateAll() { c.store.invalidateAll() }

// Close stops the cache's goroutines. The cache still answers
// afterwards, expiring entries by the precise time as it is used.
func (c *Cache[C, R]) Close() { c.store.close() }

// keyed is a store whose entries are keyed by key(q).
type keyed[K comparable, C, R any] struct {
	cache *otter.Cache[K, R]
	clock *otter.CoarseClock
	hits  *stats.Counter // spread over cells: hits are the hot path
	loads atomic.Uint64  // the misses that called the handler
	key   func(C) K
}

func (k *keyed[K, C, R]) wrap(next cqrs.Handler[C, R]) cqrs.Handler[C, R] {
	return &cachedHandler[K, C, R]{keyed: k, next: next}
}

// cachedHandler serves a query from the cache, and from next on a miss.
type cachedHandler[K comparable, C, R any] struct {
	*keyed[K, C, R]
	next cqrs.Handler[C, R]
}

func (h *cachedHandler[K, C, R]) Handle(ctx context.Context, q C) (R, error) {
	key := h.key(q)
	if res, ok := h.cache.GetIfPresent(key); ok {
		if h.hits != nil {
			h.hits.Add(1)
		}
		return res, nil
	}
	return h.cache.Get(ctx, key, otter.LoaderFunc[K, R](func(ctx context.Context, _ K) (R, error) {
		h.loads.Add(1)
		return h.next.Handle(ctx, q)
	}))
}

func (k *keyed[K, C, R]) invalidate(q C) { k.cache.Invalidate(k.key(q)) }
func (k *keyed[K, C, R]) invalidateAll() { k.cache.InvalidateAll() }

func (k *keyed[K, C, R]) stats() CacheStats {
	s := CacheStats{Misses: k.loads.Load()}
	if k.hits != nil {
		s.Hits = k.hits.Load()
	}
	return s
}
func (k *keyed[K, C, R]) close() {
	k.cache.StopAllGoroutines()
	k.clock.Stop()
}

// keyable returns an error if values of t, a part of query type q, may
// compare equal while asking for different results, or differ while asking
// for the same.
func keyable(t, q reflect.Type) error {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Interface, reflect.Chan, reflect.Map, reflect.Slice, reflect.Func:
		return fmt.Errorf("middleware: cache: %s holds a %s (%s), which cannot stand for its query's value: implement CacheKey() string and use NewKeyedCache", q, t.Kind(), t)
	case reflect.Array:
		return keyable(t.Elem(), q)
	case reflect.Struct:
		for i := range t.NumField() {
			if err := keyable(t.Field(i).Type, q); err != nil {
				return err
			}
		}
	}
	return nil
}
