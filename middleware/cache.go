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

// CacheConfig configures a [Cache], and the query caches of a [Config]. A
// field left zero takes the default its comment gives; the zero
// CacheConfig caches nothing, since TTL has no default: a [Config] with a
// cache must give it. [NewCache] never refuses a setting: it treats a
// value out of range as its comment says; a [Config] refuses one instead
// (see [Config.Validate]). A CacheConfig is a plain value.
type CacheConfig struct {
	// TTL is how long a result stays cached after it was computed. If TTL
	// <= 0, nothing is cached: every query reaches the handler.
	TTL time.Duration `yaml:"ttl" json:"ttl"`
	// MaxEntries bounds the results kept; past it the cache evicts the
	// entries least likely to be asked for again. If MaxEntries <= 0,
	// 10,000 is used.
	MaxEntries int `yaml:"max_entries" json:"max_entries"`
	// CountHits makes the cache count its hits for [Cache.Stats], at
	// about 5ns a hit. Misses are always counted.
	CountHits bool `yaml:"count_hits" json:"count_hits"`
}

const defaultMaxEntries = 10_000

func (c CacheConfig) normalised() CacheConfig {
	if c.MaxEntries <= 0 {
		c.MaxEntries = defaultMaxEntries
	}
	return c
}

// Keyer is a query that names its own cache key: two queries with the same
// key must ask for the same result. CacheKey is called on every dispatch,
// from any goroutine, so it must be safe for concurrent use.
type Keyer interface {
	CacheKey() string
}

// Cache caches the results of one query type C, for TTL and up to a bound
// on the entries, with github.com/maypok86/otter/v2. Give its
// [Cache.Middleware] to [cqrs.Register] for C's handler.
//
// Only successful results are cached; errors and panics never are. A
// handler's panic reaches the bus as it would without the cache, with its
// own value, and becomes the bus's [*cqrs.PanicError]; every caller that
// was waiting for that result gets the same panic value. A hit costs no
// allocation. Concurrent misses for the same query run the handler once
// and share its result, so an expired popular entry causes no stampede.
// Invalidate and InvalidateAll drop entries, typically from the handler of
// a command that changed what the query reads.
//
// Results are shared: by default every caller gets the very R value the
// handler returned, so a result that holds a slice, a map or a pointer
// shares what it points to with every later caller, and a caller that
// changes it changes what the next one gets. Give [WithClone] a function
// that copies R, and each caller, the one whose miss ran the handler
// included, gets a copy of its own.
//
// An entry lives for its TTL give or take 1% (the cache reads a clock
// that a goroutine updates every TTL/100, between 1ms and 1s, since
// reading the precise time would be a third of the cost of a hit).
//
// A Cache is safe for concurrent use. It runs two goroutines, one that
// expires entries and the clock's; Close stops them. The zero value caches
// nothing: its middleware calls the handler every time, and its other
// methods do nothing. A Cache must not be copied after first use.
type Cache[C, R any] struct {
	store store[C, R]
	// placed, for a cache placed in a Stack, runs the stack's inner
	// layers inside the cache.
	placed atomic.Pointer[cqrs.Middleware[C, R]]
}

// CacheOption configures a [Cache] of results R beyond its [CacheConfig].
// Make one with [WithClone]; a nil CacheOption is ignored.
type CacheOption[R any] func(*cacheOptions[R])

type cacheOptions[R any] struct {
	clone func(R) R
}

// WithClone makes the cache give each caller clone(result) rather than
// the cached result itself, so that no caller sees another's changes.
// clone must return a value that shares nothing mutable with its
// argument, and must be safe to call concurrently; it runs on every hit.
// A nil clone is ignored.
func WithClone[R any](clone func(R) R) CacheOption[R] {
	return func(o *cacheOptions[R]) { o.clone = clone }
}

// store is a cache keyed one way or another.
type store[C, R any] interface {
	wrap(next cqrs.Handler[C, R]) cqrs.Handler[C, R]
	invalidate(q C)
	invalidateAll()
	stats() CacheStats
	close()
}

// CacheStats counts what a [Cache] did. It is a plain value; the zero
// value is a cache that did nothing.
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
// [NewKeyedCache]. cfg is normalised as [CacheConfig] says.
func NewCache[C comparable, R any](cfg CacheConfig, opts ...CacheOption[R]) (*Cache[C, R], error) {
	if err := keyable(reflect.TypeFor[C](), reflect.TypeFor[C]()); err != nil {
		return nil, err
	}
	if cfg.TTL <= 0 {
		return &Cache[C, R]{}, nil
	}
	k, err := newKeyed[C, C, R](cfg, func(q C) C { return q }, opts)
	if err != nil {
		return nil, err
	}
	return &Cache[C, R]{store: byValue[C, R]{k}}, nil
}

// NewKeyedCache returns a cache of query type C keyed by C's CacheKey. cfg
// is normalised as [CacheConfig] says.
func NewKeyedCache[C Keyer, R any](cfg CacheConfig, opts ...CacheOption[R]) (*Cache[C, R], error) {
	if cfg.TTL <= 0 {
		return &Cache[C, R]{}, nil
	}
	k, err := newKeyed[string, C, R](cfg, C.CacheKey, opts)
	if err != nil {
		return nil, err
	}
	return &Cache[C, R]{store: k}, nil
}

