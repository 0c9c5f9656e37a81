package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// CartCheckedOut is an event: it embeds the Event marker first.
type CartCheckedOut struct {
	cqrs.Event
	Cart  CartID
	Total int
}

func ExampleSubscribe() {
	events := cqrs.NewEventBus()
	email := func(_ context.Context, e CartCheckedOut) error {
		fmt.Println("email: receipt for cart", e.Cart)
		return nil
	}
	stock := func(_ context.Context, e CartCheckedOut) error {
		fmt.Println("stock: reserve items of cart", e.Cart)
		return nil
	}
	// The event's type is inferred from the function.
	if _, err := cqrs.Subscribe(events, "email", email); err != nil {
		panic(err)
	}
	sub, err := cqrs.Subscribe(events, "stock", stock)
	if err != nil {
		panic(err)
	}
	fmt.Println(sub.Spec())

	_ = cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 1, Total: 30})

	// After Cancel returns, the subscriber is never called again.
	sub.Cancel()
	_ = cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 2, Total: 12})
	// Output:
	// event cqrs_test.CartCheckedOut to stock
	// email: receipt for cart 1
	// stock: reserve items of cart 1
	// email: receipt for cart 2
}

func ExamplePublish() {
	events := cqrs.NewEventBus()
	_, _ = cqrs.Subscribe(events, "email", func(context.Context, CartCheckedOut) error {
		return errors.New("mail server down")
	})
	_, _ = cqrs.Subscribe(events, "stock", func(_ context.Context, e CartCheckedOut) error {
		fmt.Println("stock: cart", e.Cart)
		return nil
	})

	// The default strategy runs every subscriber and names each failure.
	err := cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 3})
	var failed *cqrs.SubscriberError
	if errors.As(err, &failed) {
		fmt.Println(failed.Subscriber, "failed:", failed.Err)
	}
	// Output:
	// stock: cart 3
	// email failed: mail server down
}

func ExamplePublishWith() {
	events := cqrs.NewEventBus()
	for _, name := range []string{"first", "second", "third"} {
		_, _ = cqrs.Subscribe(events, name, func(context.Context, CartCheckedOut) error {
			fmt.Println(name)
			if name == "second" {
				return errors.New("second failed")
			}
			return nil
		})
	}
	// For this call only: stop at the first failure.
	err := cqrs.PublishWith(context.Background(), events, cqrs.StopOnError(), CartCheckedOut{Cart: 4})
	fmt.Println(err)
	// Output:
	// first
	// second
	// cqrs: event cqrs_test.CartCheckedOut: subscriber second: second failed
}

func ExampleConcurrent() {
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Concurrent(4)))
	var mu sync.Mutex
	var seen []string
	for _, name := range []string{"analytics", "email", "stock"} {
		_, _ = cqrs.Subscribe(events, name, func(context.Context, CartCheckedOut) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, name)
			return nil
		})
	}
	err := cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 5})
	sort.Strings(seen) // concurrent subscribers run in any order
	fmt.Println(seen, err)
	// Output:
	// [analytics email stock] <nil>
}

func ExampleAsync() {
	events := cqrs.NewEventBus(
		cqrs.WithStrategy(cqrs.Async()),
		cqrs.WithEventQueue(cqrs.EventQueue{Size: 100, Workers: 1}),
	)
	var total int
	_, _ = cqrs.Subscribe(events, "revenue", func(_ context.Context, e CartCheckedOut) error {
		total += e.Total // one worker: calls do not overlap
		return nil
	})
	for i := 1; i <= 10; i++ {
		// Returns once the event is queued.
		if err := cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: CartID(i), Total: i}); err != nil {
			panic(err)
		}
	}
	// Close waits until every queued event has been handled.
	if err := events.Close(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println(total)
	err := cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 11})
	fmt.Println(errors.Is(err, cqrs.ErrClosed))
	// Output:
	// 55
	// true
}

func ExampleWithRequireSubscribers() {
	events := cqrs.NewEventBus(cqrs.WithRequireSubscribers())
	err := cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 6})
	fmt.Println(errors.Is(err, cqrs.ErrNoSubscribers))
	// Output:
	// true
}

