package cqrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime/debug"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/typedcqrs/dispatch/internal/registry"
	"github.com/typedcqrs/dispatch/internal/stats"
)

// Bus is what the generic entry points take: a [*CommandBus] or a
// [*QueryBus]. The two carry different kinds of message but work alike.
// Only this package implements Bus, and both implementations are safe for
// concurrent use. A nil Bus, or a nil *CommandBus or *QueryBus in one, is
// refused by [Register], the dispatch functions and Execute with
// [ErrNilBus]; its Registered, Metrics and Specs return nil.
type Bus interface {
	// Kind is KindCommand or KindQuery.
	Kind() Kind
	// Registered returns the names of the registered message types, sorted.
	Registered() []string
	// Metrics returns a snapshot of the metrics of each registered message
	// type, sorted by name, or nil when the bus has no metrics.
	Metrics() []MessageMetrics
	// Specs describes the registered message types, sorted by name: what
	// a transport needs to receive them.
	Specs() []Spec
	// Execute dispatches msg, whose dynamic type selects the handler, and
	// returns the handler's result boxed in an interface: see
	// [CommandBus.Execute] and [QueryBus.Execute].
	Execute(ctx context.Context, msg any) (any, error)

	core() *bus
}

// CommandBus dispatches commands, messages that change state, each to the
// one handler registered for its type.
//
// A CommandBus is safe for concurrent use: handlers may be registered while
// other goroutines dispatch. The zero value is a bus with no options, ready
// to use. A CommandBus must not be copied after first use.
type CommandBus struct{ bus }

// NewCommandBus returns an empty command bus configured by opts.
func NewCommandBus(opts ...Option) *CommandBus {
	b := &CommandBus{}
	b.configure(opts)
	return b
}

// Kind returns KindCommand.
func (b *CommandBus) Kind() Kind { return KindCommand }

// Registered returns the names of the registered command types, sorted.
func (b *CommandBus) Registered() []string { return b.core().registered() }

// Metrics returns a snapshot of the metrics of each registered command
// type, sorted by name, or nil when the bus was made without [WithMetrics].
func (b *CommandBus) Metrics() []MessageMetrics { return b.core().metrics() }

// Specs describes the registered command types, sorted by name.
func (b *CommandBus) Specs() []Spec { return b.core().specs() }

// Execute dispatches cmd, whose dynamic type selects the handler, and
// returns the handler's result boxed in an interface (nil when the handler
// failed). It is for callers that only have an any, such as routers and
// transports; callers that know the result type should prefer
// [ExecuteTyped] or [Dispatch]. Its errors are those of [ExecuteTyped].
func (b *CommandBus) Execute(ctx context.Context, cmd any) (any, error) {
	return execute(ctx, b, cmd)
}

// ExecuteCommand is [CommandBus.Execute] under the name it first had.
//
// Deprecated: use [CommandBus.Execute], named as [QueryBus.Execute] is.
func (b *CommandBus) ExecuteCommand(ctx context.Context, cmd any) (any, error) {
	return b.Execute(ctx, cmd)
}

func (b *CommandBus) core() *bus {
	if b == nil {
		return nil
	}
	return &b.bus
}

// QueryBus dispatches queries, messages that read state, each to the one
// handler registered for its type.
//
// A QueryBus is safe for concurrent use: handlers may be registered while
// other goroutines dispatch. The zero value is a bus with no options, ready
// to use. A QueryBus must not be copied after first use.
type QueryBus struct{ bus }

// NewQueryBus returns an empty query bus configured by opts.
func NewQueryBus(opts ...Option) *QueryBus {
	b := &QueryBus{}
	b.configure(opts)
	return b
}

// Kind returns KindQuery.
func (b *QueryBus) Kind() Kind { return KindQuery }

// Registered returns the names of the registered query types, sorted.
func (b *QueryBus) Registered() []string { return b.core().registered() }

// Metrics returns a snapshot of the metrics of each registered query type,
// sorted by name, or nil when the bus was made without [WithMetrics].
func (b *QueryBus) Metrics() []MessageMetrics { return b.core().metrics() }

// Specs describes the registered query types, sorted by name.
func (b *QueryBus) Specs() []Spec { return b.core().specs() }

