package middleware

import (
	"fmt"
	"reflect"
	"slices"
	"sync"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Stack is the production stack of both buses: the interceptors of each
// bus in order, the place of each query's cache among them, and the parts
// a service may want to read from. [Config.Build] makes one from a
// config, in the recommended order; [NewStack] makes one from
// interceptors you made yourself. The two buses share one Breaker and one
// Metrics, whose state is kept per message type and kind.
//
// A query whose cache is placed in the stack ([NewQueryCache],
// [PlaceCache]) runs the stack's inner query layers inside the cache, so
// that a hit skips them; every other query, a streaming one included, runs
// them on the bus.
//
// A Stack is safe for concurrent use. Make one with [Config.Build] or
// [NewStack]; a zero Stack has no interceptors and no cache settings, and
// must not be copied after first use.
type Stack struct {
	// Commands are for the command bus's [cqrs.WithInterceptors].
	Commands []cqrs.Interceptor
	// Queries are for the query bus's [cqrs.WithInterceptors]. A query
	// whose cache is placed in the stack gets the inner layers (from
	// Config.Build: rate limit, timeout, retry, breaker) inside the cache
	// instead, so that a hit skips them.
	Queries []cqrs.Interceptor
	// Interceptors is Commands, kept for callers written when one stack
	// served both buses.
	//
	// Deprecated: use Commands and Queries: a query bus given Interceptors
	// is not retried and gets no cache placement.
	Interceptors []cqrs.Interceptor
	// Metrics reads the stack's metrics; nil unless Config.Metrics (and
	// always nil from NewStack).
	Metrics *Metrics
	// Breaker reads the breakers' states; nil unless Config.Breaker (and
	// always nil from NewStack).
	Breaker *Breaker

	cache      *CacheConfig       // nil unless Config.Queries.Cache
	queryInner []cqrs.Interceptor // the query layers a cache hit skips

	mu     sync.Mutex
	cached map[reflect.Type]bool // query types whose cache holds queryInner
}

// Layers are the interceptors of a stack built by hand with [NewStack]. In
// each list the first runs outermost. Layers is a plain value; its zero
// value has no layers.
type Layers struct {
	// Outer run first on both buses, and on the query bus outside any
	// cache: what must see every dispatch, cache hits included, such as
	// metrics, logging, validation and authorization.
	Outer []cqrs.Interceptor
	// Commands run on the command bus, after Outer.
	Commands []cqrs.Interceptor
	// Queries run on the query bus, after Outer: on the bus for a query
	// with no cache in the stack (a streaming query included), and inside
	// the cache for a query whose cache is placed in it, so that a hit
	// skips them. Such are a rate limit, a timeout, retries and a breaker.
	Queries []cqrs.Interceptor
}

// NewStack returns the stack of l, to build by hand what [Config.Build]
// builds from a config: interceptors made with options a file cannot hold
// (a rate limit keyed by tenant, a retry rule of your own), or of your own
// making. Its Commands are l.Outer then l.Commands; its Queries are
// l.Outer then l.Queries, each of which steps aside for a query type whose
// cache is placed in the stack with [PlaceCache]:
//
//	stack := middleware.NewStack(middleware.Layers{
//		Outer:   []cqrs.Interceptor{metrics, logging},
//		Queries: []cqrs.Interceptor{rateLimit, breaker},
//	})
//	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
//	err := middleware.PlaceCache(stack, queries, cache) // cache from NewCache
//	err = cqrs.Register(queries, getUser, cache.Middleware())
//	err = cqrs.HandleStream(queries, listOrders) // limited and guarded on the bus
//
// The stack has no cache settings of its own ([NewQueryCache] fails on
// it), and nil Metrics and Breaker. NewStack cannot fail.
func NewStack(l Layers) *Stack {
	s := &Stack{
		Commands:   slices.Concat(l.Outer, l.Commands),
		Queries:    slices.Clone(l.Outer),
		queryInner: slices.Clone(l.Queries),
		cached:     make(map[reflect.Type]bool),
	}
	s.Interceptors = s.Commands
	for _, ic := range s.queryInner {
		s.Queries = append(s.Queries, unlessCached{stack: s, next: ic})
	}
	return s
}

// unlessCached is an inner query layer on the bus: it steps aside for a
// query type whose stack cache runs it inside the cache.
type unlessCached struct {
	stack *Stack
	next  cqrs.Interceptor
}

func (u unlessCached) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	if u.stack.isCached(spec.MessageType) {
		return next
	}
	return u.next.Intercept(spec, next)
}

func (s *Stack) isCached(t reflect.Type) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cached[t]
}

// markCached records that query type t's cache runs the inner layers.
func (s *Stack) markCached(t reflect.Type) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cached == nil {
		s.cached = make(map[reflect.Type]bool)
	}
	s.cached[t] = true
}

