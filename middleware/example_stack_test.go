package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Recent is the query of these examples; its result is a slice.
type Recent struct{ Customer string }

// Query is a query that names its cache key.
type Query struct{ Terms []string }

func (q Query) CacheKey() string { return strings.Join(q.Terms, " ") }

func ExampleNewQueryCache() {
	cfg, err := middleware.ParseConfig([]byte(`
rate_limit: {rate: 1, burst: 1}
queries:
  cache: {ttl: 1m, count_hits: true}
`))
	if err != nil {
		panic(err)
	}
	stack, err := cfg.Build(nil)
	if err != nil {
		panic(err)
	}
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
	cache, err := middleware.NewQueryCache[Recent, []string](stack, queries)
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	recent := cqrs.HandlerFunc[Recent, []string](func(context.Context, Recent) ([]string, error) {
		return []string{"o-1", "o-2"}, nil
	})
	if err := cqrs.Register(queries, recent, cache.Middleware()); err != nil {
		panic(err)
	}
	// One token a second, but hits spend none: they skip the rate limit.
	for range 5 {
		orders, err := cqrs.Dispatch[[]string](context.Background(), queries, Recent{Customer: "ada"})
		fmt.Println(orders, err)
	}
	_, err = cqrs.Dispatch[[]string](context.Background(), queries, Recent{Customer: "bob"})
	fmt.Println(errors.Is(err, cqrs.ErrRateLimited), cache.Stats())
	// Output:
	// [o-1 o-2] <nil>
	// [o-1 o-2] <nil>
	// [o-1 o-2] <nil>
	// [o-1 o-2] <nil>
	// [o-1 o-2] <nil>
	// true {4 2}
}

func ExampleNewKeyedQueryCache() {
	stack, err := middleware.Config{Queries: middleware.QueryConfig{Cache: &middleware.CacheConfig{TTL: time.Minute}}}.Build(nil)
	if err != nil {
		panic(err)
	}
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
	cache, err := middleware.NewKeyedQueryCache[Query, int](stack, queries)
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	searches := 0
	search := cqrs.HandlerFunc[Query, int](func(_ context.Context, q Query) (int, error) {
		searches++
		return len(q.Terms), nil
	})
	if err := cqrs.Register(queries, search, cache.Middleware()); err != nil {
		panic(err)
	}
	for range 3 {
		_, _ = cqrs.Dispatch[int](context.Background(), queries, Query{Terms: []string{"desk", "lamp"}})
	}
	fmt.Println(searches)
	// Output:
	// 1
}

func ExampleWithClone() {
	cache, err := middleware.NewCache[Recent, []string](middleware.CacheConfig{TTL: time.Minute},
		middleware.WithClone(slices.Clone[[]string])) // each caller gets a copy of its own
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	queries := cqrs.NewQueryBus()
	recent := cqrs.HandlerFunc[Recent, []string](func(context.Context, Recent) ([]string, error) {
		return []string{"o-1", "o-2"}, nil
	})
	if err := cqrs.Register(queries, recent, cache.Middleware()); err != nil {
		panic(err)
	}
	mine, _ := cqrs.Dispatch[[]string](context.Background(), queries, Recent{})
	mine[0] = "changed" // changes only this caller's copy
	theirs, _ := cqrs.Dispatch[[]string](context.Background(), queries, Recent{})
	fmt.Println(mine, theirs)
	// Output:
	// [changed o-2] [o-1 o-2]
}

func ExampleBreaker_All() {
	var breaker middleware.Breaker // the zero value: opens after 5 consecutive failures
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(&breaker))
	failing := cqrs.HandlerFunc[Signup, cqrs.NoResult](func(context.Context, Signup) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, errors.New("downstream unavailable")
	})
	if err := cqrs.Register(commands, failing); err != nil {
		panic(err)
	}
	for range middleware.DefaultBreakerFailures {
		_, _ = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{})
	}
	for spec, state := range breaker.All() {
		fmt.Println(spec.Kind, spec.Name, spec.MessageType.PkgPath(), state == middleware.BreakerOpen)
	}
	// Output:
	// command middleware_test.Signup github.com/typedcqrs/dispatch/middleware_test true
}