func ExampleEventBus_Metrics() {
	events := cqrs.NewEventBus(cqrs.WithMetrics())
	_, _ = cqrs.Subscribe(events, "email", func(context.Context, CartCheckedOut) error { return nil })
	_, _ = cqrs.Subscribe(events, "stock", func(context.Context, CartCheckedOut) error { panic("out of stock") })
	for range 3 {
		_ = cqrs.Publish(context.Background(), events, CartCheckedOut{})
	}
	for _, m := range events.Metrics() {
		fmt.Printf("%s to %s: %d calls, %d errors\n", m.Name, m.Subscriber, m.Calls, m.Errors)
	}
	// Output:
	// cqrs_test.CartCheckedOut to email: 3 calls, 0 errors
	// cqrs_test.CartCheckedOut to stock: 3 calls, 3 errors
}

func ExampleNewEventBus() {
	// Every subscriber in order, each inside the bus's interceptors.
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Sequential()), cqrs.WithMetrics())
	_, _ = cqrs.Subscribe(events, "audit", func(context.Context, CartCheckedOut) error { return nil })
	fmt.Println(events.Kind(), events.Registered())
	// Output:
	// event [cqrs_test.CartCheckedOut]
}

func ExampleEventBus_Publish() {
	events := cqrs.NewEventBus()
	_, _ = cqrs.Subscribe(events, "audit", func(_ context.Context, e CartCheckedOut) error {
		fmt.Println("audit: cart", e.Cart)
		return nil
	})
	// A router or a transport holds events in an interface: the dynamic
	// type selects the subscribers.
	var evt any = CartCheckedOut{Cart: 8}
	fmt.Println(events.Publish(context.Background(), evt))
	// Output:
	// audit: cart 8
	// <nil>
}

func ExampleWithSubscriberInterceptors() {
	events := cqrs.NewEventBus(
		// Each subscriber its own: email retries, stock has a deadline.
		cqrs.WithSubscriberInterceptors("email",
			middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond})),
		cqrs.WithSubscriberInterceptors("stock", middleware.Timeout(time.Second)),
	)
	attempts := 0
	_, _ = cqrs.Subscribe(events, "email", func(ctx context.Context, e CartCheckedOut) error {
		attempts++
		if attempts < 3 {
			return errors.New("mail server busy")
		}
		_, deadline := ctx.Deadline()
		fmt.Println("email: sent at attempt", attempts, "; deadline:", deadline)
		return nil
	})
	_, _ = cqrs.Subscribe(events, "stock", func(ctx context.Context, e CartCheckedOut) error {
		_, deadline := ctx.Deadline()
		fmt.Println("stock: reserved; deadline:", deadline)
		return nil
	})
	fmt.Println(cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 9}))
	// Output:
	// email: sent at attempt 3 ; deadline: false
	// stock: reserved; deadline: true
	// <nil>
}

func ExampleWithStrategy() {
	// Every publish on this bus stops at the first failure...
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.StopOnError()))
	for _, name := range []string{"payment", "email"} {
		_, _ = cqrs.Subscribe(events, name, func(context.Context, CartCheckedOut) error {
			fmt.Println(name)
			return errors.New(name + " failed")
		})
	}
	fmt.Println(cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 10}))
	// ...but this one, which runs every subscriber.
	fmt.Println(cqrs.PublishWith(context.Background(), events, cqrs.Sequential(), CartCheckedOut{Cart: 11}) != nil)
	// Output:
	// payment
	// cqrs: event cqrs_test.CartCheckedOut: subscriber payment: payment failed
	// payment
	// email
	// true
}

func ExampleSequential() {
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Sequential()))
	for _, name := range []string{"email", "stock"} {
		_, _ = cqrs.Subscribe(events, name, func(context.Context, CartCheckedOut) error {
			return errors.New("down")
		})
	}
	// Both ran; both failures are returned, joined.
	err := cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 12})
	fmt.Println(err)
	// Output:
	// cqrs: event cqrs_test.CartCheckedOut: subscriber email: down
	// cqrs: event cqrs_test.CartCheckedOut: subscriber stock: down
}