// newKeyed returns the store of a cache keyed by key(q); cfg.TTL must be
// positive.
func newKeyed[K comparable, C, R any](cfg CacheConfig, key func(C) K, opts []CacheOption[R]) (*keyed[K, C, R], error) {
	cfg = cfg.normalised()
	var o cacheOptions[R]
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
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
	k := &keyed[K, C, R]{cache: c, clock: clock, key: key, clone: o.clone}
	if cfg.CountHits {
		k.hits = stats.NewCounter()
	}
	return k, nil
}

// Middleware returns the typed middleware that serves C's queries from the
// cache. For a cache placed in a [Stack] ([NewQueryCache], [PlaceCache]),
// it runs the stack's inner query layers inside the cache, so that a hit
// skips them.
func (c *Cache[C, R]) Middleware() cqrs.Middleware[C, R] {
	wrap := func(next cqrs.Handler[C, R]) cqrs.Handler[C, R] { return next }
	if c.store != nil {
		wrap = c.store.wrap
	}
	placed := c.placed.Load()
	if placed == nil {
		return wrap
	}
	return func(next cqrs.Handler[C, R]) cqrs.Handler[C, R] { return wrap((*placed)(next)) }
}

// Stats returns what the cache has done so far.
func (c *Cache[C, R]) Stats() CacheStats {
	if c.store == nil {
		return CacheStats{}
	}
	return c.store.stats()
}

// Invalidate drops the cached result of q, if any.
func (c *Cache[C, R]) Invalidate(q C) {
	if c.store != nil {
		c.store.invalidate(q)
	}
}

// InvalidateAll drops every cached result.
func (c *Cache[C, R]) InvalidateAll() {
	if c.store != nil {
		c.store.invalidateAll()
	}
}

// Close stops the cache's goroutines. The cache still answers
// afterwards, expiring entries by the precise time as it is used.
func (c *Cache[C, R]) Close() {
	if c.store != nil {
		c.store.close()
	}
}

// keyed is a store whose entries are keyed by key(q).
type keyed[K comparable, C, R any] struct {
	cache *otter.Cache[K, R]
	clock *otter.CoarseClock
	hits  *stats.Counter // spread over cells: hits are the hot path
	loads atomic.Uint64  // the misses that called the handler
	key   func(C) K
	clone func(R) R // nil: results are shared
}

func (k *keyed[K, C, R]) wrap(next cqrs.Handler[C, R]) cqrs.Handler[C, R] {
	return &cachedHandler[K, C, R]{keyed: k, next: next}
}

// byValue is the store of [NewCache]: a keyed store whose key is the
// query itself. Its handler looks a query up as it is, without calling
// key, and holds what a hit needs in itself.
type byValue[C comparable, R any] struct{ *keyed[C, C, R] }

func (v byValue[C, R]) wrap(next cqrs.Handler[C, R]) cqrs.Handler[C, R] {
	return &valueHandler[C, R]{
		cache:         v.cache,
		plain:         v.hits == nil && v.clone == nil,
		cachedHandler: &cachedHandler[C, C, R]{keyed: v.keyed, next: next},
	}
}

// cachedHandler serves a query from the cache, and from next on a miss.
type cachedHandler[K comparable, C, R any] struct {
	*keyed[K, C, R]
	next cqrs.Handler[C, R]
}

// loadPanic carries a panic of the handler out of the cache's loader, so
// that the cache library does not wrap it: Handle panics again with the
// value, and the bus recovers it as if there were no cache.
type loadPanic struct{ value any }

func (p *loadPanic) Error() string {
	return fmt.Sprintf("middleware: cache: handler panicked: %v", p.value)
}

func (h *cachedHandler[K, C, R]) Handle(ctx context.Context, q C) (R, error) {
	key := h.key(q)
	if res, ok := h.cache.GetIfPresent(key); ok {
		if h.hits != nil {
			h.hits.Add(1)
		}
		return h.give(res), nil
	}
	return h.load(ctx, key, q)
}

// valueHandler is the cachedHandler of a byValue store.
type valueHandler[C comparable, R any] struct {
	cache *otter.Cache[C, R] // the store's, one load closer to a hit
	plain bool               // no hits to count and no clone: a hit returns what it finds
	*cachedHandler[C, C, R]
}

func (h *valueHandler[C, R]) Handle(ctx context.Context, q C) (R, error) {
	if res, ok := h.cache.GetIfPresent(q); ok {
		if h.plain {
			return res, nil
		}
		if h.hits != nil {
			h.hits.Add(1)
		}
		return h.give(res), nil
	}
	return h.load(ctx, q, q)
}

// load answers q, whose key missed, with the handler's result, or with
// that of a load of the same key already running.
func (h *cachedHandler[K, C, R]) load(ctx context.Context, key K, q C) (R, error) {
	res, err := h.cache.Get(ctx, key, otter.LoaderFunc[K, R](func(ctx context.Context, _ K) (res R, err error) {
		h.loads.Add(1)
		defer func() {
			if v := recover(); v != nil {
				err = &loadPanic{value: v}
			}
		}()
		return h.next.Handle(ctx, q)
	}))
	if p, ok := err.(*loadPanic); ok { //nolint:errorlint // only the loader makes it, unwrapped
		panic(p.value)
	}
	if err != nil {
		return res, err
	}
	return h.give(res), nil
}

// give returns what a caller gets of a cached result.
func (h *cachedHandler[K, C, R]) give(res R) R {
	if h.clone == nil {
		return res
	}
	return h.clone(res)
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
