package nats_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// The warehouse's messages (Reserve, Lookup, Picks, Reserved), its routes
// (warehouseRoutes) and its errors (warehouseErrors) are declared in
// service_test.go, as a service's package would declare them.

// warehouseService returns the buses of a process that handles the
// warehouse's messages, as the service named name.
func warehouseService(name string) cqrsnats.Service {
	commands, queries, events := cqrs.NewCommandBus(), cqrs.NewQueryBus(), cqrs.NewEventBus()
	err := errors.Join(
		cqrs.Handle(commands, func(ctx context.Context, c Reserve) (Reservation, error) {
			if c.SKU == "" {
				return Reservation{}, fmt.Errorf("reserve %d: %w", c.ID, errOutOfStock)
			}
			return Reservation{ID: c.ID, SKU: c.SKU, By: name}, cqrs.Publish(ctx, events, Reserved{ID: c.ID, By: name})
		}),
		cqrs.Handle(queries, func(_ context.Context, q Lookup) (Reservation, error) {
			return Reservation{ID: q.ID, By: name}, nil
		}),
		cqrs.HandleStream(queries, func(_ context.Context, q Picks, yield func(Pick) bool) error {
			for i := range q.N {
				if !yield(Pick{ID: q.ID, Seq: i, By: name}) {
					return nil
				}
			}
			return nil
		}),
	)
	if err != nil {
		panic(err)
	}
	return cqrsnats.Service{Commands: commands, Queries: queries, Events: events, Routes: warehouseRoutes, Errors: warehouseErrors}
}

// mustConnect connects to url, or panics.
func mustConnect(url string) *natsgo.Conn {
	nc, err := natsgo.Connect(url)
	if err != nil {
		panic(err)
	}
	return nc
}

