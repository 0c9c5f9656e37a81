package nats

import (
	"github.com/typedcqrs/dispatch/cqrs"
)

// ForwardDeclared is [Forward] for a declared command or query M: only M
// is written, its result is inferred from the marker it embeds
// ([cqrs.Command] or [cqrs.Query]), as [cqrs.Send] infers it:
//
//	err := cqrsnats.ForwardDeclared[PlaceOrder](commands, client)
//	id, err := cqrs.Send(ctx, commands, PlaceOrder{Customer: "c-1"})
//
// The compiler refuses a command forwarded on a [cqrs.QueryBus], a query
// on a [cqrs.CommandBus], and a streaming query, which [ForwardDeclaredStream]
// forwards. Otherwise it is Forward, with the same behaviour and errors;
// mws run in this process, around the forwarding.
func ForwardDeclared[M cqrs.Message[R, B], R any, B cqrs.Bus](bus B, c *Client, mws ...cqrs.Middleware[M, R]) error {
	return Forward[M, R](bus, c, mws...)
}

// ForwardDeclaredStream is [ForwardStream] for a declared streaming query
// Q: only Q is written, its items' type is inferred from the
// [cqrs.StreamQuery] marker it embeds, as [cqrs.Stream] infers it:
//
//	err := cqrsnats.ForwardDeclaredStream[ListOrders](queries, client)
//	for order, err := range cqrs.Stream(ctx, queries, ListOrders{Customer: "c-1"}) { … }
//
// The compiler refuses a query that returns one result, which
// [ForwardDeclared] forwards. Otherwise it is ForwardStream, with the same
// behaviour, options and errors.
func ForwardDeclaredStream[Q cqrs.StreamMessage[R], R any](bus *cqrs.QueryBus, c *Client, opts ...Option) error {
	return ForwardStream[Q, R](bus, c, opts...)
}
