package benchmarks

import (
	"context"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
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

// BenchmarkMiddleware measures each decorator alone over a handler that
// does nothing, the full production stack, and the two parts of that
// stack no implementation can avoid: validating the message and making a
// context with a deadline.
func BenchmarkMiddleware(b *testing.B) {
	ctx := context.Background()
	rl, err := middleware.NewRateLimit(neverLimits)
	require.NoError(b, err)
	intercepted := func(ics ...cqrs.Interceptor) *cqrs.CommandBus { return signupBus(b, ics) }
	dispatch := func(bus cqrs.Bus) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := cqrs.Dispatch[cqrs.NoResult](ctx, bus, signup); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	typedLogging := cqrs.NewCommandBus()
	require.NoError(b, cqrs.Register(typedLogging, cqrs.HandlerFunc[Signup, cqrs.NoResult](noopSignup),
		middleware.LoggingFor[Signup, cqrs.NoResult](typedLogging, middleware.LoggingConfig{Logger: quietLogger})))

	b.Run("Bare", dispatch(signupBus(b, nil)))
	b.Run("LoggingDisabled", dispatch(intercepted(middleware.Logging(middleware.LoggingConfig{Logger: quietLogger}))))
	b.Run("LoggingForDisabled", dispatch(typedLogging))
	b.Run("Validation", dispatch(intercepted(middleware.Validation(middleware.ValidationConfig{}))))
	b.Run("Timeout", dispatch(intercepted(middleware.Timeout(time.Second))))
	b.Run("Breaker", dispatch(intercepted(middleware.NewBreaker(gobreaker.Settings{}))))
	b.Run("RateLimit", dispatch(intercepted(rl)))
	b.Run("Retry", dispatch(intercepted(middleware.Retry(middleware.RetryConfig{}))))
	b.Run("Recovery", dispatch(intercepted(middleware.Recovery(middleware.RecoveryConfig{}))))
	b.Run("Metrics", dispatch(intercepted(middleware.NewMetrics())))
	b.Run("FullStack", dispatch(intercepted(fullStack(b).Interceptors...)))

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
}
