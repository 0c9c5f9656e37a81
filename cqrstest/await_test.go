package cqrstest_test

import (
	"context"
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

// TestAwaitPublishedOutsideBubble: on the real clock, AwaitPublished
// waits until the asynchronous strategy's worker has delivered every
// event to every subscriber, with no Close and no sleep. The subscribers
// are held until the wait has begun, so that a check made without
// waiting would see nothing.
func TestAwaitPublishedOutsideBubble(t *testing.T) {
	h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()))
	gate := make(chan struct{})
	var mu sync.Mutex
	var mailed []OrderID
	_, err := cqrs.Subscribe(h.Events, "email", func(_ context.Context, e OrderPlaced) error {
		<-gate
		mu.Lock()
		mailed = append(mailed, e.Order)
		mu.Unlock()
		return nil
	})
	require.NoError(t, err)
	_, err = cqrs.Subscribe(h.Events, "stock", func(context.Context, OrderPlaced) error { return nil })
	require.NoError(t, err)
	wire(t, h.Commands, h.Queries, h.Events)

	for _, c := range []string{"ada", "bob", "cyd"} {
		_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{Customer: c, Items: []string{"tea"}})
		require.NoError(t, err)
	}
	assert.Empty(t, cqrstest.Delivered[OrderPlaced](h, "email"), "held until the wait begins")
	waiting := false
	h.Await(func() bool {
		if !waiting {
			waiting = true
			close(gate)
		}
		return true
	})
	got := cqrstest.AwaitPublished[OrderPlaced](h, 3)
	assert.Equal(t, []OrderPlaced{
		{Order: 1, Customer: "ada", Items: []string{"tea"}},
		{Order: 2, Customer: "bob", Items: []string{"tea"}},
		{Order: 3, Customer: "cyd", Items: []string{"tea"}},
	}, got)
	mu.Lock()
	assert.Equal(t, []OrderID{1, 2, 3}, mailed)
	mu.Unlock()
	assert.Len(t, cqrstest.Delivered[OrderPlaced](h, "stock"), 3)
}

// TestAwaitPublishedInBubble: inside a synctest bubble, the wait spans a
// retry's backoff in the bubble's time, at no cost of real time; the
// email subscriber fails its first attempt and is retried a second later.
func TestAwaitPublishedInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		retry := middleware.Retry(middleware.RetryConfig{MaxAttempts: 2, BaseDelay: time.Second, Jitter: -1})
		h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()), cqrs.WithInterceptors(retry))
		cqrstest.On[OrderPlaced](h.Faults).To("email").Nth(1).Fail(errDown)
		_, err := cqrs.Subscribe(h.Events, "email", func(context.Context, OrderPlaced) error { return nil })
		require.NoError(t, err)
		cqrstest.Sink[OrderPlaced](t, h.Events)

		start := time.Now()
		require.NoError(t, cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: 1}))
		assert.Equal(t, []OrderPlaced{{Order: 1}}, cqrstest.AwaitPublished[OrderPlaced](h, 1))
		assert.Equal(t, time.Second, time.Since(start), "the bubble's clock moved on by the backoff")
		calls := cqrstest.Calls[OrderPlaced](h)
		require.Len(t, calls, 2, "the first attempt failed before the recorder")
		assert.Equal(t, "email", calls[0].Spec.Subscriber)
		assert.Equal(t, cqrstest.SinkName, calls[1].Spec.Subscriber)
	})
}

// TestAwaitFailsAtOnceInBubble: inside a bubble, a wait for what can no
// longer come ends as soon as nothing else can happen, in the bubble's
// time: the test fails with what was delivered, without waiting the
// timeout on the real clock.
func TestAwaitFailsAtOnceInBubble(t *testing.T) {
	realStart := time.Now()
	synctest.Test(t, func(t *testing.T) {
		ft := newFakeT(t)
		h := cqrstest.NewHarness(ft, cqrs.WithStrategy(cqrs.Async()))
		_, err := cqrs.Subscribe(h.Events, "email", func(context.Context, OrderPlaced) error { return nil })
		require.NoError(t, err)
		require.NoError(t, cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: 1}))
		start := time.Now()
		returned := ft.run(func() { cqrstest.AwaitPublished[OrderPlaced](h, 2) })
		assert.False(t, returned)
		assert.Equal(t, cqrstest.DefaultTimeout, time.Since(start))
		assert.Equal(t, "cqrstest: AwaitPublished: 2 publishes of cqrstest_test.OrderPlaced delivered to every subscriber (email) did not come within 10s; "+
			"recorded: event cqrstest_test.OrderPlaced to email: 1 calls, 1 returned", ft.failures())
	})
	assert.Less(t, time.Since(realStart), cqrstest.DefaultTimeout/2, "no real time was waited")
}

