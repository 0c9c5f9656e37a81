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
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/typedcqrs/dispatch/cqrs"
)

// DefaultBreakerFailures is the default of every breaker of this package:
// a breaker opens after this many consecutive failures.
const DefaultBreakerFailures = 5

// BreakerState is the state of one circuit breaker: [BreakerClosed],
// [BreakerHalfOpen] or [BreakerOpen], whose String method says "closed",
// "half-open" and "open". It is gobreaker's state under a name of this
// package, so that a service reads and compares states without importing
// gobreaker, and code written against gobreaker.State still compiles.
type BreakerState = gobreaker.State

// The states of a circuit breaker.
const (
	// BreakerClosed lets every dispatch through and counts failures.
	BreakerClosed BreakerState = gobreaker.StateClosed
	// BreakerHalfOpen lets a few probes through: their successes close
	// the breaker, a failure opens it again.
	BreakerHalfOpen BreakerState = gobreaker.StateHalfOpen
	// BreakerOpen refuses every dispatch until its open time is over.
	BreakerOpen BreakerState = gobreaker.StateOpen
)

// BreakerConfig configures [CircuitBreaker], and the breaker of a
// [Config]. A field left zero takes the default its comment gives, so the
// zero BreakerConfig opens a breaker after 5 consecutive failures, keeps
// it open for 60s, then lets 1 probe through. [CircuitBreaker] never
// refuses a setting: it gives a value out of range the same default; a
// [Config] refuses one instead (see [Config.Validate]).
//
// A BreakerConfig is a plain value; its functions must be safe to call
// concurrently.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker when this many dispatches in
	// a row have failed. If it is 0, [DefaultBreakerFailures] (5) is used.
	ConsecutiveFailures uint32 `yaml:"consecutive_failures" json:"consecutive_failures"`
	// OpenTimeout is how long the breaker stays open before it lets probes
	// through. If it is 0 or less, 60s is used.
	OpenTimeout time.Duration `yaml:"open_timeout" json:"open_timeout"`
	// HalfOpenRequests is how many probes may be in flight while half-open;
	// that many successes close the breaker. If it is 0, 1 is used.
	HalfOpenRequests uint32 `yaml:"half_open_requests" json:"half_open_requests"`
	// Interval, if positive, clears the counts this often while the
	// breaker is closed. If it is 0 or less, the counts are cleared only
	// when the breaker changes state.
	Interval time.Duration `yaml:"interval" json:"interval"`
	// IsExcluded reports the errors that count neither as failures nor as
	// successes. If it is nil, [IsCallerError] is used, so a message that
	// failed validation, a missing handler, the caller's cancellation and
	// a handler's [Permanent] error say nothing about the handler's health.
	IsExcluded func(err error) bool `yaml:"-" json:"-"`
	// OnStateChange, if not nil, is called when the breaker of the message
	// type spec describes changes state, on the goroutine of the dispatch
	// (or of the State, All or States call) that saw it change, while that
	// breaker holds its lock: it must be quick, and must neither dispatch
	// spec's type nor read the Breaker's states, which wait for that lock.
	// Hand the change to another goroutine for anything slow. If it is
	// nil, nothing is called.
	OnStateChange func(spec cqrs.Spec, from, to BreakerState) `yaml:"-" json:"-"`
}

// settings returns the gobreaker settings c describes, but for
// OnStateChange, which the Breaker sets per message type.
func (c BreakerConfig) settings() gobreaker.Settings {
	st := gobreaker.Settings{
		MaxRequests: c.HalfOpenRequests,
		Interval:    c.Interval,
		Timeout:     c.OpenTimeout,
		IsExcluded:  c.IsExcluded,
	}
	if failures := c.ConsecutiveFailures; failures != 0 {
		st.ReadyToTrip = func(counts gobreaker.Counts) bool { return counts.ConsecutiveFailures >= failures }
	}
	return st
}

// Settings returns the gobreaker settings c describes, but for
// OnStateChange, which names a message type rather than a breaker.
//
// Deprecated: give c to [CircuitBreaker], which needs no gobreaker type.
func (c BreakerConfig) Settings() gobreaker.Settings {
	st := c.settings()
	if st.ReadyToTrip == nil {
		st.ReadyToTrip = tripByDefault
	}
	return st
}

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
// settings of CircuitBreaker(BreakerConfig{}), ready to use; a Breaker
// must not be copied after first use.
type Breaker struct {
	settings gobreaker.Settings
	onChange func(spec cqrs.Spec, from, to BreakerState)

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

// CircuitBreaker returns a Breaker whose per-type breakers have the
// settings of cfg, each field left zero or out of range taking the
// default [BreakerConfig] gives it. It cannot fail.
func CircuitBreaker(cfg BreakerConfig) *Breaker {
	return &Breaker{settings: cfg.settings(), onChange: cfg.OnStateChange}
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
//
// Deprecated: use [CircuitBreaker], whose [BreakerConfig] needs no
// gobreaker type. NewBreaker stays for a trip rule other than consecutive
// failures (a ReadyToTrip of your own).
func NewBreaker(st gobreaker.Settings) *Breaker {
	return &Breaker{settings: st}
}

// tripByDefault opens a breaker after DefaultBreakerFailures consecutive
// failures: the trip rule of settings that give none.
func tripByDefault(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= DefaultBreakerFailures }

// settingsFor returns b's settings for one message type.
func (b *Breaker) settingsFor(spec cqrs.Spec) gobreaker.Settings {
	st := b.settings
	st.Name = spec.Name
	if st.ReadyToTrip == nil {
		st.ReadyToTrip = tripByDefault
	}
	if st.IsExcluded == nil {
		st.IsExcluded = IsCallerError
	}
	if onChange := b.onChange; onChange != nil {
		st.OnStateChange = func(_ string, from, to gobreaker.State) { onChange(spec, from, to) }
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
func (b *Breaker) State(spec cqrs.Spec) (BreakerState, bool) {
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
func (b *Breaker) All() iter.Seq2[cqrs.Spec, BreakerState] {
	b.mu.Lock()
	all := slices.Collect(maps.Values(b.breakers))
	b.mu.Unlock()
	slices.SortFunc(all, func(x, y *typeBreaker) int {
		if c := strings.Compare(x.spec.String(), y.spec.String()); c != 0 {
			return c
		}
		return strings.Compare(x.spec.MessageType.PkgPath(), y.spec.MessageType.PkgPath())
	})
	return func(yield func(cqrs.Spec, BreakerState) bool) {
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
func (b *Breaker) States() map[string]BreakerState {
	out := make(map[string]BreakerState)
	for spec, state := range b.All() {
		out[spec.String()] = state
	}
	return out
}
