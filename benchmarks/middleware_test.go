package benchmarks

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/maypok86/otter/v2"
	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/internal/lazyctx"
	"github.com/typedcqrs/dispatch/internal/stats"
	"github.com/typedcqrs/dispatch/middleware"
)

// Signup is the message of the middleware benchmarks: three fields to
// validate, one of them an email address.
type Signup struct {
	Name  string `validate:"required"`
	Email string `validate:"required,email"`
	Age   int    `validate:"gte=18"`
}

var signup = Signup{Name: "Ada", Email: "ada@example.com", Age: 36}

func noopSignup(context.Context, Signup) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil }

// quietLogger's level is above everything the logging middleware logs.
var quietLogger = slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelError + 4}))

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// neverLimits is a rate limit that a benchmark cannot reach.
var neverLimits = middleware.RateLimitConfig{Rate: math.MaxFloat64 / 2, Burst: math.MaxInt32}

func signupBus(tb testing.TB, ics []cqrs.Interceptor, mws ...cqrs.Middleware[Signup, cqrs.NoResult]) *cqrs.CommandBus {
	tb.Helper()
	bus := cqrs.NewCommandBus(cqrs.WithInterceptors(ics...))
	require.NoError(tb, cqrs.Register(bus, cqrs.HandlerFunc[Signup, cqrs.NoResult](noopSignup), mws...))
	return bus
}

func fullStack(tb testing.TB) *middleware.Stack {
	tb.Helper()
	stack, err := middleware.Config{
		Metrics:    true,
		Logging:    &middleware.LoggingConfig{},
		Validation: true,
		RateLimit:  &neverLimits,
		Timeout:    time.Second,
		Breaker:    &middleware.BreakerConfig{},
	}.Build(quietLogger)
	require.NoError(tb, err)
	return stack
}

// Plain is a message without validation tags: what Validation costs on
// the many messages that declare nothing to check.
type Plain struct {
	ID   int64
	Name string
}

func noopPlain(context.Context, Plain) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil }

// decorated is one row of the middleware benchmarks: a bus and the message
// dispatched on it.
type decorated struct {
	name     string
	dispatch func(ctx context.Context) error
}

// decoratedBuses builds each decorator alone over a handler that does
// nothing, the full production stack, and the bare buses to compare with.
func decoratedBuses(tb testing.TB) []decorated {
	rl := middleware.RateLimiter(neverLimits)
	signupOn := func(bus cqrs.Bus) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := cqrs.Dispatch[cqrs.NoResult](ctx, bus, signup)
			return err
		}
	}
	intercepted := func(ics ...cqrs.Interceptor) func(ctx context.Context) error {
		return signupOn(signupBus(tb, ics))
	}
	plainOn := func(ics ...cqrs.Interceptor) func(ctx context.Context) error {
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(ics...))
		require.NoError(tb, cqrs.Register(bus, cqrs.HandlerFunc[Plain, cqrs.NoResult](noopPlain)))
		msg := Plain{ID: 1 << 20, Name: "acme"}
		return func(ctx context.Context) error {
			_, err := cqrs.Dispatch[cqrs.NoResult](ctx, bus, msg)
			return err
		}
	}
	typedLogging := cqrs.NewCommandBus()
	require.NoError(tb, cqrs.Register(typedLogging, cqrs.HandlerFunc[Signup, cqrs.NoResult](noopSignup),
		middleware.LoggingFor[Signup, cqrs.NoResult](typedLogging, middleware.LoggingConfig{Logger: quietLogger})))

	return []decorated{
		{"Bare", intercepted()},
		{"LoggingDisabled", intercepted(middleware.Logging(middleware.LoggingConfig{Logger: quietLogger}))},
		{"LoggingForDisabled", signupOn(typedLogging)},
		{"Validation", intercepted(middleware.Validation(middleware.ValidationConfig{}))},
		{"BarePlain", plainOn()},
		{"ValidationNoTags", plainOn(middleware.Validation(middleware.ValidationConfig{}))},
		{"Timeout", intercepted(middleware.Timeout(time.Second))},
		{"Breaker", intercepted(middleware.CircuitBreaker(middleware.BreakerConfig{}))},
		{"RateLimit", intercepted(rl)},
		{"Retry", intercepted(middleware.Retry(middleware.RetryConfig{}))},
		{"Recovery", intercepted(middleware.Recovery(middleware.RecoveryConfig{}))},
		{"Metrics", intercepted(middleware.NewMetrics())},
		{"FullStack", intercepted(fullStack(tb).Commands...)},
	}
}