// TestSynctestWaitSettles: inside a bubble, synctest.Wait lets every
// asynchronous delivery end, after which the readers see them all, and
// a Then that expects no more events sees one that should not be there.
func TestSynctestWaitSettles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ft := newFakeT(t)
		h := cqrstest.NewHarness(ft, cqrs.WithStrategy(cqrs.Async()))
		wire(t, h.Commands, h.Queries, h.Events)
		cqrstest.Sink[OrderPlaced](t, h.Events)
		out := h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}})
		synctest.Wait()
		assert.Len(t, cqrstest.Delivered[OrderPlaced](h, cqrstest.SinkName), 1)
		out.Then()
		assert.Equal(t, "cqrstest: When cqrstest_test.PlaceOrder{Command:{} Customer:ada Items:[tea]}: the events published differ (-want +got):\n"+
			"+ cqrstest_test.OrderPlaced{Event:{} Order:1 Customer:ada Items:[tea]}", ft.failures())
	})
}

// TestAwaitPublishedNeedsEverySubscriber: a publish counts once every
// subscriber the recorder saw subscribe has handled it, not at its first
// delivery.
func TestAwaitPublishedNeedsEverySubscriber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()))
		cqrstest.Sink[OrderPlaced](t, h.Events)
		_, err := cqrs.Subscribe(h.Events, "slow", func(context.Context, OrderPlaced) error {
			time.Sleep(time.Minute)
			return nil
		})
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: 1}))
		h.Recorder.SetTimeout(time.Hour)
		cqrstest.AwaitPublished[OrderPlaced](h, 1)
		assert.Equal(t, time.Minute, time.Since(start), "waited for the slow subscriber")
		assert.Len(t, cqrstest.Delivered[OrderPlaced](h, "slow"), 1)
	})
}

// TestAwaitPublishedWithoutIdentity: deliveries that cannot be grouped
// into publishes fail the wait at once, with the fix, rather than after
// the timeout.
func TestAwaitPublishedWithoutIdentity(t *testing.T) {
	ft := newFakeT(t)
	rec := cqrstest.NewRecorder(ft)
	events := cqrs.NewEventBus(cqrs.WithInterceptors(rec))
	for _, name := range []string{"email", "stock"} {
		_, err := cqrs.Subscribe(events, name, func(context.Context, OrderPlaced) error { return nil })
		require.NoError(t, err)
	}
	require.NoError(t, cqrs.Publish(context.Background(), events, OrderPlaced{Order: 1}))
	start := time.Now()
	assert.False(t, ft.run(func() { cqrstest.AwaitPublished[OrderPlaced](rec, 1) }))
	assert.Less(t, time.Since(start), cqrstest.DefaultTimeout/2)
	assert.Contains(t, ft.failures(), "make the event bus with cqrs.WithIdentity()")
}

// TestSetTimeout: a timeout of zero or less restores the default.
func TestSetTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ft := newFakeT(t)
		rec := cqrstest.NewRecorder(ft)
		rec.SetTimeout(time.Second)
		start := time.Now()
		ft.run(func() { rec.Await(func() bool { return false }) })
		assert.Equal(t, time.Second, time.Since(start))
		rec.SetTimeout(0)
		start = time.Now()
		ft.run(func() { rec.Await(func() bool { return false }) })
		assert.Equal(t, cqrstest.DefaultTimeout, time.Since(start))
	})
}

// TestHarnessCloseReportsStuckSubscriber: when the test ends, the
// harness closes its event bus, and reports a subscriber that keeps it
// from closing.
func TestHarnessCloseReportsStuckSubscriber(t *testing.T) {
	ft := &fakeT{}
	t.Run("stuck", func(t *testing.T) {
		release := make(chan struct{})
		t.Cleanup(func() { close(release) }) // runs after the harness's
		ft.TB = t
		h := cqrstest.NewHarness(ft, cqrs.WithStrategy(cqrs.Async()))
		h.Recorder.SetTimeout(20 * time.Millisecond)
		_, err := cqrs.Subscribe(h.Events, "stuck", func(context.Context, OrderPlaced) error {
			<-release
			return nil
		})
		require.NoError(t, err)
		require.NoError(t, cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: 1}))
	})
	assert.Equal(t, "cqrstest: closing the harness's event bus: cqrs: closing the event bus: context deadline exceeded (a subscriber still running?)", ft.failures())
}

// TestAwaitPublishedAfterRetries: a delivery that a retry attempts again
// has not ended when its first attempt fails: AwaitPublished returns
// once the retry has succeeded, in the bubble's time.
func TestAwaitPublishedAfterRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		retry := middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Second, Jitter: -1})
		h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()), cqrs.WithInterceptors(retry))
		attempts, mailed := 0, 0
		_, err := cqrs.Subscribe(h.Events, "email", func(context.Context, OrderPlaced) error {
			if attempts++; attempts == 1 {
				return errDown
			}
			mailed++
			return nil
		})
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: 1}))
		cqrstest.AwaitPublished[OrderPlaced](h, 1)
		assert.Equal(t, time.Second, time.Since(start))
		assert.Equal(t, 1, mailed)
		calls := cqrstest.Calls[OrderPlaced](h)
		require.Len(t, calls, 1, "one delivery, of two attempts")
		assert.NoError(t, calls[0].Err)
	})
}
