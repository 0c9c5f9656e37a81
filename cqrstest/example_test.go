package cqrstest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/cqrstest"
	"github.com/typedcqrs/dispatch/middleware"
)

// exampleT stands for the *testing.T an Example has not: it prints what
// the test would report, and runs the cleanups when the example calls
// end.
type exampleT struct {
	testing.TB
	cleanups []func()
}

func (t *exampleT) Helper()                           {}
func (t *exampleT) Context() context.Context          { return context.Background() }
func (t *exampleT) Cleanup(f func())                  { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) Errorf(format string, args ...any) { fmt.Printf("FAIL: "+format+"\n", args...) }
func (t *exampleT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

func (t *exampleT) end() {
	for _, f := range slices.Backward(t.cleanups) {
		f()
	}
}

// ExampleNewRecorder records the application's own buses, with their
// real handlers.
func ExampleNewRecorder() {
	t := &exampleT{} // the test's *testing.T
	defer t.end()
	rec := cqrstest.NewRecorder(t)
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(rec))
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(rec))
	events := cqrs.NewEventBus(cqrs.WithIdentity(), cqrs.WithInterceptors(rec))
	wire(t, commands, queries, events) // the application's handlers
	cqrstest.Sink[OrderPlaced](t, events)

	ctx := context.Background()
	id, _ := cqrs.Send(ctx, commands, PlaceOrder{Customer: "ada", Items: []string{"tea"}})
	_, _ = cqrs.Ask(ctx, queries, GetOrder{ID: id})

	fmt.Printf("%+v\n", cqrstest.Sent[PlaceOrder](rec))
	fmt.Printf("%+v\n", cqrstest.Asked[GetOrder](rec))
	fmt.Printf("%+v\n", cqrstest.Published[OrderPlaced](rec))
	// Output:
	// [{Command:{} Customer:ada Items:[tea]}]
	// [{Query:{} ID:1}]
	// [{Event:{} Order:1 Customer:ada Items:[tea]}]
}

func ExampleSent() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	ctx := context.Background()
	_, _ = cqrs.Send(ctx, h.Commands, PlaceOrder{Customer: "ada", Items: []string{"tea"}})
	_, _ = cqrs.Send(ctx, h.Commands, PlaceOrder{Customer: "bob"}) // fails: no items
	_, _ = cqrs.Send(ctx, h.Commands, CancelOrder{Order: 1})

	for _, c := range cqrstest.Sent[PlaceOrder](h) {
		fmt.Println(c.Customer, c.Items)
	}
	fmt.Println(len(cqrstest.Sent[CancelOrder](h)))
	// Output:
	// ada [tea]
	// bob []
	// 1
}

func ExampleAsked() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	cqrstest.Returns[GetOrder](t, h.Queries, Order{ID: 1, Customer: "ada"})
	_, _ = cqrs.Ask(context.Background(), h.Queries, GetOrder{ID: 1})
	fmt.Printf("%+v\n", cqrstest.Asked[GetOrder](h))
	// Output:
	// [{Query:{} ID:1}]
}

func ExamplePublished() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	for _, name := range []string{"email", "stock"} {
		_, _ = cqrs.Subscribe(h.Events, name, func(context.Context, OrderPlaced) error { return nil })
	}
	ctx := context.Background()
	_ = cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 1})
	_ = cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 2})

	// Two publishes, each delivered to two subscribers.
	for _, e := range cqrstest.Published[OrderPlaced](h) {
		fmt.Println("order", e.Order)
	}
	// Output:
	// order 1
	// order 2
}

func ExampleDelivered() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	_, _ = cqrs.Subscribe(h.Events, "email", func(context.Context, OrderPlaced) error { return nil })
	_, _ = cqrs.Subscribe(h.Events, "stock", func(context.Context, OrderPlaced) error { return nil })
	cqrstest.On[OrderPlaced](h.Faults).To("stock").Nth(1).Fail(errors.New("warehouse down"))
	ctx := context.Background()
	_ = cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 1})
	_ = cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 2})

	for _, e := range cqrstest.Delivered[OrderPlaced](h, "stock") {
		fmt.Println("stock: order", e.Order)
	}
	for _, c := range cqrstest.Calls[OrderPlaced](h) {
		if c.Err != nil {
			fmt.Printf("order %d to %s: %v\n", c.Message.Order, c.Spec.Subscriber, c.Err)
		}
	}
	// Output:
	// stock: order 1
	// stock: order 2
	// order 1 to stock: warehouse down
}

