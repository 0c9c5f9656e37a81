package cqrstest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/cqrstest"
	"github.com/typedcqrs/dispatch/middleware"
)

// counting is a handler of PlaceOrder that counts its calls.
type counting struct {
	mu    sync.Mutex
	calls []PlaceOrder
}

func (c *counting) Place(_ context.Context, cmd PlaceOrder) (OrderID, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, cmd)
	return OrderID(len(c.calls)), nil
}

func (c *counting) called() []PlaceOrder {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]PlaceOrder(nil), c.calls...)
}

// TestFaultNth: the Nth call fails with the error given, without reaching
// the handler; the calls before and after it are untouched.
func TestFaultNth(t *testing.T) {
	h := cqrstest.NewHarness(t)
	handler := &counting{}
	require.NoError(t, cqrs.Handle(h.Commands, handler.Place))
	fault := cqrstest.On[PlaceOrder](h.Faults).Nth(2).Fail(errDown)

	var errs []error
	for _, c := range []string{"ada", "bob", "cyd"} {
		_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{Customer: c})
		errs = append(errs, err)
	}
	assert.NoError(t, errs[0])
	assert.ErrorIs(t, errs[1], errDown)
	assert.NoError(t, errs[2])
	assert.Equal(t, []PlaceOrder{{Customer: "ada"}, {Customer: "cyd"}}, handler.called())
	assert.Len(t, cqrstest.Sent[PlaceOrder](h), 3, "the harness records what its callers sent")
	assert.ErrorIs(t, cqrstest.Calls[PlaceOrder](h)[1].Err, errDown)
	assert.Equal(t, 1, fault.Hits())
}

// TestFaultCountsFromItsAction: a fault counts the calls from the moment
// its action is given, not from the bus's first call.
func TestFaultCountsFromItsAction(t *testing.T) {
	h := cqrstest.NewHarness(t)
	require.NoError(t, cqrs.Handle(h.Commands, (&counting{}).Place))
	send := func() error {
		_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{})
		return err
	}
	require.NoError(t, send())
	require.NoError(t, send())
	cqrstest.On[PlaceOrder](h.Faults).Nth(1).Fail(errDown)
	assert.ErrorIs(t, send(), errDown, "the first call since the fault was set")
	assert.NoError(t, send())
}

// TestFaultFirstUnderRetry: a retry outside the faults sees the injected
// failures as the handler's own, and its third attempt reaches the
// handler.
func TestFaultFirstUnderRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		retry := middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Second, Jitter: -1})
		h := cqrstest.NewHarness(t, cqrs.WithInterceptors(retry))
		handler := &counting{}
		require.NoError(t, cqrs.Handle(h.Commands, handler.Place))
		fault := cqrstest.On[PlaceOrder](h.Faults).First(2).Fail(errDown)

		start := time.Now()
		id, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{Customer: "ada"})
		require.NoError(t, err)
		assert.Equal(t, OrderID(1), id)
		assert.Equal(t, 3*time.Second, time.Since(start), "two backoffs: 1s, then 2s")
		assert.Len(t, handler.called(), 1)
		assert.Equal(t, 2, fault.Hits())
	})
}

// TestFaultPerSubscriber: each subscriber of an event has its own count;
// To narrows a fault to one subscriber.
func TestFaultPerSubscriber(t *testing.T) {
	h := cqrstest.NewHarness(t)
	for _, name := range []string{"email", "stock"} {
		_, err := cqrs.Subscribe(h.Events, name, func(context.Context, OrderPlaced) error { return nil })
		require.NoError(t, err)
	}
	cqrstest.On[OrderPlaced](h.Faults).Nth(1).Fail(errDown)
	cqrstest.On[OrderPlaced](h.Faults).To("stock").Nth(2).Fail(errNoItems)

	ctx := context.Background()
	err := cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 1})
	var failed *cqrs.SubscriberError
	require.ErrorAs(t, err, &failed)
	assert.Len(t, err.(interface{ Unwrap() []error }).Unwrap(), 2, "the first delivery to each subscriber failed")

	err = cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 2})
	require.ErrorAs(t, err, &failed)
	assert.Equal(t, "stock", failed.Subscriber)
	assert.ErrorIs(t, err, errNoItems)
	assert.NotErrorIs(t, err, errDown)

	require.NoError(t, cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 3}))
	failedTo := map[string][]OrderID{}
	for _, c := range cqrstest.Calls[OrderPlaced](h) {
		if c.Err != nil {
			failedTo[c.Spec.Subscriber] = append(failedTo[c.Spec.Subscriber], c.Message.Order)
		}
	}
	assert.Equal(t, map[string][]OrderID{"email": {1}, "stock": {1, 2}}, failedTo)
}

