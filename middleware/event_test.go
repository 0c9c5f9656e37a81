package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

type invoiceIssued struct {
	cqrs.Event
	ID int
}

// TestBreakerAndMetricsPerSubscriber: the subscribers of one event each
// have a breaker and a metrics series of their own, so a failing
// subscriber opens its breaker alone.
func TestBreakerAndMetricsPerSubscriber(t *testing.T) {
	t.Parallel()
	breaker := middleware.NewBreaker(gobreaker.Settings{})
	metrics := middleware.NewMetrics()
	events := cqrs.NewEventBus(cqrs.WithInterceptors(metrics, breaker))
	var mailed, filed atomic.Int64
	_, err := cqrs.Subscribe(events, "mail", func(context.Context, invoiceIssued) error {
		mailed.Add(1)
		return errors.New("smtp down")
	})
	require.NoError(t, err)
	_, err = cqrs.Subscribe(events, "file", func(context.Context, invoiceIssued) error {
		filed.Add(1)
		return nil
	})
	require.NoError(t, err)

	for i := range 10 {
		require.Error(t, cqrs.Publish(context.Background(), events, invoiceIssued{ID: i}))
	}
	assert.Equal(t, int64(middleware.DefaultBreakerFailures), mailed.Load(), "mail's breaker opened")
	assert.Equal(t, int64(10), filed.Load(), "file's breaker stayed closed")

	states := map[string]gobreaker.State{}
	for spec, state := range breaker.All() {
		states[spec.Subscriber] = state
	}
	assert.Equal(t, map[string]gobreaker.State{"mail": gobreaker.StateOpen, "file": gobreaker.StateClosed}, states)

	calls := map[string]uint64{}
	for _, m := range metrics.Snapshot() {
		calls[m.Subscriber] = m.Calls
	}
	assert.Equal(t, map[string]uint64{"mail": 10, "file": 10}, calls)
}
