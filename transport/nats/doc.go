// Package nats carries the typed commands, queries, streaming queries and
// events of package cqrs over NATS, so that a handler can move to another
// process without its callers changing. It is a module of its own, so that users of the core never
// download NATS. Import it under another name, since the NATS client is
// package nats too:
//
//	import cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
//
// The serving side exposes the handlers registered on a bus, one subject
// per message type, subscribed in a queue group so that many processes
// share the load and each request is handled once:
//
//	srv, err := cqrsnats.Serve(nc, commands)
//	defer srv.Stop(ctx)
//
// The calling side registers, on its own local bus, a handler for each
// message type that forwards it over NATS and decodes the typed reply.
// Callers keep calling cqrs.Dispatch and cqrs.ExecuteTyped on that bus:
//
//	client := cqrsnats.NewClient(nc)
//	err := cqrsnats.Forward[PlaceOrder, OrderID](commands, client)
//	id, err := cqrs.Dispatch[OrderID](ctx, commands, PlaceOrder{...})
//
// For a declared message ([cqrs.Command], [cqrs.Query],
// [cqrs.StreamQuery]), [ForwardDeclared] and [ForwardDeclaredStream]
// write only its type. A whole service, its commands, queries, streaming
// queries and events, is served with one call and called with another,
// each with one Stop, both sides sharing its routes and error codes
// (see [Service], [RouteFor] and [EventRouteFor]):
//
//	srv, err := cqrsnats.ServeService(nc, cqrsnats.Service{
//		Commands: commands, Queries: queries, Events: events,
//		Routes: orders.Routes, Errors: orders.Errors,
//	})
//	remote, err := cqrsnats.ForwardService(nc, cqrsnats.Service{
//		Commands: commands, Queries: queries, Events: events,
//		Routes: orders.Routes, Errors: orders.Errors, Subscriber: "shipping",
//	})
//	id, err := cqrs.Send(ctx, commands, orders.PlaceOrder{...})
//
// # Subjects
//
// A message type's subject is keyed by its Go type's full path, encoded
// injectively ([Subject]): two types with the same short name in
// different packages, or two declared names that differ only in
// punctuation, never share one. Each request also carries the type's
// identity, and the serving side refuses, with [ErrBadRequest], a request
// meant for another type instead of decoding it into the wrong one.
// [Serve] and [Forward] refuse types and prefixes that cannot make a
// valid, distinct subject ([ErrInvalidSubject]) and, with the default
// [JSON] codec, types whose unexported fields JSON would silently drop
// ([ErrUnexportedFields]). Give each service on a shared NATS its own
// prefix ([WithPrefix]).
//
// # Deadlines and load
//
// Messages travel as JSON unless another [Codec] is given; only the types
// registered on the serving bus are ever decoded there. Each call's
// deadline, the earlier of its context's and the client's timeout
// ([WithTimeout]), travels with the request (as gRPC's grpc-timeout
// does, so that the two machines' clocks need not agree) and bounds the
// handler's context, measured from the request's arrival and capped by
// [WithMaxHandlerTime]. Requests wait in a bounded queue
// ([WithMaxPending]); one whose deadline passes there is dropped without
// running, and one that finds the queue full is refused with
// [ErrUnavailable]. The server replies only to inbox subjects, so that no
// request can aim its reply at another type's subject.
//
// # Errors
//
// Errors keep their identity: errors.Is finds cqrs.ErrHandlerNotFound,
// ErrValidation (with the fields, for errors.As with
// *cqrs.ValidationError), ErrCircuitOpen, ErrRateLimited, the
// timeouts, and a service's own sentinels registered with [WithErrors],
// on the calling side; an error the handler marked middleware.Permanent
// stays a caller's error there. Other errors arrive as a [*RemoteError]
// with their code and message, cut to 1 KiB; a panic's value and stack
// never leave the serving process. [ErrNoResponders], [ErrTransport],
// [ErrBadReply], [ErrBadRequest], [ErrUnavailable] and
// [ErrPayloadTooLarge] tell transport failures apart. W3C trace context
// travels in the headers through the OpenTelemetry propagator.
//
// Commands that must not be lost while no handler process is up go
// through a JetStream work queue instead: [Enqueue] and [ServeDurable].
//
// # Streaming queries and events
//
// Streaming queries ([cqrs.StreamQuery]) are served by [ServeStreams] and
// forwarded by [ForwardStream]: items travel one message each, with a
// window of credit so that a slow reader bounds the producer, and
// cancellation travels both ways. [Serve] leaves them to ServeStreams.
//
// Events ([cqrs.Event]) are published with [Publish] (or forwarded from a
// local event bus with [ForwardEvents]) and received by the subscribers
// given to [Subscribe] on a [Receiver]: every subscriber name is its own
// delivery group, so each name gets every event once and the instances of
// one service share the load; core NATS delivers at most once, JetStream
// ([EventConfig]) at least once, with backoff and dead letters.
package nats
