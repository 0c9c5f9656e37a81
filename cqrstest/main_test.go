package cqrstest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeT is a testing.TB that takes note of the failures the kit reports,
// rather than failing the test, so that the reports themselves can be
// tested. Its Fatalf ends the calling goroutine, as testing.T's does:
// call what may use it through fakeT.run. Everything else is the real
// test's.
type fakeT struct {
	testing.TB
	mu     sync.Mutex
	errs   []string
	fatals int
}

func newFakeT(t testing.TB) *fakeT { return &fakeT{TB: t} }

func (f *fakeT) Helper() {}

func (f *fakeT) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	f.mu.Lock()
	f.fatals++
	f.mu.Unlock()
	runtime.Goexit()
}

// run calls fn in a goroutine of its own, which Fatalf may end, and
// reports whether fn returned rather than being ended.
func (f *fakeT) run(fn func()) (returned bool) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
		returned = true
	}()
	<-done
	return returned
}

// failures returns the failures reported, joined by newlines.
func (f *fakeT) failures() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.errs, "\n")
}

// The messages of the tests: an order service whose handler publishes.

type OrderID int

type PlaceOrder struct {
	cqrs.Command[OrderID]
	Customer string
	Items    []string
}

type CancelOrder struct {
	cqrs.Command[cqrs.NoResult]
	Order OrderID
}

type GetOrder struct {
	cqrs.Query[Order]
	ID OrderID
}

type Order struct {
	ID       OrderID
	Customer string
	Items    []string
}

type OrderPlaced struct {
	cqrs.Event
	Order    OrderID
	Customer string
	Items    []string
}

type OrderCancelled struct {
	cqrs.Event
	Order OrderID
}

var (
	errNoItems = errors.New("an order needs items")
	errDown    = errors.New("database down")
)

// orders is the service under test: Place publishes OrderPlaced, Cancel
// publishes OrderCancelled, Get reads what Place stored.
type orders struct {
	events *cqrs.EventBus
	mu     sync.Mutex
	placed []Order
}

func (o *orders) Place(ctx context.Context, c PlaceOrder) (OrderID, error) {
	if len(c.Items) == 0 {
		return 0, errNoItems
	}
	o.mu.Lock()
	id := OrderID(len(o.placed) + 1)
	o.placed = append(o.placed, Order{ID: id, Customer: c.Customer, Items: c.Items})
	o.mu.Unlock()
	return id, cqrs.Publish(ctx, o.events, OrderPlaced{Order: id, Customer: c.Customer, Items: c.Items})
}

func (o *orders) Cancel(ctx context.Context, c CancelOrder) (cqrs.NoResult, error) {
	return cqrs.NoResult{}, cqrs.Publish(ctx, o.events, OrderCancelled{Order: c.Order})
}

func (o *orders) Get(_ context.Context, q GetOrder) (Order, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if q.ID < 1 || int(q.ID) > len(o.placed) {
		return Order{}, fmt.Errorf("order %d: %w", q.ID, errNotFound)
	}
	return o.placed[q.ID-1], nil
}

var errNotFound = errors.New("no such order")

// wire registers the order service's handlers on the harness's buses.
func wire(t testing.TB, commands *cqrs.CommandBus, queries *cqrs.QueryBus, events *cqrs.EventBus) *orders {
	t.Helper()
	o := &orders{events: events}
	if err := errors.Join(
		cqrs.Handle(commands, o.Place),
		cqrs.Handle(commands, o.Cancel),
		cqrs.Handle(queries, o.Get),
	); err != nil {
		t.Fatal(err)
	}
	return o
}
