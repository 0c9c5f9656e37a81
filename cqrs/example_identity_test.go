package cqrs_test

import (
	"context"
	"fmt"

	"github.com/typedcqrs/dispatch/cqrs"
)

type (
	// ShipOrder is a command whose handler publishes OrderShipped.
	ShipOrder struct {
		cqrs.Command[cqrs.NoResult]
		Order string
	}
	// OrderShipped is an event.
	OrderShipped struct {
		cqrs.Event
		Order string
	}
)

// A caller starts a conversation with its own correlation id, such as an
// HTTP request's; the event that the command's handler publishes joins
// it, with the command as its cause, and no code in the handler says so.
func ExampleIdentityOf() {
	ctx := context.Background()
	commands, events := cqrs.NewCommandBus(), cqrs.NewEventBus()
	var command cqrs.Identity
	_ = cqrs.Handle(commands, func(ctx context.Context, c ShipOrder) (cqrs.NoResult, error) {
		command, _ = cqrs.IdentityOf(ctx)
		return cqrs.NoResult{}, cqrs.Publish(ctx, events, OrderShipped{Order: c.Order})
	})
	_, _ = cqrs.Subscribe(events, "mail", func(ctx context.Context, e OrderShipped) error {
		event, _ := cqrs.IdentityOf(ctx)
		fmt.Println("correlation:", event.CorrelationID)
		fmt.Println("caused by the command:", event.CausationID == command.ID)
		fmt.Println("an ID of its own:", event.ID != command.ID)
		return nil
	})

	req := cqrs.ContextWithIdentity(ctx, cqrs.Identity{CorrelationID: "request-42"})
	_, err := cqrs.Send(req, commands, ShipOrder{Order: "o-1"})
	fmt.Println(err)
	// Output:
	// correlation: request-42
	// caused by the command: true
	// an ID of its own: true
	// <nil>
}

// WithIdentity gives every message on a bus an identity, even one sent
// from a context that carries none.
func ExampleWithIdentity() {
	queries := cqrs.NewQueryBus(cqrs.WithIdentity())
	_ = cqrs.Handle(queries, func(ctx context.Context, _ idQuery) (cqrs.Identity, error) {
		id, _ := cqrs.IdentityOf(ctx)
		return id, nil
	})
	id, _ := cqrs.Ask(context.Background(), queries, idQuery{})
	fmt.Println(len(id.ID), id.CorrelationID == id.ID, id.CausationID == "")
	// Output: 36 true true
}

// NextIdentity is what a dispatch gives a message, for code that sends
// one without a bus, such as a transport or an outbox.
func ExampleNextIdentity() {
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-1", CorrelationID: "c-1"})
	fmt.Printf("%+v\n", cqrs.NextIdentity(ctx))
	// Output: {ID:m-1 CorrelationID:c-1 CausationID:}
}

func ExampleNewID() {
	id := cqrs.NewID()
	fmt.Println(len(id), id[14] == '7') // a UUID of version 7
	// Output: 36 true
}
