package cqrstest

import (
	"context"
	"testing"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Harness is a command bus, a query bus and an event bus for one test,
// recorded by one [Recorder] and open to one [Faults]: the buses to build
// the application's services on, in a test, as
// MassTransit's test harness and Watermill's in-memory pub/sub are.
//
//	h := cqrstest.NewHarness(t)
//	orders := &Orders{events: h.Events}
//	require.NoError(t, cqrs.Handle(h.Commands, orders.Place))
//	cqrstest.Sink[OrderPlaced](t, h.Events)
//
//	h.When(PlaceOrder{Items: []string{"tea"}}).Then(OrderPlaced{Order: 1, Items: []string{"tea"}})
//
// Every bus is made with the Recorder as its first interceptor, then the
// options given to [NewHarness], then [cqrs.WithIdentity] and Faults as
// its last interceptor. So the Recorder records each dispatch as its
// caller sees it: a command once however often a retry attempts it, a
// delivery to a subscriber as ended once its last attempt has, a call
// that a fault failed as failed. And the interceptors under test (a
// retry, a timeout) see the faults as the handler's own. To record each
// attempt as the handler receives it, give a Recorder of your own among
// the options, after the interceptors under test. The typed readers
// ([Sent], [Published], …) and waits ([AwaitPublished]) take a Harness
// for its Recorder.
//
// When the test ends, the event bus is closed: queued asynchronous events
// are delivered first, and its workers stop.
//
// A Harness is safe for concurrent use, as its buses are; its fields must
// not be changed. It must be made with [NewHarness]: its zero value is
// not usable.
type Harness struct {
	// Commands, Queries and Events are the buses to register the
	// handlers under test on, and to give to the services that send,
	// ask and publish.
	Commands *cqrs.CommandBus
	Queries  *cqrs.QueryBus
	Events   *cqrs.EventBus
	// Recorder records every call on the three buses.
	Recorder *Recorder
	// Faults injects faults into the calls of the three buses.
	Faults *Faults

	t testing.TB
}

// NewHarness returns a Harness for the test t whose buses are made with
// opts, which apply to all three as far as each takes them: an event
// strategy ([cqrs.WithStrategy]) is the event bus's alone, interceptors
// ([cqrs.WithInterceptors]) are every bus's.
func NewHarness(t testing.TB, opts ...cqrs.Option) *Harness {
	t.Helper()
	h := &Harness{Recorder: NewRecorder(t), Faults: NewFaults(t), t: t}
	all := append([]cqrs.Option{cqrs.WithInterceptors(h.Recorder)}, opts...)
	all = append(all, cqrs.WithIdentity(), cqrs.WithInterceptors(h.Faults))
	h.Commands = cqrs.NewCommandBus(all...)
	h.Queries = cqrs.NewQueryBus(all...)
	h.Events = cqrs.NewEventBus(all...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.Recorder.timeoutNow())
		defer cancel()
		if err := h.Events.Close(ctx); err != nil {
			t.Errorf("cqrstest: closing the harness's event bus: %v (a subscriber still running?)", err)
		}
	})
	return h
}

// recording implements [Recording].
func (h *Harness) recording() *Recorder { return h.Recorder }

// Await is the Recorder's [Recorder.Await].
func (h *Harness) Await(cond func() bool) {
	h.t.Helper()
	h.Recorder.Await(cond)
}
