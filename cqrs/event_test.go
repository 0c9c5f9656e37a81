package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// orderPlaced is the event most tests publish.
type orderPlaced struct {
	cqrs.Event
	ID int
}

// orderShipped declares its own name.
type orderShipped struct {
	cqrs.Event
	ID int
}

func (orderShipped) EventName() string { return "orders.shipped" }

var errMail = errors.New("mail server down")

// recorder records, in order, which subscriber saw which event.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *recorder) sub(name string, err error) func(context.Context, orderPlaced) error {
	return func(_ context.Context, e orderPlaced) error {
		r.mu.Lock()
		r.seen = append(r.seen, fmt.Sprintf("%s:%d", name, e.ID))
		r.mu.Unlock()
		return err
	}
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func subscribe[E cqrs.Message[cqrs.NoResult, *cqrs.EventBus]](t *testing.T, b *cqrs.EventBus, name string, fn func(context.Context, E) error, mws ...cqrs.Middleware[E, cqrs.NoResult]) *cqrs.Subscription {
	t.Helper()
	sub, err := cqrs.Subscribe(b, name, fn, mws...)
	require.NoError(t, err)
	return sub
}

func TestSequentialRunsEverySubscriberInOrder(t *testing.T) {
	t.Parallel()
	events := cqrs.NewEventBus()
	rec := &recorder{}
	subscribe(t, events, "email", rec.sub("email", errMail))
	subscribe(t, events, "stock", rec.sub("stock", nil))
	subscribe(t, events, "analytics", rec.sub("analytics", errors.New("queue full")))

	err := cqrs.Publish(context.Background(), events, orderPlaced{ID: 1})
	assert.Equal(t, []string{"email:1", "stock:1", "analytics:1"}, rec.list())
	require.ErrorIs(t, err, errMail)
	var se *cqrs.SubscriberError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "email", se.Subscriber)
	assert.Equal(t, "cqrs_test.orderPlaced", se.Event)
	assert.Equal(t, "cqrs: event cqrs_test.orderPlaced: subscriber email: mail server down\n"+
		"cqrs: event cqrs_test.orderPlaced: subscriber analytics: queue full", err.Error())
}

func TestStopOnErrorStopsAtTheFirstFailure(t *testing.T) {
	t.Parallel()
	for _, perBus := range []bool{true, false} {
		var events *cqrs.EventBus
		strategy := cqrs.Strategy{}
		if perBus {
			events = cqrs.NewEventBus(cqrs.WithStrategy(cqrs.StopOnError()))
		} else {
			events = cqrs.NewEventBus()
			strategy = cqrs.StopOnError()
		}
		rec := &recorder{}
		subscribe(t, events, "email", rec.sub("email", nil))
		subscribe(t, events, "stock", rec.sub("stock", errMail))
		subscribe(t, events, "analytics", rec.sub("analytics", nil))

		err := cqrs.PublishWith(context.Background(), events, strategy, orderPlaced{ID: 2})
		var se *cqrs.SubscriberError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, "stock", se.Subscriber)
		assert.Equal(t, []string{"email:2", "stock:2"}, rec.list())
	}
}

func TestConcurrentBoundsHowManyRunAtOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Concurrent(3)))
		var running, most, calls atomic.Int64
		for i := range 8 {
			subscribe(t, events, fmt.Sprintf("s%d", i), func(context.Context, orderPlaced) error {
				n := running.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(time.Second)
				running.Add(-1)
				calls.Add(1)
				return nil
			})
		}
		start := time.Now()
		require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{ID: 3}))
		assert.Equal(t, int64(8), calls.Load())
		assert.Equal(t, int64(3), most.Load())
		assert.Equal(t, 3*time.Second, time.Since(start), "8 one-second calls, 3 at a time")
	})
}

func TestConcurrentJoinsFailuresAndCancelsOnError(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		// Without CancelOnError every subscriber runs.
		events := cqrs.NewEventBus()
		var calls atomic.Int64
		for i := range 4 {
			subscribe(t, events, fmt.Sprintf("s%d", i), func(context.Context, orderPlaced) error {
				calls.Add(1)
				return fmt.Errorf("s%d failed", i)
			})
		}
		err := cqrs.PublishWith(context.Background(), events, cqrs.Concurrent(2), orderPlaced{ID: 4})
		assert.Equal(t, int64(4), calls.Load())
		for i := range 4 {
			assert.Contains(t, err.Error(), fmt.Sprintf("subscriber s%d: s%d failed", i, i))
		}

		// With it, the first failure cancels the running ones and the
		// waiting ones never start.
		events = cqrs.NewEventBus()
		var started, cancelled atomic.Int64
		subscribe(t, events, "slow", func(ctx context.Context, _ orderPlaced) error {
			started.Add(1)
			<-ctx.Done()
			cancelled.Add(1)
			return ctx.Err()
		})
		subscribe(t, events, "failing", func(context.Context, orderPlaced) error {
			started.Add(1)
			time.Sleep(time.Second)
			return errMail
		})
		for i := range 3 {
			subscribe(t, events, fmt.Sprintf("late%d", i), func(context.Context, orderPlaced) error {
				started.Add(1)
				return nil
			})
		}
		err = cqrs.PublishWith(context.Background(), events, cqrs.Concurrent(2).CancelOnError(), orderPlaced{ID: 5})
		require.ErrorIs(t, err, errMail)
		require.NotErrorIs(t, err, context.Canceled, "the slow subscriber was cancelled, it did not fail")
		assert.Equal(t, int64(2), started.Load())
		assert.Equal(t, int64(1), cancelled.Load())
		assert.Equal(t, "concurrent(2), cancel on error", cqrs.Concurrent(2).CancelOnError().String())
		assert.Equal(t, "sequential", cqrs.Sequential().CancelOnError().String())
	})
}