// Execute dispatches q, whose dynamic type selects the handler, and returns
// the handler's result boxed in an interface (nil when the handler failed).
// It is for callers that only have an any, such as routers and transports;
// callers that know the result type should prefer [ExecuteTyped] or
// [Dispatch]. Its errors are those of [ExecuteTyped].
func (b *QueryBus) Execute(ctx context.Context, q any) (any, error) {
	return execute(ctx, b, q)
}

func (b *QueryBus) core() *bus {
	if b == nil {
		return nil
	}
	return &b.bus
}

// bus is the machinery both kinds of bus share.
type bus struct {
	cfg    config
	routes registry.Registry[*entry]
}

func (c *bus) configure(opts []Option) {
	for _, o := range opts {
		if o != nil {
			o.apply(&c.cfg)
		}
	}
}

func (c *bus) logger() *slog.Logger {
	if c.cfg.logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.cfg.logger
}

func (c *bus) registered() []string {
	if c == nil {
		return nil
	}
	return c.routes.Names()
}

func (c *bus) specs() []Spec {
	if c == nil {
		return nil
	}
	entries := c.routes.Entries()
	out := make([]Spec, len(entries))
	for i, e := range entries {
		out[i] = *e.Value.spec
	}
	return out
}

func (c *bus) metrics() []MessageMetrics {
	if c == nil {
		return nil
	}
	var out []MessageMetrics
	for _, e := range c.routes.Entries() {
		if e.Value.stats != nil {
			m := metricsOf(e.Value.spec, e.Value.stats)
			if e.Value.items != nil {
				m.Items = e.Value.items.Load()
			}
			out = append(out, m)
		}
	}
	return out
}

// entry is what the registry holds for one message type: the parts of its
// route that do not depend on the message and result types, and the typed
// route itself, type-erased for the three kinds of entry point. Everything
// that can be done without the types is done by methods of entry, compiled
// once, rather than by the generic code, compiled again for each message
// type.
type entry struct {
	spec  *Spec
	stats *stats.Stats   // nil when metrics are off
	items *atomic.Uint64 // the items of a streaming query, else nil
	log   *slog.Logger
	nils  nilKind
	ids   bool // the bus gives every message an identity: WithIdentity

	typed   any                                               // *route[C, R], for Dispatch
	exec    any                                               // func(context.Context, any) (R, error), for ExecuteTyped
	untyped func(context.Context, any) (any, error)           // for Execute
	stream  func(context.Context, any, func(any, error) bool) // for ExecuteStream, runs into its yield; nil but for a streaming query
}

// route is the dispatch path of one message type, built by Register. Its
// entry is part of it, so that a dispatch by the entry finds the route in
// the same few cache lines: a round robin over thousands of types misses
// the cache on each object it reads.
type route[C, R any] struct {
	entry
	handler Handler[C, R] // decorated by every middleware and interceptor
	// chain is handler when it is the bus's interceptors, and fn when it
	// is a HandlerFunc. Called directly, they save a dispatch an indirect
	// call and, for a HandlerFunc, a method wrapper of the message type's
	// own that copies the message and the result once more: 6 ns of a
	// 23 ns dispatch of a 40-byte message, and, when many types take
	// turns, the cache misses of reading the itab and the wrapper.
	chain *intercepted[C, R]
	fn    HandlerFunc[C, R]
}

// dispatch runs the message through the route: it checks the message and
// the context, calls the decorated handler, recovers a panic into a
// [*PanicError], and records the outcome when metrics are on.
func (r *route[C, R]) dispatch(ctx context.Context, msg C) (res R, err error) {
	var start time.Duration
	if r.stats != nil {
		start = stats.Now()
	}
	if ctx == nil || isNil(r.nils, unsafe.Pointer(&msg)) {
		return res, r.refuse(ctx, start)
	}
	if err := ctx.Err(); err != nil {
		return res, r.fail(err, start)
	}
	if r.ids || used.Load() {
		ctx = identify(ctx, r.ids)
	}
	// The outermost recovery: with no decorators it is the only one; with
	// them it catches a panic in a middleware or an interceptor, since
	// the handler's own is recovered where it is called (see recovering).
	// A panic leaves res as it was, the zero R. recover is called only
	// when the handler did not return: a call to it costs a dispatch as
	// much as a map read.
	returned := false
	defer func() {
		if !returned {
			if v := recover(); v != nil {
				err = panicked(ctx, r.log, r.spec, v)
			}
		}
		if r.stats != nil {
			r.stats.Record(stats.Now()-start, err != nil)
		}
	}()
	switch {
	case r.fn != nil:
		res, err = r.fn(ctx, msg)
	case r.chain != nil:
		res, err = r.chain.Handle(ctx, msg)
	default:
		res, err = r.handler.Handle(ctx, msg)
	}
	returned = true
	return res, err
}

