package cqrs

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/typedcqrs/dispatch/internal/stats"
)

// Middleware decorates the handler of one message type. It is applied once,
// when the handler is registered with [Register], never per call: the
// decorated handler it returns is what every dispatch calls. Middleware sees
// the typed message and result, so it costs no boxing.
//
// Given to [Register] in the order m1, m2, m3, middleware runs as
// m1(m2(m3(handler))): the first listed is the outermost.
//
// The returned Handler must be safe to call concurrently. A nil Middleware,
// or one that returns nil, is refused by Register with [ErrNilHandler].
type Middleware[C, R any] func(next Handler[C, R]) Handler[C, R]

// Interceptor is middleware for a whole bus, given with [WithInterceptors],
// or for one handler, given to [Register] through [Intercept]. It is not
// generic, so one value serves every message type: it sees each dispatch
// as a [Call], which has the message's [Spec] and boxes the message or the
// result only if asked.
//
// Like [Middleware], an interceptor is applied once per message type, when
// the handler is registered: Intercept is called with the type's Spec, so
// it can set up what it keeps per message type (a circuit breaker, a rate
// limiter, precomputed log attributes) there, and the [Invoker] it returns
// is what dispatches of that type call. All the interceptors of one
// dispatch share one Call, which the bus reuses from dispatch to dispatch:
// a dispatch through interceptors allocates nothing itself, however many
// there are.
//
// An Interceptor may also have the method
//
//	Enabled(ctx context.Context) bool
//
// When every interceptor of a chain has it and all report false for a
// dispatch, the bus skips the chain and calls the inner handler directly.
// When any reports true the whole chain runs, so an interceptor must still
// check its own condition when invoked. A logger whose level is off is the
// case this serves.
//
// Intercept may be called from several goroutines at once, when handlers
// are registered concurrently, and the returned [Invoker] must be safe to
// call concurrently. A nil Interceptor, or one whose Intercept returns nil,
// is refused by Register with [ErrNilHandler].
type Interceptor interface {
	Intercept(spec Spec, next Invoker) Invoker
}

// InterceptorFunc adapts a function to the [Interceptor] interface; the
// rules of Intercept apply to the function. A nil InterceptorFunc is
// refused as a nil Interceptor is.
type InterceptorFunc func(spec Spec, next Invoker) Invoker

// Intercept calls f(spec, next).
func (f InterceptorFunc) Intercept(spec Spec, next Invoker) Invoker { return f(spec, next) }

// gate is the optional method of an Interceptor.
type gate interface {
	Enabled(ctx context.Context) bool
}

// Invoker runs the rest of a dispatch: the inner interceptors, the typed
// middleware and the handler. It returns the handler's error; the result is
// then available from [Call.Result]. An Invoker is called by every
// dispatch of its message type, so it must be safe to call concurrently.
type Invoker func(ctx context.Context, call Call) error

// Spec describes a registered message type. It is a plain value, safe to
// copy and to share between goroutines; its zero value describes no type
// (its Kind is zero and its MessageType nil).
type Spec struct {
	// Kind is the kind of the bus the type is registered on.
	Kind Kind
	// Name is the message's name: see [Register].
	Name string
	// MessageType is the message's Go type.
	MessageType reflect.Type
	// ResultType is the Go type of the handler's result.
	ResultType reflect.Type
	// Stream is true for a streaming query, registered with
	// [RegisterStream]: its handler yields items of type ResultType, and
	// an interceptor sees the whole stream as one Call whose result is a
	// [StreamSummary].
	Stream bool
	// Subscriber is the name of an event's subscriber, given to
	// [Subscribe]; it is empty for commands and queries. Each subscriber
	// of an event has a Spec of its own.
	Subscriber string
}

// String returns the kind and name, such as "command orders.PlaceOrder",
// and the subscriber of an event: "event orders.OrderPlaced to email".
func (s Spec) String() string {
	if s.Subscriber != "" {
		return s.Kind.String() + " " + s.Name + " to " + s.Subscriber
	}
	return s.Kind.String() + " " + s.Name
}

// SpecFor returns the [Spec] that [Register] gives message type C with
// result R on bus b: what typed middleware needs to name what it decorates.
// A nil b gives a Spec whose Kind is zero.
func SpecFor[C, R any](b Bus) Spec {
	return *specOn(b, reflect.TypeFor[C](), reflect.TypeFor[R]())
}

