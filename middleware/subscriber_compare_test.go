package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// The event bus of issue #20's order service, wired twice: the way a user
// had to before a subscriber could have interceptors of its own (one
// bus-wide interceptor that looks at Spec.Subscriber and picks a decorator
// by hand), and with WithSubscriberInterceptors. The email subscriber is
// retried, the stock subscriber has a timeout, the analytics subscriber
// has neither; every subscriber is logged. docs/events.md gives the lines
// of each, counted with awk '/^func NAME/,/^}/'.

// eventsTheOldWay gives subscribers their own decorators with a filter on
// the subscriber's name.
func eventsTheOldWay(logging cqrs.Interceptor) *cqrs.EventBus {
	retry := middleware.Retry(middleware.RetryConfig{})
	timeout := middleware.Timeout(time.Second)
	perSubscriber := cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		switch spec.Subscriber {
		case "email":
			return retry.Intercept(spec, next)
		case "stock":
			return timeout.Intercept(spec, next)
		default:
			return next
		}
	})
	return cqrs.NewEventBus(cqrs.WithInterceptors(logging, perSubscriber))
}

// eventsTheNewWay says the same with one option per subscriber.
func eventsTheNewWay(logging cqrs.Interceptor) *cqrs.EventBus {
	return cqrs.NewEventBus(
		cqrs.WithInterceptors(logging),
		cqrs.WithSubscriberInterceptors("email", middleware.Retry(middleware.RetryConfig{})),
		cqrs.WithSubscriberInterceptors("stock", middleware.Timeout(time.Second)),
	)
}

type orderShipped struct {
	cqrs.Event
	ID int
}

// TestTheSameSubscribersBothWays checks that both buses do the same: the
// email subscriber's first failure is retried, the stock subscriber is cut
// off after a second, analytics runs once with neither, and the logging
// interceptor sees every subscriber.
func TestTheSameSubscribersBothWays(t *testing.T) {
	for name, build := range map[string]func(cqrs.Interceptor) *cqrs.EventBus{
		"old": eventsTheOldWay,
		"new": eventsTheNewWay,
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logged atomic.Int64
				logging := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
					return func(ctx context.Context, c cqrs.Call) error {
						logged.Add(1)
						return next(ctx, c)
					}
				})
				events := build(logging)

				var emails, stocks, analytics atomic.Int64
				errSMTP := errors.New("smtp: try again")
				_, err := cqrs.Subscribe(events, "email", func(context.Context, orderShipped) error {
					if emails.Add(1) == 1 {
						return errSMTP
					}
					return nil
				})
				require.NoError(t, err)
				var stockDeadline time.Duration
				_, err = cqrs.Subscribe(events, "stock", func(ctx context.Context, _ orderShipped) error {
					stocks.Add(1)
					start := time.Now()
					<-ctx.Done()
					stockDeadline = time.Since(start)
					return ctx.Err()
				})
				require.NoError(t, err)
				_, err = cqrs.Subscribe(events, "analytics", func(context.Context, orderShipped) error {
					analytics.Add(1)
					return errors.New("analytics down")
				})
				require.NoError(t, err)

				err = cqrs.Publish(context.Background(), events, orderShipped{ID: 1})
				require.Error(t, err)

				var failed *cqrs.SubscriberError
				require.ErrorAs(t, err, &failed)
				assert.ErrorIs(t, err, cqrs.ErrExecutionTimeout, "stock is cut off")
				assert.NotErrorIs(t, err, errSMTP, "email's failure was retried away")
				assert.Equal(t, int64(2), emails.Load(), "email: retried once")
				assert.Equal(t, int64(1), stocks.Load(), "stock: not retried")
				assert.Equal(t, time.Second, stockDeadline, "stock: its own timeout")
				assert.Equal(t, int64(1), analytics.Load(), "analytics: neither retried nor timed")
				assert.Equal(t, int64(3), logged.Load(), "logging: once around each subscriber")
			})
		})
	}
}
