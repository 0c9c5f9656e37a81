package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Signup is the command of the examples.
type Signup struct {
	Name  string `validate:"required"`
	Email string `validate:"required,email"`
}

func signup(context.Context, Signup) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil }

// plainLogger writes records without their time, so that examples have
// stable output.
func plainLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "duration" {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func ExampleLogging() {
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(
		middleware.Logging(middleware.LoggingConfig{Logger: plainLogger()}),
	))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[Signup, cqrs.NoResult](signup)); err != nil {
		panic(err)
	}
	_, _ = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{Name: "Ada"})
	// Output:
	// level=INFO msg="cqrs dispatch" kind=command message=middleware_test.Signup outcome=ok
}

// A message that has an identity is logged with it: a caller's own
// correlation id here, and the ID the bus gave the message.
func ExampleLogging_identity() {
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(
		middleware.Logging(middleware.LoggingConfig{Logger: plainLogger()}),
	))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[Signup, cqrs.NoResult](signup)); err != nil {
		panic(err)
	}
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-1", CorrelationID: "request-42"})
	_, _ = cqrs.Dispatch[cqrs.NoResult](ctx, commands, Signup{Name: "Ada"})
	// Output:
	// level=INFO msg="cqrs dispatch" kind=command message=middleware_test.Signup identity.id=m-1 identity.correlation_id=request-42 outcome=ok
}

func ExampleLoggingFor() {
	// Typed logging for one handler: no allocation when its level is off.
	commands := cqrs.NewCommandBus()
	err := cqrs.Register(commands, cqrs.HandlerFunc[Signup, cqrs.NoResult](signup),
		middleware.LoggingFor[Signup, cqrs.NoResult](commands, middleware.LoggingConfig{Logger: plainLogger(), Level: slog.LevelWarn}))
	if err != nil {
		panic(err)
	}
	_, _ = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{Name: "Ada"})
	// Output:
	// level=WARN msg="cqrs dispatch" kind=command message=middleware_test.Signup outcome=ok
}

func ExampleValidation() {
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{})))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[Signup, cqrs.NoResult](signup)); err != nil {
		panic(err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{Email: "not an address"})
	fmt.Println(errors.Is(err, cqrs.ErrValidation))
	var verr *cqrs.ValidationError
	if errors.As(err, &verr) {
		for _, f := range verr.Fields {
			fmt.Printf("%s: %s %q\n", f.Field, f.Tag, f.Value)
		}
	}
	// Output:
	// true
	// Signup.Name: required ""
	// Signup.Email: email "not an address"
}

func ExampleTimeout() {
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Timeout(10 * time.Millisecond)))
	slow := cqrs.HandlerFunc[Signup, cqrs.NoResult](func(ctx context.Context, _ Signup) (cqrs.NoResult, error) {
		<-ctx.Done() // a handler must honour its context
		return cqrs.NoResult{}, ctx.Err()
	})
	if err := cqrs.Register(commands, slow); err != nil {
		panic(err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{})
	fmt.Println(errors.Is(err, cqrs.ErrExecutionTimeout), errors.Is(err, context.DeadlineExceeded))
	// Output:
	// true true
}

func ExampleCircuitBreaker() {
	breaker := middleware.CircuitBreaker(middleware.BreakerConfig{ConsecutiveFailures: 2})
	commands := cqrs.NewCommandBus()
	failing := cqrs.HandlerFunc[Signup, cqrs.NoResult](func(context.Context, Signup) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, errors.New("downstream unavailable")
	})
	// A breaker for this handler only.
	if err := cqrs.Register(commands, failing, cqrs.Intercept[Signup, cqrs.NoResult](commands, breaker)); err != nil {
		panic(err)
	}
	for range 3 {
		_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{})
		fmt.Println(err)
	}
	fmt.Println(breaker.States(), breaker.States()["command middleware_test.Signup"] == middleware.BreakerOpen)
	// Output:
	// downstream unavailable
	// downstream unavailable
	// cqrs: circuit open: command middleware_test.Signup: circuit breaker is open
	// map[command middleware_test.Signup:open] true
}

