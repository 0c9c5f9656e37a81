package nats

import (
	"context"
	"errors"
	"fmt"
	"reflect"

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

// misforwarded returns err, the error of registering a forwarder of
// message type C with result R, or, when C is a declared streaming
// query, which [Forward] cannot carry, an error that says to forward it
// with ForwardStream instead: the bus's own error says to register it
// with HandleStream, which is the fix in process, not over NATS.
func misforwarded[C, R any](err error) error {
	if !errors.Is(err, cqrs.ErrInvalidMessageType) || !declaredStream[C, R]() {
		return err
	}
	t := reflect.TypeFor[C]()
	return fmt.Errorf("%w: %s is declared a streaming query, which Forward cannot carry: forward it with cqrsnats.ForwardDeclaredStream[%s] (or ForwardStream with its item type)",
		cqrs.ErrInvalidMessageType, t, t)
}

// misforwardedStream returns err, the error of registering a stream
// forwarder of query type Q with items of type R, or, when Q is a declared
// command or query with one result, an error that says to forward it with
// Forward instead.
func misforwardedStream[Q, R any](err error) error {
	if !errors.Is(err, cqrs.ErrInvalidMessageType) || !declaredOneResult[Q, R]() {
		return err
	}
	t := reflect.TypeFor[Q]()
	return fmt.Errorf("%w: %s is declared a command or query with one result, which ForwardStream cannot carry: forward it with cqrsnats.ForwardDeclared[%s] (or Forward with its result type)",
		cqrs.ErrInvalidMessageType, t, t)
}

// declaredStream reports whether Q declares a streaming query, for a Q
// that a bus refused as a command or query with one result: package cqrs
// tells that only by registering it. A stream handler of Q is taken, or
// refused only for its item type, exactly when Q is no declared message
// or is a declared streaming query; misforwarded asks only about a type
// that the bus refused as declared otherwise, so only the latter remains.
func declaredStream[Q, R any]() bool {
	probe := cqrs.NewQueryBus()
	err := cqrs.RegisterStream(probe, cqrs.StreamFunc[Q, R](func(context.Context, Q, func(R) bool) error { return nil }))
	return err == nil || errors.Is(err, cqrs.ErrResultType)
}

// declaredOneResult reports whether Q declares a command or a query with
// one result, for a Q that a query bus refused as a stream, as
// declaredStream does for streams.
func declaredOneResult[Q, R any]() bool {
	h := cqrs.HandlerFunc[Q, R](func(context.Context, Q) (R, error) { return *new(R), nil })
	for _, probe := range []cqrs.Bus{cqrs.NewCommandBus(), cqrs.NewQueryBus()} {
		if err := cqrs.Register(probe, h); err == nil || errors.Is(err, cqrs.ErrResultType) {
			return true
		}
	}
	return false
}