// fail records a dispatch that started at start and failed with err
// before its handler was called, and returns err.
func (e *entry) fail(err error, start time.Duration) error {
	if e.stats != nil {
		e.stats.Record(stats.Now()-start, true)
	}
	return err
}

// refuse explains, and records, a dispatch that started at start and was
// refused for its nil ctx or nil message.
func (e *entry) refuse(ctx context.Context, start time.Duration) error {
	if ctx == nil {
		return e.fail(fmt.Errorf("%w: dispatching %s", ErrNilContext, e.spec), start)
	}
	return e.fail(fmt.Errorf("%w: %s", ErrNilMessage, e.spec), start)
}

// recovering is the innermost layer of a decorated handler: it turns the
// handler's panic into a *PanicError where the handler is called, so every
// middleware and interceptor around it sees an ordinary error. A handler
// with no decorators does without it: the route's own recovery is then
// the only layer, and one defer is all a dispatch pays.
type recovering[C, R any] struct {
	next Handler[C, R]
	fn   HandlerFunc[C, R] // next, when it is one: see route
	e    *entry
	_    [0]func() // never compared: no equality function per type
}

func (h *recovering[C, R]) Handle(ctx context.Context, msg C) (res R, err error) {
	returned := false // see route.dispatch
	defer func() {
		if !returned {
			if v := recover(); v != nil {
				err = panicked(ctx, h.e.log, h.e.spec, v)
			}
		}
	}()
	if h.fn != nil {
		res, err = h.fn(ctx, msg)
	} else {
		res, err = h.next.Handle(ctx, msg)
	}
	returned = true
	return res, err
}

// panicked makes the *PanicError of the panic value v, recovered while
// dispatching a message of spec's type, and logs it with its stack. It
// must be called by the deferred function that recovered v, for the stack
// to be the panicking goroutine's.
func panicked(ctx context.Context, log *slog.Logger, spec *Spec, v any) error {
	pe := &PanicError{Message: spec.String(), Value: v, Stack: debug.Stack()}
	attrs := []slog.Attr{
		slog.String("kind", spec.Kind.String()),
		slog.String("message", spec.Name),
		slog.Any("panic", pe),
	}
	if spec.Subscriber != "" {
		attrs = append(attrs, slog.String("subscriber", spec.Subscriber))
	}
	logAttrs(ctx, log, slog.LevelError, "cqrs: handler panicked", attrs...)
	return pe
}

// logAttrs logs with l, and loses the record if l's handler panics: a
// logger is user code, and its panic must not cross Register or a
// dispatch.
func logAttrs(ctx context.Context, l *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	defer func() { _ = recover() }()
	l.LogAttrs(ctx, level, msg, attrs...)
}