func ExampleRateLimiter() {
	limit := middleware.RateLimiter(middleware.RateLimitConfig{Rate: 1, Burst: 2})
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(limit))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[Signup, cqrs.NoResult](signup)); err != nil {
		panic(err)
	}
	for range 3 {
		_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{})
		fmt.Println(err == nil, errors.Is(err, cqrs.ErrRateLimited))
	}
	// Output:
	// true false
	// true false
	// false true
}

func ExampleRetry() {
	attempts := 0
	flaky := cqrs.HandlerFunc[Signup, cqrs.NoResult](func(context.Context, Signup) (cqrs.NoResult, error) {
		if attempts++; attempts < 3 {
			return cqrs.NoResult{}, errors.New("connection reset")
		}
		return cqrs.NoResult{}, nil
	})
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(
		middleware.Retry(middleware.RetryConfig{MaxAttempts: 5, BaseDelay: time.Millisecond}),
	))
	if err := cqrs.Register(commands, flaky); err != nil {
		panic(err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{})
	fmt.Println(err, attempts)
	// Output:
	// <nil> 3
}

func ExampleRecovery() {
	errInternal := errors.New("internal error")
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Recovery(middleware.RecoveryConfig{
		OnPanic: func(spec cqrs.Spec, value any, _ []byte) error {
			return fmt.Errorf("%w: %s: %v", errInternal, spec.Name, value)
		},
	})))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[Signup, cqrs.NoResult](func(context.Context, Signup) (cqrs.NoResult, error) {
		panic("nil map")
	})); err != nil {
		panic(err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{})
	fmt.Println(err)
	// Output:
	// internal error: middleware_test.Signup: nil map
}

func ExampleNewMetrics() {
	metrics := middleware.NewMetrics()
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(metrics))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[Signup, cqrs.NoResult](signup)); err != nil {
		panic(err)
	}
	for range 5 {
		_, _ = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{})
	}
	for _, m := range metrics.Snapshot() {
		fmt.Println(m.Name, m.Calls, m.Errors)
	}
	// Output:
	// middleware_test.Signup 5 0
}

// GetSignup is a query whose results are cached.
type GetSignup struct{ Email string }

func ExampleNewCache() {
	cache, err := middleware.NewCache[GetSignup, string](middleware.CacheConfig{TTL: time.Minute})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	lookups := 0
	queries := cqrs.NewQueryBus()
	get := cqrs.HandlerFunc[GetSignup, string](func(_ context.Context, q GetSignup) (string, error) {
		lookups++
		return "signed up: " + q.Email, nil
	})
	if err := cqrs.Register(queries, get, cache.Middleware()); err != nil {
		panic(err)
	}
	for range 3 {
		s, _ := cqrs.Dispatch[string](context.Background(), queries, GetSignup{Email: "ada@example.com"})
		fmt.Println(s)
	}
	// A command that changes the data drops the stale entry.
	cache.Invalidate(GetSignup{Email: "ada@example.com"})
	_, _ = cqrs.Dispatch[string](context.Background(), queries, GetSignup{Email: "ada@example.com"})
	fmt.Println("lookups:", lookups)
	// Output:
	// signed up: ada@example.com
	// signed up: ada@example.com
	// signed up: ada@example.com
	// lookups: 2
}

// ListSignups has a slice, so it is not comparable: it names its key.
type ListSignups struct{ Domains []string }

func (q ListSignups) CacheKey() string { return fmt.Sprint(q.Domains) }

func ExampleNewKeyedCache() {
	cache, err := middleware.NewKeyedCache[ListSignups, int](middleware.CacheConfig{TTL: time.Minute, MaxEntries: 100})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	queries := cqrs.NewQueryBus()
	count := cqrs.HandlerFunc[ListSignups, int](func(_ context.Context, q ListSignups) (int, error) { return len(q.Domains), nil })
	if err := cqrs.Register(queries, count, cache.Middleware()); err != nil {
		panic(err)
	}
	n, err := cqrs.Dispatch[int](context.Background(), queries, ListSignups{Domains: []string{"example.com"}})
	fmt.Println(n, err)
	// Output:
	// 1 <nil>
}