func ExampleCalls() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	ctx := context.Background()
	_, _ = cqrs.Send(ctx, h.Commands, PlaceOrder{Customer: "ada", Items: []string{"tea"}})
	_, _ = cqrs.Send(ctx, h.Commands, PlaceOrder{Customer: "bob"})

	for _, c := range cqrstest.Calls[PlaceOrder](h) {
		fmt.Println(c.Message.Customer, c.Done, c.Result, c.Err, c.HasIdentity)
	}
	// Output:
	// ada true 1 <nil> true
	// bob true 0 an order needs items true
}

// ExampleAwaitPublished waits for the asynchronous strategy's worker to
// deliver the events, with no Close and no sleep.
func ExampleAwaitPublished() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()))
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.Sink[OrderPlaced](t, h.Events)
	for _, c := range []string{"ada", "bob"} {
		_, _ = cqrs.Send(context.Background(), h.Commands, PlaceOrder{Customer: c, Items: []string{"tea"}})
	}

	for _, e := range cqrstest.AwaitPublished[OrderPlaced](h, 2) {
		fmt.Println(e.Order, e.Customer)
	}
	// Output:
	// 1 ada
	// 2 bob
}

// ExampleRecorder_Await waits until a subscriber running on the
// asynchronous strategy's worker has done its work.
func ExampleRecorder_Await() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()))
	_, _ = cqrs.Subscribe(h.Events, "email", func(context.Context, OrderPlaced) error { return nil })
	for i := range 3 {
		_ = cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: OrderID(i + 1)})
	}

	h.Recorder.Await(func() bool { return len(cqrstest.Delivered[OrderPlaced](h, "email")) == 3 })
	fmt.Println(cqrstest.Delivered[OrderPlaced](h, "email")[2].Order)
	// Output:
	// 3
}

// ExampleRecorder_SetTimeout shortens the waits, here to report at once
// that what is waited for has not come.
func ExampleRecorder_SetTimeout() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	h.Recorder.SetTimeout(time.Millisecond)
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.Sink[OrderPlaced](t, h.Events)
	h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).
		Then(OrderPlaced{Order: 1, Customer: "ada", Items: []string{"tea"}}, OrderPlaced{Order: 2})
	// Output:
	// FAIL: cqrstest: When cqrstest_test.PlaceOrder{Command:{} Customer:ada Items:[tea]}: the events published differ (-want +got):
	//   cqrstest_test.OrderPlaced{Event:{} Order:1 Customer:ada Items:[tea]}
	// - cqrstest_test.OrderPlaced{Event:{} Order:2 Customer: Items:[]}
}

func ExampleHarness_Await() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()))
	wire(t, h.Commands, h.Queries, h.Events)
	placed := cqrstest.Sink[OrderPlaced](t, h.Events)
	_, _ = cqrs.Send(context.Background(), h.Commands, PlaceOrder{Customer: "ada", Items: []string{"tea"}})

	h.Await(func() bool { return len(placed.Received()) == 1 })
	fmt.Println(placed.Received()[0].Customer)
	// Output:
	// ada
}

func ExampleStub() {
	t := &exampleT{}
	defer t.end()
	commands := cqrs.NewCommandBus()
	place := cqrstest.Stub(t, commands, func(_ context.Context, c PlaceOrder) (OrderID, error) {
		return OrderID(len(c.Items)), nil
	})

	id, err := cqrs.Send(context.Background(), commands, PlaceOrder{Items: []string{"tea", "cup"}})
	fmt.Println(id, err, len(place.Received()))
	// Output:
	// 2 <nil> 1
}

func ExampleReturns() {
	t := &exampleT{}
	defer t.end()
	commands := cqrs.NewCommandBus()
	place := cqrstest.Returns[PlaceOrder](t, commands, OrderID(7))

	id, err := cqrs.Send(context.Background(), commands, PlaceOrder{Customer: "ada"})
	fmt.Println(id, err)
	fmt.Printf("%+v\n", place.Received())
	// Output:
	// 7 <nil>
	// [{Command:{} Customer:ada Items:[]}]
}

func ExampleFails() {
	t := &exampleT{}
	defer t.end()
	queries := cqrs.NewQueryBus()
	errWarehouseDown := errors.New("warehouse down")
	cqrstest.Fails[GetOrder](t, queries, errWarehouseDown)

	_, err := cqrs.Ask(context.Background(), queries, GetOrder{ID: 1})
	fmt.Println(errors.Is(err, errWarehouseDown))
	// Output:
	// true
}

func ExampleSink() {
	t := &exampleT{}
	defer t.end()
	events := cqrs.NewEventBus()
	placed := cqrstest.Sink[OrderPlaced](t, events)

	_ = cqrs.Publish(context.Background(), events, OrderPlaced{Order: 1, Customer: "ada"})
	fmt.Printf("%+v\n", placed.Received())
	fmt.Println(events.Specs()[0])
	// Output:
	// [{Event:{} Order:1 Customer:ada Items:[]}]
	// event cqrstest_test.OrderPlaced to cqrstest-sink
}