// Call is one dispatch as an [Interceptor] sees it. Its methods are safe to
// call from the interceptor's goroutine while the dispatch runs. Only the
// bus makes Calls.
//
// A Call must not be kept, nor passed to an [Invoker], after the
// interceptor's own Invoker has returned: the bus reuses it for a later
// dispatch of the same message type, which is how a dispatch through
// interceptors costs no allocation. An interceptor that breaks this rule
// (keeps a Call, or runs next on a goroutine it does not wait for) gets a
// data race, never unsafe memory: every Call is an ordinary Go value, so a
// Call read after its dispatch returned shows the zero message and result,
// or those of a later dispatch of the same type, and an abandoned Invoker
// can run the handler with such a message. The bus keeps the worst of it
// away from other callers: a Call whose handler has started and not yet
// returned when its dispatch returns is never reused, so a late result
// cannot overwrite a later dispatch's.
type Call interface {
	// Spec describes the message's type.
	Spec() Spec
	// Message returns the message, boxed in an interface.
	Message() any
	// Result returns the handler's result, boxed in an interface. Before
	// the inner [Invoker] has returned it is the zero value.
	Result() any

	sealed()
}

// callState is a dispatch through interceptors as they see it: the Call.
// It does not depend on the message and result types, so its methods are
// compiled once, not once for each message type; the typed message and
// result are in the slot it is part of.
type callState struct {
	spec *Spec
	self any                             // the *slot[C, R] this is part of
	box  func(self any, result bool) any // boxes a slot's message, or its result
	// busy is set while the inner Invoker runs the handler: a call still
	// busy when its dispatch returns was handed to a goroutine that
	// outlived the dispatch, and is left to the garbage collector.
	busy bool
	// A call is never compared: this spares the compiler an equality
	// function.
	_ [0]func()
}

func (c *callState) Spec() Spec   { return *c.spec }
func (c *callState) Message() any { return c.box(c.self, false) }
func (c *callState) Result() any  { return c.box(c.self, true) }
func (c *callState) sealed()      {}

// slot is a Call with its typed message and result. A chain keeps the
// slots no dispatch is using in its free list (see intercepted), so a
// dispatch does not allocate one.
type slot[C, R any] struct {
	cs  callState // a field, not embedded: a slot needs no methods
	msg C
	res R
}

// Intercept returns [Middleware] that runs ics, the first listed outermost,
// around one handler: the way to give interceptors to a single [Register]
// call rather than to the whole bus. b is the bus the middleware is for;
// it gives the interceptors the right [Spec].
//
//	err := cqrs.Register(commands, charge, cqrs.Intercept[Charge, Receipt](commands, breaker))
//
// Register reports a nil interceptor, or one that returns a nil Invoker, as
// an error wrapping [ErrNilHandler]; the middleware panics with that error
// if it is used outside Register.
func Intercept[C, R any](b Bus, ics ...Interceptor) Middleware[C, R] {
	spec := SpecFor[C, R](b)
	return func(next Handler[C, R]) Handler[C, R] {
		h, err := intercept(&spec, ics, next, nil)
		if err != nil {
			panic(buildError{err})
		}
		return h
	}
}

// buildError carries an error out of a Middleware, which cannot return
// one, to Register, which recovers it.
type buildError struct{ err error }

// intercepted is a typed handler that runs a chain of interceptors around
// next.
type intercepted[C, R any] struct {
	// free recycles the Calls of finished dispatches, each part of a
	// *slot[C, R]. It comes first, so that its writes share no cache
	// line with the fields every dispatch reads.
	free   freeList
	spec   *Spec
	invoke Invoker
	next   Handler[C, R]
	gates  []gate // every interceptor's gate, or nil if one has none
	box    func(self any, result bool) any
}

// freeList keeps the Calls of one chain that no dispatch is using. A Call
// cannot live on the dispatcher's stack, since the interceptors it is
// passed to are opaque, but the Call contract lets the bus reuse it once
// its dispatch has returned.
//
// A dispatch takes a Call from one of a few slots, each in a cache line of
// its own, chosen by the address of the dispatching goroutine's stack, and
// puts it back there: one atomic swap each way, cheaper than a sync.Pool,
// and goroutines on different processors seldom write the same line. A
// dispatch that finds its slot empty, because another goroutine of the
// same slot has its Call, takes one from spare, a sync.Pool, and one that
// finds it full gives its Call to spare, so that no goroutine allocates
// when many run at once.
type freeList struct {
	slots [freeSlots]freeSlot
	spare sync.Pool
}

const (
	freeSlotBits = 3
	freeSlots    = 1 << freeSlotBits
)

type freeSlot struct {
	cs atomic.Pointer[callState]
	_  [56]byte // one slot per cache line
}

// slotOf picks the slot of the goroutine whose stack holds probe: two
// goroutines that share a slot only make its slow path run.
func slotOf(probe *byte) uint64 {
	return stats.StackHash(probe) >> (64 - freeSlotBits)
}

// getSpare is the slow path of taking a free Call, when the slot of the
// dispatching goroutine is empty: it returns one from spare, or nil.
func (f *freeList) getSpare() *callState {
	cs, _ := f.spare.Get().(*callState)
	return cs
}

// putSpare is the slow path of giving back cs, when the slot of the
// dispatching goroutine is full.
func (f *freeList) putSpare(cs *callState) { f.spare.Put(cs) }

