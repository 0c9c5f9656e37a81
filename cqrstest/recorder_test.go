package cqrstest_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/cqrstest"
)

// TestRecorderRecordsRealHandlers: a Recorder given to the application's
// own buses records what their real handlers were sent and asked, typed,
// in order, failures included, with results and errors once returned.
func TestRecorderRecordsRealHandlers(t *testing.T) {
	rec := cqrstest.NewRecorder(t)
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(rec))
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(rec))
	events := cqrs.NewEventBus()
	wire(t, commands, queries, events)
	ctx := context.Background()

	id, err := cqrs.Send(ctx, commands, PlaceOrder{Customer: "ada", Items: []string{"tea"}})
	require.NoError(t, err)
	_, err = cqrs.Send(ctx, commands, PlaceOrder{Customer: "bob"})
	require.ErrorIs(t, err, errNoItems)
	_, err = cqrs.Ask(ctx, queries, GetOrder{ID: id})
	require.NoError(t, err)
	_, err = cqrs.Send(ctx, commands, CancelOrder{Order: id})
	require.NoError(t, err)

	assert.Equal(t, []PlaceOrder{{Customer: "ada", Items: []string{"tea"}}, {Customer: "bob"}}, cqrstest.Sent[PlaceOrder](rec))
	assert.Equal(t, []CancelOrder{{Order: 1}}, cqrstest.Sent[CancelOrder](rec))
	assert.Equal(t, []GetOrder{{ID: 1}}, cqrstest.Asked[GetOrder](rec))
	assert.Empty(t, cqrstest.Asked[PlaceOrder](rec), "a command is not a query")
	assert.Empty(t, cqrstest.Sent[GetOrder](rec), "a query is not a command")

	calls := cqrstest.Calls[PlaceOrder](rec)
	require.Len(t, calls, 2)
	assert.True(t, calls[0].Done)
	assert.Equal(t, OrderID(1), calls[0].Result)
	require.NoError(t, calls[0].Err)
	assert.Equal(t, "command cqrstest_test.PlaceOrder", calls[0].Spec.String())
	assert.False(t, calls[0].HasIdentity, "the bus gives no identity unless asked")
	assert.ErrorIs(t, calls[1].Err, errNoItems)
	asked := cqrstest.Calls[GetOrder](rec)
	require.Len(t, asked, 1)
	assert.Equal(t, Order{ID: 1, Customer: "ada", Items: []string{"tea"}}, asked[0].Result)
}

// TestRecorderCallInProgress: a call is recorded as it starts, and its
// result once its handler returns.
func TestRecorderCallInProgress(t *testing.T) {
	rec := cqrstest.NewRecorder(t)
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(rec))
	entered, release := make(chan struct{}), make(chan struct{})
	require.NoError(t, cqrs.Handle(commands, func(context.Context, PlaceOrder) (OrderID, error) {
		close(entered)
		<-release
		return 9, nil
	}))
	done := make(chan error)
	go func() {
		_, err := cqrs.Send(context.Background(), commands, PlaceOrder{Customer: "ada"})
		done <- err
	}()
	<-entered
	calls := cqrstest.Calls[PlaceOrder](rec)
	require.Len(t, calls, 1)
	assert.False(t, calls[0].Done)
	assert.Nil(t, calls[0].Result)
	assert.Equal(t, []PlaceOrder{{Customer: "ada"}}, cqrstest.Sent[PlaceOrder](rec), "sent, though not yet handled")
	close(release)
	require.NoError(t, <-done)
	calls = cqrstest.Calls[PlaceOrder](rec)
	assert.True(t, calls[0].Done)
	assert.Equal(t, OrderID(9), calls[0].Result)
}