func ExampleStubbed_Received() {
	t := &exampleT{}
	defer t.end()
	commands := cqrs.NewCommandBus()
	cancel := cqrstest.Returns[CancelOrder](t, commands, cqrs.NoResult{})
	for _, id := range []OrderID{3, 5} {
		_, _ = cqrs.Send(context.Background(), commands, CancelOrder{Order: id})
	}
	for _, c := range cancel.Received() {
		fmt.Println("cancel", c.Order)
	}
	// Output:
	// cancel 3
	// cancel 5
}

// ExampleNewHarness tests the order service on a harness's buses: its
// command handler publishes an event that a sink receives.
func ExampleNewHarness() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.Sink[OrderPlaced](t, h.Events)

	h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).
		Then(OrderPlaced{Order: 1, Customer: "ada", Items: []string{"tea"}}).
		ThenReturns(OrderID(1))
	fmt.Println("passed")
	// Output:
	// passed
}

func ExampleHarness_Given() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)

	h.Given(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).
		When(GetOrder{ID: 1}).
		ThenReturns(Order{ID: 1, Customer: "ada", Items: []string{"tea"}})
	fmt.Println("passed")
	// Output:
	// passed
}

func ExampleHarness_When() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	out := h.When(PlaceOrder{Customer: "ada"})
	fmt.Println(out.Result(), out.Err())
	// Output:
	// 0 an order needs items
}

// ExampleScenario_When dispatches the given messages once, at the first
// When.
func ExampleScenario_When() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	given := h.Given(PlaceOrder{Customer: "ada", Items: []string{"tea"}})
	given.When(GetOrder{ID: 1}).ThenReturns(Order{ID: 1, Customer: "ada", Items: []string{"tea"}})
	given.When(GetOrder{ID: 2}).ThenError(errNotFound)
	fmt.Println(len(cqrstest.Sent[PlaceOrder](h)))
	// Output:
	// 1
}

// ExampleOutcome_Then shows what a failing Then reports: the events
// expected (-) and got (+), with their types.
func ExampleOutcome_Then() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.Sink[OrderPlaced](t, h.Events)

	h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).
		Then(OrderPlaced{Order: 1, Customer: "bob", Items: []string{"tea"}})
	// Output:
	// FAIL: cqrstest: When cqrstest_test.PlaceOrder{Command:{} Customer:ada Items:[tea]}: the events published differ (-want +got):
	// - cqrstest_test.OrderPlaced{Event:{} Order:1 Customer:bob Items:[tea]}
	// + cqrstest_test.OrderPlaced{Event:{} Order:1 Customer:ada Items:[tea]}
}

// ExampleOutcome_ThenSent tests a policy: a subscriber that cancels the
// orders of a blocked customer.
func ExampleOutcome_ThenSent() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	cqrstest.Returns[CancelOrder](t, h.Commands, cqrs.NoResult{})
	_, _ = cqrs.Subscribe(h.Events, "fraud", func(ctx context.Context, e OrderPlaced) error {
		if e.Customer != "mallory" {
			return nil
		}
		_, err := cqrs.Send(ctx, h.Commands, CancelOrder{Order: e.Order})
		return err
	})

	h.When(OrderPlaced{Order: 4, Customer: "mallory"}).ThenSent(CancelOrder{Order: 4})
	h.When(OrderPlaced{Order: 5, Customer: "ada"}).ThenSent()
	fmt.Println(len(cqrstest.Sent[CancelOrder](h)))
	// Output:
	// 1
}

func ExampleOutcome_ThenReturns() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).ThenReturns(1) // an int, not an OrderID
	// Output:
	// FAIL: cqrstest: When cqrstest_test.PlaceOrder{Command:{} Customer:ada Items:[tea]}: the result differs (-want +got):
	// - int(1)
	// + cqrstest_test.OrderID(1)
}

func ExampleOutcome_ThenError() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	h.When(GetOrder{ID: 9}).ThenError(errNotFound)
	h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).ThenError(nil)
	fmt.Println("passed")
	// Output:
	// passed
}

func ExampleOutcome_Err() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	out := h.When(PlaceOrder{Customer: "ada"})
	fmt.Println(out.Err())
	// Output:
	// an order needs items
}

func ExampleOutcome_Result() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	out := h.Given(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).When(GetOrder{ID: 1})
	order := out.Result().(Order)
	fmt.Println(order.Customer)
	// Output:
	// ada
}

