package main

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
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

// sink records the events it is given.
type sink struct {
	mu     sync.Mutex
	events []OrderPlaced
}

func (s *sink) OrderPlaced(_ context.Context, e OrderPlaced) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e)
	return nil
}

func (s *sink) got() []OrderPlaced {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]OrderPlaced(nil), s.events...)
}

// newOrders wires the order service on buses of its own, with a sink of
// what it publishes.
func newOrders(t *testing.T, opts ...cqrs.Option) (*cqrs.CommandBus, *cqrs.EventBus, *sink) {
	t.Helper()
	events := cqrs.NewEventBus(opts...)
	t.Cleanup(func() { assert.NoError(t, events.Close(context.Background())) })
	s := &sink{}
	_, err := cqrs.Subscribe(events, "sink", s.OrderPlaced)
	require.NoError(t, err)
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Handle(commands, (&Orders{events: events}).Place))
	return commands, events, s
}

func TestPlacePublishesOrderPlaced(t *testing.T) {
	commands, _, placed := newOrders(t)
	ctx := context.Background()
	id, err := cqrs.Send(ctx, commands, PlaceOrder{Customer: "ada", Items: []string{"tea"}})
	require.NoError(t, err)
	assert.Equal(t, 1, id)
	id, err = cqrs.Send(ctx, commands, PlaceOrder{Customer: "bob", Items: []string{"cup"}})
	require.NoError(t, err)
	assert.Equal(t, 2, id)
	assert.Equal(t, []OrderPlaced{
		{Order: 1, Customer: "ada", Items: []string{"tea"}},
		{Order: 2, Customer: "bob", Items: []string{"cup"}},
	}, placed.got())
}

func TestPlaceWithoutItems(t *testing.T) {
	commands, _, placed := newOrders(t)
	_, err := cqrs.Send(context.Background(), commands, PlaceOrder{Customer: "ada"})
	assert.EqualError(t, err, "an order needs items")
	assert.Empty(t, placed.got())
}

func TestPlaceReportsFailedSubscriber(t *testing.T) {
	commands, events, _ := newOrders(t)
	_, err := cqrs.Subscribe(events, "stock", func(context.Context, OrderPlaced) error { return errOutOfStock })
	require.NoError(t, err)
	id, err := cqrs.Send(context.Background(), commands, PlaceOrder{Customer: "ada", Items: []string{"tea"}})
	assert.Equal(t, 1, id)
	assert.ErrorIs(t, err, errOutOfStock)
	assert.ErrorContains(t, err, "order 1 placed, but")
	var failed *cqrs.SubscriberError
	require.ErrorAs(t, err, &failed)
	assert.Equal(t, "stock", failed.Subscriber)
}

// retry is the retry run gives the event bus.
var retry = middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond, Jitter: -1})

func TestMailerRetried(t *testing.T) {
	var out bytes.Buffer
	mailer := &Mailer{w: &out, attempts: map[int]int{}}
	events := cqrs.NewEventBus(cqrs.WithInterceptors(retry))
	var mu sync.Mutex
	var errs []error
	_, err := cqrs.Subscribe(events, "email", func(ctx context.Context, e OrderPlaced) error {
		err := mailer.OrderPlaced(ctx, e)
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		return err
	})
	require.NoError(t, err)
	require.NoError(t, cqrs.Publish(context.Background(), events, OrderPlaced{Order: 1, Customer: "ada"}))
	assert.Equal(t, "email: receipt for order 1 to ada (attempt 2)\n", out.String())
	require.Len(t, errs, 2)
	assert.EqualError(t, errs[0], "mail server: connection reset (order 1)")
	assert.NoError(t, errs[1])
}

func TestReceiptsAsync(t *testing.T) {
	var out bytes.Buffer
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()), cqrs.WithInterceptors(retry))
	_, err := cqrs.Subscribe(events, "email", (&Mailer{w: &out, attempts: map[int]int{}}).OrderPlaced)
	require.NoError(t, err)
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Handle(commands, (&Orders{events: events}).Place))
	for _, c := range []string{"ada", "bob"} {
		_, err := cqrs.Send(context.Background(), commands, PlaceOrder{Customer: c, Items: []string{"tea"}})
		require.NoError(t, err)
	}
	// The only way to know the worker has delivered them: close the bus.
	require.NoError(t, events.Close(context.Background()))
	assert.Equal(t, "email: receipt for order 1 to ada (attempt 2)\n"+
		"email: receipt for order 2 to bob (attempt 2)\n", out.String())
}
