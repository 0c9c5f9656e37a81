// Config-stack runs the standard production stack, built from a
// middleware.Config with a stack for each bus and a query cache in its
// place, with the JSON logs of a real service on standard error (each
// record with its message's identity) and a metrics report at the end on
// standard output.
//
//	go run ./examples/config-stack
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

//go:embed stack.yaml
var stackYAML []byte

// PlaceOrder is a validated command.
type PlaceOrder struct {
	ID       string `validate:"required"`
	Customer string `validate:"required,email"`
	Items    int    `validate:"min=1,max=100"`
}

// GetOrder is a query.
type GetOrder struct{ ID string }

// Order is what GetOrder returns.
type Order struct {
	ID, Customer string
	Items        int
}

// Orders is the in-memory store behind both handlers.
type Orders struct {
	mu     sync.Mutex
	orders map[string]Order
}

func (o *Orders) place(_ context.Context, c PlaceOrder) (cqrs.NoResult, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, dup := o.orders[c.ID]; dup {
		// Permanent: retrying will not help, and the handler is healthy.
		return cqrs.NoResult{}, middleware.Permanent(fmt.Errorf("order %s: %w", c.ID, errDuplicate))
	}
	o.orders[c.ID] = Order(c)
	return cqrs.NoResult{}, nil
}

func (o *Orders) get(_ context.Context, q GetOrder) (Order, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	order, ok := o.orders[q.ID]
	if !ok {
		return Order{}, middleware.Permanent(fmt.Errorf("order %s: %w", q.ID, errNotFound))
	}
	return order, nil
}

var (
	errDuplicate = errors.New("duplicate order")
	errNotFound  = errors.New("order not found")
)

func main() {
	if err := run(os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run sends some traffic through the stack, logging to logs, and reports
// the metrics to w.
func run(w, logs io.Writer) error {
	cfg, err := middleware.ParseConfig(stackYAML)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(logs, nil)).With("service", "orders")
	stack, err := cfg.Build(logger)
	if err != nil {
		return err
	}
	// Each bus gets its own stack: commands are not retried, queries are.
	// Every message gets an identity, which the logs carry.
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(stack.Commands...), cqrs.WithLogger(logger), cqrs.WithIdentity())
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...), cqrs.WithLogger(logger), cqrs.WithIdentity())
	// The cache of queries.cache, after validation and before the rate
	// limit: a hit spends no token.
	cache, err := middleware.NewQueryCache[GetOrder, Order](stack, queries)
	if err != nil {
		return err
	}
	defer cache.Close()
	store := &Orders{orders: map[string]Order{}}
	if err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](store.place)); err != nil {
		return err
	}
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](store.get), cache.Middleware()); err != nil {
		return err
	}
	// At start-up: every message this service sends has its handler.
	if err := errors.Join(cqrs.Require(commands, PlaceOrder{}), cqrs.Require(queries, GetOrder{})); err != nil {
		return err
	}

	// One conversation, as if started by a request with this id: each
	// message gets an ID of its own, and this correlation ID.
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{CorrelationID: "request-42"})
	traffic := []PlaceOrder{
		{ID: "o-1", Customer: "ada@example.com", Items: 2},
		{ID: "o-2", Customer: "grace@example.com", Items: 1},
		{ID: "o-1", Customer: "ada@example.com", Items: 2}, // duplicate
		{ID: "o-3", Customer: "not-an-email", Items: 0},    // invalid
	}
	for _, order := range traffic {
		_, _ = cqrs.Dispatch[cqrs.NoResult](ctx, commands, order)
	}
	for _, id := range []string{"o-1", "o-2", "o-9", "o-1", "o-1"} {
		_, _ = cqrs.Dispatch[Order](ctx, queries, GetOrder{ID: id})
	}

	fmt.Fprintln(w, "message                  calls  errors   mean       p99")
	for _, m := range stack.Metrics.Snapshot() {
		fmt.Fprintf(w, "%-7s %-16s %5d  %6d   %-9v  %v\n", m.Kind, m.Name, m.Calls, m.Errors, m.Mean, m.P99)
	}
	s := cache.Stats()
	fmt.Fprintf(w, "cache: %d hits, %d misses\n", s.Hits, s.Misses)
	return nil
}