func TestPanickingSubscriberIsItsOwnFailure(t *testing.T) {
	t.Parallel()
	var seen []error
	var specs []string
	watch := cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		specs = append(specs, spec.String())
		return func(ctx context.Context, c cqrs.Call) error {
			err := next(ctx, c)
			seen = append(seen, err)
			return err
		}
	})
	events := cqrs.NewEventBus(cqrs.WithInterceptors(watch), cqrs.WithMetrics())
	rec := &recorder{}
	subscribe(t, events, "email", func(context.Context, orderPlaced) error { panic("template missing") })
	subscribe(t, events, "stock", rec.sub("stock", nil))

	err := cqrs.Publish(context.Background(), events, orderPlaced{ID: 6})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "template missing", pe.Value)
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	assert.Equal(t, []string{"stock:6"}, rec.list(), "the panic stopped no one")

	// The interceptor of each subscriber saw its own outcome.
	assert.Equal(t, []string{"event cqrs_test.orderPlaced to email", "event cqrs_test.orderPlaced to stock"}, specs)
	require.Len(t, seen, 2)
	require.ErrorAs(t, seen[0], &pe)
	assert.NoError(t, seen[1])

	m := events.Metrics()
	require.Len(t, m, 2)
	assert.Equal(t, "email", m[0].Subscriber)
	assert.Equal(t, uint64(1), m[0].Calls)
	assert.Equal(t, uint64(1), m[0].Errors)
	assert.Equal(t, "stock", m[1].Subscriber)
	assert.Equal(t, uint64(0), m[1].Errors)
}

func TestSubscriberMiddlewareIsItsOwn(t *testing.T) {
	t.Parallel()
	events := cqrs.NewEventBus()
	var order []string
	mw := func(next cqrs.Handler[orderPlaced, cqrs.NoResult]) cqrs.Handler[orderPlaced, cqrs.NoResult] {
		return cqrs.HandlerFunc[orderPlaced, cqrs.NoResult](func(ctx context.Context, e orderPlaced) (cqrs.NoResult, error) {
			order = append(order, "mw")
			return next.Handle(ctx, e)
		})
	}
	subscribe(t, events, "a", func(context.Context, orderPlaced) error { order = append(order, "a"); return nil }, mw)
	subscribe(t, events, "b", func(context.Context, orderPlaced) error { order = append(order, "b"); return nil })
	require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{}))
	assert.Equal(t, []string{"mw", "a", "b"}, order)
}

func TestAsyncQueuesAndCloseDrainsEverything(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var logs strings.Builder
		var logMu sync.Mutex
		logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))
		events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()), cqrs.WithLogger(logger),
			cqrs.WithEventQueue(cqrs.EventQueue{Size: 8, Workers: 2}))
		var handled atomic.Int64
		subscribe(t, events, "slow", func(context.Context, orderPlaced) error {
			time.Sleep(10 * time.Millisecond)
			handled.Add(1)
			return nil
		})
		subscribe(t, events, "flaky", func(_ context.Context, e orderPlaced) error {
			if e.ID == 7 {
				return errMail
			}
			return nil
		})

		type key struct{}
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "trace-1"))
		var sawValue, sawCancel atomic.Bool
		subscribe(t, events, "ctx", func(ctx context.Context, _ orderPlaced) error {
			sawValue.Store(ctx.Value(key{}) == "trace-1")
			sawCancel.Store(ctx.Err() != nil)
			return nil
		})
		for i := range 100 {
			require.NoError(t, cqrs.Publish(ctx, events, orderPlaced{ID: i}))
		}
		cancel() // the caller moving on does not cancel queued events
		require.NoError(t, events.Close(context.Background()))
		assert.Equal(t, int64(100), handled.Load(), "Close lost no queued event")
		assert.True(t, sawValue.Load())
		assert.False(t, sawCancel.Load())
		logMu.Lock()
		assert.Equal(t, 1, strings.Count(logs.String(), "cqrs: subscriber failed"))
		assert.Contains(t, logs.String(), "subscriber=flaky")
		logMu.Unlock()

		err := cqrs.Publish(context.Background(), events, orderPlaced{ID: 101})
		require.ErrorIs(t, err, cqrs.ErrClosed)
		// Synchronous publishes still work after Close.
		require.NoError(t, cqrs.PublishWith(context.Background(), events, cqrs.Sequential(), orderPlaced{ID: 102}))
		assert.Equal(t, int64(101), handled.Load())
		require.NoError(t, events.Close(context.Background()), "Close twice")
	})
}

type lockedWriter struct {
	w  *strings.Builder
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestAsyncBackPressure(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		newBus := func(failFast bool) *cqrs.EventBus {
			events := cqrs.NewEventBus(cqrs.WithEventQueue(cqrs.EventQueue{Size: 2, FailFast: failFast}))
			subscribe(t, events, "blocked", func(context.Context, orderPlaced) error {
				<-release
				return nil
			})
			// One event is taken by the worker, two fill the queue.
			for i := range 3 {
				require.NoError(t, cqrs.PublishWith(context.Background(), events, cqrs.Async(), orderPlaced{ID: i}))
				synctest.Wait()
			}
			return events
		}

		fast := newBus(true)
		err := cqrs.PublishWith(context.Background(), fast, cqrs.Async(), orderPlaced{ID: 9})
		require.ErrorIs(t, err, cqrs.ErrQueueFull)

		blocking := newBus(false)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		err = cqrs.PublishWith(ctx, blocking, cqrs.Async(), orderPlaced{ID: 9})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, time.Second, time.Since(start), "it waited for room until ctx ended")

		// Close bounded by its ctx while subscribers are stuck, then drains.
		short, cancelShort := context.WithTimeout(context.Background(), time.Second)
		defer cancelShort()
		require.ErrorIs(t, blocking.Close(short), context.DeadlineExceeded)
		close(release)
		require.NoError(t, blocking.Close(context.Background()))
		require.NoError(t, fast.Close(context.Background()))
	})
}

func TestNoSubscribers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	require.NoError(t, cqrs.Publish(ctx, cqrs.NewEventBus(), orderPlaced{}))
	require.NoError(t, cqrs.NewEventBus().Publish(ctx, orderPlaced{}))

	strict := cqrs.NewEventBus(cqrs.WithRequireSubscribers())
	err := cqrs.Publish(ctx, strict, orderPlaced{})
	require.ErrorIs(t, err, cqrs.ErrNoSubscribers)
	assert.Contains(t, err.Error(), "cqrs_test.orderPlaced")

	// A type whose subscribers all left has none either.
	sub := subscribe(t, strict, "gone", func(context.Context, orderPlaced) error { return nil })
	sub.Cancel()
	require.ErrorIs(t, cqrs.Publish(ctx, strict, orderPlaced{}), cqrs.ErrNoSubscribers)
	require.ErrorIs(t, strict.Publish(ctx, orderShipped{}), cqrs.ErrNoSubscribers)
}

