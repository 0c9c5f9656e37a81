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

// Interceptor is middleware for a whole bus, given with [WithInterceptors].
// It cannot be generic over every message type, so it sees each dispatch as
// a [Call]: the message's kind, name and types, and the message and result
// boxed only if it asks for them.
//
// Like [Middleware], an interceptor is applied once per message type, when
// the handler is registered; the [Invoker] it returns is what dispatches of
// that type call. All the interceptors of one dispatch share one Call, which
// costs one allocation per dispatch however many interceptors there are.
type Interceptor func(next Invoker) Invoker

// Invoker runs the rest of a dispatch: the inner interceptors, the typed
// middleware and the handler. It returns the handler's error; the result is
// then available from [Call.Result].
type Invoker func(ctx context.Context, call Call) error

// Call is one dispatch as an [Interceptor] sees it. Its methods are safe to
// call from the interceptor's goroutine while the dispatch runs; a Call must
// not be kept after the dispatch returns. Only the bus makes Calls.
type Call interface {
	// Kind is the kind of the bus the message was sent on.
	Kind() Kind
	// Name is the message's name: see [Register].
	Name() string
	// MessageType is the message's Go type.
	MessageType() reflect.Type
	// ResultType is the Go type of the handler's result.
	ResultType() reflect.Type
	// Message returns the message, boxed in an interface.
	Message() any
	// Result returns the handler's result, boxed in an interface. Before
	// the inner [Invoker] has returned it is the zero value.
	Result() any

	sealed()
}

// info describes one registered message type. It is computed once at
// registration and shared, read-only, by every dispatch of that type.
type info struct {
	kind    Kind
	name    string
	msgType reflect.Type
	resType reflect.Type
}

// String returns the kind and name, such as "command orders.PlaceOrder".
func (in *info) String() string { return in.kind.String() + " " + in.name }

// call is the one allocation of a dispatch through interceptors.
type call[C, R any] struct {
	info *info
	msg  C
	res  R
}

func (c *call[C, R]) Kind() Kind                { return c.info.kind }
func (c *call[C, R]) Name() string              { return c.info.name }
func (c *call[C, R]) MessageType() reflect.Type { return c.info.msgType }
func (c *call[C, R]) ResultType() reflect.Type  { return c.info.resType }
func (c *call[C, R]) Message() any              { return c.msg }
func (c *call[C, R]) Result() any               { return c.res }
func (c *call[C, R]) sealed()                   {}

// intercepted is a typed handler that runs a chain of interceptors around
// next.
type intercepted[C, R any] struct {
	info   *info
	invoke Invoker
}

func (h *intercepted[C, R]) Handle(ctx context.Context, msg C) (R, error) {
	c := &call[C, R]{info: h.info, msg: msg}
	err := h.invoke(ctx, c)
	return c.res, err
}

// intercept builds, once, the chain of interceptors ics around next. The
// first interceptor runs outermost.
func intercept[C, R any](in *info, ics []Interceptor, next Handler[C, R]) (Handler[C, R], error) {
	inv := Invoker(func(ctx context.Context, c Call) error {
		cc, ok := c.(*call[C, R])
		if !ok {
			return fmt.Errorf("cqrs: %s: an interceptor passed on a Call for %s", in, c.MessageType())
		}
		res, err := next.Handle(ctx, cc.msg)
		cc.res = res
		return err
	})
	for i := len(ics) - 1; i >= 0; i-- {
		if ics[i] == nil {
			return nil, fmt.Errorf("%w: %s: interceptor %d is nil", ErrNilHandler, in, i)
		}
		if inv = ics[i](inv); inv == nil {
			return nil, fmt.Errorf("%w: %s: interceptor %d returned a nil Invoker", ErrNilHandler, in, i)
		}
	}
	return &intercepted[C, R]{info: in, invoke: inv}, nil
}