// Register registers h as the handler of messages of type C on bus b,
// decorated by mws (the first listed outermost) inside the bus's
// interceptors. Every decorator is applied here, once; dispatches call the
// finished chain.
//
// A bus has one handler per message type. C and *C are different types: a
// handler registered for *C is found by dispatching a *C, never a C.
// Registering a second handler for C fails with an error wrapping
// [ErrHandlerExists] and changes nothing. C must not be an interface type
// ([ErrInvalidMessageType]). A nil h or middleware, or a middleware that
// returns nil, fails with [ErrNilHandler]; a panic while building the chain
// is returned as a [*PanicError].
//
// The message's name, used in errors, logs and metrics, is its Go type as
// printed by %T, such as "orders.PlaceOrder", unless the type declares one:
// on a command bus with a method CommandName() string, on a query bus with
// QueryName() string (on C or on *C). When another type on the bus already
// has C's %T name (a type of the same name from another package of the
// same name), C is named by its full import path instead, such as
// "github.com/acme/billing/orders.PlaceOrder", so that the two never print
// alike; the type registered first keeps the short name. Two types cannot
// share a declared name, nor two that print alike even with their import
// path (types declared inside functions): the second fails with
// [ErrHandlerExists]. Whatever its name, [Spec.Key] identifies the type.
//
// Register is safe to call while other goroutines dispatch on b.
func Register[C, R any](b Bus, h Handler[C, R], mws ...Middleware[C, R]) error {
	// Only what needs C or R is written here, since this function is
	// compiled again for every message type: the checks, the naming and
	// the publishing are in prepare and publish, compiled once.
	t := reflect.TypeFor[C]()
	c, in, err := prepare(b, t, reflect.TypeFor[R](), isNilValue(h))
	if err != nil {
		return err
	}
	r := &route[C, R]{entry: entry{spec: in, nils: nilKindOf(t), log: c.logger(), ids: c.cfg.identity}}
	// The handler's panic is recovered innermost: by a layer of its own
	// under typed middleware, else by the interceptor chain's innermost
	// Invoker, which saves a call per dispatch.
	inner, recoverIn := h, &r.entry
	if len(mws) > 0 {
		fn, _ := h.(HandlerFunc[C, R])
		inner, recoverIn = &recovering[C, R]{next: h, fn: fn, e: &r.entry}, nil
	}
	if r.handler, err = decorate(in, inner, mws, c.cfg.interceptors, recoverIn); err != nil {
		return err
	}
	r.chain, _ = r.handler.(*intercepted[C, R])
	r.fn, _ = r.handler.(HandlerFunc[C, R])
	r.typed = r
	// ExecuteTyped's path and Execute's: msg's dynamic type is C, since
	// the entry was found by it.
	r.exec = func(ctx context.Context, msg any) (R, error) {
		c, _ := msg.(C)
		return r.dispatch(ctx, c)
	}
	r.untyped = func(ctx context.Context, msg any) (any, error) {
		c, _ := msg.(C)
		res, err := r.dispatch(ctx, c)
		if err != nil {
			return nil, err
		}
		return res, nil
	}
	return c.publish(t, &r.entry)
}

// prepare does what Register does before it builds a route for message
// type t with result type rt: it checks b, t and the handler, and names t.
func prepare(b Bus, t, rt reflect.Type, nilHandler bool) (*bus, *Spec, error) {
	c := coreOf(b)
	if c == nil {
		return nil, nil, fmt.Errorf("%w: registering a handler", ErrNilBus)
	}
	if t.Kind() == reflect.Interface {
		return nil, nil, fmt.Errorf("%w: %s %s is an interface type; register a concrete type", ErrInvalidMessageType, b.Kind(), t)
	}
	in := specOn(b, t, rt)
	if nilHandler {
		return nil, nil, fmt.Errorf("%w: registering %s", ErrNilHandler, in)
	}
	if err := checkDeclared(t, in.Kind, in.ResultType); err != nil {
		return nil, nil, err
	}
	// Refuse a duplicate before the interceptors set anything up for it.
	if err := c.routes.Check(t, in.Name); err != nil {
		return nil, nil, c.registrationError(err, in, t)
	}
	return c, in, nil
}

// publish adds e, the finished route of message type t, to c, so that
// dispatches find it.
func (c *bus) publish(t reflect.Type, e *entry) error {
	if c.cfg.metrics {
		e.stats = stats.New()
	}
	if err := c.routes.Add(t, e.spec.Name, e); err != nil {
		return c.registrationError(err, e.spec, t)
	}
	logAttrs(context.Background(), e.log, slog.LevelDebug, "cqrs: handler registered",
		slog.String("kind", e.spec.Kind.String()),
		slog.String("message", e.spec.Name),
		slog.String("type", t.String()),
		slog.String("result", e.spec.ResultType.String()))
	return nil
}