func TestCancelledSubscriberIsNeverCalledAgain(t *testing.T) {
	t.Parallel()
	events := cqrs.NewEventBus()
	var cancelled atomic.Bool
	var lateCalls, calls atomic.Int64
	sub := subscribe(t, events, "leaving", func(context.Context, orderPlaced) error {
		if cancelled.Load() {
			lateCalls.Add(1)
		}
		calls.Add(1)
		return nil
	})
	subscribe(t, events, "staying", func(context.Context, orderPlaced) error { return nil })

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := cqrs.Publish(context.Background(), events, orderPlaced{}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for calls.Load() < 100 {
		time.Sleep(time.Millisecond) // real publishers on real goroutines: wait for them to be under way
	}
	sub.Cancel()
	cancelled.Store(true)
	sub.Cancel() // idempotent
	for range 1000 {
		require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{}))
	}
	close(stop)
	wg.Wait()
	assert.Zero(t, lateCalls.Load(), "called after Cancel returned")
	assert.Equal(t, []cqrs.Spec{{Kind: cqrs.KindEvent, Name: "cqrs_test.orderPlaced",
		MessageType: specOf[orderPlaced](), ResultType: specOf[cqrs.NoResult](), Subscriber: "staying"}}, events.Specs())
}

func TestSubscribeWhilePublishing(t *testing.T) {
	t.Parallel()
	events := cqrs.NewEventBus()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				_ = cqrs.Publish(context.Background(), events, orderPlaced{})
			}
		}
	})
	var calls [50]atomic.Int64
	for i := range calls {
		subscribe(t, events, fmt.Sprintf("s%d", i), func(context.Context, orderPlaced) error {
			calls[i].Add(1)
			return nil
		})
	}
	close(stop)
	wg.Wait()
	require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{}))
	for i := range calls {
		assert.Positive(t, calls[i].Load(), "subscriber %d", i)
	}
	assert.Len(t, events.Specs(), 50)
}

func TestEventBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var nilBus *cqrs.EventBus
	ok := func(context.Context, orderPlaced) error { return nil }

	require.ErrorIs(t, cqrs.Publish(ctx, nilBus, orderPlaced{}), cqrs.ErrNilBus)
	require.ErrorIs(t, nilBus.Publish(ctx, orderPlaced{}), cqrs.ErrNilBus)
	_, err := cqrs.Subscribe(nilBus, "x", ok)
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	require.NoError(t, nilBus.Close(ctx))
	assert.Nil(t, nilBus.Specs())
	assert.Nil(t, nilBus.Registered())
	var nilSub *cqrs.Subscription
	nilSub.Cancel()
	assert.Equal(t, cqrs.Spec{}, nilSub.Spec())

	events := cqrs.NewEventBus()
	for _, name := range []string{"", "has space", "dot.ted", "wild*", strings.Repeat("x", 129), "é"} {
		_, err := cqrs.Subscribe(events, name, ok)
		require.ErrorIs(t, err, cqrs.ErrInvalidName, "%q", name)
	}
	_, err = cqrs.Subscribe(events, "ok", (func(context.Context, orderPlaced) error)(nil))
	require.ErrorIs(t, err, cqrs.ErrNilHandler)
	_, err = cqrs.Subscribe(events, "ok", ok, nil)
	require.ErrorIs(t, err, cqrs.ErrNilHandler)
	assert.Empty(t, events.Specs(), "a failed Subscribe changes nothing")
	assert.Empty(t, events.Registered(), "not even the event's route")

	sub := subscribe(t, events, "ok", ok)
	assert.Equal(t, "ok", sub.Spec().Subscriber)
	_, err = cqrs.Subscribe(events, "ok", ok)
	require.ErrorIs(t, err, cqrs.ErrHandlerExists)

	//lint:ignore SA1012 a nil context is what is tested
	require.ErrorIs(t, cqrs.Publish(nil, events, orderPlaced{}), cqrs.ErrNilContext)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, cqrs.Publish(cancelled, events, orderPlaced{}), context.Canceled)
	require.ErrorIs(t, cqrs.Publish(ctx, events, (*orderPlaced)(nil)), cqrs.ErrNilMessage)
	require.ErrorIs(t, events.Publish(ctx, nil), cqrs.ErrNilMessage)
	require.ErrorIs(t, events.Publish(ctx, (*orderPlaced)(nil)), cqrs.ErrNilMessage)

	_, err = cqrs.Subscribe(events, "p", func(context.Context, *orderPlaced) error { return nil })
	require.NoError(t, err)
	require.ErrorIs(t, cqrs.Publish(ctx, events, (*orderPlaced)(nil)), cqrs.ErrNilMessage)
}

func TestSequentialStopsWhenTheCallerGivesUp(t *testing.T) {
	t.Parallel()
	events := cqrs.NewEventBus()
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{}
	subscribe(t, events, "first", func(ctx context.Context, e orderPlaced) error {
		cancel()
		return rec.sub("first", nil)(ctx, e)
	})
	subscribe(t, events, "second", rec.sub("second", nil))
	err := cqrs.Publish(ctx, events, orderPlaced{ID: 8})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, []string{"first:8"}, rec.list())
}

func TestEventBusListsAndNames(t *testing.T) {
	t.Parallel()
	events := cqrs.NewEventBus()
	assert.Equal(t, cqrs.KindEvent, events.Kind())
	assert.Equal(t, "event", cqrs.KindEvent.String())
	assert.Nil(t, events.Metrics(), "metrics are off")
	subscribe(t, events, "b", func(context.Context, orderShipped) error { return nil })
	subscribe(t, events, "a", func(context.Context, orderShipped) error { return nil })
	subscribe(t, events, "z", func(context.Context, orderPlaced) error { return nil })
	assert.Equal(t, []string{"cqrs_test.orderPlaced", "orders.shipped"}, events.Registered())
	var got []string
	for _, s := range events.Specs() {
		got = append(got, s.String())
	}
	assert.Equal(t, []string{"event cqrs_test.orderPlaced to z", "event orders.shipped to a", "event orders.shipped to b"}, got)

	// The untyped entry point finds the subscribers by the dynamic type.
	var n atomic.Int64
	subscribe(t, events, "count", func(context.Context, orderShipped) error { n.Add(1); return nil })
	require.NoError(t, events.Publish(context.Background(), any(orderShipped{ID: 1})))
	require.NoError(t, events.PublishWith(context.Background(), cqrs.Concurrent(0), orderShipped{ID: 2}))
	assert.Equal(t, int64(2), n.Load())
}

func specOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

