package main

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/cqrstest"
	"github.com/typedcqrs/dispatch/middleware"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRun(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out))
	assert.Equal(t, `email: receipt for order 1 to ada@example.com (attempt 2)
stock: reserved [tea cup] for order 1
email: receipt for order 2 to ada@example.com (attempt 2)
stock: reserved [cup] for order 2
email: receipt for order 3 to ada@example.com (attempt 2)
order 3: order 3 placed, but: cqrs: event main.OrderPlaced: subscriber stock: cup is out of stock
  the subscriber that failed: stock
analytics saw orders [1 2 3]
metrics: main.OrderPlaced to analytics: 3 calls, 0 errors
metrics: main.OrderPlaced to email: 3 calls, 0 errors
metrics: main.OrderPlaced to stock: 3 calls, 1 errors
`, out.String())
}

var errOutOfStock = errors.New("out of stock")

// newOrders wires the order service on a test harness's buses, with a
// sink of what it publishes.
func newOrders(t *testing.T, opts ...cqrs.Option) *cqrstest.Harness {
	h := cqrstest.NewHarness(t, opts...)
	require.NoError(t, cqrs.Handle(h.Commands, (&Orders{events: h.Events}).Place))
	cqrstest.Sink[OrderPlaced](t, h.Events)
	return h
}

func TestPlacePublishesOrderPlaced(t *testing.T) {
	h := newOrders(t)
	h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).
		Then(OrderPlaced{Order: 1, Customer: "ada", Items: []string{"tea"}}).ThenReturns(1)
	h.When(PlaceOrder{Customer: "bob", Items: []string{"cup"}}).
		Then(OrderPlaced{Order: 2, Customer: "bob", Items: []string{"cup"}}).ThenReturns(2)
}

func TestPlaceWithoutItems(t *testing.T) {
	h := newOrders(t)
	assert.EqualError(t, h.When(PlaceOrder{Customer: "ada"}).Then().Err(), "an order needs items")
}

func TestPlaceReportsFailedSubscriber(t *testing.T) {
	h := newOrders(t)
	cqrstest.On[OrderPlaced](h.Faults).Fail(errOutOfStock)
	out := h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).ThenError(errOutOfStock)
	assert.Equal(t, 1, out.Result())
	assert.ErrorContains(t, out.Err(), "order 1 placed, but")
	var failed *cqrs.SubscriberError
	require.ErrorAs(t, out.Err(), &failed)
	assert.Equal(t, cqrstest.SinkName, failed.Subscriber)
}

// retry is the retry run gives the event bus.
var retry = middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond, Jitter: -1})

func TestMailerRetried(t *testing.T) {
	var out bytes.Buffer
	attempts := cqrstest.NewRecorder(t) // inside the retry: each attempt
	h := cqrstest.NewHarness(t, cqrs.WithInterceptors(retry, attempts))
	_, err := cqrs.Subscribe(h.Events, "email", (&Mailer{w: &out, attempts: map[int]int{}}).OrderPlaced)
	require.NoError(t, err)
	require.NoError(t, cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: 1, Customer: "ada"}))
	assert.Equal(t, "email: receipt for order 1 to ada (attempt 2)\n", out.String())
	calls := cqrstest.Calls[OrderPlaced](attempts)
	require.Len(t, calls, 2)
	assert.EqualError(t, calls[0].Err, "mail server: connection reset (order 1)")
	assert.NoError(t, calls[1].Err)
}

func TestReceiptsAsync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		h := newOrders(t, cqrs.WithStrategy(cqrs.Async()), cqrs.WithInterceptors(retry))
		_, err := cqrs.Subscribe(h.Events, "email", (&Mailer{w: &out, attempts: map[int]int{}}).OrderPlaced)
		require.NoError(t, err)
		h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}})
		h.When(PlaceOrder{Customer: "bob", Items: []string{"tea"}})
		cqrstest.AwaitPublished[OrderPlaced](h, 2) // no Close: the bus goes on
		assert.Equal(t, "email: receipt for order 1 to ada (attempt 2)\n"+
			"email: receipt for order 2 to bob (attempt 2)\n", out.String())
	})
}