// intercept builds, once, the chain of interceptors ics around next. The
// first interceptor runs outermost. With a non-nil catch, the chain's
// innermost Invoker recovers next's panic, so that every interceptor sees
// it as an error (a handler under typed middleware has a recovering layer
// of its own instead).
func intercept[C, R any](spec *Spec, ics []Interceptor, next Handler[C, R], catch *entry) (Handler[C, R], error) {
	// The innermost Invoker calls the typed handler with the Call's
	// message and stores its result in the Call. A HandlerFunc is called
	// as a function, as a route calls one.
	fn, _ := next.(HandlerFunc[C, R])
	inner := func(ctx context.Context, c Call) (err error) {
		var s *slot[C, R]
		if cs, ok := c.(*callState); ok && cs != nil {
			s, _ = cs.self.(*slot[C, R])
		}
		if s == nil {
			return foreignCall(spec, c)
		}
		// returned is this call's own "the handler returned" flag: busy
		// is the Call's, shared by every run of next on it, and a run
		// that the handler made of it again (the Call contract allows
		// it while the interceptor's Invoker runs) clears busy before
		// the outer run has returned.
		returned := false
		if catch != nil {
			// recover is called only when the handler did not return:
			// a call to it costs a dispatch as much as a map read.
			defer func() {
				if returned {
					return
				}
				// A panic leaves the zero result, not that of an
				// earlier run on the same Call (a retry's).
				var zr R
				s.res, s.cs.busy = zr, false
				if v := recover(); v != nil {
					err = panicked(ctx, catch.log, catch.spec, v)
				}
			}()
		}
		s.cs.busy = true
		if fn != nil {
			s.res, err = fn(ctx, s.msg)
		} else {
			s.res, err = next.Handle(ctx, s.msg)
		}
		s.cs.busy = false
		returned = true
		return err
	}
	inv, gates, err := chain(spec, ics, inner)
	if err != nil {
		return nil, err
	}
	// One function boxes the message or result of every slot of the
	// chain, made here once rather than for each slot.
	box := func(self any, result bool) any {
		s := self.(*slot[C, R])
		if result {
			return s.res
		}
		return s.msg
	}
	return &intercepted[C, R]{spec: spec, invoke: inv, next: next, gates: gates, box: box}, nil
}

func (h *intercepted[C, R]) Handle(ctx context.Context, msg C) (R, error) {
	if h.gates != nil && !anyEnabled(ctx, h.gates) {
		return h.next.Handle(ctx, msg)
	}
	var probe byte
	i := slotOf(&probe)
	// The fast paths of the free list are written here rather than in
	// methods of it, which the compiler would not inline.
	var s *slot[C, R]
	cs := h.free.slots[i].cs.Swap(nil)
	if cs == nil {
		cs = h.free.getSpare()
	}
	if cs != nil {
		s = cs.self.(*slot[C, R])
	} else {
		s = &slot[C, R]{cs: callState{spec: h.spec, box: h.box}}
		s.cs.self = s
	}
	s.msg = msg
	err := h.invoke(ctx, &s.cs)
	var zr R
	if s.cs.busy {
		// The handler did not return: the Call was abandoned to a
		// goroutine that may still write its result, or the handler's
		// panic (or a middleware's, under typed middleware) was
		// recovered by an interceptor. Either way the result is none,
		// and the Call is left to the garbage collector.
		return zr, err
	}
	res := s.res
	// Keep no message or result alive in the free list.
	var zc C
	s.msg, s.res = zc, zr
	if !h.free.slots[i].cs.CompareAndSwap(nil, &s.cs) {
		h.free.putSpare(&s.cs)
	}
	return res, err
}

func foreignCall(spec *Spec, c Call) error {
	if c == nil {
		return fmt.Errorf("cqrs: %s: an interceptor passed on a nil Call", spec)
	}
	return fmt.Errorf("cqrs: %s: an interceptor passed on a Call for %s", spec, c.Spec())
}

func anyEnabled(ctx context.Context, gates []gate) bool {
	for _, g := range gates {
		if g.Enabled(ctx) {
			return true
		}
	}
	return false
}

// chain applies ics to inner, the last listed first, and collects their
// gates: nil if one has none. It is the part of building a chain that does
// not depend on the message type, so it is compiled once, not once for
// each registered type.
func chain(spec *Spec, ics []Interceptor, inner Invoker) (Invoker, []gate, error) {
	inv := inner
	gates := make([]gate, 0, len(ics))
	for i := len(ics) - 1; i >= 0; i-- {
		if isNilValue(ics[i]) {
			return nil, nil, fmt.Errorf("%w: %s: interceptor %d is nil", ErrNilHandler, spec, i)
		}
		if inv = ics[i].Intercept(*spec, inv); inv == nil {
			return nil, nil, fmt.Errorf("%w: %s: interceptor %d returned a nil Invoker", ErrNilHandler, spec, i)
		}
		if g, ok := ics[i].(gate); ok && gates != nil {
			gates = append(gates, g)
		} else {
			gates = nil
		}
	}
	return inv, gates, nil
}