func TestEventsAreNotCommands(t *testing.T) {
	t.Parallel()
	err := cqrs.Register(cqrs.NewCommandBus(), cqrs.HandlerFunc[orderPlaced, cqrs.NoResult](
		func(context.Context, orderPlaced) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.Contains(t, err.Error(), "declared for the event bus")
	err = cqrs.Require(cqrs.NewQueryBus(), orderPlaced{})
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
}

func TestPanickingInterceptorIsRecoveredAndLogged(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	var mu sync.Mutex
	boom := cqrs.InterceptorFunc(func(_ cqrs.Spec, _ cqrs.Invoker) cqrs.Invoker {
		return func(context.Context, cqrs.Call) error { panic("interceptor bug") }
	})
	events := cqrs.NewEventBus(cqrs.WithInterceptors(boom),
		cqrs.WithLogger(slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))))
	rec := &recorder{}
	subscribe(t, events, "a", rec.sub("a", nil))
	err := cqrs.Publish(context.Background(), events, orderPlaced{ID: 1})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "interceptor bug", pe.Value)
	assert.Equal(t, "event cqrs_test.orderPlaced to a", pe.Message)
	assert.Empty(t, rec.list())
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, logs.String(), "cqrs: handler panicked")
	assert.Contains(t, logs.String(), "subscriber=a")
}

func TestStrategyNames(t *testing.T) {
	t.Parallel()
	for want, s := range map[string]cqrs.Strategy{
		"sequential": cqrs.Sequential(), "stop-on-error": cqrs.StopOnError(), "async": cqrs.Async(),
		"concurrent(4)": cqrs.Concurrent(4), "bus default": {},
	} {
		assert.Equal(t, want, s.String())
	}
}

func TestCancelWaitsForThePublishesThatMayCallIt(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		events := cqrs.NewEventBus()
		release := make(chan struct{})
		var calls atomic.Int64
		sub := subscribe(t, events, "slow", func(context.Context, orderPlaced) error {
			calls.Add(1)
			<-release
			return nil
		})
		published := make(chan error, 1)
		go func() { published <- cqrs.Publish(context.Background(), events, orderPlaced{}) }()
		synctest.Wait() // the publish is inside the subscriber

		var cancelled atomic.Bool
		go func() {
			sub.Cancel()
			cancelled.Store(true)
		}()
		synctest.Wait()
		assert.False(t, cancelled.Load(), "Cancel returned while a publish that called the subscriber ran")

		close(release)
		require.NoError(t, <-published)
		synctest.Wait()
		assert.True(t, cancelled.Load())
		require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{}))
		assert.Equal(t, int64(1), calls.Load())
	})
}

func TestPanickingPlainSubscriberStopsNoOne(t *testing.T) {
	t.Parallel()
	for _, s := range []cqrs.Strategy{cqrs.Sequential(), cqrs.StopOnError(), cqrs.Concurrent(1)} {
		events := cqrs.NewEventBus() // no interceptor, no metrics: plain functions
		rec := &recorder{}
		subscribe(t, events, "first", rec.sub("first", nil))
		subscribe(t, events, "boom", func(context.Context, orderPlaced) error { panic("boom") })
		subscribe(t, events, "last", rec.sub("last", nil))
		err := cqrs.PublishWith(context.Background(), events, s, orderPlaced{ID: 1})
		var pe *cqrs.PanicError
		require.ErrorAs(t, err, &pe, "%s", s)
		var se *cqrs.SubscriberError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, "boom", se.Subscriber)
		if s == cqrs.StopOnError() {
			assert.Equal(t, []string{"first:1"}, rec.list(), "%s", s)
		} else {
			assert.ElementsMatch(t, []string{"first:1", "last:1"}, rec.list(), "%s", s)
		}
	}
}

// TestCancelWaitsForOlderGenerations: a publish that loaded the
// subscribers before a later Subscribe, or before another Cancel, still
// holds the cancelled subscriber: Cancel must wait for it too.
func TestCancelWaitsForOlderGenerations(t *testing.T) {
	t.Parallel()
	for _, between := range []string{"subscribe", "cancel"} {
		t.Run(between, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				events := cqrs.NewEventBus()
				release := make(chan struct{})
				var cancelled atomic.Bool
				var late atomic.Int64
				subscribe(t, events, "blocker", func(context.Context, orderPlaced) error {
					<-release
					return nil
				})
				other := subscribe(t, events, "other", func(context.Context, orderPlaced) error { return nil })
				leaving := subscribe(t, events, "leaving", func(context.Context, orderPlaced) error {
					if cancelled.Load() {
						late.Add(1)
					}
					return nil
				})
				published := make(chan error, 1)
				go func() { published <- cqrs.Publish(context.Background(), events, orderPlaced{}) }()
				synctest.Wait() // the publish is inside blocker, holding the first generation

				switch between {
				case "subscribe":
					subscribe(t, events, "newcomer", func(context.Context, orderPlaced) error { return nil })
				case "cancel":
					go other.Cancel() // waits for the first generation
					synctest.Wait()
				}
				var returned atomic.Bool
				go func() {
					leaving.Cancel()
					cancelled.Store(true)
					returned.Store(true)
				}()
				synctest.Wait()
				assert.False(t, returned.Load(), "Cancel returned while a publish that will call the subscriber ran")

				close(release)
				require.NoError(t, <-published)
				synctest.Wait()
				assert.True(t, returned.Load())
				assert.Zero(t, late.Load(), "called after Cancel returned")
			})
		})
	}
}

// TestAsyncSubscriberPublishingToAFullQueue: a subscriber run by the
// queue's one worker cannot wait for room that only that worker makes: its
// publish fails at once instead of hanging the worker, and Close drains.
func TestAsyncSubscriberPublishingToAFullQueue(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()), cqrs.WithEventQueue(cqrs.EventQueue{Size: 1}))
		release := make(chan struct{})
		var nested error
		subscribe(t, events, "relay", func(ctx context.Context, e orderPlaced) error {
			if e.ID == 1 {
				<-release
				nested = cqrs.Publish(ctx, events, orderPlaced{ID: 99})
			}
			return nil
		})
		require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{ID: 1}))
		synctest.Wait() // the worker holds event 1
		// Event 2 fills the queue.
		require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{ID: 2}))
		close(release)
		synctest.Wait() // the nested publish has returned; the worker idles
		require.ErrorIs(t, nested, cqrs.ErrQueueFull, "nested: %v", nested)
		require.NoError(t, events.Close(context.Background()))
	})
}

