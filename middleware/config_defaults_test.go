package middleware_test

import (
	"bytes"
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// tagged is a command with a validation tag.
type tagged struct {
	Name string `validate:"required"`
}

// Tenanted is a command whose rate limit may be keyed by its tenant.
type Tenanted struct{ Tenant string }

// defaultLog captures what reaches slog's default logger while f runs. It
// changes a global: the tests that call it do not run in parallel.
func defaultLog(f func()) string {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(prev)
	f()
	return buf.String()
}

// zeroDefaults holds, for every field of every *Config struct of the
// package, a test that the field left zero takes the default its doc
// comment gives. TestZeroDefaultsCoverEveryField checks that none is
// missing.
var zeroDefaults = map[string]func(t *testing.T){
	// Config: every part is off when its field is zero.
	"Config.Validation": func(t *testing.T) {
		stack, err := middleware.Config{}.Build(nil)
		require.NoError(t, err)
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(stack.Commands...))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[tagged, cqrs.NoResult](noop[tagged])))
		_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, tagged{})
		assert.NoError(t, err, "not validated")
	},
	"Config.Timeout": func(t *testing.T) {
		stack, err := middleware.Config{Metrics: true}.Build(nil)
		require.NoError(t, err)
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(stack.Commands...))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[tagged, bool](func(ctx context.Context, _ tagged) (bool, error) {
			_, ok := ctx.Deadline()
			return ok, nil
		})))
		deadline, err := cqrs.Dispatch[bool](context.Background(), bus, tagged{})
		require.NoError(t, err)
		assert.False(t, deadline, "no timeout")
	},
	"Config.Breaker": func(t *testing.T) {
		stack, err := middleware.Config{}.Build(nil)
		require.NoError(t, err)
		assert.Nil(t, stack.Breaker)
		bus, j := jobBus(t, stack.Commands...)
		fail(t, bus, 2*middleware.DefaultBreakerFailures, "fail", errJob)
		assert.Equal(t, int64(2*middleware.DefaultBreakerFailures), j.calls.Load(), "no breaker")
	},
	"Config.RateLimit": func(t *testing.T) {
		stack, err := middleware.Config{}.Build(nil)
		require.NoError(t, err)
		bus, _ := jobBus(t, stack.Commands...)
		for range 1000 {
			_, err := run(bus, Job{})
			require.NoError(t, err, "no rate limit")
		}
	},
	"Config.Logging": func(t *testing.T) {
		var buf bytes.Buffer
		stack, err := middleware.Config{}.Build(slog.New(slog.NewTextHandler(&buf, nil)))
		require.NoError(t, err)
		bus, _ := jobBus(t, stack.Commands...)
		_, err = run(bus, Job{})
		require.NoError(t, err)
		assert.Empty(t, buf.String(), "no logging")
	},
	"Config.Metrics": func(t *testing.T) {
		stack, err := middleware.Config{}.Build(nil)
		require.NoError(t, err)
		assert.Nil(t, stack.Metrics)
		assert.Empty(t, stack.Commands)
		assert.Empty(t, stack.Queries)
	},
	"Config.Commands":     commandsNotRetried,
	"CommandConfig.Retry": commandsNotRetried,
	"Config.Queries":      queriesNotRetried,
	"QueryConfig.Retry":   queriesNotRetried,
	"QueryConfig.Cache": func(t *testing.T) {
		stack, err := middleware.Config{}.Build(nil)
		require.NoError(t, err)
		_, err = middleware.NewQueryCache[FindUser, Profile](stack, cqrs.NewQueryBus())
		require.ErrorIs(t, err, middleware.ErrConfig)
		assert.Contains(t, err.Error(), "set queries.cache in the config, or make the cache with NewCache and place it with PlaceCache")
	},

	"BreakerConfig.ConsecutiveFailures": func(t *testing.T) {
		bus, j := jobBus(t, middleware.CircuitBreaker(middleware.BreakerConfig{}))
		fail(t, bus, middleware.DefaultBreakerFailures, "fail", errJob)
		fail(t, bus, 1, "", cqrs.ErrCircuitOpen)
		assert.Equal(t, int64(5), j.calls.Load(), "open after 5")
	},
	"BreakerConfig.OpenTimeout": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, _ := jobBus(t, middleware.CircuitBreaker(middleware.BreakerConfig{ConsecutiveFailures: 1}))
			fail(t, bus, 1, "fail", errJob)
			time.Sleep(60 * time.Second)
			fail(t, bus, 1, "", cqrs.ErrCircuitOpen)
			time.Sleep(time.Nanosecond)
			_, err := run(bus, Job{})
			assert.NoError(t, err, "a probe once 60s are over")
		})
	},
	"BreakerConfig.HalfOpenRequests": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, j := jobBus(t, middleware.CircuitBreaker(middleware.BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: time.Second}))
			fail(t, bus, 1, "fail", errJob)
			time.Sleep(time.Second + time.Nanosecond)
			var wg sync.WaitGroup
			wg.Go(func() {
				_, err := run(bus, Job{Do: "block"})
				assert.NoError(t, err)
			})
			synctest.Wait() // the one probe is in flight
			_, err := run(bus, Job{})
			require.ErrorIs(t, err, gobreaker.ErrTooManyRequests, "1 probe at a time")
			close(j.release)
			wg.Wait()
		})
	},
	"BreakerConfig.Interval": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, _ := jobBus(t, middleware.CircuitBreaker(middleware.BreakerConfig{}))
			fail(t, bus, middleware.DefaultBreakerFailures-1, "fail", errJob)
			time.Sleep(24 * time.Hour) // counts are kept while closed
			fail(t, bus, 1, "fail", errJob)
			fail(t, bus, 1, "", cqrs.ErrCircuitOpen)
		})
	},
	"BreakerConfig.IsExcluded": func(t *testing.T) {
		bus, j := jobBus(t, middleware.CircuitBreaker(middleware.BreakerConfig{ConsecutiveFailures: 1}))
		fail(t, bus, 3, "validate", cqrs.ErrValidation) // the caller's doing: IsCallerError
		fail(t, bus, 1, "canceled", context.Canceled)
		assert.Equal(t, int64(4), j.calls.Load(), "caller errors never open the breaker")
	},
	"BreakerConfig.OnStateChange": func(t *testing.T) {
		br := middleware.CircuitBreaker(middleware.BreakerConfig{ConsecutiveFailures: 1})
		bus, _ := jobBus(t, br)
		fail(t, bus, 1, "fail", errJob)
		state, ok := br.State(cqrs.SpecFor[Job, Done](bus))
		require.True(t, ok)
		assert.Equal(t, middleware.BreakerOpen, state, "changes state with nothing to call")
	},

	"RateLimitConfig.Rate": func(t *testing.T) {
		bus, _ := jobBus(t, middleware.RateLimiter(middleware.RateLimitConfig{}))
		for range 1000 {
			_, err := run(bus, Job{})
			require.NoError(t, err, "limits nothing")
		}
	},
	"RateLimitConfig.Burst": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, _ := jobBus(t, middleware.RateLimiter(middleware.RateLimitConfig{Rate: 2.5}))
			for range 3 {
				_, err := run(bus, Job{})
				require.NoError(t, err, "a burst of the rate rounded up")
			}
			fail(t, bus, 1, "", cqrs.ErrRateLimited)
		})
	},
	"RateLimitConfig.Wait": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, _ := jobBus(t, middleware.RateLimiter(middleware.RateLimitConfig{Rate: 1}))
			_, err := run(bus, Job{})
			require.NoError(t, err)
			start := time.Now()
			fail(t, bus, 1, "", cqrs.ErrRateLimited)
			assert.Zero(t, time.Since(start), "fails at once")
		})
	},
	"RateLimitConfig.Key": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, _ := jobBus(t, middleware.RateLimiter(middleware.RateLimitConfig{Rate: 1}))
			_, err := run(bus, Job{ID: 1})
			require.NoError(t, err)
			_, err = run(bus, Job{ID: 2})
			require.ErrorIs(t, err, cqrs.ErrRateLimited, "one bucket for the type, whatever the message")
		})
	},
	"RateLimitConfig.MaxKeys": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.RateLimiter(middleware.RateLimitConfig{
				Rate: 1e-9, Burst: 1, Key: func(m any) string { return m.(Tenanted).Tenant },
			})))
			require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Tenanted, cqrs.NoResult](noop[Tenanted])))
			send := func(tenant int) error {
				_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, Tenanted{Tenant: strconv.Itoa(tenant)})
				return err
			}
			for i := range 10_000 {
				require.NoError(t, send(i))
			}
			require.ErrorIs(t, send(0), cqrs.ErrRateLimited, "10,000 buckets kept: tenant 0's is empty")
			require.NoError(t, send(10_000), "a new tenant's bucket drops the least recently used, 1's")
			require.NoError(t, send(1), "tenant 1's bucket starts full again")
		})
	},

	"RetryConfig.MaxAttempts": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, j := jobBus(t, middleware.Retry(middleware.RetryConfig{}))
			fail(t, bus, 1, "fail", errJob)
			assert.Equal(t, int64(3), j.calls.Load())
		})
	},
	"RetryConfig.BaseDelay": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &flaky{n: 1, err: errJob}
			_, err := run(flakyBus(t, f, middleware.RetryConfig{Jitter: -1}), Job{})
			require.NoError(t, err)
			assert.Equal(t, []time.Duration{100 * time.Millisecond}, gaps(f.calls))
		})
	},
	"RetryConfig.MaxDelay": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &flaky{n: 3, err: errJob}
			_, err := run(flakyBus(t, f, middleware.RetryConfig{MaxAttempts: 4, BaseDelay: 4 * time.Second, Jitter: -1}), Job{})
			require.NoError(t, err)
			assert.Equal(t, []time.Duration{4 * time.Second, 8 * time.Second, 10 * time.Second}, gaps(f.calls), "capped at 10s")
		})
	},
	"RetryConfig.Jitter": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var waits []time.Duration
			for range 60 {
				f := &flaky{n: 1, err: errJob}
				_, err := run(flakyBus(t, f, middleware.RetryConfig{}), Job{})
				require.NoError(t, err)
				waits = append(waits, gaps(f.calls)...)
			}
			for _, w := range waits {
				require.InDelta(t, 100*time.Millisecond, w, float64(50*time.Millisecond), "within 50% of 100ms")
			}
			assert.Less(t, slices.Min(waits), 75*time.Millisecond, "spread by 0.5, not less")
			assert.Greater(t, slices.Max(waits), 125*time.Millisecond, "spread by 0.5, not less")
		})
	},
	"RetryConfig.Retryable": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			permanent := &flaky{n: 5, err: middleware.Permanent(errJob)}
			_, err := run(flakyBus(t, permanent, middleware.RetryConfig{}), Job{})
			require.ErrorIs(t, err, errJob)
			assert.Len(t, permanent.calls, 1, "IsRetryable: a Permanent error is not retried")
			transient := &flaky{n: 5, err: errJob}
			_, err = run(flakyBus(t, transient, middleware.RetryConfig{}), Job{})
			require.ErrorIs(t, err, errJob)
			assert.Len(t, transient.calls, 3, "IsRetryable: any other error is")
		})
	},

	"CacheConfig.TTL": func(t *testing.T) {
		d := &directory{}
		bus, cache := cachedBus(t, d, middleware.CacheConfig{})
		find(t, bus, FindUser{ID: 1})
		find(t, bus, FindUser{ID: 1})
		assert.Equal(t, int64(2), d.calls.Load(), "caches nothing")
		assert.Zero(t, cache.Stats())
	},
	"CacheConfig.MaxEntries": func(t *testing.T) {
		d := &directory{}
		bus, cache := cachedBus(t, d, middleware.CacheConfig{TTL: time.Hour})
		for id := range 10_000 {
			find(t, bus, FindUser{ID: id})
		}
		for id := range 10_000 {
			find(t, bus, FindUser{ID: id})
		}
		assert.Equal(t, uint64(10_000), cache.Stats().Misses, "10,000 entries kept")
		for id := 10_000; id < 12_000; id++ {
			find(t, bus, FindUser{ID: id})
		}
		before := cache.Stats().Misses
		for id := range 12_000 {
			find(t, bus, FindUser{ID: id})
		}
		assert.GreaterOrEqual(t, cache.Stats().Misses-before, uint64(2000), "no more than 10,000")
	},
	"CacheConfig.CountHits": func(t *testing.T) {
		d := &directory{}
		bus, cache := cachedBus(t, d, middleware.CacheConfig{TTL: time.Hour})
		find(t, bus, FindUser{ID: 1})
		find(t, bus, FindUser{ID: 1})
		assert.Equal(t, middleware.CacheStats{Misses: 1}, cache.Stats(), "hits not counted")
	},

	"LoggingConfig.Logger": func(t *testing.T) {
		logged := defaultLog(func() {
			bus, _ := jobBus(t, middleware.Logging(middleware.LoggingConfig{}))
			fail(t, bus, 1, "fail", errJob)
		})
		assert.Empty(t, logged, "discards, rather than log to slog's default")
	},
	"LoggingConfig.Level": func(t *testing.T) {
		var buf bytes.Buffer
		bus, _ := jobBus(t, middleware.Logging(middleware.LoggingConfig{Logger: jsonLogger(&buf, slog.LevelDebug)}))
		_, err := run(bus, Job{})
		require.NoError(t, err)
		assert.Equal(t, "INFO", records(t, &buf)[0]["level"])
	},
	"LoggingConfig.CallerErrorLevel": func(t *testing.T) {
		var buf bytes.Buffer
		bus, _ := jobBus(t, middleware.Logging(middleware.LoggingConfig{Logger: jsonLogger(&buf, slog.LevelDebug)}))
		fail(t, bus, 1, "validate", cqrs.ErrValidation)
		assert.Equal(t, "WARN", records(t, &buf)[0]["level"])
	},

	"ValidationConfig.Validator": func(t *testing.T) {
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{})))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[tagged, cqrs.NoResult](noop[tagged])))
		_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, tagged{})
		var verr *cqrs.ValidationError
		require.ErrorAs(t, err, &verr, "the shared validator checks the tags")
		assert.Equal(t, "required", verr.Fields[0].Tag)
	},

	"MemoryInboxConfig.TTL": func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			in := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
			once := func() bool {
				ran, err := in.Once(context.Background(), "c", "m-1", func(context.Context) error { return nil })
				require.NoError(t, err)
				return ran
			}
			require.True(t, once())
			time.Sleep(24*time.Hour - time.Second)
			assert.False(t, once(), "remembered for 24h")
			time.Sleep(2 * time.Second)
			assert.True(t, once(), "forgotten after 24h")
		})
	},
	"MemoryInboxConfig.MaxEntries": func(t *testing.T) {
		in := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
		ctx := context.Background()
		nop := func(context.Context) error { return nil }
		for i := range 100_000 {
			_, err := in.Once(ctx, "c", strconv.Itoa(i), nop)
			require.NoError(t, err)
		}
		assert.Equal(t, 100_000, in.Len(), "100,000 remembered")
		ran, err := in.Once(ctx, "c", "0", nop)
		require.NoError(t, err)
		assert.False(t, ran, "the oldest is still remembered at 100,000")
		_, err = in.Once(ctx, "c", "100000", nop)
		require.NoError(t, err)
		assert.Equal(t, 100_000, in.Len(), "no more than 100,000")
	},
	"RecoveryConfig.Logger": func(t *testing.T) {
		logged := defaultLog(func() {
			bus, _ := jobBus(t, middleware.Recovery(middleware.RecoveryConfig{}))
			fail(t, bus, 1, "panic", cqrs.ErrHandlerPanic)
		})
		assert.Empty(t, logged, "logs nothing")
	},
	"RecoveryConfig.OnPanic": func(t *testing.T) {
		bus, _ := jobBus(t, middleware.Recovery(middleware.RecoveryConfig{}))
		_, err := run(bus, Job{Do: "panic"})
		var pe *cqrs.PanicError
		require.ErrorAs(t, err, &pe, "the bus's own error")
		assert.Equal(t, "job exploded", pe.Value)
	},
}