// specOn returns the Spec that Register gives, or gave, message type t
// with result type rt on b; see Register for how its name is chosen.
func specOn(b Bus, t, rt reflect.Type) *Spec {
	var kind Kind
	if b != nil {
		kind = b.Kind()
	}
	s := &Spec{Kind: kind, Name: nameOf(t, kind), MessageType: t, ResultType: rt}
	if c := coreOf(b); c != nil {
		s.Name = c.nameFor(s.MessageType, s.Name)
	}
	return s
}

// nameFor returns the name of message type t, whose own name is name, on
// c: the name it is registered under, if it is; else name, unless name is
// t's %T name and another type already has it: then t's %T name with the
// full import path, so that the two do not print alike. Where even that
// does not tell them apart, the name stays, for Register to refuse.
func (c *bus) nameFor(t reflect.Type, name string) string {
	if e, ok := c.routes.Lookup(registry.KeyOf(t)); ok {
		return e.spec.Name
	}
	if name != t.String() {
		return name // declared by the type
	}
	if other := c.typeNamed(name); other != nil && typePath(other) != typePath(t) {
		return typePath(t)
	}
	return name
}

// typeNamed returns the registered type whose name is name, or nil.
func (c *bus) typeNamed(name string) reflect.Type {
	if e, ok := c.routes.Named(name); ok {
		return e.Type
	}
	return nil
}

// registrationError explains c's refusal of type t, named in.
func (c *bus) registrationError(err error, in *Spec, t reflect.Type) error {
	if !errors.Is(err, registry.ErrNameExists) {
		return fmt.Errorf("%w: %s (%s)", ErrHandlerExists, in, t)
	}
	method := "CommandName"
	if in.Kind == KindQuery {
		method = "QueryName"
	}
	if other := c.typeNamed(in.Name); in.Name == t.String() && other != nil && typePath(other) == typePath(t) {
		// Types declared inside two functions of one package.
		return fmt.Errorf("%w: %s: another type on the bus has that name, even with its import path (%s); declare a %s method",
			ErrHandlerExists, in, typePath(t), method)
	}
	return fmt.Errorf("%w: %s: another type on the bus has that name (this one is %s); declare another %s",
		ErrHandlerExists, in, typePath(t), method)
}

// decorate applies the middleware and then the bus's interceptors to h.
// Its result is meaningless when err is not nil.
//
// With a non-nil catch, the interceptors' innermost Invoker recovers a
// panic of h and logs it there (see intercept).
func decorate[C, R any](in *Spec, h Handler[C, R], mws []Middleware[C, R], ics []Interceptor, catch *entry) (out Handler[C, R], err error) {
	defer recoverBuild(in, &err)
	out = h
	for i := len(mws) - 1; i >= 0; i-- {
		if mws[i] == nil {
			return nil, badMiddleware(in, i, "is nil")
		}
		if out = mws[i](out); isNilValue(out) {
			return nil, badMiddleware(in, i, "returned nil")
		}
	}
	if len(ics) == 0 {
		return out, nil
	}
	return intercept(in, ics, out, catch)
}

// recoverBuild turns a panic while a chain for in is built into *err: the
// error a buildError carries, else a *PanicError. It must be deferred, to
// call recover directly.
func recoverBuild(in *Spec, err *error) {
	switch v := recover().(type) {
	case nil:
	case buildError:
		*err = v.err
	default:
		*err = &PanicError{Message: in.String(), Value: v, Stack: debug.Stack()}
	}
}

// badMiddleware is the error of the middleware at index i of those given
// for in, which is nil or returned nil.
func badMiddleware(in *Spec, i int, what string) error {
	return fmt.Errorf("%w: registering %s: middleware %d %s", ErrNilHandler, in, i, what)
}