// TestFaultFirstSetActs: of two faults on one call, the first set up acts,
// and both count it.
func TestFaultFirstSetActs(t *testing.T) {
	h := cqrstest.NewHarness(t)
	require.NoError(t, cqrs.Handle(h.Commands, (&counting{}).Place))
	e1, e2 := errors.New("first"), errors.New("second")
	f1 := cqrstest.On[PlaceOrder](h.Faults).Nth(1).Fail(e1)
	f2 := cqrstest.On[PlaceOrder](h.Faults).First(2).Fail(e2)
	var errs []error
	for range 3 {
		_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{})
		errs = append(errs, err)
	}
	assert.Equal(t, []error{e1, e2, nil}, errs)
	assert.Equal(t, 1, f1.Hits())
	assert.Equal(t, 1, f2.Hits(), "its first call was the other's")
}

// idempotent is a consumer that handles each message once, keyed by the
// ID of its identity. It keeps every identity it is given.
type idempotent struct {
	mu      sync.Mutex
	seen    map[string]bool
	ids     []cqrs.Identity
	handled []OrderID
}

func (c *idempotent) OrderPlaced(ctx context.Context, e OrderPlaced) error {
	id, ok := cqrs.IdentityOf(ctx)
	if !ok {
		return errors.New("no identity")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids = append(c.ids, id)
	if c.seen[id.ID] {
		return nil
	}
	c.seen[id.ID] = true
	c.handled = append(c.handled, e.Order)
	return nil
}

// TestFaultDuplicate: a duplicated delivery reaches the subscriber twice
// with the same identity, which an idempotent consumer keyed by its ID
// handles once, and a consumer that is not handles twice.
func TestFaultDuplicate(t *testing.T) {
	h := cqrstest.NewHarness(t)
	consumer := &idempotent{seen: map[string]bool{}}
	_, err := cqrs.Subscribe(h.Events, "email", consumer.OrderPlaced)
	require.NoError(t, err)
	var mu sync.Mutex
	naive := 0
	_, err = cqrs.Subscribe(h.Events, "naive", func(context.Context, OrderPlaced) error {
		mu.Lock()
		naive++
		mu.Unlock()
		return nil
	})
	require.NoError(t, err)
	cqrstest.On[OrderPlaced](h.Faults).Nth(1).Duplicate()

	ctx := context.Background()
	require.NoError(t, cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 1}))
	require.NoError(t, cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 2}))

	assert.Equal(t, []OrderID{1, 2}, consumer.handled)
	assert.Equal(t, 3, naive, "the first event twice, the second once")
	require.Len(t, consumer.ids, 3)
	assert.Equal(t, consumer.ids[0], consumer.ids[1], "the copy has the first delivery's identity")
	assert.NotEqual(t, consumer.ids[0].ID, consumer.ids[2].ID)
	calls := cqrstest.Calls[OrderPlaced](h)
	require.Len(t, calls, 4, "the harness's recorder sees each delivery once")
	assert.Equal(t, consumer.ids[0], calls[0].Identity, "the identity the publish gave it")
	assert.Equal(t, []OrderPlaced{{Order: 1}, {Order: 2}}, cqrstest.Published[OrderPlaced](h))

	// A recorder given after the faults sees the copy as a delivery.
	inner, faults := cqrstest.NewRecorder(t), cqrstest.NewFaults(t)
	cqrstest.On[OrderPlaced](faults).Duplicate()
	events := cqrs.NewEventBus(cqrs.WithIdentity(), cqrs.WithInterceptors(faults, inner))
	_, err = cqrs.Subscribe(events, "email", func(context.Context, OrderPlaced) error { return nil })
	require.NoError(t, err)
	require.NoError(t, cqrs.Publish(ctx, events, OrderPlaced{Order: 3}))
	innerCalls := cqrstest.Calls[OrderPlaced](inner)
	require.Len(t, innerCalls, 2)
	assert.Equal(t, innerCalls[0].Identity, innerCalls[1].Identity)
	assert.Equal(t, []OrderPlaced{{Order: 3}}, cqrstest.Published[OrderPlaced](inner), "one publish, delivered twice")
	assert.Len(t, cqrstest.Delivered[OrderPlaced](inner, "email"), 2)
}

// TestFaultDuplicateReturnsSecond: a duplicated command returns what its
// second delivery returned.
func TestFaultDuplicateReturnsSecond(t *testing.T) {
	h := cqrstest.NewHarness(t)
	handler := &counting{}
	require.NoError(t, cqrs.Handle(h.Commands, handler.Place))
	cqrstest.On[PlaceOrder](h.Faults).Duplicate()
	id, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{Customer: "ada"})
	require.NoError(t, err)
	assert.Equal(t, OrderID(2), id)
	assert.Len(t, handler.called(), 2)
	calls := cqrstest.Calls[PlaceOrder](h)
	require.Len(t, calls, 1)
	assert.Equal(t, OrderID(2), calls[0].Result)
}