// BenchmarkMiddleware measures each decorator alone over a handler that
// does nothing, the full production stack, and the two parts of that
// stack no implementation can avoid: validating the message and making a
// context with a deadline.
func BenchmarkMiddleware(b *testing.B) {
	ctx := context.Background()
	for _, d := range decoratedBuses(b) {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := d.dispatch(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}

	// The unavoidable parts of the full stack, alone.
	v := validator.New(validator.WithRequiredStructEnabled())
	b.Run("PartValidatorStruct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := v.StructCtx(ctx, signup); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PartWithTimeout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tctx, cancel := context.WithTimeout(ctx, time.Second)
			cancel()
			if tctx.Err() == nil {
				b.Fatal("cancel did not cancel")
			}
		}
	})
	benchmarkInterceptorParts(b)
}

// benchmarkInterceptorParts measures, alone, what the bundled interceptors
// are made of: the chain of one interceptor that does nothing but call on,
// the bus's own metrics (WithMetrics, which the Metrics interceptor
// should cost no more than, plus the chain), a clock reading, the lazy deadline context of Timeout, a deferred
// recover, the library calls of the
// breaker and the rate limit, and the lookup of an identity a dispatch
// does not have. An interceptor's row is about PartChain plus
// its parts, less the Bare dispatch that PartChain already includes.
func benchmarkInterceptorParts(b *testing.B) {
	ctx := context.Background()
	chained := signupBus(b, []cqrs.Interceptor{passThrough})
	b.Run("PartChain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cqrs.Dispatch[cqrs.NoResult](ctx, chained, signup); err != nil {
				b.Fatal(err)
			}
		}
	})
	metered := cqrs.NewCommandBus(cqrs.WithMetrics())
	require.NoError(b, cqrs.Register(metered, cqrs.HandlerFunc[Signup, cqrs.NoResult](noopSignup)))
	b.Run("PartWithMetrics", func(b *testing.B) { // the bus's own metrics, no chain
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cqrs.Dispatch[cqrs.NoResult](ctx, metered, signup); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PartNow", func(b *testing.B) { // one monotonic clock reading
		b.ReportAllocs()
		var sum time.Duration
		for b.Loop() {
			sum += stats.Now()
		}
		sinkDuration = sum
	})
	b.Run("PartTimeNow", func(b *testing.B) { // the wall and the monotonic clock
		b.ReportAllocs()
		var t time.Time
		for b.Loop() {
			t = time.Now()
		}
		sinkTime = t
	})
	b.Run("PartLazyTimeout", func(b *testing.B) { // the context Timeout passes on
		b.ReportAllocs()
		for b.Loop() {
			tctx := lazyctx.WithTimeout(ctx, time.Second)
			tctx.Stop()
			sinkContext = tctx
		}
	})
	b.Run("PartDeferRecover", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := deferRecover(noCall); err != nil {
				b.Fatal(err)
			}
		}
	})
	cb := gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{})
	b.Run("PartBreakerExecute", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cb.Execute(noStruct); err != nil {
				b.Fatal(err)
			}
		}
	})
	lim := rate.NewLimiter(rate.Limit(neverLimits.Rate), neverLimits.Burst)
	b.Run("PartLimiterAllow", func(b *testing.B) { // time.Now inside
		b.ReportAllocs()
		for b.Loop() {
			if !lim.Allow() {
				b.Fatal("limited")
			}
		}
	})
	b.Run("PartLimiterAllowN", func(b *testing.B) { // given one monotonic reading
		b.ReportAllocs()
		for b.Loop() {
			if !lim.AllowN(stats.Time(), 1) {
				b.Fatal("limited")
			}
		}
	})
	// What Logging (when it logs) and the OpenTelemetry interceptor (when
	// its span records) add to a dispatch with no identity: one lookup, in
	// a context that holds a value of another key, as a traced one does.
	valued := context.WithValue(ctx, traceKey{}, "trace")
	b.Run("PartIdentityOfNone", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := cqrs.IdentityOf(valued); ok {
				b.Fatal("an identity")
			}
		}
	})
	rec := cqrs.NewRecorder(cqrs.SpecFor[Signup, cqrs.NoResult](chained))
	b.Run("PartRecord", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rec.Record(20*time.Nanosecond, false)
		}
	})
}