// TestCloseReleasesBlockedPublishers: a publisher waiting for room in a
// full queue is told the bus closed, rather than holding Close up, and a
// publisher that comes meanwhile keeps its deadline.
func TestCloseReleasesBlockedPublishers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()), cqrs.WithEventQueue(cqrs.EventQueue{Size: 1}))
		release := make(chan struct{})
		subscribe(t, events, "slow", func(context.Context, orderPlaced) error {
			<-release
			return nil
		})
		require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{ID: 1}))
		synctest.Wait()
		require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{ID: 2}))
		blocked := make(chan error, 1)
		go func() { blocked <- cqrs.Publish(context.Background(), events, orderPlaced{ID: 3}) }()
		synctest.Wait()

		closed := make(chan error, 1)
		go func() { closed <- events.Close(context.Background()) }()
		require.ErrorIs(t, <-blocked, cqrs.ErrClosed)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		require.ErrorIs(t, cqrs.Publish(ctx, events, orderPlaced{ID: 4}), cqrs.ErrClosed)
		close(release)
		require.NoError(t, <-closed)
		//lint:ignore SA1012 a nil context is what is tested
		require.ErrorIs(t, events.Close(nil), cqrs.ErrNilContext)
	})
}

func TestBadInputBeforeAnySubscriber(t *testing.T) {
	t.Parallel()
	strict := cqrs.NewEventBus(cqrs.WithRequireSubscribers())
	//lint:ignore SA1012 a nil context is what is tested
	require.ErrorIs(t, cqrs.Publish(nil, strict, orderPlaced{}), cqrs.ErrNilContext)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, cqrs.Publish(cancelled, strict, orderPlaced{}), context.Canceled)
	require.ErrorIs(t, cqrs.PublishWith(context.Background(), strict, cqrs.Async(), orderPlaced{}), cqrs.ErrNoSubscribers)
	sub := subscribe(t, strict, "gone", func(context.Context, orderPlaced) error { return nil })
	sub.Cancel()
	require.ErrorIs(t, cqrs.PublishWith(context.Background(), strict, cqrs.Async(), orderPlaced{}), cqrs.ErrNoSubscribers)
	require.NoError(t, strict.Close(context.Background()))
	require.NoError(t, cqrs.PublishWith(context.Background(), cqrs.NewEventBus(), cqrs.Async(), orderShipped{}))
	closed := cqrs.NewEventBus()
	require.NoError(t, closed.Close(context.Background()))
	require.ErrorIs(t, cqrs.PublishWith(context.Background(), closed, cqrs.Async(), orderShipped{}), cqrs.ErrClosed)

	var zero cqrs.Subscription
	zero.Cancel()
	assert.Equal(t, cqrs.Spec{}, zero.Spec())
}

func TestSubscribeFromAnInterceptor(t *testing.T) {
	t.Parallel()
	var events *cqrs.EventBus
	audit := cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		if spec.Subscriber != "audit" {
			// Setting up a subscriber subscribes an auditor: user code
			// that calls back into the bus.
			_, err := cqrs.Subscribe(events, "audit", func(context.Context, orderShipped) error { return nil })
			if err != nil && !errors.Is(err, cqrs.ErrHandlerExists) {
				panic(err)
			}
		}
		return next
	})
	events = cqrs.NewEventBus(cqrs.WithInterceptors(audit))
	done := make(chan struct{})
	go func() {
		defer close(done)
		subscribe(t, events, "mail", func(context.Context, orderPlaced) error { return nil })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second): // real time: a deadlock has no synctest bubble to report it
		t.Fatal("Subscribe deadlocked on a Subscribe from an interceptor")
	}
	assert.Equal(t, []string{"cqrs_test.orderPlaced", "orders.shipped"}, events.Registered())
}

// spyInterceptor notes, in trail, the subscriber of the Spec it is set up
// with and of each call it sees: "<tag> set up for <subscriber>", then
// "<tag> <subscriber>".
func spyInterceptor(trail *recorder, tag string) cqrs.Interceptor {
	return cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		trail.note(tag + " set up for " + spec.Subscriber)
		return func(ctx context.Context, c cqrs.Call) error {
			trail.note(tag + " " + c.Spec().Subscriber)
			return next(ctx, c)
		}
	})
}

func (r *recorder) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, s)
}

// Issue #20, item 2: one subscriber retries, another has a timeout, each
// set up with its own Spec; the bus's interceptors run outside them, and
// the subscriber's typed middleware inside.
func TestSubscriberInterceptorsAreItsOwn(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var trail recorder
		events := cqrs.NewEventBus(
			cqrs.WithInterceptors(spyInterceptor(&trail, "bus")),
			cqrs.WithSubscriberInterceptors("email", spyInterceptor(&trail, "email's"),
				middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Second, Jitter: -1})),
			cqrs.WithSubscriberInterceptors("stock", spyInterceptor(&trail, "stock's"), middleware.Timeout(time.Minute)),
		)
		typed := func(next cqrs.Handler[orderPlaced, cqrs.NoResult]) cqrs.Handler[orderPlaced, cqrs.NoResult] {
			return cqrs.HandlerFunc[orderPlaced, cqrs.NoResult](func(ctx context.Context, e orderPlaced) (cqrs.NoResult, error) {
				trail.note("email's middleware")
				return next.Handle(ctx, e)
			})
		}
		var mails int
		subscribe(t, events, "email", func(ctx context.Context, e orderPlaced) error {
			mails++
			_, deadline := ctx.Deadline()
			trail.note(fmt.Sprintf("email attempt %d, deadline %v", mails, deadline))
			if mails%3 != 0 {
				return errMail // the first two attempts of each event fail
			}
			return nil
		}, typed)
		errStock := errors.New("out of stock")
		subscribe(t, events, "stock", func(ctx context.Context, e orderPlaced) error {
			deadline, ok := ctx.Deadline()
			trail.note(fmt.Sprintf("stock, deadline %v in %v", ok, time.Until(deadline)))
			if e.ID == 2 {
				<-ctx.Done() // waits for its timeout
				return ctx.Err()
			}
			return errStock
		})
		set := trail.list()
		assert.ElementsMatch(t, []string{"email's set up for email", "bus set up for email",
			"stock's set up for stock", "bus set up for stock"}, set, "each interceptor is set up with its subscriber's Spec")
		trail.seen = nil

		start := time.Now()
		err := cqrs.Publish(context.Background(), events, orderPlaced{ID: 1})
		// email succeeded at its third attempt, after waiting 1s and 2s;
		// stock failed once, and was not retried.
		var failed *cqrs.SubscriberError
		require.ErrorAs(t, err, &failed)
		assert.Equal(t, "stock", failed.Subscriber)
		require.ErrorIs(t, err, errStock)
		assert.NotErrorIs(t, err, errMail)
		assert.Equal(t, 3*time.Second, time.Since(start))
		assert.Equal(t, []string{
			"bus email", "email's email",
			"email's middleware", "email attempt 1, deadline false",
			"email's middleware", "email attempt 2, deadline false",
			"email's middleware", "email attempt 3, deadline false",
			"bus stock", "stock's stock", "stock, deadline true in 1m0s",
		}, trail.list())

		// stock's timeout ends a wait that would never end; email has none.
		trail.seen = nil
		start = time.Now()
		err = cqrs.Publish(context.Background(), events, orderPlaced{ID: 2})
		require.ErrorAs(t, err, &failed)
		assert.Equal(t, "stock", failed.Subscriber)
		require.ErrorIs(t, err, cqrs.ErrExecutionTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 3*time.Second+time.Minute, time.Since(start))
		assert.Equal(t, 6, mails)
	})
}