// errNoCache is NewQueryCache's error for a stack built without a cache.
var errNoCache = fmt.Errorf("%w: queries.cache is not set: the stack has no cache settings; "+
	"set queries.cache in the config, or make the cache with NewCache and place it with PlaceCache", ErrConfig)

// NewQueryCache returns the cache of query type C on bus b that the
// stack's queries.cache describes, keyed as [NewCache] keys it, and
// placed in the stack as [PlaceCache] places it: inside the stack's
// metrics, logging and validation and outside its rate limit, timeout,
// retry and breaker, which then run inside the cache for C rather than on
// the bus: a hit skips them, a miss goes through them.
//
//	cache, err := middleware.NewQueryCache[GetUser, User](stack, queries)
//	err = cqrs.Register(queries, getUser, cache.Middleware())
//
// It fails if the stack has no cache settings (a stack from [NewStack]
// has none: use [PlaceCache]), if b is not a query bus, or as NewCache
// does.
func NewQueryCache[C comparable, R any](s *Stack, b cqrs.Bus, opts ...CacheOption[R]) (*Cache[C, R], error) {
	return stackCache(s, b, func(cfg CacheConfig) (*Cache[C, R], error) { return NewCache[C, R](cfg, opts...) })
}

// NewKeyedQueryCache is [NewQueryCache] for a query keyed by its
// CacheKey, as [NewKeyedCache] keys it.
func NewKeyedQueryCache[C Keyer, R any](s *Stack, b cqrs.Bus, opts ...CacheOption[R]) (*Cache[C, R], error) {
	return stackCache(s, b, func(cfg CacheConfig) (*Cache[C, R], error) { return NewKeyedCache[C, R](cfg, opts...) })
}

// stackCache makes a cache of s's settings with newCache, for bus b, and
// places it in the stack.
func stackCache[C, R any](s *Stack, b cqrs.Bus, newCache func(CacheConfig) (*Cache[C, R], error)) (*Cache[C, R], error) {
	if s == nil || s.cache == nil {
		return nil, errNoCache
	}
	if err := canPlace(b); err != nil {
		return nil, err
	}
	c, err := newCache(*s.cache)
	if err != nil {
		return nil, err
	}
	place(s, c, b)
	return c, nil
}

// PlaceCache places c, the cache of query type C, in stack s for query bus
// b, as [NewQueryCache] places the caches it makes, whatever made c
// ([NewCache] or [NewKeyedCache], with settings of its own) and whatever
// made s ([Config.Build] or [NewStack]). Call it before c's
// [Cache.Middleware] is given to [cqrs.Register]: that middleware then runs
// the stack's inner query layers inside the cache, so that a hit skips
// them, and the stack leaves them to the cache for C, by its Go type, on
// every query bus it serves (a C later registered without this cache on
// another of them gets no inner layers).
//
// It fails, and places nothing, if s or c is nil, if b is not a query bus,
// or if c is already placed: a cache runs one stack's layers, for one bus.
// It is safe to call concurrently with the cache's other methods.
func PlaceCache[C, R any](s *Stack, b cqrs.Bus, c *Cache[C, R]) error {
	switch {
	case s == nil:
		return fmt.Errorf("%w: placing a cache in a nil stack: make the stack with NewStack or Config.Build", ErrConfig)
	case c == nil:
		return fmt.Errorf("%w: placing a nil cache: make it with NewCache or NewKeyedCache", ErrConfig)
	}
	if err := canPlace(b); err != nil {
		return err
	}
	if !place(s, c, b) {
		return fmt.Errorf("%w: the cache of %s is already placed in a stack: make one cache per bus", ErrConfig, reflect.TypeFor[C]())
	}
	return nil
}

func canPlace(b cqrs.Bus) error {
	switch {
	case b == nil:
		return fmt.Errorf("middleware: query cache: %w", cqrs.ErrNilBus)
	case b.Kind() != cqrs.KindQuery:
		return fmt.Errorf("%w: a cache is for a query bus, not a %s bus", ErrConfig, b.Kind())
	}
	return nil
}

// place makes c's middleware run the stack's inner query layers inside
// the cache, and take them off the bus for C; it returns false, and does
// nothing, if c is placed already.
func place[C, R any](s *Stack, c *Cache[C, R], b cqrs.Bus) bool {
	inner := s.queryInner
	t := reflect.TypeFor[C]()
	placed := cqrs.Middleware[C, R](func(next cqrs.Handler[C, R]) cqrs.Handler[C, R] {
		s.markCached(t) // before Register sets up the bus's layers for C
		if len(inner) == 0 {
			return next
		}
		return cqrs.Intercept[C, R](b, inner...)(next)
	})
	return c.placed.CompareAndSwap(nil, &placed)
}