// TestRecorderPanicUnwinding: a typed middleware inside the recorder that
// panics unwinds the call through it; the call is still recorded as
// ended, with an error, so that nothing waits for it for ever.
func TestRecorderPanicUnwinding(t *testing.T) {
	rec := cqrstest.NewRecorder(t)
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(rec))
	boom := func(cqrs.Handler[PlaceOrder, OrderID]) cqrs.Handler[PlaceOrder, OrderID] {
		return cqrs.HandlerFunc[PlaceOrder, OrderID](func(context.Context, PlaceOrder) (OrderID, error) {
			panic("middleware bug")
		})
	}
	require.NoError(t, cqrs.Handle(commands, func(context.Context, PlaceOrder) (OrderID, error) { return 1, nil }, boom))
	_, err := cqrs.Send(context.Background(), commands, PlaceOrder{})
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	calls := cqrstest.Calls[PlaceOrder](rec)
	require.Len(t, calls, 1)
	assert.True(t, calls[0].Done)
	assert.Error(t, calls[0].Err)
}

// TestPublishedAndDelivered: events are recorded per subscriber and per
// publish: two publishes to two subscribers are two publishes and two
// deliveries to each, one of them failed.
func TestPublishedAndDelivered(t *testing.T) {
	rec := cqrstest.NewRecorder(t)
	events := cqrs.NewEventBus(cqrs.WithIdentity(), cqrs.WithInterceptors(rec))
	_, err := cqrs.Subscribe(events, "email", func(context.Context, OrderPlaced) error { return nil })
	require.NoError(t, err)
	_, err = cqrs.Subscribe(events, "stock", func(_ context.Context, e OrderPlaced) error {
		if e.Order == 2 {
			return errDown
		}
		return nil
	})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, cqrs.Publish(ctx, events, OrderPlaced{Order: 1}))
	require.ErrorIs(t, cqrs.Publish(ctx, events, OrderPlaced{Order: 2}), errDown)

	want := []OrderPlaced{{Order: 1}, {Order: 2}}
	assert.Equal(t, want, cqrstest.Published[OrderPlaced](rec))
	assert.Equal(t, want, cqrstest.Delivered[OrderPlaced](rec, "email"))
	assert.Equal(t, want, cqrstest.Delivered[OrderPlaced](rec, "stock"))
	assert.Empty(t, cqrstest.Delivered[OrderPlaced](rec, "nobody"))
	assert.Empty(t, cqrstest.Published[OrderCancelled](rec))

	calls := cqrstest.Calls[OrderPlaced](rec)
	require.Len(t, calls, 4)
	assert.Equal(t, calls[0].Identity, calls[1].Identity, "one publish, one identity for its subscribers")
	assert.NotEqual(t, calls[0].Identity.ID, calls[2].Identity.ID)
	assert.Equal(t, "stock", calls[3].Spec.Subscriber)
	assert.ErrorIs(t, calls[3].Err, errDown)
	assert.Equal(t, cqrs.NoResult{}, calls[0].Result)
}