// ExampleNewFaults gives the faults to the application's own bus, after
// the retry under test: the retry sees the injected failures as the
// handler's, and its third attempt succeeds.
func ExampleNewFaults() {
	t := &exampleT{}
	defer t.end()
	faults := cqrstest.NewFaults(t)
	retry := middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond})
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(retry, faults))
	place := cqrstest.Returns[PlaceOrder](t, commands, OrderID(1))
	cqrstest.On[PlaceOrder](faults).First(2).Fail(errors.New("database down"))

	id, err := cqrs.Send(context.Background(), commands, PlaceOrder{})
	fmt.Println(id, err, len(place.Received()))
	// Output:
	// 1 <nil> 1
}

func ExampleOn() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.On[GetOrder](h.Faults).Fail(errors.New("replica down")) // every call

	for range 2 {
		_, err := cqrs.Ask(context.Background(), h.Queries, GetOrder{ID: 1})
		fmt.Println(err)
	}
	// Output:
	// replica down
	// replica down
}

func ExampleFault_Nth() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.On[PlaceOrder](h.Faults).Nth(2).Fail(errors.New("database down"))

	for _, c := range []string{"ada", "bob", "cyd"} {
		_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{Customer: c, Items: []string{"tea"}})
		fmt.Println(c, err)
	}
	// Output:
	// ada <nil>
	// bob database down
	// cyd <nil>
}

func ExampleFault_First() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.On[PlaceOrder](h.Faults).First(2).Fail(errors.New("database down"))

	for range 3 {
		_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{Items: []string{"tea"}})
		fmt.Println(err)
	}
	// Output:
	// database down
	// database down
	// <nil>
}

func ExampleFault_To() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	for _, name := range []string{"email", "stock"} {
		_, _ = cqrs.Subscribe(h.Events, name, func(context.Context, OrderPlaced) error { return nil })
	}
	cqrstest.On[OrderPlaced](h.Faults).To("email").Fail(errors.New("mail server down"))

	err := cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: 1})
	fmt.Println(err)
	// Output:
	// cqrs: event cqrstest_test.OrderPlaced: subscriber email: mail server down
}

func ExampleFault_Fail() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	errDown := errors.New("database down")
	cqrstest.On[CancelOrder](h.Faults).Fail(errDown)

	_, err := cqrs.Send(context.Background(), h.Commands, CancelOrder{Order: 1})
	fmt.Println(errors.Is(err, errDown))
	fmt.Println(cqrstest.Calls[CancelOrder](h)[0].Err) // sent, and failed before its handler
	// Output:
	// true
	// database down
}

func ExampleFault_Panic() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	cqrstest.On[PlaceOrder](h.Faults).Panic("nil map")

	_, err := cqrs.Send(context.Background(), h.Commands, PlaceOrder{Items: []string{"tea"}})
	var pe *cqrs.PanicError
	fmt.Println(errors.Is(err, cqrs.ErrHandlerPanic), errors.As(err, &pe) && pe.Value == "nil map")
	// Output:
	// true true
}

func ExampleFault_Delay() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	place := cqrstest.Returns[PlaceOrder](t, h.Commands, OrderID(1))
	cqrstest.On[PlaceOrder](h.Faults).Delay(time.Hour)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := cqrs.Send(ctx, h.Commands, PlaceOrder{})
	fmt.Println(errors.Is(err, context.DeadlineExceeded), len(place.Received()))
	// Output:
	// true 0
}

// ExampleFault_Duplicate tests a consumer that handles each message once,
// keyed by the ID of its identity: the event delivered twice, with the
// same identity, is handled once.
func ExampleFault_Duplicate() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	var ids []string
	receipts := 0
	_, _ = cqrs.Subscribe(h.Events, "email", func(ctx context.Context, e OrderPlaced) error {
		id, _ := cqrs.IdentityOf(ctx)
		if !slices.Contains(ids, id.ID) {
			receipts++
		}
		ids = append(ids, id.ID)
		return nil
	})
	cqrstest.On[OrderPlaced](h.Faults).Duplicate()

	_ = cqrs.Publish(context.Background(), h.Events, OrderPlaced{Order: 1})
	fmt.Println(len(ids), ids[0] == ids[1], receipts)
	// Output:
	// 2 true 1
}

func ExampleFault_Hits() {
	t := &exampleT{}
	defer t.end()
	h := cqrstest.NewHarness(t)
	wire(t, h.Commands, h.Queries, h.Events)
	fault := cqrstest.On[PlaceOrder](h.Faults).Nth(2).Fail(errors.New("database down"))
	_, _ = cqrs.Send(context.Background(), h.Commands, PlaceOrder{Items: []string{"tea"}})
	fmt.Println(fault.Hits())
	// Output:
	// 0
}
