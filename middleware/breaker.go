package middleware

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"github.com/sony/gobreaker/v2"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Breaker is an interceptor that gives each message type its own circuit
// breaker, from github.com/sony/gobreaker/v2: a type whose handler keeps
// failing stops being called for a while, and failing fast spares both the
// caller and what the handler depends on. A failing type never opens
// another type's breaker.
//
// While a type's breaker is open, and while it is half-open with as many
// probes in flight as the settings allow, its dispatches fail at once with
// an error that wraps [cqrs.ErrCircuitOpen] and gobreaker's own
// [gobreaker.ErrOpenState] or [gobreaker.ErrTooManyRequests]. The breaker
// takes its lock only to decide and to record, never while a handler runs,
// so concurrent calls are not serialised.
//
// Breaker is safe for concurrent use. Make one with [NewBreaker].
type Breaker struct {
	settings gobreaker.Settings

	mu       sync.Mutex
	breakers map[string]*gobreaker.CircuitBreaker[struct{}] // by Spec.String()
}

// NewBreaker returns a Breaker whose per-type breakers use st, with these
// changes: each breaker's Name is its message's name, and a nil
// st.IsExcluded becomes [IsCallerError], so validation failures, missing
// handlers and the caller's cancellations neither count as failures nor
// as successes. The other defaults are gobreaker's: trip after more than 5
// consecutive failures, stay open for 60 seconds, let 1 probe through when
// half-open.
func NewBreaker(st gobreaker.Settings) *Breaker {
	if st.IsExcluded == nil {
		st.IsExcluded = IsCallerError
	}
	return &Breaker{settings: st, breakers: make(map[string]*gobreaker.CircuitBreaker[struct{}])}
}

// Intercept makes the breaker of spec's message type, or reuses it when
// the Breaker serves the same type on another bus or in another chain.
func (b *Breaker) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	st := b.settings
	st.Name = spec.Name
	b.mu.Lock()
	cb, ok := b.breakers[spec.String()]
	if !ok {
		cb = gobreaker.NewCircuitBreaker[struct{}](st)
		b.breakers[spec.String()] = cb
	}
	b.mu.Unlock()

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
// describes, and false if no such type was set up.
func (b *Breaker) State(spec cqrs.Spec) (gobreaker.State, bool) {
	b.mu.Lock()
	cb, ok := b.breakers[spec.String()]
	b.mu.Unlock()
	if !ok {
		return 0, false
	}
	return cb.State(), true
}

// States returns the state of every breaker, by kind and message name
// (Spec.String(), such as "command orders.PlaceOrder").
func (b *Breaker) States() map[string]gobreaker.State {
	b.mu.Lock()
	breakers := maps.Clone(b.breakers)
	b.mu.Unlock()
	out := make(map[string]gobreaker.State, len(breakers))
	for name, cb := range breakers {
		out[name] = cb.State()
	}
	return out
}