func TestSubscriberInterceptorsOptionIsPerBus(t *testing.T) {
	t.Parallel()
	var trail recorder
	shared := cqrs.WithSubscriberInterceptors("a", spyInterceptor(&trail, "shared"))
	first := cqrs.NewEventBus(shared, cqrs.WithSubscriberInterceptors("a", spyInterceptor(&trail, "first's")))
	second := cqrs.NewEventBus(shared)
	noop := func(context.Context, orderPlaced) error { return nil }
	subscribe(t, first, "a", noop)
	subscribe(t, second, "a", noop)
	subscribe(t, second, "b", noop) // no interceptors of its own
	trail.seen = nil

	require.NoError(t, cqrs.Publish(context.Background(), first, orderPlaced{}))
	assert.Equal(t, []string{"shared a", "first's a"}, trail.list(), "repeated options append, the first outermost")
	trail.seen = nil
	require.NoError(t, cqrs.Publish(context.Background(), second, orderPlaced{}))
	assert.Equal(t, []string{"shared a"}, trail.list(), "another bus's option does not leak into a shared one")

	// A nil interceptor fails the Subscribe of its name only.
	broken := cqrs.NewEventBus(cqrs.WithSubscriberInterceptors("a", nil))
	_, err := cqrs.Subscribe(broken, "a", noop)
	require.ErrorIs(t, err, cqrs.ErrNilHandler)
	assert.Empty(t, broken.Specs())
	subscribe(t, broken, "b", noop)

	// Other kinds of bus ignore it.
	commands := cqrs.NewCommandBus(cqrs.WithSubscriberInterceptors("a", nil))
	require.NoError(t, cqrs.Handle(commands, func(context.Context, openAccount) (accountID, error) { return 1, nil }))
}

// An event published as a pointer where its subscribers take the value,
// or the other way round, reaches nobody: it is an error, which says what
// to publish, even on a bus that does not require subscribers.
func TestPointerOrValuePublishedToTheOtherSaysWhichToPublish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	events := cqrs.NewEventBus()
	var seen atomic.Int64
	sub := subscribe(t, events, "email", func(context.Context, orderPlaced) error { seen.Add(1); return nil })

	err := cqrs.Publish(ctx, events, &orderPlaced{ID: 1})
	require.ErrorIs(t, err, cqrs.ErrNoSubscribers)
	assert.EqualError(t, err, "cqrs: no subscribers: event *cqrs_test.orderPlaced; "+
		"its subscribers take cqrs_test.orderPlaced: publish the value, not a pointer")
	err = events.Publish(ctx, &orderPlaced{ID: 1}) // the untyped entry point, which transports use
	assert.ErrorIs(t, err, cqrs.ErrNoSubscribers)
	assert.ErrorContains(t, err, "publish the value, not a pointer")
	err = cqrs.PublishWith(ctx, events, cqrs.Async(), &orderPlaced{ID: 1})
	assert.ErrorContains(t, err, "publish the value, not a pointer")
	require.NoError(t, cqrs.Publish(ctx, events, orderPlaced{ID: 1}))
	assert.Equal(t, int64(1), seen.Load())

	// So it is when the pointer type had subscribers that all left.
	gone := subscribe(t, events, "gone", func(context.Context, *orderPlaced) error { return nil })
	gone.Cancel()
	for _, s := range []cqrs.Strategy{cqrs.Sequential(), cqrs.Async()} {
		err = cqrs.PublishWith(ctx, events, s, &orderPlaced{ID: 1})
		require.ErrorIs(t, err, cqrs.ErrNoSubscribers, s)
		assert.ErrorContains(t, err, "publish the value, not a pointer", s)
	}

	// Once its subscribers left, an event nobody takes is no error again.
	sub.Cancel()
	require.NoError(t, cqrs.Publish(ctx, events, &orderPlaced{ID: 1}))
	require.NoError(t, cqrs.Publish(ctx, events, orderPlaced{ID: 1}))

	pointers := cqrs.NewEventBus()
	subscribe(t, pointers, "email", func(context.Context, *orderPlaced) error { return nil })
	err = cqrs.Publish(ctx, pointers, orderPlaced{ID: 2})
	require.ErrorIs(t, err, cqrs.ErrNoSubscribers)
	assert.EqualError(t, err, "cqrs: no subscribers: event cqrs_test.orderPlaced; "+
		"its subscribers take *cqrs_test.orderPlaced: publish a pointer, not the value")
	require.NoError(t, cqrs.Publish(ctx, pointers, &orderPlaced{ID: 2}))
	require.NoError(t, events.Close(ctx))
}

func TestFlushWaitsForEveryQueuedEventAndLeavesTheBusOpen(t *testing.T) {
	type placed struct {
		cqrs.Event
		N int
	}
	type shipped struct {
		cqrs.Event
		N int
	}
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()), cqrs.WithEventQueue(cqrs.EventQueue{Workers: 2}))
		defer func() { require.NoError(t, events.Close(ctx)) }()
		var handled, cascaded atomic.Int64
		_, err := cqrs.Subscribe(events, "slow", func(ctx context.Context, e placed) error {
			time.Sleep(time.Duration(e.N) * time.Second)
			handled.Add(1)
			// A subscriber that publishes in turn: Flush waits for that too.
			return cqrs.Publish(ctx, events, shipped(e))
		})
		require.NoError(t, err)
		_, err = cqrs.Subscribe(events, "ship", func(context.Context, shipped) error {
			time.Sleep(time.Second)
			cascaded.Add(1)
			return nil
		})
		require.NoError(t, err)

		for round := 1; round <= 2; round++ {
			start := time.Now()
			for n := range 4 {
				require.NoError(t, cqrs.Publish(ctx, events, placed{N: n}))
			}
			require.NoError(t, events.Flush(ctx))
			assert.Equal(t, int64(4*round), handled.Load(), "round %d", round)
			assert.Equal(t, int64(4*round), cascaded.Load(), "round %d", round)
			assert.Positive(t, time.Since(start), "Flush waited on the bubble's clock")
		}
		assert.NoError(t, events.Flush(ctx), "an idle queue flushes at once")
	})
}