func commandsNotRetried(t *testing.T) {
	stack, err := middleware.Config{Queries: middleware.QueryConfig{Retry: &middleware.RetryConfig{}}}.Build(nil)
	require.NoError(t, err)
	bus, j := jobBus(t, stack.Commands...)
	fail(t, bus, 1, "fail", errJob)
	assert.Equal(t, int64(1), j.calls.Load(), "commands are not retried")
}

func queriesNotRetried(t *testing.T) {
	stack, err := middleware.Config{Commands: middleware.CommandConfig{Retry: &middleware.RetryConfig{}}}.Build(nil)
	require.NoError(t, err)
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
	d := &directory{}
	d.fail.Store(true)
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[FindUser, Profile](d.find)))
	_, err = cqrs.Dispatch[Profile](context.Background(), queries, FindUser{})
	require.ErrorIs(t, err, errJob)
	assert.Equal(t, int64(1), d.calls.Load(), "queries are not retried")
}

// TestZeroDefaults: every field of every *Config struct of the package,
// left zero, takes the default its doc comment gives.
func TestZeroDefaults(t *testing.T) {
	for field, check := range zeroDefaults {
		t.Run(field, check)
	}
}

// TestZeroDefaultsCoverEveryField reads the package's source for its
// exported struct types named ...Config and requires a row of
// zeroDefaults for each of their fields, and no other.
func TestZeroDefaultsCoverEveryField(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	var fields []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok || !ts.Name.IsExported() || !strings.HasSuffix(ts.Name.Name, "Config") {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			for _, fl := range st.Fields.List {
				for _, id := range fl.Names {
					fields = append(fields, ts.Name.Name+"."+id.Name)
				}
			}
			return true
		})
	}
	require.Contains(t, fields, "RetryConfig.MaxAttempts", "the walk finds the structs")
	var rows []string
	for field := range zeroDefaults {
		rows = append(rows, field)
	}
	slices.Sort(fields)
	slices.Sort(rows)
	assert.Equal(t, fields, rows)
}
