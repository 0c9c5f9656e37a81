// Package cqrs dispatches commands, queries and events to typed handlers.
//
// A message declares what it is and what it returns by embedding a marker
// as its first field: [Command][R], [Query][R], [StreamQuery][R] or
// [Event]. The compiler then infers every type at the call site and
// refuses every mismatch: a command sent to the query bus, a result
// assigned to the wrong type, a handler that returns something else, a
// message with no marker. What it cannot see, a handler that was never
// registered, [Require] finds at start-up.
//
//	type PlaceOrder struct {
//		cqrs.Command[OrderID]
//		Items []Item
//	}
//
//	type GetOrder struct {
//		cqrs.Query[Order]
//		ID OrderID
//	}
//
//	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
//	err := cqrs.Handle(commands, orders.Place) // func(context.Context, PlaceOrder) (OrderID, error)
//	err = cqrs.Handle(queries, orders.Get)     // func(context.Context, GetOrder) (Order, error)
//	err = cqrs.Require(commands, PlaceOrder{}) // at start-up
//
//	id, err := cqrs.Send(ctx, commands, PlaceOrder{Items: items}) // id is an OrderID
//	order, err := cqrs.Ask(ctx, queries, GetOrder{ID: id})         // order is an Order
//
// The markers have no fields and no size: encoding/json, encoding/gob and
// the validator see a message as they would without one.
//
// For message types that declare nothing (types of another package,
// messages held in an interface), the generic entry points take the types
// written out: a handler is a [Handler][C, R], registered with [Register]
// and found again by [Dispatch], [ExecuteTyped] or a bus's untyped Execute
// method; the bus checks at run time what the compiler could not.
//
// # Commands
//
// A [CommandBus] carries commands: messages that change state, each to the
// one handler registered for its type. A command that returns nothing but
// an error declares [NoResult]. [Send] dispatches a declared command.
//
// # Queries
//
// A [QueryBus] carries queries: messages that read state. It works as the
// command bus does; the two differ in their names in errors, logs and
// metrics, and in the method a message may use to name itself
// (CommandName or QueryName). [Ask] dispatches a declared query.
//
//	order, err := cqrs.Dispatch[Order](ctx, queries, GetOrder{ID: "o-1"}) // the same, types written
//
// [Dispatch] is fully static: write the result type and C is inferred from
// the message. [ExecuteTyped] takes a message held in an interface and
// finds the handler by its dynamic type. [CommandBus.Execute] and
// [QueryBus.Execute] take and return interfaces, for routers and
// transports. A message type and a pointer to it are different types with
// different handlers.
//
// # Streaming queries
//
// A query whose result is large or unbounded declares [StreamQuery][R];
// its handler, registered with [HandleStream], pushes items one at a time
// to a yield function, and [Stream] returns them as an iter.Seq2[R, error]
// to range over. Breaking out of the loop stops the handler; its error, or
// its panic, is the last item. No goroutine is started.
//
//	for order, err := range cqrs.Stream(ctx, queries, ListOrders{Customer: "c-1"}) { … }
//
// # Events
//
// An [EventBus] delivers events, which declare [Event], to every
// subscriber of their type. Each subscriber has a name and runs inside the
// bus's interceptors with a [Spec] of its own; [Subscribe] returns a
// [Subscription] to cancel. [Publish] runs the subscribers with the bus's
// [Strategy] ([Sequential] by default, [StopOnError], [Concurrent],
// [Async] with a bounded queue), and [PublishWith] with another.
//
//	sub, err := cqrs.Subscribe(events, "email", mailer.OrderPlaced)
//	err = cqrs.Publish(ctx, events, OrderPlaced{Order: id})
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
//     boxes the message or result only if asked. The bus reuses a Call
//     once its dispatch has returned, so a dispatch through any number of
//     interceptors allocates nothing of its own (see [Interceptor]).
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
// Handlers live in a table keyed by the identity of the message type,
// behind an atomic pointer: a dispatch takes no lock and, with no
// interceptors, allocates nothing. [Send], [Ask] and [Dispatch] cost the
// same. Registering is safe while other goroutines dispatch, and costs
// amortized constant time, however many types are registered. The
// benchmarks directory compares a dispatch with a direct call and with a
// map of string-keyed interface handlers behind a mutex.
//
// With [WithMetrics], each message type keeps counts and a latency
// histogram, read with the bus's Metrics method; recording a dispatch
// takes two readings of the monotonic clock and a few atomic additions,
// and allocates nothing.
package cqrs
