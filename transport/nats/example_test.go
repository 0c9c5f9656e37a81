package nats_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// exampleNATS starts an embedded NATS server for an example.
func exampleNATS(jetStream bool) (*server.Server, func()) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: jetStream}
	if jetStream {
		dir, err := os.MkdirTemp("", "nats-example")
		if err != nil {
			panic(err)
		}
		opts.StoreDir = dir
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		panic(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		panic("NATS did not start")
	}
	return ns, func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		_ = os.RemoveAll(opts.StoreDir)
	}
}

func ExampleServe() {
	ns, stop := exampleNATS(false)
	defer stop()

	// The process that handles PlaceOrder.
	serving, _ := natsgo.Connect(ns.ClientURL())
	defer serving.Close()
	handlers := cqrs.NewCommandBus()
	_ = cqrs.Register(handlers, cqrs.HandlerFunc[PlaceOrder, Order](func(_ context.Context, c PlaceOrder) (Order, error) {
		return Order{ID: c.ID, Item: c.Item, Server: "warehouse"}, nil
	}))
	srv, err := cqrsnats.Serve(serving, handlers)
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	// The calling process: it forwards PlaceOrder, then dispatches as ever.
	calling, _ := natsgo.Connect(ns.ClientURL())
	defer calling.Close()
	commands := cqrs.NewCommandBus()
	if err := cqrsnats.Forward[PlaceOrder, Order](commands, cqrsnats.NewClient(calling)); err != nil {
		panic(err)
	}
	order, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 1, Item: "lamp"})
	fmt.Printf("%+v %v\n", order, err)

	// Nobody serves GetOrder: a clear error, not a hang.
	queries := cqrs.NewQueryBus()
	_ = cqrsnats.Forward[GetOrder, Order](queries, cqrsnats.NewClient(calling))
	_, err = cqrs.Dispatch[Order](context.Background(), queries, GetOrder{ID: 1})
	fmt.Println(errors.Is(err, cqrsnats.ErrNoResponders))
	// Output:
	// {ID:1 Item:lamp Server:warehouse} <nil>
	// true
}

func ExampleSubject() {
	spec := cqrs.SpecFor[PlaceOrder, Order]((*cqrs.CommandBus)(nil))
	fmt.Println(cqrsnats.Subject("cqrs", spec))
	fmt.Println(cqrsnats.DurableSubject("cqrs", spec))
	// Output:
	// cqrs.command.github.com/typedcqrs/dispatch/transport/nats_test.PlaceOrder
	// cqrs.durable.command.github.com/typedcqrs/dispatch/transport/nats_test.PlaceOrder
}

func ExampleEnqueue() {
	ns, stop := exampleNATS(true)
	defer stop()
	nc, _ := natsgo.Connect(ns.ClientURL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
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
	srv, err := cqrsnats.ServeDurable(ctx, js, nc, bus, cqrsnats.DurableConfig{})
	if err != nil {
		panic(err)
	}
	fmt.Println("shipped parcel", <-shipped)
	srv.Stop()
	// Output:
	// shipped parcel 42
}
