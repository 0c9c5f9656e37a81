package middleware_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// These tests pin the order Config.Build stacks the decorators in, by what
// each layer sees of the others: metrics, logging, validation, rate limit,
// timeout, retry, breaker, from outermost in.

// Order is a command whose handler fails when Fail is set.
type Order struct {
	Email string `validate:"required,email"`
	Fail  bool
}

func orderStack(t *testing.T, cfg middleware.Config) (*middleware.Stack, *cqrs.CommandBus, *atomic.Int64, *bytes.Buffer) {
	t.Helper()
	logs := &bytes.Buffer{}
	stack, err := cfg.Build(slog.New(slog.NewTextHandler(logs, nil)))
	require.NoError(t, err)
	bus := cqrs.NewCommandBus(cqrs.WithInterceptors(stack.Commands...))
	calls := new(atomic.Int64)
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Order, cqrs.NoResult](func(context.Context, Order) (cqrs.NoResult, error) {
		calls.Add(1)
		return cqrs.NoResult{}, nil
	}), func(next cqrs.Handler[Order, cqrs.NoResult]) cqrs.Handler[Order, cqrs.NoResult] {
		return cqrs.HandlerFunc[Order, cqrs.NoResult](func(ctx context.Context, o Order) (cqrs.NoResult, error) {
			if o.Fail {
				calls.Add(1)
				return cqrs.NoResult{}, errJob
			}
			return next.Handle(ctx, o)
		})
	}))
	return stack, bus, calls, logs
}

func send(bus cqrs.Bus, o Order) error {
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, o)
	return err
}

func TestOrderOuterLayersSeeValidationAndRateLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stack, bus, calls, logs := orderStack(t, middleware.Config{
			Metrics: true, Logging: &middleware.LoggingConfig{}, Validation: true,
			RateLimit: &middleware.RateLimitConfig{Rate: 1, Burst: 1},
			Breaker:   &middleware.BreakerConfig{ConsecutiveFailures: 1},
		})

		// An invalid message is logged and counted, but spends no token
		// and reaches neither breaker nor handler.
		require.ErrorIs(t, send(bus, Order{Email: "nope"}), cqrs.ErrValidation)
		require.NoError(t, send(bus, Order{Email: "a@example.com"}), "the invalid message took no token")
		// The next is rate limited, and that too is logged and counted.
		require.ErrorIs(t, send(bus, Order{Email: "a@example.com"}), cqrs.ErrRateLimited)

		assert.Equal(t, int64(1), calls.Load())
		m := stack.Metrics.Snapshot()[0]
		assert.Equal(t, uint64(3), m.Calls)
		assert.Equal(t, uint64(2), m.Errors)
		assert.Contains(t, logs.String(), "validation failed")
		assert.Contains(t, logs.String(), "rate limited")
		state, _ := stack.Breaker.State(cqrs.SpecFor[Order, cqrs.NoResult](bus))
		assert.Equal(t, "closed", state.String(), "the breaker saw neither refusal")
	})
}

func TestOrderOpenBreakerEndsRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, bus, calls, _ := orderStack(t, middleware.Config{
			Commands: middleware.CommandConfig{Retry: &middleware.RetryConfig{MaxAttempts: 10, BaseDelay: time.Millisecond}},
			Breaker:  &middleware.BreakerConfig{ConsecutiveFailures: 2},
		})
		err := send(bus, Order{Email: "a@example.com", Fail: true})
		require.ErrorIs(t, err, cqrs.ErrCircuitOpen)
		assert.Equal(t, int64(2), calls.Load(), "two failures opened the breaker, and its refusal is not retried")
	})
}

func TestOrderTimeoutBoundsAllAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, bus, calls, _ := orderStack(t, middleware.Config{
			Timeout:  time.Second,
			Commands: middleware.CommandConfig{Retry: &middleware.RetryConfig{MaxAttempts: 100, BaseDelay: 300 * time.Millisecond, MaxDelay: 300 * time.Millisecond, Jitter: -1}},
		})
		start := time.Now()
		err := send(bus, Order{Email: "a@example.com", Fail: true})
		require.ErrorIs(t, err, cqrs.ErrExecutionTimeout)
		require.ErrorIs(t, err, errJob, "the last attempt's error is kept")
		assert.Equal(t, time.Second, time.Since(start))
		assert.Equal(t, int64(4), calls.Load(), "attempts at 0, 300, 600 and 900ms")
	})
}
