package nats_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// exampleJetStream starts an embedded NATS server with JetStream and
// connects to it.
func exampleJetStream() (jetstream.JetStream, func()) {
	ns, stop := exampleNATS(true)
	nc, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		panic(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	return js, func() {
		nc.Close()
		stop()
	}
}

func ExampleEnqueue() {
	js, stop := exampleJetStream()
	defer stop()
	ctx := context.Background()

	// Enqueued while no handler is up: JetStream keeps it.
	if err := cqrsnats.Enqueue(ctx, js, Ship{Parcel: 42}, cqrsnats.DurableConfig{}); err != nil {
		panic(err)
	}

	shipped := make(chan int)
	bus := cqrs.NewCommandBus()
	_ = cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(_ context.Context, s Ship) (cqrs.NoResult, error) {
		shipped <- s.Parcel
		return cqrs.NoResult{}, nil
	}))
	srv, err := cqrsnats.ServeDurable(ctx, js, bus, cqrsnats.DurableConfig{})
	if err != nil {
		panic(err)
	}
	fmt.Println("shipped parcel", <-shipped)
	fmt.Println(srv.Stop(ctx))
	// Output:
	// shipped parcel 42
	// <nil>
}

// Each command type has a consumer of its own: a process serves only the
// types registered on its bus, and the others wait for their own.
func ExampleServeDurable() {
	js, stop := exampleJetStream()
	defer stop()
	ctx := context.Background()
	_ = cqrsnats.Enqueue(ctx, js, Ship{Parcel: 1}, cqrsnats.DurableConfig{})
	_ = cqrsnats.Enqueue(ctx, js, Invoice{Number: 2}, cqrsnats.DurableConfig{})

	// This process ships; invoicing is another service's.
	shipped := make(chan int)
	shipping := cqrs.NewCommandBus()
	_ = cqrs.Register(shipping, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(_ context.Context, s Ship) (cqrs.NoResult, error) {
		shipped <- s.Parcel
		return cqrs.NoResult{}, nil
	}))
	srv, err := cqrsnats.ServeDurable(ctx, js, shipping, cqrsnats.DurableConfig{})
	if err != nil {
		panic(err)
	}
	fmt.Println("shipped parcel", <-shipped)
	fmt.Println(srv.Stop(ctx))

	// The invoice waits in the stream for a process that serves it.
	commands, _ := js.Stream(ctx, "CQRS_COMMANDS")
	info, _ := commands.Info(ctx)
	fmt.Println("waiting:", info.State.Msgs)

	// Queries have results to wait for: they are not durable.
	_, err = cqrsnats.ServeDurable(ctx, js, cqrs.NewQueryBus(), cqrsnats.DurableConfig{})
	fmt.Println(errors.Is(err, cqrsnats.ErrQueryNotDurable))
	// Output:
	// shipped parcel 1
	// <nil>
	// waiting: 1
	// true
}

// A command whose handler fails for good goes to the dead-letter
// stream; once the cause is mended, ReplayDeadLetters gives it back.
func ExampleReplayDeadLetters() {
	js, stop := exampleJetStream()
	defer stop()
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{MaxDeliver: 3, BackOff: []time.Duration{10 * time.Millisecond}}

	var mended atomic.Bool
	shipped := make(chan int)
	bus := cqrs.NewCommandBus()
	_ = cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(_ context.Context, s Ship) (cqrs.NoResult, error) {
		if !mended.Load() {
			return cqrs.NoResult{}, middleware.Permanent(errors.New("no address for this parcel"))
		}
		shipped <- s.Parcel
		return cqrs.NoResult{}, nil
	}))
	_ = cqrsnats.Enqueue(ctx, js, Ship{Parcel: 7}, cfg)
	srv, err := cqrsnats.ServeDurable(ctx, js, bus, cfg)
	if err != nil {
		panic(err)
	}

	// The dead letter is kept, with why it died, whoever listens.
	dead, _ := js.Stream(ctx, "CQRS_DEAD")
	var letter *jetstream.RawStreamMsg
	for letter == nil {
		letter, _ = dead.GetLastMsgForSubject(ctx, "cqrs.dead.>")
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println(string(letter.Data), letter.Header.Get("Nats-Service-Error"), "after", letter.Header.Get("Cqrs-Deliveries"), "delivery")

	// The address is found: replay.
	mended.Store(true)
	n, err := cqrsnats.ReplayDeadLetters[Ship](ctx, js, cfg)
	fmt.Println("replayed", n, err)
	fmt.Println("shipped parcel", <-shipped)
	fmt.Println(srv.Stop(ctx))
	// Output:
	// {"Parcel":7} no address for this parcel after 1 delivery
	// replayed 1 <nil>
	// shipped parcel 7
	// <nil>
}
