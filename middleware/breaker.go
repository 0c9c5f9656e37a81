package middleware

import (
	"context"
	"fmt"
	"iter"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/sony/gobreaker/v2"

	"github.com/typedcqrs/dispatch/cqrs"
)

// DefaultBreakerFailures is the default of every breaker of this package:
// a breaker opens after this many consecutive failures.
const DefaultBreakerFailures = 5

// Breaker is an interceptor that gives each message type its own circuit
// breaker, from github.com/sony/gobreaker/v2: a type whose handler keeps
// failing stops being called for a while, and failing fast spares both the
// caller and what the handler depends on. A failing type never opens
// another type's breaker: breakers are keyed by the message's Go type and
// the bus's kind, never by its printed name, so two types that print alike
// (a/orders.Place and b/orders.Place) have one each.
//
// While a type's breaker is open, and while it is half-open with as many
// probes in flight as the settings allow, its dispatches fail at once with
// an error that wraps [cqrs.ErrCircuitOpen] and gobreaker's own
// [gobreaker.ErrOpenState] or [gobreaker.ErrTooManyRequests]. The breaker
// takes its lock only to decide and to record, never while a handler runs,
// so concurrent calls are not serialised.
//
// Breaker is safe for concurrent use. The zero value is a Breaker with the
// settings of NewBreaker(gobreaker.Settings{}), ready to use; a Breaker
// must not be copied after first use.
type Breaker struct {
	settings gobreaker.Settings

	mu       sync.Mutex
	breakers map[breakerKey]*typeBreaker
}

// breakerKey is the identity of a message type on a kind of bus, and of
// an event's subscriber: each subscriber has a breaker of its own.
type breakerKey struct {
	kind       cqrs.Kind
	typ        reflect.Type
	subscriber string
}

type typeBreaker struct {
	spec cqrs.Spec
	cb   *gobreaker.CircuitBreaker[struct{}]
}

// NewBreaker returns a Breaker whose per-type breakers use st, normalised
// so:
//
//   - Name is set to each breaker's message name.
//   - If st.ReadyToTrip is nil, a breaker opens after
//     [DefaultBreakerFailures] (5) consecutive failures.
//   - If st.IsExcluded is nil, [IsCallerError] is used, so validation
//     failures, missing handlers and the caller's cancellations count
//     neither as failures nor as successes.
//   - The other fields are normalised by gobreaker: if MaxRequests is 0,
//     1 probe goes through when half-open; if Timeout <= 0, a breaker
//     stays open for 60 seconds; if Interval <= 0, the counts are cleared
//     only when the state changes.
func NewBreaker(st gobreaker.Settings) *Breaker {
	return &Breaker{settings: st}
}

// settingsFor returns b's settings for one message type.
func (b *Breaker) settingsFor(spec cqrs.Spec) gobreaker.Settings {
	st := b.settings
	st.Name = spec.Name
	if st.ReadyToTrip == nil {
		st.ReadyToTrip = func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= DefaultBreakerFailures }
	}
	if st.IsExcluded == nil {
		st.IsExcluded = IsCallerError
	}
	return st
}

// Intercept makes the breaker of spec's message type, or reuses it when
// the Breaker serves the same type on another bus of the same kind or in
// another chain.
func (b *Breaker) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	key := breakerKey{kind: spec.Kind, typ: spec.MessageType, subscriber: spec.Subscriber}
	b.mu.Lock()
	if b.breakers == nil {
		b.breakers = make(map[breakerKey]*typeBreaker)
	}
	tb, ok := b.breakers[key]
	if !ok {
		tb = &typeBreaker{spec: spec, cb: gobreaker.NewCircuitBreaker[struct{}](b.settingsFor(spec))}
		b.breakers[key] = tb
	}
	b.mu.Unlock()
	cb := tb.cb

	return func(ctx context.Context, c cqrs.Call) error {
		called := false
		_, err := cb.Execute(func() (struct{}, error) {
			called = true
			return struct{}{}, next(ctx, c)
		})
		if !called && err != nil {
			return fmt.Errorf("%w: %s: %w", cqrs.ErrCircuitOpen, spec, err)
		}
		return err
	}
}

// State returns the state of the breaker of the message type that spec
// describes (by its Kind and MessageType), and false if no such type was
// set up.
func (b *Breaker) State(spec cqrs.Spec) (gobreaker.State, bool) {
	b.mu.Lock()
	tb, ok := b.breakers[breakerKey{kind: spec.Kind, typ: spec.MessageType, subscriber: spec.Subscriber}]
	b.mu.Unlock()
	if !ok {
		return 0, false
	}
	return tb.cb.State(), true
}

// All yields the Spec and state of every breaker, sorted by Spec.String()
// and then by the type's package path. It is what a dashboard or a metrics
// exporter reads: each Spec's Kind, Name and MessageType identify its type
// without parsing a string.
func (b *Breaker) All() iter.Seq2[cqrs.Spec, gobreaker.State] {
	b.mu.Lock()
	all := slices.Collect(maps.Values(b.breakers))
	b.mu.Unlock()
	slices.SortFunc(all, func(x, y *typeBreaker) int {
		if c := strings.Compare(x.spec.String(), y.spec.String()); c != 0 {
			return c
		}
		return strings.Compare(x.spec.MessageType.PkgPath(), y.spec.MessageType.PkgPath())
	})
	return func(yield func(cqrs.Spec, gobreaker.State) bool) {
		for _, tb := range all {
			if !yield(tb.spec, tb.cb.State()) {
				return
			}
		}
	}
}

// States returns the state of every breaker, by kind and message name
// (Spec.String(), such as "command orders.PlaceOrder"). Two types that
// print alike share a key, and only one of their states is kept: use
// [Breaker.All] to tell them apart.
func (b *Breaker) States() map[string]gobreaker.State {
	out := make(map[string]gobreaker.State)
	for spec, state := range b.All() {
		out[spec.String()] = state
	}
	return out
}