func ExampleLoggingConfig_callerErrors() {
	// A refusal is the caller's doing: WARN by default, here INFO; only a
	// fault of the handler is an ERROR.
	info := slog.LevelInfo
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(
		middleware.Logging(middleware.LoggingConfig{Logger: plainLogger(), CallerErrorLevel: &info}),
	))
	signup := cqrs.HandlerFunc[Signup, cqrs.NoResult](func(_ context.Context, s Signup) (cqrs.NoResult, error) {
		if s.Name == "taken" {
			return cqrs.NoResult{}, middleware.Permanent(errors.New("name taken"))
		}
		return cqrs.NoResult{}, errors.New("database down")
	})
	if err := cqrs.Register(commands, signup); err != nil {
		panic(err)
	}
	_, _ = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{Name: "taken"})
	_, _ = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{Name: "Ada"})
	// Output:
	// level=INFO msg="cqrs dispatch" kind=command message=middleware_test.Signup outcome=error error="name taken"
	// level=ERROR msg="cqrs dispatch" kind=command message=middleware_test.Signup outcome=error error="database down"
}

// Orders is a streaming query: its handler yields a customer's orders.
type Orders struct {
	cqrs.StreamQuery[string]
	Customer string
}

// A stack built by hand, on a query bus that also streams: the cached
// query's hits skip the rate limit, while the stream, which takes no
// middleware of its own, is limited on the bus.
func ExampleNewStack() {
	metrics := middleware.NewMetrics()
	stack := middleware.NewStack(middleware.Layers{
		Outer:   []cqrs.Interceptor{metrics},
		Queries: []cqrs.Interceptor{middleware.RateLimiter(middleware.RateLimitConfig{Rate: 1, Burst: 1})},
	})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))

	cache, err := middleware.NewCache[Recent, []string](middleware.CacheConfig{TTL: time.Minute})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	if err := middleware.PlaceCache(stack, queries, cache); err != nil {
		panic(err)
	}
	recent := cqrs.HandlerFunc[Recent, []string](func(context.Context, Recent) ([]string, error) {
		return []string{"o-1", "o-2"}, nil
	})
	if err := cqrs.Register(queries, recent, cache.Middleware()); err != nil {
		panic(err)
	}
	if err := cqrs.HandleStream(queries, func(_ context.Context, q Orders, yield func(string) bool) error {
		yield(q.Customer + ": o-1")
		return nil
	}); err != nil {
		panic(err)
	}

	ctx := context.Background()
	for range 3 {
		_, err := cqrs.Dispatch[[]string](ctx, queries, Recent{Customer: "ada"})
		fmt.Println("recent:", err)
	}
	for range 2 {
		for order, err := range cqrs.Stream(ctx, queries, Orders{Customer: "ada"}) {
			fmt.Println("stream:", order, errors.Is(err, cqrs.ErrRateLimited))
		}
	}
	for _, m := range metrics.Snapshot() {
		fmt.Println(m.Name, m.Calls, m.Errors)
	}
	// Output:
	// recent: <nil>
	// recent: <nil>
	// recent: <nil>
	// stream: ada: o-1 false
	// stream:  true
	// middleware_test.Orders 2 1
	// middleware_test.Recent 3 0
}

// A cache with settings of its own, placed in a stack built from a
// config: its hits skip the stack's rate limit.
func ExamplePlaceCache() {
	stack, err := middleware.Config{RateLimit: &middleware.RateLimitConfig{Rate: 1, Burst: 1}}.Build(nil)
	if err != nil {
		panic(err)
	}
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
	cache, err := middleware.NewKeyedCache[Query, int](middleware.CacheConfig{TTL: 10 * time.Second, MaxEntries: 100})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	if err := middleware.PlaceCache(stack, queries, cache); err != nil {
		panic(err)
	}
	search := cqrs.HandlerFunc[Query, int](func(_ context.Context, q Query) (int, error) { return len(q.Terms), nil })
	if err := cqrs.Register(queries, search, cache.Middleware()); err != nil {
		panic(err)
	}
	for range 3 {
		n, err := cqrs.Dispatch[int](context.Background(), queries, Query{Terms: []string{"desk", "lamp"}})
		fmt.Println(n, err)
	}
	// Output:
	// 2 <nil>
	// 2 <nil>
	// 2 <nil>
}