func ExampleStopOnError() {
	events := cqrs.NewEventBus()
	_, _ = cqrs.Subscribe(events, "validate", func(_ context.Context, e CartCheckedOut) error {
		if e.Total <= 0 {
			return errors.New("empty cart")
		}
		return nil
	})
	_, _ = cqrs.Subscribe(events, "ship", func(_ context.Context, e CartCheckedOut) error {
		fmt.Println("shipping cart", e.Cart)
		return nil
	})
	fmt.Println(cqrs.PublishWith(context.Background(), events, cqrs.StopOnError(), CartCheckedOut{Cart: 13}))
	fmt.Println(cqrs.PublishWith(context.Background(), events, cqrs.StopOnError(), CartCheckedOut{Cart: 14, Total: 5}))
	// Output:
	// cqrs: event cqrs_test.CartCheckedOut: subscriber validate: empty cart
	// shipping cart 14
	// <nil>
}

func ExampleStrategy_CancelOnError() {
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Concurrent(0).CancelOnError()))
	_, _ = cqrs.Subscribe(events, "warehouse", func(ctx context.Context, _ CartCheckedOut) error {
		<-ctx.Done() // a long job, stopped when another subscriber fails
		fmt.Println("warehouse: stopped")
		return ctx.Err()
	})
	_, _ = cqrs.Subscribe(events, "payment", func(context.Context, CartCheckedOut) error {
		return errors.New("card declined")
	})
	// The stopped subscriber's context.Canceled is not a failure of its own.
	fmt.Println(cqrs.Publish(context.Background(), events, CartCheckedOut{Cart: 15}))
	// Output:
	// warehouse: stopped
	// cqrs: event cqrs_test.CartCheckedOut: subscriber payment: card declined
}

func ExampleWithEventQueue() {
	events := cqrs.NewEventBus(
		cqrs.WithStrategy(cqrs.Async()),
		// One event may wait; a publish that finds the queue full fails.
		cqrs.WithEventQueue(cqrs.EventQueue{Size: 1, Workers: 1, FailFast: true}),
	)
	started, release := make(chan struct{}), make(chan struct{})
	_, _ = cqrs.Subscribe(events, "slow", func(_ context.Context, e CartCheckedOut) error {
		if e.Cart == 16 {
			close(started)
			<-release
		}
		fmt.Println("handled cart", e.Cart)
		return nil
	})
	ctx := context.Background()
	fmt.Println(cqrs.Publish(ctx, events, CartCheckedOut{Cart: 16})) // taken by the worker
	<-started
	fmt.Println(cqrs.Publish(ctx, events, CartCheckedOut{Cart: 17})) // waits in the queue
	err := cqrs.Publish(ctx, events, CartCheckedOut{Cart: 18})       // finds it full
	fmt.Println(errors.Is(err, cqrs.ErrQueueFull))
	close(release)
	fmt.Println(events.Close(ctx))
	// Output:
	// <nil>
	// <nil>
	// true
	// handled cart 16
	// handled cart 17
	// <nil>
}

// Flush waits for the queued events without closing the bus: what a test
// of an asynchronous subscriber needs between a publish and a check.
func ExampleEventBus_Flush() {
	ctx := context.Background()
	events := cqrs.NewEventBus(cqrs.WithStrategy(cqrs.Async()))
	defer events.Close(ctx)
	var total atomic.Int64
	_, _ = cqrs.Subscribe(events, "revenue", func(_ context.Context, e CartCheckedOut) error {
		total.Add(int64(e.Total))
		return nil
	})
	for round := 1; round <= 2; round++ {
		_ = cqrs.Publish(ctx, events, CartCheckedOut{Cart: CartID(round), Total: 10})
		if err := events.Flush(ctx); err != nil {
			panic(err)
		}
		fmt.Println(total.Load())
	}
	// Output:
	// 10
	// 20
}