// TestPublishedWithoutIdentity: with one subscriber, each delivery is a
// publish; with two, deliveries without an identity cannot be grouped,
// and Published says how to fix it rather than count them twice.
func TestPublishedWithoutIdentity(t *testing.T) {
	rec := cqrstest.NewRecorder(t)
	events := cqrs.NewEventBus(cqrs.WithInterceptors(rec))
	_, err := cqrs.Subscribe(events, "email", func(context.Context, OrderPlaced) error { return nil })
	require.NoError(t, err)
	require.NoError(t, cqrs.Publish(context.Background(), events, OrderPlaced{Order: 1}))
	assert.Equal(t, []OrderPlaced{{Order: 1}}, cqrstest.Published[OrderPlaced](rec))

	ft := newFakeT(t)
	rec = cqrstest.NewRecorder(ft)
	events = cqrs.NewEventBus(cqrs.WithInterceptors(rec))
	for _, name := range []string{"email", "stock"} {
		_, err := cqrs.Subscribe(events, name, func(context.Context, OrderPlaced) error { return nil })
		require.NoError(t, err)
	}
	require.NoError(t, cqrs.Publish(context.Background(), events, OrderPlaced{Order: 1}))
	assert.Empty(t, cqrstest.Published[OrderPlaced](rec))
	assert.Equal(t, "cqrstest: cqrstest_test.OrderPlaced was delivered without an identity to one of its 2 subscribers (email, stock), "+
		"so its deliveries cannot be told apart by publish: make the event bus with cqrs.WithIdentity(), as cqrstest.NewHarness does", ft.failures())

	// A publish from a context that carries an identity has one, on any bus.
	ft = newFakeT(t)
	rec = cqrstest.NewRecorder(ft)
	events = cqrs.NewEventBus(cqrs.WithInterceptors(rec))
	for _, name := range []string{"email", "stock"} {
		_, err := cqrs.Subscribe(events, name, func(context.Context, OrderPlaced) error { return nil })
		require.NoError(t, err)
	}
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{})
	require.NoError(t, cqrs.Publish(ctx, events, OrderPlaced{Order: 1}))
	require.NoError(t, cqrs.Publish(ctx, events, OrderPlaced{Order: 2}))
	assert.Equal(t, []OrderPlaced{{Order: 1}, {Order: 2}}, cqrstest.Published[OrderPlaced](rec))
	assert.Empty(t, ft.failures())
}

// TestReadersOfInterfaces: a reader's type may be an interface, which
// every message type implementing it matches.
func TestReadersOfInterfaces(t *testing.T) {
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.Sink[OrderPlaced](t, h.Events)
	cqrstest.Sink[OrderCancelled](t, h.Events)
	ctx := context.Background()
	_, err := cqrs.Send(ctx, h.Commands, PlaceOrder{Items: []string{"tea"}})
	require.NoError(t, err)
	_, err = cqrs.Send(ctx, h.Commands, CancelOrder{Order: 1})
	require.NoError(t, err)
	assert.Equal(t, []any{OrderPlaced{Order: 1, Items: []string{"tea"}}, OrderCancelled{Order: 1}}, cqrstest.Published[any](h))
	assert.Len(t, cqrstest.Sent[any](h), 2)
	assert.Len(t, cqrstest.Calls[any](h), 4)
}

// TestAwaitTimesOut: a condition that never holds fails the test after
// the recorder's timeout, naming what was recorded.
func TestAwaitTimesOut(t *testing.T) {
	ft := newFakeT(t)
	h := cqrstest.NewHarness(ft)
	h.Recorder.SetTimeout(20e6) // 20ms of the real clock
	wire(t, h.Commands, h.Queries, h.Events)
	_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{})
	require.ErrorIs(t, err, errNoItems)
	returned := ft.run(func() { h.Await(func() bool { return false }) })
	assert.False(t, returned, "Await ends the test with t.Fatalf")
	assert.Equal(t, "cqrstest: Await: the condition did not hold within 20ms; recorded: command cqrstest_test.PlaceOrder: 1 calls, 1 returned", ft.failures())

	ft = newFakeT(t)
	returned = ft.run(func() { cqrstest.NewRecorder(ft).Await(func() bool { return true }) })
	assert.True(t, returned)
	assert.Empty(t, ft.failures())
}

// TestAwaitWakesOnChange: a condition on state a subscriber changes is
// checked again as each call ends, and Await returns as soon as it holds.
func TestAwaitWakesOnChange(t *testing.T) {
	h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()))
	var mu sync.Mutex
	count := 0
	_, err := cqrs.Subscribe(h.Events, "count", func(context.Context, OrderPlaced) error {
		mu.Lock()
		count++
		mu.Unlock()
		return nil
	})
	require.NoError(t, err)
	for i := range 50 {
		require.NoError(t, cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: OrderID(i)}))
	}
	h.Await(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return count == 50
	})
	assert.Len(t, cqrstest.Delivered[OrderPlaced](h, "count"), 50)
	assert.Equal(t, 50, count)
}