func ExampleServeService() {
	ns, stop := exampleNATS(false)
	defer stop()

	// The serving process: register the handlers as always, then serve
	// the whole service, commands, queries, streams and events, at once.
	serving := mustConnect(ns.ClientURL())
	defer serving.Close()
	srv, err := cqrsnats.ServeService(serving, warehouseService("w1"))
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	// The calling process forwards the same routes, with the same errors.
	calling := mustConnect(ns.ClientURL())
	defer calling.Close()
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	remote, err := cqrsnats.ForwardService(calling, cqrsnats.Service{
		Commands: commands, Queries: queries,
		Routes: warehouseRoutes[:3], Errors: warehouseErrors, // no events here
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = remote.Stop(context.Background()) }()

	ctx := context.Background()
	r, err := cqrs.Send(ctx, commands, Reserve{ID: 1, SKU: "lamp"})
	fmt.Printf("%+v %v\n", r, err)
	l, err := cqrs.Ask(ctx, queries, Lookup{ID: 1})
	fmt.Printf("%+v %v\n", l, err)
	for p, err := range cqrs.Stream(ctx, queries, Picks{ID: 1, N: 2}) {
		fmt.Printf("%+v %v\n", p, err)
	}
	_, err = cqrs.Send(ctx, commands, Reserve{ID: 2})
	fmt.Println(err, errors.Is(err, errOutOfStock))
	// Output:
	// {ID:1 SKU:lamp By:w1} <nil>
	// {ID:1 SKU: By:w1} <nil>
	// {ID:1 Seq:0 By:w1} <nil>
	// {ID:1 Seq:1 By:w1} <nil>
	// reserve 2: out of stock true
}

func ExampleForwardService() {
	ns, stop := exampleNATS(false)
	defer stop()
	serving := mustConnect(ns.ClientURL())
	defer serving.Close()
	srv, err := cqrsnats.ServeService(serving, warehouseService("w1"))
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	// The calling process subscribes to the events locally, as if the
	// service ran here; ForwardService receives them from NATS as the
	// subscriber "shipping".
	calling := mustConnect(ns.ClientURL())
	defer calling.Close()
	commands, events := cqrs.NewCommandBus(), cqrs.NewEventBus()
	shipped := make(chan string, 1)
	_, err = cqrs.Subscribe(events, "labels", func(_ context.Context, e Reserved) error {
		shipped <- fmt.Sprintf("label for %d, reserved by %s", e.ID, e.By)
		return nil
	})
	if err != nil {
		panic(err)
	}
	remote, err := cqrsnats.ForwardService(calling, cqrsnats.Service{
		Commands: commands, Events: events, Subscriber: "shipping",
		Routes: []cqrsnats.Route{cqrsnats.RouteFor[Reserve](), cqrsnats.EventRouteFor[Reserved]()},
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = remote.Stop(context.Background()) }()

	_, err = cqrs.Send(context.Background(), commands, Reserve{ID: 7, SKU: "desk"})
	fmt.Println(err)
	fmt.Println(<-shipped)
	// Output:
	// <nil>
	// label for 7, reserved by w1
}

func ExampleRouteFor() {
	// Only the message type is written: its kind and result come from
	// the marker it embeds.
	routes := []cqrsnats.Route{
		cqrsnats.RouteFor[Reserve](), // cqrs.Command[Reservation]
		cqrsnats.RouteFor[Lookup](),  // cqrs.Query[Reservation]
		cqrsnats.RouteFor[Picks](),   // cqrs.StreamQuery[Pick]
	}

	// The calling side needs a bus of each kind its routes have.
	ns, stop := exampleNATS(false)
	defer stop()
	nc := mustConnect(ns.ClientURL())
	defer nc.Close()
	_, err := cqrsnats.ForwardService(nc, cqrsnats.Service{Commands: cqrs.NewCommandBus(), Routes: routes})
	fmt.Println(err)
	// An event's route comes from EventRouteFor.
	_, err = cqrsnats.ForwardService(nc, cqrsnats.Service{Events: cqrs.NewEventBus(), Subscriber: "shipping",
		Routes: []cqrsnats.Route{cqrsnats.RouteFor[Reserved]()}})
	fmt.Println(err)
	// Output:
	// nats: forward service: cqrs: nil bus: query nats_test.Lookup: the Service has no Queries bus
	// cqrs: nil bus: streaming query nats_test.Picks: the Service has no Queries bus
	// nats: forward service: cqrs: invalid message type: nats_test.Reserved is an event: route it with cqrsnats.EventRouteFor[nats_test.Reserved](), not RouteFor
}

func ExampleEventRouteFor() {
	ns, stop := exampleNATS(false)
	defer stop()

	// The serving side sends to NATS the events of its event routes that
	// its handlers publish; the others stay in the process.
	serving := mustConnect(ns.ClientURL())
	defer serving.Close()
	svc := warehouseService("w1")
	svc.Routes = []cqrsnats.Route{cqrsnats.RouteFor[Reserve](), cqrsnats.EventRouteFor[Reserved]()}
	srv, err := cqrsnats.ServeService(serving, svc)
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	// Any process receives them, here with Subscribe.
	receiving := mustConnect(ns.ClientURL())
	defer receiving.Close()
	receiver, err := cqrsnats.NewReceiver(receiving, cqrsnats.EventConfig{})
	if err != nil {
		panic(err)
	}
	defer func() { _ = receiver.Stop(context.Background()) }()
	got := make(chan Reserved, 1)
	if _, err := cqrsnats.Subscribe(receiver, "audit", func(_ context.Context, e Reserved) error {
		got <- e
		return nil
	}); err != nil {
		panic(err)
	}

	calling := mustConnect(ns.ClientURL())
	defer calling.Close()
	commands := cqrs.NewCommandBus()
	if err := cqrsnats.ForwardDeclared[Reserve](commands, cqrsnats.NewClient(calling)); err != nil {
		panic(err)
	}
	_, err = cqrs.Send(context.Background(), commands, Reserve{ID: 3, SKU: "chair"})
	fmt.Println(err)
	fmt.Printf("%+v\n", <-got)
	fmt.Println(srv.Stats().Events.Published)
	// Output:
	// <nil>
	// {Event:{} ID:3 By:w1}
	// 1
}

func ExampleForwardDeclared() {
	ns, stop := exampleNATS(false)
	defer stop()
	serving := mustConnect(ns.ClientURL())
	defer serving.Close()
	srv, err := cqrsnats.ServeService(serving, warehouseService("w1"))
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	calling := mustConnect(ns.ClientURL())
	defer calling.Close()
	client := cqrsnats.NewClient(calling, cqrsnats.WithErrors(warehouseErrors...))
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	// Only the message type is written, as cqrs.Send writes none.
	if err := errors.Join(
		cqrsnats.ForwardDeclared[Reserve](commands, client),
		cqrsnats.ForwardDeclared[Lookup](queries, client),
	); err != nil {
		panic(err)
	}
	r, err := cqrs.Send(context.Background(), commands, Reserve{ID: 5, SKU: "shelf"})
	fmt.Printf("%+v %v\n", r, err)
	l, err := cqrs.Ask(context.Background(), queries, Lookup{ID: 5})
	fmt.Printf("%+v %v\n", l, err)
	// Output:
	// {ID:5 SKU:shelf By:w1} <nil>
	// {ID:5 SKU: By:w1} <nil>
}

func ExampleForwardDeclaredStream() {
	ns, stop := exampleNATS(false)
	defer stop()
	serving := mustConnect(ns.ClientURL())
	defer serving.Close()
	srv, err := cqrsnats.ServeService(serving, warehouseService("w1"))
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	calling := mustConnect(ns.ClientURL())
	defer calling.Close()
	queries := cqrs.NewQueryBus()
	if err := cqrsnats.ForwardDeclaredStream[Picks](queries, cqrsnats.NewClient(calling)); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for p, err := range cqrs.Stream(ctx, queries, Picks{ID: 9, N: 3}) {
		fmt.Printf("%+v %v\n", p, err)
	}
	// Output:
	// {ID:9 Seq:0 By:w1} <nil>
	// {ID:9 Seq:1 By:w1} <nil>
	// {ID:9 Seq:2 By:w1} <nil>
}

func ExampleServiceServer_Stop() {
	ns, stop := exampleNATS(false)
	defer stop()
	serving := mustConnect(ns.ClientURL())
	defer serving.Close()
	srv, err := cqrsnats.ServeService(serving, warehouseService("w1"))
	if err != nil {
		panic(err)
	}

	// One Stop for the requests, the streams and the events: it answers
	// what was received, waits for the handlers, and sends their events.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println(srv.Stop(ctx))

	commands := cqrs.NewCommandBus()
	_ = cqrsnats.ForwardDeclared[Reserve](commands, cqrsnats.NewClient(serving))
	_, err = cqrs.Send(context.Background(), commands, Reserve{ID: 1, SKU: "lamp"})
	fmt.Println(errors.Is(err, cqrsnats.ErrNoResponders))
	// Output:
	// <nil>
	// true
}