// traceKey is the key of a context value that is not an identity.
type traceKey struct{}

var (
	sinkContext  context.Context
	sinkDuration time.Duration
	sinkTime     time.Time
)

//go:noinline
func noCall() error { return nil }

//go:noinline
func noStruct() (struct{}, error) { return struct{}{}, nil }

// deferRecover calls f under a deferred recover, as an interceptor that
// recovers panics does.
//
//go:noinline
func deferRecover(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	return f()
}

// BenchmarkMiddlewareParallel runs the rows of BenchmarkMiddleware under
// b.RunParallel: per-op time at or below the serial one means the
// decorator shares nothing that parallel dispatches write.
func BenchmarkMiddlewareParallel(b *testing.B) {
	ctx := context.Background()
	for _, d := range decoratedBuses(b) {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := d.dispatch(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// FindUser is the cached query of BenchmarkCache.
type FindUser struct {
	ID     int64
	Tenant string
}

// BenchmarkCache measures a cache hit against a bare dispatch of the same
// query.
func BenchmarkCache(b *testing.B) {
	ctx := context.Background()
	find := cqrs.HandlerFunc[FindUser, User](func(_ context.Context, q FindUser) (User, error) {
		return User{ID: q.ID, Name: q.Tenant}, nil
	})
	bare := cqrs.NewQueryBus()
	require.NoError(b, cqrs.Register(bare, find))
	cache, err := middleware.NewCache[FindUser, User](middleware.CacheConfig{TTL: time.Hour})
	require.NoError(b, err)
	defer cache.Close()
	cached := cqrs.NewQueryBus()
	require.NoError(b, cqrs.Register(cached, find, cache.Middleware()))
	q := FindUser{ID: 1 << 20, Tenant: "acme"}

	for _, bench := range []struct {
		name string
		bus  cqrs.Bus
	}{{"Bare", bare}, {"Hit", cached}} {
		b.Run(bench.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if u, err := cqrs.Dispatch[User](ctx, bench.bus, q); err != nil || u.ID != q.ID {
					b.Fatal(u, err)
				}
			}
		})
	}

	// The middleware's handler called directly, without the bus: a hit
	// less the dispatch around it.
	direct := cache.Middleware()(find)
	b.Run("PartMiddleware", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if u, err := direct.Handle(ctx, q); err != nil || u.ID != q.ID {
				b.Fatal(u, err)
			}
		}
	})

	// What a hit is made of: otter's lookup alone (GetIfPresent with the
	// same key, the query itself), and the floors of a hashed lookup:
	// hashing the key with hash/maphash, and a plain map read.
	// PartOtterGetIfPresent is otter with a bound only, which skips its
	// read buffer while the cache is small; PartOtterExpiring is the
	// middleware's own configuration (a bound, expiry after writing and a
	// coarse clock), where every read is also recorded for the eviction
	// policy; PartOtterQuietly is that cache read without recording it.
	// PartOtterStringKey is the middleware's configuration keyed by a
	// string, as NewKeyedCache is: it costs the struct key's hash less.
	plainOtter := newOtter[FindUser](b, &otter.Options[FindUser, User]{MaximumSize: 10_000}, q)
	b.Run("PartOtterGetIfPresent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if u, ok := plainOtter.GetIfPresent(q); !ok || u.ID != q.ID {
				b.Fatal(u, ok)
			}
		}
	})
	clock := otter.NewCoarseClock(time.Second)
	defer clock.Stop()
	expiring := newOtter[FindUser](b, &otter.Options[FindUser, User]{
		MaximumSize:      10_000,
		ExpiryCalculator: otter.ExpiryWriting[FindUser, User](time.Hour),
		Clock:            clock,
	}, q)
	b.Run("PartOtterExpiring", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if u, ok := expiring.GetIfPresent(q); !ok || u.ID != q.ID {
				b.Fatal(u, ok)
			}
		}
	})
	b.Run("PartOtterQuietly", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if e, ok := expiring.GetEntryQuietly(q); !ok || e.Value.ID != q.ID {
				b.Fatal(e, ok)
			}
		}
	})
	byString := newOtter[string](b, &otter.Options[string, User]{
		MaximumSize:      10_000,
		ExpiryCalculator: otter.ExpiryWriting[string, User](time.Hour),
		Clock:            clock,
	}, q.Tenant)
	b.Run("PartOtterStringKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if u, ok := byString.GetIfPresent(q.Tenant); !ok || u.ID != q.ID {
				b.Fatal(u, ok)
			}
		}
	})
	seed := maphash.MakeSeed()
	b.Run("PartMaphash", func(b *testing.B) {
		b.ReportAllocs()
		var h uint64
		for b.Loop() {
			h += maphash.Comparable(seed, q)
		}
		sinkHash = h
	})
	// A map of up to 8 entries is searched without hashing, so the map
	// holds more, as a cache would.
	plain := map[FindUser]User{q: {ID: q.ID, Name: q.Tenant}}
	for i := range int64(1023) {
		plain[FindUser{ID: i, Tenant: q.Tenant}] = User{ID: i}
	}
	b.Run("PartMap", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if u, ok := plain[q]; !ok || u.ID != q.ID {
				b.Fatal(u, ok)
			}
		}
	})
}

