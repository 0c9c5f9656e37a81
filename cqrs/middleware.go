package cqrs

import (
	"context"
	"fmt"
	"reflect"
)

// Middleware decorates the handler of one message type. It is applied once,
// when the handler is registered with [Register], never per call: the
// decorated handler it returns is what every dispatch calls. Middleware sees
// the typed message and result, so it costs no boxing.
//
// Given to [Register] in the order m1, m2, m3, middleware runs as
// m1(m2(m3(handler))): the first listed is the outermost.
type Middleware[C, R any] func(next Handler[C, R]) Handler[C, R]

// Interceptor is middleware for a whole bus, given with [WithInterceptors],
// or for one handler, given to [Register] through [Intercept]. It cannot be
// generic over every message type, so it sees each dispatch as a [Call]:
// the message's [Spec], and the message and result boxed only if it asks
// for them.
//
// Like [Middleware], an interceptor is applied once per message type, when
// the handler is registered: it is called with the type's Spec, so it can
// set up what it keeps per message type (a circuit breaker, a rate limiter,
// precomputed log attributes) there, and the [Invoker] it returns is what
// dispatches of that type call. All the interceptors of one dispatch share
// one Call, which costs one allocation per dispatch however many
// interceptors there are.
type Interceptor func(spec Spec, next Invoker) Invoker

// Invoker runs the rest of a dispatch: the inner interceptors, the typed
// middleware and the handler. It returns the handler's error; the result is
// then available from [Call.Result].
type Invoker func(ctx context.Context, call Call) error

// Spec describes a registered message type.
type Spec struct {
	// Kind is the kind of the bus the type is registered on.
	Kind Kind
	// Name is the message's name: see [Register].
	Name string
	// MessageType is the message's Go type.
	MessageType reflect.Type
	// ResultType is the Go type of the handler's result.
	ResultType reflect.Type
}

// String returns the kind and name, such as "command orders.PlaceOrder".
func (s Spec) String() string { return s.Kind.String() + " " + s.Name }

// specOf returns the Spec of message type C with result R on a bus of the
// given kind.
func specOf[C, R any](kind Kind) *Spec {
	t := reflect.TypeFor[C]()
	return &Spec{Kind: kind, Name: nameOf(t, kind), MessageType: t, ResultType: reflect.TypeFor[R]()}
}

// Call is one dispatch as an [Interceptor] sees it. Its methods are safe to
// call from the interceptor's goroutine while the dispatch runs; a Call must
// not be kept after the dispatch returns. Only the bus makes Calls.
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

// call is the one allocation of a dispatch through interceptors.
type call[C, R any] struct {
	spec *Spec
	msg  C
	res  R
}

func (c *call[C, R]) Spec() Spec   { return *c.spec }
func (c *call[C, R]) Message() any { return c.msg }
func (c *call[C, R]) Result() any  { return c.res }
func (c *call[C, R]) sealed()      {}

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
	var kind Kind
	if b != nil {
		kind = b.Kind()
	}
	spec := specOf[C, R](kind)
	return func(next Handler[C, R]) Handler[C, R] {
		h, err := intercept(spec, ics, next)
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
	spec   *Spec
	invoke Invoker
}

func (h *intercepted[C, R]) Handle(ctx context.Context, msg C) (R, error) {
	c := &call[C, R]{spec: h.spec, msg: msg}
	err := h.invoke(ctx, c)
	return c.res, err
}

// intercept builds, once, the chain of interceptors ics around next. The
// first interceptor runs outermost.
func intercept[C, R any](spec *Spec, ics []Interceptor, next Handler[C, R]) (Handler[C, R], error) {
	inv := Invoker(func(ctx context.Context, c Call) error {
		cc, ok := c.(*call[C, R])
		if !ok {
			return fmt.Errorf("cqrs: %s: an interceptor passed on a Call for %s", spec, c.Spec())
		}
		res, err := next.Handle(ctx, cc.msg)
		cc.res = res
		return err
	})
	for i := len(ics) - 1; i >= 0; i-- {
		if ics[i] == nil {
			return nil, fmt.Errorf("%w: %s: interceptor %d is nil", ErrNilHandler, spec, i)
		}
		if inv = ics[i](*spec, inv); inv == nil {
			return nil, fmt.Errorf("%w: %s: interceptor %d returned a nil Invoker", ErrNilHandler, spec, i)
		}
	}
	return &intercepted[C, R]{spec: spec, invoke: inv}, nil
}