func TestFlushEndsWithItsContext(t *testing.T) {
	type stuck struct{ cqrs.Event }
	synctest.Test(t, func(t *testing.T) {
		events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()))
		release := make(chan struct{})
		_, err := cqrs.Subscribe(events, "stuck", func(context.Context, stuck) error {
			<-release
			return nil
		})
		require.NoError(t, err)
		require.NoError(t, cqrs.Publish(context.Background(), events, stuck{}))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = events.Flush(ctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		close(release)
		require.NoError(t, events.Flush(context.Background()))
		require.NoError(t, events.Close(context.Background()))

		var none *cqrs.EventBus
		assert.NoError(t, none.Flush(context.Background()))
		var nilCtx context.Context
		assert.ErrorIs(t, events.Flush(nilCtx), cqrs.ErrNilContext)
	})
}

func TestFlushCountsPublishesThatFailed(t *testing.T) {
	type full struct{ cqrs.Event }
	ctx := context.Background()
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()), cqrs.WithEventQueue(cqrs.EventQueue{Size: 1, FailFast: true}))
	release := make(chan struct{})
	_, err := cqrs.Subscribe(events, "held", func(context.Context, full) error {
		<-release
		return nil
	})
	require.NoError(t, err)
	refused := 0
	for range 10 {
		if errors.Is(cqrs.Publish(ctx, events, full{}), cqrs.ErrQueueFull) {
			refused++
		}
	}
	require.Positive(t, refused, "the queue of one filled")
	close(release)
	done, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, events.Flush(done), "a refused publish is not waited for")
	require.NoError(t, events.Close(ctx))
}

// TestAsyncSubscriberKeepsItsContext: the bus recycles what it queues, but
// a subscriber that keeps its ctx after it returned (for a goroutine of its
// own, say) goes on seeing the values of the publish it was called for,
// whatever is published after, with the same context or another; and so
// does the subscriber of an event published from that ctx, on the
// queue's worker.
func TestAsyncSubscriberKeepsItsContext(t *testing.T) {
	t.Parallel()
	type key struct{}
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()))
	var mu sync.Mutex
	kept := map[int]context.Context{}
	keep := func(id int, ctx context.Context) {
		mu.Lock()
		defer mu.Unlock()
		kept[id] = ctx
	}
	subscribe(t, events, "keeper", func(ctx context.Context, e orderPlaced) error {
		keep(e.ID, ctx)
		if e.ID == 1 {
			// Published from the subscriber's ctx, on the worker.
			return cqrs.Publish(ctx, events, orderShipped{ID: 1001})
		}
		return nil
	})
	subscribe(t, events, "shipper", func(ctx context.Context, e orderShipped) error {
		keep(e.ID, ctx)
		return nil
	})

	a, cancelA := context.WithCancelCause(context.WithValue(context.Background(), key{}, "a"))
	b := context.WithValue(context.Background(), key{}, "b")
	want := map[int]string{1: "a", 2: "b", 3: "a", 4: "a", 1001: "a"}
	require.NoError(t, cqrs.Publish(a, events, orderPlaced{ID: 1}))
	require.NoError(t, cqrs.Publish(b, events, orderPlaced{ID: 2}))
	require.NoError(t, cqrs.Publish(a, events, orderPlaced{ID: 3}))
	require.NoError(t, cqrs.Publish(a, events, orderPlaced{ID: 4}))
	require.NoError(t, events.Flush(context.Background()))
	cancelA(errMail)
	// Later publishes, from other contexts, reuse what the first queued.
	for i := range 100 {
		c := context.WithValue(context.Background(), key{}, fmt.Sprint("later-", i))
		require.NoError(t, cqrs.Publish(c, events, orderPlaced{ID: 2000 + i}))
		want[2000+i] = fmt.Sprint("later-", i)
	}
	require.NoError(t, events.Flush(context.Background()))

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, kept, len(want))
	for id, v := range want {
		ctx := kept[id]
		assert.Equal(t, v, ctx.Value(key{}), "event %d", id)
		assert.NoError(t, ctx.Err(), "event %d: the caller's cancellation", id)
		assert.NoError(t, context.Cause(ctx), "event %d: the caller's cause", id)
		assert.Nil(t, ctx.Done(), "event %d", id)
		_, ok := ctx.Deadline()
		assert.False(t, ok, "event %d", id)
	}
	require.NoError(t, events.Close(context.Background()))
}

// TestAsyncPublishAllocatesNothingInSteadyState: a publish that finds its
// job given back by the worker, from a context it published from before,
// allocates nothing.
func TestAsyncPublishAllocatesNothingInSteadyState(t *testing.T) {
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()))
	handled := make(chan int, 1)
	subscribe(t, events, "counter", func(_ context.Context, e orderPlaced) error {
		handled <- e.ID
		return nil
	})
	ctx := context.Background()
	publish := func() {
		if err := cqrs.Publish(ctx, events, orderPlaced{ID: 7}); err != nil {
			t.Fatal(err)
		}
		if id := <-handled; id != 7 {
			t.Fatalf("handled %d", id)
		}
	}
	publish() // the first makes the job and the queue
	assert.Zero(t, testing.AllocsPerRun(100, publish))
	require.NoError(t, events.Close(ctx))
}