func ExampleParseConfig() {
	cfg, err := middleware.ParseConfig([]byte(`
validation: true
timeout: 2s
rate_limit: {rate: 100}
breaker: {consecutive_failures: 5, open_timeout: 30s}
metrics: true
queries:
  retry: {max_attempts: 3}
  cache: {ttl: 1m}
`))
	if err != nil {
		panic(err)
	}
	fmt.Println(cfg.Timeout, cfg.RateLimit.Rate, cfg.Queries.Retry.MaxAttempts, cfg.Commands.Retry, cfg.Queries.Cache.TTL)

	_, err = middleware.ParseConfig([]byte("timeout: -1s"))
	fmt.Println(err)
	_, err = middleware.ParseConfig([]byte("queries:\n  cache:\n    ttl: 60\n"))
	fmt.Println(err)
	// Output:
	// 2s 100 3 <nil> 1m0s
	// middleware: config: timeout (line 1): got -1s, want a positive duration, such as "2s"; omit it for no timeout
	// middleware: config: queries.cache.ttl (line 3): got "60", want a duration such as "250ms", "2s" or "1m" (a number needs a unit)
}

func ExampleConfig_Build() {
	cfg := middleware.Config{Validation: true, Timeout: time.Second, Metrics: true}
	stack, err := cfg.Build(nil)
	if err != nil {
		panic(err)
	}
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(stack.Commands...))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[Signup, cqrs.NoResult](signup)); err != nil {
		panic(err)
	}
	_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{Name: "Ada", Email: "ada@example.com"})
	fmt.Println(err, stack.Metrics.Snapshot()[0].Calls)
	// Output:
	// <nil> 1
}

func ExampleIsRetryable() {
	fmt.Println(middleware.IsRetryable(errors.New("connection reset")))
	fmt.Println(middleware.IsRetryable(cqrs.ErrValidation), middleware.IsCallerError(cqrs.ErrValidation))
	// Output:
	// true
	// false true
}

func ExamplePermanent() {
	errNoOrder := errors.New("no such order")
	attempts := 0
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Retry(middleware.RetryConfig{})))
	cancel := cqrs.HandlerFunc[Signup, cqrs.NoResult](func(context.Context, Signup) (cqrs.NoResult, error) {
		attempts++
		return cqrs.NoResult{}, middleware.Permanent(errNoOrder) // retrying cannot help
	})
	if err := cqrs.Register(commands, cancel); err != nil {
		panic(err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, Signup{})
	fmt.Println(err, errors.Is(err, errNoOrder), attempts)
	// Output:
	// no such order true 1
}

func ExampleLoadConfig() {
	dir, err := os.MkdirTemp("", "cqrs-config")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := dir + "/cqrs.yaml"
	if err := os.WriteFile(path, []byte("timeout: 2s\nmetrics: true\nbreaker: {consecutive_failures: 3}\n"), 0o600); err != nil {
		panic(err)
	}
	cfg, err := middleware.LoadConfig(path)
	if err != nil {
		panic(err)
	}
	stack, err := cfg.Build(nil)
	fmt.Println(cfg.Timeout, len(stack.Commands), err)
	// Output:
	// 2s 3 <nil>
}

func ExampleConfig_Validate() {
	// In Go, a zero setting is left out, and takes its default: 3 attempts.
	cfg := middleware.Config{Commands: middleware.CommandConfig{Retry: &middleware.RetryConfig{}}}
	fmt.Println(cfg.Validate())
	// A setting that is given must work as given.
	cfg.Commands.Retry.MaxAttempts = -1
	fmt.Println(cfg.Validate())
	// In a file, a written 0 is given: it would mean 3, so it is refused.
	_, err := middleware.ParseConfig([]byte("commands:\n  retry:\n    max_attempts: 0\n"))
	fmt.Println(err)
	// Output:
	// <nil>
	// middleware: config: commands.retry.max_attempts: got -1, want 1 or more (1: no retries); omit it for the default, 3
	// middleware: config: commands.retry.max_attempts (line 3): got 0, want 1 or more (1: no retries); omit it for the default, 3
}