// TestFaultPanic: an injected panic fails the call as a handler's panic
// does, with a *cqrs.PanicError that the interceptors outside see as an
// error; a retry does not retry it.
func TestFaultPanic(t *testing.T) {
	retry := middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond})
	h := cqrstest.NewHarness(t, cqrs.WithInterceptors(retry))
	handler := &counting{}
	require.NoError(t, cqrs.Handle(h.Commands, handler.Place))
	fault := cqrstest.On[PlaceOrder](h.Faults).Panic(errDown)
	_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	assert.ErrorIs(t, err, errDown, "the panic value is an error")
	assert.Equal(t, "command cqrstest_test.PlaceOrder", pe.Message)
	assert.Equal(t, errDown, pe.Value)
	assert.NotEmpty(t, pe.Stack)
	assert.Empty(t, handler.called())
	assert.Equal(t, 1, fault.Hits(), "not retried: a panic is not retryable")
}

// TestFaultDelay: a delay holds the call back in the bubble's time; under
// a timeout shorter than the delay the call fails with the timeout and
// the handler is not called.
func TestFaultDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := cqrstest.NewHarness(t, cqrs.WithInterceptors(middleware.Timeout(time.Second)))
		handler := &counting{}
		require.NoError(t, cqrs.Handle(h.Commands, handler.Place))
		cqrstest.On[PlaceOrder](h.Faults).Nth(1).Delay(500 * time.Millisecond)
		cqrstest.On[PlaceOrder](h.Faults).Nth(2).Delay(5 * time.Second)

		start := time.Now()
		_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{Customer: "ada"})
		require.NoError(t, err)
		assert.Equal(t, 500*time.Millisecond, time.Since(start))

		start = time.Now()
		_, err = cqrs.Send(context.Background(), h.Commands, PlaceOrder{Customer: "bob"})
		assert.ErrorIs(t, err, cqrs.ErrExecutionTimeout)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, time.Second, time.Since(start))
		assert.Equal(t, []PlaceOrder{{Customer: "ada"}}, handler.called())
	})
}

// TestFaultSetUpMistakes: a count below 1 and a nil error are reported,
// and set nothing.
func TestFaultSetUpMistakes(t *testing.T) {
	ft := newFakeT(t)
	h := cqrstest.NewHarness(ft)
	require.NoError(t, cqrs.Handle(h.Commands, (&counting{}).Place))
	cqrstest.On[PlaceOrder](h.Faults).Nth(0).First(-1).Fail(nil)
	_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{})
	require.NoError(t, err)
	assert.Equal(t, "cqrstest: On[cqrstest_test.PlaceOrder].Nth(0): calls are counted from 1\n"+
		"cqrstest: On[cqrstest_test.PlaceOrder].First(-1): n must be 1 or more\n"+
		"cqrstest: On[cqrstest_test.PlaceOrder].Fail: the error is nil", ft.failures())
}

// TestFaultsConcurrent: faults counted under concurrent dispatch act on
// exactly as many calls as they say.
func TestFaultsConcurrent(t *testing.T) {
	h := cqrstest.NewHarness(t)
	handler := &counting{}
	require.NoError(t, cqrs.Handle(h.Commands, handler.Place))
	fault := cqrstest.On[PlaceOrder](h.Faults).First(10).Fail(errDown)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for range 8 {
		wg.Go(func() {
			for range 25 {
				if _, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{}); err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 10, failed)
	assert.Equal(t, 10, fault.Hits())
	assert.Len(t, handler.called(), 190)
	assert.Len(t, cqrstest.Sent[PlaceOrder](h), 200)
}

// TestFaultOnInterface: a fault for an interface type is for every
// message type that implements it, each handler counted apart.
func TestFaultOnInterface(t *testing.T) {
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.On[any](h.Faults).Nth(1).Fail(errDown)
	ctx := context.Background()
	_, err := cqrs.Send(ctx, h.Commands, PlaceOrder{Items: []string{"tea"}})
	assert.ErrorIs(t, err, errDown)
	_, err = cqrs.Ask(ctx, h.Queries, GetOrder{ID: 1})
	assert.ErrorIs(t, err, errDown, "the first call of another handler")
	_, err = cqrs.Send(ctx, h.Commands, PlaceOrder{Items: []string{"tea"}})
	assert.NoError(t, err)
}

// TestFaultPerHandlerAcrossBuses: one Faults on two buses counts the
// handler of each apart, though their message type is the same.
func TestFaultPerHandlerAcrossBuses(t *testing.T) {
	faults := cqrstest.NewFaults(t)
	a := cqrs.NewCommandBus(cqrs.WithInterceptors(faults))
	b := cqrs.NewCommandBus(cqrs.WithInterceptors(faults))
	cqrstest.Returns[PlaceOrder](t, a, OrderID(1))
	cqrstest.Returns[PlaceOrder](t, b, OrderID(2))
	fault := cqrstest.On[PlaceOrder](faults).Nth(1).Fail(errDown)
	var errs []error
	for _, bus := range []*cqrs.CommandBus{a, b, a, b} {
		_, err := cqrs.Send(context.Background(), bus, PlaceOrder{})
		errs = append(errs, err)
	}
	assert.Equal(t, []error{errDown, errDown, nil, nil}, errs)
	assert.Equal(t, 2, fault.Hits(), "the first call on each bus")
}
