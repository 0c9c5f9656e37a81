// Package cqrs dispatches commands and queries to typed handlers.
//
// A handler is a [Handler][C, R]: it handles messages of type C and returns
// an R. It is registered on a bus with [Register], keyed by C's type, and
// found again by [Dispatch], [ExecuteTyped] or a bus's untyped method. The
// compiler checks message and result types wherever the caller knows them,
// and the bus checks the rest before a handler runs.
//
// # Commands
//
// A [CommandBus] carries commands: messages that change state. A command
// that returns nothing but an error has the result type [NoResult].
//
//	commands := cqrs.NewCommandBus()
//	err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](placeOrder))
//	_, err = cqrs.Dispatch[cqrs.NoResult](ctx, commands, PlaceOrder{ID: "o-1"})
//
// # Queries
//
// A [QueryBus] carries queries: messages that read state. It works as the
// command bus does; the two differ in their names in errors, logs and
// metrics, and in the method a message may use to name itself
// (CommandName or QueryName).
//
//	queries := cqrs.NewQueryBus()
//	err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](getOrder))
//	order, err := cqrs.Dispatch[Order](ctx, queries, GetOrder{ID: "o-1"})
//
// [Dispatch] is fully static: write the result type and C is inferred from
// the message. [ExecuteTyped] takes a message held in an interface and
// finds the handler by its dynamic type. [CommandBus.Execute] and
// [QueryBus.Execute] take and return interfaces, for routers and
// transports. A message type and a pointer to it are different types with
// different handlers.
//
// # Names
//
// A message type's name, in errors, logs and metrics, is its Go type as %T
// prints it ("orders.PlaceOrder"), or the name it declares with a
// CommandName or QueryName method. When two types on one bus would print
// alike, such as orders.Place from two packages named orders, the second
// registered is named by its full import path
// ("github.com/acme/billing/orders.Place"). Names are for people: state
// kept per message type, in middleware or a transport, is keyed by
// [Spec.Key], which holds the type's import path whatever its name.
//
// # Middleware
//
// Middleware comes in two shapes, both applied once, when a handler is
// registered, so a dispatch pays only for the layers it has:
//
//   - [Middleware][C, R] decorates one handler and sees its typed message
//     and result. It is given to [Register] and costs no allocation.
//   - [Interceptor] is not generic, so one value serves every message type.
//     It is given to a whole bus with [WithInterceptors], or to one
//     registration with [Intercept]. It is set up once per message type
//     with that type's [Spec], and sees each dispatch as a [Call] that
//     boxes the message or result only if asked. A dispatch through any
//     number of interceptors allocates once, and not at all when every
//     interceptor reports itself disabled (see [Interceptor]).
//
// A bus's interceptors run outside a handler's own middleware; in each
// list, the first one given runs outermost.
//
// # Errors
//
// Errors are sentinel values wrapped with context: compare them with
// [errors.Is]. A handler's own error is returned unchanged. A message with
// no handler gets [ErrHandlerNotFound], in an error that names the bus it
// was sent to. Middleware reports a message that fails validation, a
// command or a query, with [ErrValidation] and a [*ValidationError].
//
// A panic in a handler or middleware is recovered by the bus and returned
// as a [*PanicError], which matches [ErrHandlerPanic] and logs itself with
// its stack. A handler's panic is recovered where the handler is called,
// inside its middleware and interceptors, so each of them sees the
// *PanicError come back as an ordinary error: logging, metrics and tracing
// record a panic as a failed dispatch. A panic in a middleware or
// interceptor itself is recovered outermost, and unwinds through the
// layers outside it. A context that is done before the dispatch starts is
// returned as ctx.Err() and the handler does not run. No input makes
// Register or a dispatch panic.
//
// # Performance
//
// Handlers live in a map keyed by the identity of the message type, behind
// an atomic pointer and replaced whole by each registration: a dispatch
// takes no lock and, with no interceptors, allocates nothing. Registering is
// safe while other goroutines dispatch, and costs time proportional to the
// number of handlers, so it belongs in start-up code. The benchmarks
// directory compares a dispatch with a direct call and with a map of
// string-keyed interface handlers behind a mutex.
//
// With [WithMetrics], each message type keeps counts and a latency
// histogram, read with the bus's Metrics method; recording a dispatch
// takes two readings of the monotonic clock and a few atomic additions
// spread over per-processor shards, and allocates nothing.
package cqrs