// Dispatch sends msg to the handler registered on b for type C and returns
// its result. It is the fully static entry point: the message and result
// types are checked at compile time, the handler is found by C without
// boxing msg, and with no middleware a dispatch does not allocate.
//
// Write the result type; C is inferred from msg:
//
//	view, err := cqrs.Dispatch[UserView](ctx, queries, GetUser{ID: 7})
//
// When C is an interface type, Dispatch looks up msg's dynamic type, as
// [ExecuteTyped] does.
//
// Errors: [ErrHandlerNotFound] when C has no handler; [ErrResultType] when
// C's handler returns a type that is not assignable to R (the handler is not
// called); [ErrNilMessage] for a nil pointer msg; ctx.Err() unchanged when
// ctx is already done (the handler is not called); a [*PanicError] when the
// handler panicked; otherwise the handler's own error, unchanged.
func Dispatch[R, C any](ctx context.Context, b Bus, msg C) (R, error) {
	t := reflect.TypeFor[C]()
	e := find(b, t)
	if e == nil {
		if t.Kind() == reflect.Interface && coreOf(b) != nil {
			// No handler is ever registered for an interface type: look
			// up msg's dynamic type instead.
			return ExecuteTyped[R](ctx, b, msg)
		}
		var zero R
		return zero, missing(b, t, msg)
	}
	if r, ok := e.typed.(*route[C, R]); ok {
		return r.dispatch(ctx, msg)
	}
	return convert[R](ctx, e, msg)
}

// ExecuteTyped sends msg to the handler registered on b for msg's dynamic
// type and returns its result as a T. It is the entry point for messages
// held in an interface, with a typed result:
//
//	view, err := cqrs.ExecuteTyped[UserView](ctx, queries, msg)
//
// The only allocation is the caller's boxing of msg. The errors are those
// of [Dispatch]; a nil msg, or a nil pointer inside it, is [ErrNilMessage].
func ExecuteTyped[T any](ctx context.Context, b Bus, msg any) (T, error) {
	t := reflect.TypeOf(msg)
	e := find(b, t)
	if e == nil {
		var zero T
		return zero, missing(b, t, msg)
	}
	if exec, ok := e.exec.(func(context.Context, any) (T, error)); ok {
		return exec(ctx, msg)
	}
	return convert[T](ctx, e, msg)
}

// execute is CommandBus.Execute and QueryBus.Execute.
func execute(ctx context.Context, b Bus, msg any) (any, error) {
	t := reflect.TypeOf(msg)
	e := find(b, t)
	if e == nil {
		return nil, missing(b, t, msg)
	}
	return e.untyped(ctx, msg)
}

// convert is the slow path of a dispatch whose requested result type T is
// not the handler's own: it succeeds when the handler's result type is
// assignable to T (T is an interface it implements) and fails with
// ErrResultType, before calling the handler, when it is not.
func convert[T any](ctx context.Context, e *entry, msg any) (T, error) {
	var zero T
	want := reflect.TypeFor[T]()
	if !e.spec.ResultType.AssignableTo(want) {
		return zero, fmt.Errorf("%w: %s returns %s, not %s", ErrResultType, e.spec, e.spec.ResultType, want)
	}
	res, err := e.untyped(ctx, msg)
	if v, ok := res.(T); ok {
		return v, err
	}
	return zero, err
}

// find returns the entry for t on b, or nil. It is the whole lookup of a
// dispatch: one atomic load and one map access by a one-word key.
func find(b Bus, t reflect.Type) *entry {
	c := coreOf(b)
	if c == nil {
		return nil
	}
	e, _ := c.routes.Lookup(registry.KeyOf(t))
	return e
}

func coreOf(b Bus) *bus {
	if b == nil {
		return nil
	}
	return b.core()
}

// missing explains why find found nothing for msg, of type t, on b. A nil
// message is reported as such, whether or not its type has a handler. The
// error names the bus, not a kind for the message: a type with no handler
// on b may well be a message of the other kind, sent to the wrong bus.
func missing(b Bus, t reflect.Type, msg any) error {
	switch {
	case coreOf(b) == nil:
		return fmt.Errorf("%w: dispatching a message", ErrNilBus)
	case t == nil:
		return fmt.Errorf("%w: nil interface sent to the %s bus", ErrNilMessage, b.Kind())
	case isNilValue(msg):
		return fmt.Errorf("%w: %s sent to the %s bus", ErrNilMessage, t, b.Kind())
	default:
		return fmt.Errorf("%w for %s on the %s bus%s", ErrHandlerNotFound, t, b.Kind(), pointerHint(b, t))
	}
}
