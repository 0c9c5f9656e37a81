package middleware_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

func rateLimit(t *testing.T, cfg middleware.RateLimitConfig) *middleware.RateLimit {
	t.Helper()
	return middleware.RateLimiter(cfg)
}

// TestNewRateLimitStillCompiles: the deprecated constructor is
// RateLimiter with a nil error.
func TestNewRateLimitStillCompiles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rl, err := middleware.NewRateLimit(middleware.RateLimitConfig{Rate: 1, Burst: 1}) // deprecated, on purpose
		require.NoError(t, err)
		bus, _ := jobBus(t, rl)
		_, err = run(bus, Job{})
		require.NoError(t, err)
		fail(t, bus, 1, "", cqrs.ErrRateLimited)
	})
}

func TestRateLimitFailFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, j := jobBus(t, rateLimit(t, middleware.RateLimitConfig{Rate: 1, Burst: 2}))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Other, cqrs.NoResult](func(context.Context, Other) (cqrs.NoResult, error) {
			return cqrs.NoResult{}, nil
		})))

		for range 2 {
			_, err := run(bus, Job{})
			require.NoError(t, err)
		}
		_, err := run(bus, Job{})
		require.ErrorIs(t, err, cqrs.ErrRateLimited)
		assert.Contains(t, err.Error(), "command middleware_test.Job")
		assert.Equal(t, int64(2), j.calls.Load(), "a limited dispatch does not reach the handler")

		// Another type has a bucket of its own.
		_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, Other{})
		require.NoError(t, err)

		// One token a second refills the bucket.
		time.Sleep(time.Second)
		_, err = run(bus, Job{})
		require.NoError(t, err)
		_, err = run(bus, Job{})
		require.ErrorIs(t, err, cqrs.ErrRateLimited)
	})
}

func TestRateLimitWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, _ := jobBus(t, rateLimit(t, middleware.RateLimitConfig{Rate: 2, Burst: 1, Wait: true}))
		_, err := run(bus, Job{})
		require.NoError(t, err)

		start := time.Now()
		_, err = run(bus, Job{})
		require.NoError(t, err)
		assert.Equal(t, 500*time.Millisecond, time.Since(start), "waited for the next token")

		// A deadline too close for the next token fails at once.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		_, err = runCtx(ctx, bus, Job{})
		require.ErrorIs(t, err, cqrs.ErrRateLimited)
		assert.Zero(t, time.Since(start))

		// A caller that gives up while waiting gets its context's error.
		ctx, cancel = context.WithCancel(context.Background())
		go func() {
			time.Sleep(100 * time.Millisecond)
			cancel()
		}()
		_, err = runCtx(ctx, bus, Job{})
		require.ErrorIs(t, err, context.Canceled)
		assert.NotErrorIs(t, err, cqrs.ErrRateLimited)
	})
}

// Tenant is a command limited per tenant.
type Tenant struct{ Name string }

func TestRateLimitPerKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rl := rateLimit(t, middleware.RateLimitConfig{
			Rate: 1, Burst: 1, MaxKeys: 2,
			Key: func(msg any) string { return msg.(Tenant).Name },
		})
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(rl))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Tenant, cqrs.NoResult](func(context.Context, Tenant) (cqrs.NoResult, error) {
			return cqrs.NoResult{}, nil
		})))
		send := func(name string) error {
			_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, Tenant{Name: name})
			return err
		}

		require.NoError(t, send("a"))
		require.ErrorIs(t, send("a"), cqrs.ErrRateLimited)
		require.NoError(t, send("b"), "each tenant has its own bucket")
		require.ErrorIs(t, send("b"), cqrs.ErrRateLimited)

		// A third tenant evicts the least recently used bucket, a's: memory
		// stays bounded, and a comes back with a full bucket.
		require.NoError(t, send("c"))
		require.NoError(t, send("a"))
		require.ErrorIs(t, send("c"), cqrs.ErrRateLimited)
	})
}

// TestRateLimitNormalisesItsConfig pins each field's normalisation: a
// Rate that is not a positive finite number limits nothing, a Burst <= 0
// is the rate rounded up, and a MaxKeys <= 0 is 10,000. None is an error.
func TestRateLimitNormalisesItsConfig(t *testing.T) {
	for _, r := range []float64{0, -1, math.NaN(), math.Inf(1), math.Inf(-1)} {
		t.Run(fmt.Sprint("rate ", r), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bus, j := jobBus(t, rateLimit(t, middleware.RateLimitConfig{Rate: r}))
				for range 1000 {
					_, err := run(bus, Job{})
					require.NoError(t, err)
				}
				assert.Equal(t, int64(1000), j.calls.Load())
			})
		})
	}
	for name, tc := range map[string]struct {
		cfg   middleware.RateLimitConfig
		burst int
	}{
		"burst 0 is the rate rounded up": {middleware.RateLimitConfig{Rate: 2.5}, 3},
		"burst -4 likewise":              {middleware.RateLimitConfig{Rate: 2.5, Burst: -4}, 3},
		"at least 1":                     {middleware.RateLimitConfig{Rate: 0.1}, 1},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bus, _ := jobBus(t, rateLimit(t, tc.cfg))
				for range tc.burst {
					_, err := run(bus, Job{})
					require.NoError(t, err)
				}
				_, err := run(bus, Job{})
				require.ErrorIs(t, err, cqrs.ErrRateLimited)
			})
		})
	}
	t.Run("max keys", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, _ := jobBus(t, rateLimit(t, middleware.RateLimitConfig{
				Rate: 1, Burst: 1, MaxKeys: -3, Key: func(msg any) string { return fmt.Sprint(msg.(Job).ID) },
			}))
			for id := range 100 {
				_, err := run(bus, Job{ID: id})
				require.NoError(t, err)
			}
			for id := range 100 {
				_, err := run(bus, Job{ID: id})
				require.ErrorIs(t, err, cqrs.ErrRateLimited, "key %d's bucket was kept: the bound is not -3", id)
			}
		})
	})
}

func TestRateLimitZeroValue(t *testing.T) {
	bus, j := jobBus(t, new(middleware.RateLimit))
	for range 10 {
		_, err := run(bus, Job{})
		require.NoError(t, err)
	}
	assert.Equal(t, int64(10), j.calls.Load())
}

func TestRateLimitDoesNotAllocate(t *testing.T) {
	bus, _ := jobBus(t, rateLimit(t, middleware.RateLimitConfig{Rate: math.MaxFloat64 / 2, Burst: math.MaxInt32}))
	assert.Zero(t, allocsPerJob(t, bus, Job{ID: 1}), "under its rate")
}
