package cqrstest

import (
	"context"
	"fmt"
	"reflect"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Faults injects faults into the calls of chosen message types: it fails
// a call, makes it fail as a panicking handler does, delays it, or
// delivers it twice with the same identity, so that retries, timeouts and
// idempotent consumers can be tested against the real handlers. It is a
// [cqrs.Interceptor]: give it to a bus after the interceptors under test
// (a retry, a timeout), so that they see its faults as the handler's.
//
//	faults := cqrstest.NewFaults(t)
//	events := cqrs.NewEventBus(cqrs.WithIdentity(), cqrs.WithInterceptors(retry, faults))
//	cqrstest.On[OrderPlaced](faults).To("email").Nth(1).Fail(errSMTPDown)
//
// Each fault is set up with [On] and acts on the calls it matches from the
// moment its action ([Fault.Fail], [Fault.Panic], [Fault.Delay],
// [Fault.Duplicate]) is given; a call that no fault acts on goes on
// unchanged. Faults may be added while dispatches run.
//
// Faults is safe for concurrent use. It must be made with [NewFaults]:
// its zero value is not usable.
type Faults struct {
	t      testing.TB
	mu     sync.Mutex
	faults []*Fault
}

// NewFaults returns a Faults with no fault set, which reports mistakes in
// setting one up to t.
func NewFaults(t testing.TB) *Faults { return &Faults{t: t} }

// action is what a fault does to a call.
type action uint8

const (
	actNone action = iota
	actFail
	actPanic
	actDelay
	actDuplicate
)

// Fault is one fault of a [Faults], made by [On] and set up by chaining
// its methods: which calls it matches ([Fault.To], [Fault.Nth],
// [Fault.First]), then what it does to them. Its methods are safe for
// concurrent use. It must be made with [On]: its zero value is not
// usable.
//
// A fault counts the calls it matches, from the moment its action is
// given, for each handler apart: each subscriber of an event has its own
// count, so Nth(1) is the first delivery to each subscriber (unless
// [Fault.To] names one). When several faults act on the same call, the
// one set up first acts; every matching fault counts the call.
type Fault struct {
	f          *Faults
	typ        reflect.Type
	subscriber string
	first      int // the first call acted on, from 1
	last       int // the last, or 0 for no end
	act        action
	err        error
	value      any
	delay      time.Duration
	counts     map[*cqrs.Spec]int // calls matched, per handler
	hits       int
}

// On returns a new fault for the calls of message type M (of every type
// that implements M, if M is an interface) on any bus the [Faults]
// intercepts: every call of M, until narrowed by
// [Fault.To], [Fault.Nth] or [Fault.First]. It does nothing until its
// action is given.
func On[M any](f *Faults) *Fault {
	return &Fault{f: f, typ: reflect.TypeFor[M](), first: 1}
}

// To narrows the fault to the deliveries of an event to the subscriber of
// that name.
func (ft *Fault) To(subscriber string) *Fault {
	ft.f.mu.Lock()
	ft.subscriber = subscriber
	ft.f.mu.Unlock()
	return ft
}

// Nth narrows the fault to the nth call it matches (counted from 1), of
// each handler: cqrstest.On[PlaceOrder](f).Nth(2).Fail(err) fails the
// second. An n below 1 fails the test.
func (ft *Fault) Nth(n int) *Fault {
	ft.f.t.Helper()
	return ft.calls("Nth", n, n, "calls are counted from 1")
}

// First narrows the fault to the first n calls it matches, of each
// handler: cqrstest.On[PlaceOrder](f).First(2).Fail(err) fails two calls,
// and a retry's third attempt succeeds. An n below 1 fails the test.
func (ft *Fault) First(n int) *Fault {
	ft.f.t.Helper()
	return ft.calls("First", 1, n, "n must be 1 or more")
}

// calls narrows the fault to the calls first to last it matches, for
// method, the call that asked, whose argument is last; a last below 1
// fails the test with why and narrows nothing.
func (ft *Fault) calls(method string, first, last int, why string) *Fault {
	ft.f.t.Helper()
	if last < 1 {
		ft.f.t.Errorf("cqrstest: On[%s].%s(%d): %s", ft.typ, method, last, why)
		return ft
	}
	ft.f.mu.Lock()
	ft.first, ft.last = first, last
	ft.f.mu.Unlock()
	return ft
}

// Fail makes each call the fault matches fail with err, without calling
// the handler. A nil err fails the test and sets nothing.
func (ft *Fault) Fail(err error) *Fault {
	ft.f.t.Helper()
	if err == nil {
		ft.f.t.Errorf("cqrstest: On[%s].Fail: the error is nil", ft.typ)
		return ft
	}
	return ft.set(actFail, func() { ft.err = err })
}

// Panic makes each call the fault matches fail as it would if the handler
// panicked with v: with a [*cqrs.PanicError] that matches
// [cqrs.ErrHandlerPanic] (and v, if v is an error), seen as an error by
// the interceptors outside the Faults, as they see a handler's panic. The
// handler is not called.
func (ft *Fault) Panic(v any) *Fault {
	return ft.set(actPanic, func() { ft.value = v })
}

// Delay makes each call the fault matches wait d before the handler is
// called. If the call's context ends first, the call fails with its
// error (context.DeadlineExceeded under a timeout) and the handler is not
// called. In a testing/synctest bubble the wait is in the bubble's time.
func (ft *Fault) Delay(d time.Duration) *Fault {
	return ft.set(actDelay, func() { ft.delay = d })
}

// Duplicate makes each call the fault matches reach the handler twice, one
// after the other, with the same context, and so with the same
// [cqrs.Identity] (none, if the message has none): what a consumer sees
// when a transport delivers a message again because the acknowledgement
// of the first delivery was lost. The call returns the second delivery's
// outcome. A consumer that keys what it has handled by the identity's ID
// ([cqrs.IdentityOf]) can so be tested; give the bus [cqrs.WithIdentity]
// so that every message has one.
func (ft *Fault) Duplicate() *Fault {
	return ft.set(actDuplicate, func() {})
}

// set gives the fault its action, under the lock, and puts it in force
// if this is its first.
func (ft *Fault) set(a action, apply func()) *Fault {
	ft.f.mu.Lock()
	defer ft.f.mu.Unlock()
	apply()
	if ft.act == actNone {
		ft.counts = map[*cqrs.Spec]int{}
		ft.f.faults = append(ft.f.faults, ft)
	}
	ft.act = a
	return ft
}

// Hits returns how many calls the fault has acted on.
func (ft *Fault) Hits() int {
	ft.f.mu.Lock()
	defer ft.f.mu.Unlock()
	return ft.hits
}

// injection is what the fault that acts on one call does to it, copied
// under the lock.
type injection struct {
	act   action
	err   error
	value any
	delay time.Duration
}

// match counts the call of the handler spec describes in every fault that
// matches it, and returns what the first that acts on it does. Each
// handler (each subscriber) has a spec of its own, made when it was
// registered.
func (f *Faults) match(spec *cqrs.Spec) injection {
	f.mu.Lock()
	defer f.mu.Unlock()
	var in injection
	for _, ft := range f.faults {
		if !ft.matches(spec) {
			continue
		}
		ft.counts[spec]++
		n := ft.counts[spec]
		if in.act == actNone && n >= ft.first && (ft.last == 0 || n <= ft.last) {
			ft.hits++
			in = injection{act: ft.act, err: ft.err, value: ft.value, delay: ft.delay}
		}
	}
	return in
}

// matches reports whether the fault is for calls of the handler spec
// describes: of its message type, or of one that implements it if it is
// an interface, and to its subscriber if it names one. f.mu is held.
func (ft *Fault) matches(spec *cqrs.Spec) bool {
	if ft.subscriber != "" && ft.subscriber != spec.Subscriber {
		return false
	}
	if ft.typ.Kind() == reflect.Interface {
		return spec.MessageType != nil && spec.MessageType.Implements(ft.typ)
	}
	return ft.typ == spec.MessageType
}

// Intercept implements [cqrs.Interceptor].
func (f *Faults) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	sp := &spec
	return func(ctx context.Context, c cqrs.Call) error {
		in := f.match(sp)
		switch in.act {
		case actFail:
			return in.err
		case actPanic:
			return &cqrs.PanicError{Message: sp.String(), Value: in.value, Stack: debug.Stack()}
		case actDelay:
			timer := time.NewTimer(in.delay)
			defer timer.Stop()
			select {
			case <-ctx.Done():
				return fmt.Errorf("cqrstest: %s delayed %v: %w", sp, in.delay, context.Cause(ctx))
			case <-timer.C:
			}
		case actDuplicate:
			_ = next(ctx, c) // the first delivery's outcome is lost, as its acknowledgement was
		}
		return next(ctx, c)
	}
}
