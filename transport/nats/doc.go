// Package nats carries the typed commands and queries of package cqrs over
// NATS, so that a handler can move to another process without its callers
// changing. It is a module of its own, so that users of the core never
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
//	defer srv.Stop()
//
// The calling side registers, on its own local bus, a handler for each
// message type that forwards it over NATS and decodes the typed reply.
// Callers keep calling cqrs.Dispatch and cqrs.ExecuteTyped on that bus:
//
//	client := cqrsnats.NewClient(nc)
//	err := cqrsnats.Forward[PlaceOrder, OrderID](commands, client)
//	id, err := cqrs.Dispatch[OrderID](ctx, commands, PlaceOrder{...})
//
// Messages travel as JSON unless another [Codec] is given; only the types
// registered on the serving bus are ever decoded there. The caller's
// remaining time travels with the request (as gRPC's grpc-timeout does, so
// that the two machines' clocks need not agree) and bounds the handler's
// context; a cancelled caller stops waiting at once. Errors keep their identity:
// errors.Is finds cqrs.ErrHandlerNotFound, ErrCommandValidation (with the
// fields, for errors.As with *middleware.ValidationError), ErrCircuitOpen,
// ErrRateLimited and the timeouts on the calling side, and other errors
// arrive with their message. [ErrNoResponders], [ErrBadReply] and
// [ErrPayloadTooLarge] tell transport failures apart. W3C trace context
// travels in the headers through the OpenTelemetry propagator.
//
// Commands that must not be lost while no handler process is up go
// through a JetStream work queue instead: [Enqueue] and [ServeDurable].
package nats
