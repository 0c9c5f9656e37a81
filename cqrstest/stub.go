package cqrstest

import (
	"context"
	"reflect"
	"sync"
	"testing"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Stubbed is what a stub made by [Stub], [Returns], [Fails] or [Sink]
// received. It is safe for concurrent use; its zero value has received
// nothing.
type Stubbed[M any] struct {
	mu   sync.Mutex
	msgs []M
}

// Received returns, in a new slice, the messages the stub was called with,
// in the order of the calls.
func (s *Stubbed[M]) Received() []M {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]M(nil), s.msgs...)
}

func (s *Stubbed[M]) add(m M) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
}

// Stub registers fn as the handler of the declared message type C on b,
// which may be a command or a query bus, and returns what it receives:
//
//	place := cqrstest.Stub(t, commands, func(_ context.Context, c PlaceOrder) (OrderID, error) {
//		return OrderID(len(c.Items)), nil
//	})
//	…
//	assert.Len(t, place.Received(), 1)
//
// Every type is inferred from fn, as [cqrs.Handle] infers them, and b's
// interceptors run around it as around any handler. It fails the test
// with t.Fatalf if fn is nil or C already has a handler on b. fn must be
// safe to call concurrently if the code under test dispatches
// concurrently.
func Stub[C cqrs.Message[R, B], R any, B cqrs.Bus](t testing.TB, b B, fn func(ctx context.Context, msg C) (R, error)) *Stubbed[C] {
	t.Helper()
	if fn == nil {
		t.Fatalf("cqrstest: stubbing %s: the function is nil", reflect.TypeFor[C]())
		return nil
	}
	s := &Stubbed[C]{}
	if err := cqrs.Handle(b, func(ctx context.Context, msg C) (R, error) {
		s.add(msg)
		return fn(ctx, msg)
	}); err != nil {
		t.Fatalf("cqrstest: stubbing %s: %v", reflect.TypeFor[C](), err)
	}
	return s
}

// Returns registers a stub handler of the declared message type C on b
// that returns result, and returns what it receives. C is written; its
// result type is inferred from result, which must be what C declares:
//
//	place := cqrstest.Returns[PlaceOrder](t, commands, OrderID(7))
//
// It fails the test as [Stub] does.
func Returns[C cqrs.Message[R, B], R any, B cqrs.Bus](t testing.TB, b B, result R) *Stubbed[C] {
	t.Helper()
	return Stub(t, b, func(context.Context, C) (R, error) { return result, nil })
}

// Fails registers a stub handler of the declared message type C on b that
// fails with err, and returns what it receives. C is written; the rest is
// inferred:
//
//	cqrstest.Fails[ChargeCard](t, commands, ErrCardDeclined)
//
// It fails the test as [Stub] does, and if err is nil. To make a real
// handler fail, or fail only its Nth call, see [Faults].
func Fails[C cqrs.Message[R, B], R any, B cqrs.Bus](t testing.TB, b B, err error) *Stubbed[C] {
	t.Helper()
	if err == nil {
		t.Fatalf("cqrstest: Fails[%s]: the error is nil; use Returns for a handler that succeeds", reflect.TypeFor[C]())
		return nil
	}
	return Stub(t, b, func(context.Context, C) (R, error) {
		var zero R
		return zero, err
	})
}

// SinkName is the name of the subscriber [Sink] subscribes.
const SinkName = "cqrstest-sink"

// Sink subscribes to the declared event type E on b a subscriber named
// [SinkName] that only takes note of each event, and returns what it
// receives. A [Recorder] sees an event only as it is delivered: Sink gives
// an event that the code under test publishes, and nothing else in the
// test subscribes to, a subscriber to be delivered to.
//
//	placed := cqrstest.Sink[OrderPlaced](t, events)
//
// The subscription is cancelled when the test ends. Sink fails the test
// with t.Fatalf if b already has a sink for E.
func Sink[E cqrs.Message[cqrs.NoResult, *cqrs.EventBus]](t testing.TB, b *cqrs.EventBus) *Stubbed[E] {
	t.Helper()
	s := &Stubbed[E]{}
	sub, err := cqrs.Subscribe(b, SinkName, func(_ context.Context, evt E) error {
		s.add(evt)
		return nil
	})
	if err != nil {
		t.Fatalf("cqrstest: Sink[%s]: %v", reflect.TypeFor[E](), err)
		return nil
	}
	t.Cleanup(sub.Cancel)
	return s
}