// TestConcurrentPublishesReuseTheirStateWhole: a concurrent publish's
// state is recycled for the next, its slots too; a publish cut short by a
// failure, having taken a slot for a subscriber it then did not start,
// must not leave the next publish one slot short (with a limit of 1, it
// would wait for ever).
func TestConcurrentPublishesReuseTheirStateWhole(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Concurrent(1).CancelOnError()))
		var calls atomic.Int64
		for i := range 3 {
			subscribe(t, events, fmt.Sprintf("s%d", i), func(_ context.Context, e orderPlaced) error {
				calls.Add(1)
				if e.ID == 1 {
					return errMail
				}
				return nil
			})
		}
		for range 20 {
			calls.Store(0)
			require.ErrorIs(t, cqrs.Publish(context.Background(), events, orderPlaced{ID: 1}), errMail)
			assert.Equal(t, int64(1), calls.Load(), "the first failed: the others did not start")
			calls.Store(0)
			require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{ID: 2}))
			assert.Equal(t, int64(3), calls.Load())
		}

		// The caller's ctx ends just after the publish took the first
		// subscriber's slot: nobody is called, and the next publish with
		// the same limit finds its slot free.
		ending := &endingCtx{Context: context.Background(), done: make(chan struct{}), after: 1}
		require.ErrorIs(t, cqrs.PublishWith(ending, events, cqrs.Concurrent(1), orderPlaced{ID: 3}), context.Canceled)
		calls.Store(0)
		require.NoError(t, cqrs.PublishWith(context.Background(), events, cqrs.Concurrent(1), orderPlaced{ID: 4}))
		assert.Equal(t, int64(3), calls.Load())
	})
}

// endingCtx is a context that ends while it is being used: once its Err
// has been asked after times, it is cancelled.
type endingCtx struct {
	context.Context
	done  chan struct{}
	after int
	mu    sync.Mutex
	asked int
}

func (c *endingCtx) Done() <-chan struct{} { return c.done }

func (c *endingCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.asked++; c.asked == c.after+1 {
		close(c.done)
	}
	if c.asked > c.after {
		return context.Canceled
	}
	return nil
}

// TestConcurrentPublishAllocations: a concurrent publish allocates at most
// once per subscriber (issue #21); in the steady state of one publisher,
// nothing: its state is recycled and its goroutines need no closure.
func TestConcurrentPublishAllocations(t *testing.T) {
	for _, n := range []int{1, 8} {
		events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Concurrent(0)))
		var calls atomic.Int64
		for i := range n {
			subscribe(t, events, fmt.Sprintf("s%d", i), func(context.Context, orderPlaced) error {
				calls.Add(1)
				return nil
			})
		}
		publish := func() {
			if err := cqrs.Publish(context.Background(), events, orderPlaced{ID: 1}); err != nil {
				t.Fatal(err)
			}
		}
		publish()
		allocs := testing.AllocsPerRun(100, publish)
		assert.LessOrEqual(t, allocs, float64(n), "%d subscribers", n)
		assert.Equal(t, int64(102*n), calls.Load())
		t.Logf("%d subscribers: %v allocations per publish", n, allocs)
	}
}

// TestSubscriberEndingItsGoroutineReleasesThePublish: a subscriber that
// calls runtime.Goexit ends the publishing goroutine, not the bus: the
// publish lets go of its subscribers, so a later Cancel does not wait for
// it for ever, whatever the strategy and the subscribers' shape.
func TestSubscriberEndingItsGoroutineReleasesThePublish(t *testing.T) {
	t.Parallel()
	for _, s := range []cqrs.Strategy{cqrs.Sequential(), cqrs.StopOnError()} {
		for _, decorated := range []bool{false, true} {
			synctest.Test(t, func(t *testing.T) {
				events := cqrs.NewEventBus()
				var mws []cqrs.Middleware[orderPlaced, cqrs.NoResult]
				if decorated {
					mws = append(mws, func(next cqrs.Handler[orderPlaced, cqrs.NoResult]) cqrs.Handler[orderPlaced, cqrs.NoResult] {
						return next
					})
				}
				sub := subscribe(t, events, "quitter", func(context.Context, orderPlaced) error {
					runtime.Goexit()
					return nil
				}, mws...)
				ended := make(chan struct{})
				go func() {
					defer close(ended)
					_ = cqrs.PublishWith(context.Background(), events, s, orderPlaced{ID: 1})
				}()
				<-ended
				sub.Cancel() // would wait for ever for the publish
				assert.Empty(t, events.Specs(), "%s, decorated %v", s, decorated)
			})
		}
	}
}

// TestSubscriberPanickingWithNilUnderPanicNil: with GODEBUG=panicnil=1 a
// subscriber's panic(nil) recovers as nil, as runtime.Goexit does; the
// publish must let go of its subscribers once, not twice, so a later
// Cancel neither waits for ever nor returns while another publish runs.
func TestSubscriberPanickingWithNilUnderPanicNil(t *testing.T) {
	t.Setenv("GODEBUG", "panicnil=1")
	synctest.Test(t, func(t *testing.T) {
		events := cqrs.NewEventBus()
		var calls atomic.Int64
		sub := subscribe(t, events, "nil", func(_ context.Context, e orderPlaced) error {
			calls.Add(1)
			if e.ID == 1 {
				panic(nil)
			}
			return nil
		})
		_ = cqrs.Publish(context.Background(), events, orderPlaced{ID: 1})
		require.NoError(t, cqrs.Publish(context.Background(), events, orderPlaced{ID: 2}))
		assert.Equal(t, int64(2), calls.Load())

		// A publish under way holds Cancel up: the count was not taken
		// below zero by a second release.
		entered, release := make(chan struct{}), make(chan struct{})
		subscribe(t, events, "slow", func(_ context.Context, e orderPlaced) error {
			if e.ID == 3 {
				close(entered)
				<-release
			}
			return nil
		})
		go func() { _ = cqrs.Publish(context.Background(), events, orderPlaced{ID: 3}) }()
		<-entered
		cancelled := make(chan struct{})
		go func() {
			sub.Cancel()
			close(cancelled)
		}()
		synctest.Wait()
		select {
		case <-cancelled:
			t.Fatal("Cancel returned while a publish that may call the subscriber ran")
		default:
		}
		close(release)
		<-cancelled
	})
}

// TestSubscriberPanickingWithNilOnACancellableContext: with
// GODEBUG=panicnil=1, a plain subscriber published to from a context
// that can end, which takes the loop that looks at the context, fails
// with a *PanicError when it panics with nil. Before, recover's nil was
// taken for no panic, and the publish called the subscriber again, for
// ever.
func TestSubscriberPanickingWithNilOnACancellableContext(t *testing.T) {
	t.Setenv("GODEBUG", "panicnil=1")
	events := cqrs.NewEventBus()
	var calls atomic.Int64
	subscribe(t, events, "nil", func(context.Context, orderPlaced) error {
		if calls.Add(1) > 1 {
			return errors.New("called again")
		}
		panic(nil)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := cqrs.Publish(ctx, events, orderPlaced{ID: 1})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	assert.Equal(t, int64(1), calls.Load(), "the subscriber is called once")
}