var sinkHash uint64

// newOtter returns an otter cache made with opts that holds the user of
// key, and stops its goroutines when b ends.
func newOtter[K comparable](b *testing.B, opts *otter.Options[K, User], key K) *otter.Cache[K, User] {
	b.Helper()
	c, err := otter.New(opts)
	require.NoError(b, err)
	b.Cleanup(func() { c.StopAllGoroutines() })
	c.Set(key, User{ID: 1 << 20, Name: "acme"})
	return c
}

// BenchmarkLoggingIdentity measures the logging interceptor, on and off,
// for a dispatch with no identity and for one with an identity
// (cqrs.ContextWithIdentity, which makes the bus give each message a new
// ID), each against a bare bus in the same state. Logging with no
// identity costs it one context lookup, and nothing when it is off. It
// runs last among the middleware benchmarks: once a process has made an
// identity, the bus looks for one in every later dispatch.
func BenchmarkLoggingIdentity(b *testing.B) {
	logged := slog.New(slog.NewTextHandler(discard{}, nil))
	bare := signupBus(b, nil)
	on := signupBus(b, []cqrs.Interceptor{middleware.Logging(middleware.LoggingConfig{Logger: logged})})
	off := signupBus(b, []cqrs.Interceptor{middleware.Logging(middleware.LoggingConfig{Logger: quietLogger})})
	rows := func(prefix string, ctx context.Context) {
		for _, bench := range []struct {
			name string
			bus  cqrs.Bus
		}{{"Bare", bare}, {"Logging", on}, {"LoggingDisabled", off}} {
			b.Run(prefix+bench.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := cqrs.Dispatch[cqrs.NoResult](ctx, bench.bus, signup); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	rows("NoIdentity", context.Background())
	rows("Identity", cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{CorrelationID: "request-42"}))
}
