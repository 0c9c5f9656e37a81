// Events shows the event bus: a command whose handler publishes an
// event, and three subscribers (email, stock, analytics) that each see
// it, one of them flaky and retried on its own, with metrics per
// subscriber.
//
//	go run ./examples/events
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// PlaceOrder is a command that returns the new order's ID.
type PlaceOrder struct {
	cqrs.Command[int]
	Customer string
	Items    []string
}

// OrderPlaced is the event PlaceOrder's handler publishes.
type OrderPlaced struct {
	cqrs.Event
	Order    int
	Customer string
	Items    []string
}

// Orders places orders and tells whoever listens.
type Orders struct {
	events *cqrs.EventBus
	mu     sync.Mutex
	next   int
}

// Place handles PlaceOrder.
func (o *Orders) Place(ctx context.Context, c PlaceOrder) (int, error) {
	if len(c.Items) == 0 {
		return 0, errors.New("an order needs items")
	}
	o.mu.Lock()
	o.next++
	id := o.next
	o.mu.Unlock()
	// The subscribers run now, in order; their failures come back joined.
	if err := cqrs.Publish(ctx, o.events, OrderPlaced{Order: id, Customer: c.Customer, Items: c.Items}); err != nil {
		return id, fmt.Errorf("order %d placed, but: %w", id, err)
	}
	return id, nil
}

// Mailer sends receipts; its server drops every first attempt.
type Mailer struct {
	w        io.Writer
	mu       sync.Mutex
	attempts map[int]int
}

// OrderPlaced sends the receipt of an order.
func (m *Mailer) OrderPlaced(_ context.Context, e OrderPlaced) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attempts[e.Order]++
	if m.attempts[e.Order] == 1 {
		return fmt.Errorf("mail server: connection reset (order %d)", e.Order)
	}
	fmt.Fprintf(m.w, "email: receipt for order %d to %s (attempt %d)\n", e.Order, e.Customer, m.attempts[e.Order])
	return nil
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	// Each subscriber runs inside the bus's interceptors with a Spec of
	// its own: the retry retries the failing subscriber alone.
	events := cqrs.NewEventBus(cqrs.WithMetrics(), cqrs.WithInterceptors(
		middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond, Jitter: -1}),
	))
	defer events.Close(ctx)

	mailer := &Mailer{w: w, attempts: map[int]int{}}
	stock := map[string]int{"tea": 10, "cup": 2}
	var analytics []int
	subscribe := func(name string, fn func(context.Context, OrderPlaced) error) error {
		_, err := cqrs.Subscribe(events, name, fn)
		return err
	}
	if err := errors.Join(
		subscribe("email", mailer.OrderPlaced),
		subscribe("stock", func(_ context.Context, e OrderPlaced) error {
			for _, item := range e.Items {
				if stock[item] == 0 {
					return middleware.Permanent(fmt.Errorf("%s is out of stock", item))
				}
				stock[item]--
			}
			fmt.Fprintf(w, "stock: reserved %v for order %d\n", e.Items, e.Order)
			return nil
		}),
		subscribe("analytics", func(_ context.Context, e OrderPlaced) error {
			analytics = append(analytics, e.Order)
			return nil
		}),
	); err != nil {
		return err
	}

	commands := cqrs.NewCommandBus()
	orders := &Orders{events: events}
	if err := cqrs.Handle(commands, orders.Place); err != nil {
		return err
	}
	// At start-up: every command this service sends has a handler.
	if err := cqrs.Require(commands, PlaceOrder{}); err != nil {
		return err
	}

	for _, items := range [][]string{{"tea", "cup"}, {"cup"}, {"cup", "tea"}} {
		id, err := cqrs.Send(ctx, commands, PlaceOrder{Customer: "ada@example.com", Items: items})
		if err != nil {
			fmt.Fprintf(w, "order %d: %v\n", id, err)
			var failed *cqrs.SubscriberError
			if errors.As(err, &failed) {
				fmt.Fprintf(w, "  the subscriber that failed: %s\n", failed.Subscriber)
			}
		}
	}
	fmt.Fprintf(w, "analytics saw orders %v\n", analytics)
	for _, m := range events.Metrics() {
		fmt.Fprintf(w, "metrics: %s to %s: %d calls, %d errors\n", m.Name, m.Subscriber, m.Calls, m.Errors)
	}
	return nil
}
