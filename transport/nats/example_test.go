package nats_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
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

// ErrNoSuchOrder is a service's own sentinel error, and orderCodes its
// table of wire codes: both live in the package that declares the
// service's messages, so that the serving and the calling side register
// the very same table.
var (
	ErrNoSuchOrder = errors.New("orders: no such order")
	orderCodes     = []cqrsnats.ErrorCode{{Code: "orders.no_such_order", Err: ErrNoSuchOrder}}
)

func ExampleWithErrors() {
	ns, stop := exampleNATS(false)
	defer stop()

	serving, _ := natsgo.Connect(ns.ClientURL())
	defer serving.Close()
	handlers := cqrs.NewQueryBus()
	_ = cqrs.Register(handlers, cqrs.HandlerFunc[GetOrder, Order](func(_ context.Context, q GetOrder) (Order, error) {
		// Permanent: the caller's doing, not an outage; it stays so remotely.
		return Order{}, middleware.Permanent(fmt.Errorf("order %d: %w", q.ID, ErrNoSuchOrder))
	}))
	srv, err := cqrsnats.Serve(serving, handlers, cqrsnats.WithErrors(orderCodes...))
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	calling, _ := natsgo.Connect(ns.ClientURL())
	defer calling.Close()
	queries := cqrs.NewQueryBus()
	client := cqrsnats.NewClient(calling, cqrsnats.WithErrors(orderCodes...))
	if err := cqrsnats.Forward[GetOrder, Order](queries, client); err != nil {
		panic(err)
	}
	_, err = cqrs.Dispatch[Order](context.Background(), queries, GetOrder{ID: 7})
	var remote *cqrsnats.RemoteError
	fmt.Println(errors.Is(err, ErrNoSuchOrder), middleware.IsCallerError(err), errors.As(err, &remote))
	fmt.Println(remote.Code, "|", remote.Message)
	// Output:
	// true true true
	// orders.no_such_order | order 7: orders: no such order
}

func ExampleServer_Stop() {
	ns, stop := exampleNATS(false)
	defer stop()
	nc, _ := natsgo.Connect(ns.ClientURL())
	defer nc.Close()
	handlers := cqrs.NewCommandBus()
	_ = cqrs.Register(handlers, cqrs.HandlerFunc[PlaceOrder, Order](func(_ context.Context, c PlaceOrder) (Order, error) {
		return Order{ID: c.ID}, nil
	}))
	srv, err := cqrsnats.Serve(nc, handlers, cqrsnats.WithMaxHandlerTime(5*time.Second), cqrsnats.WithMaxPending(256, 1<<20))
	if err != nil {
		panic(err)
	}

	// Answer what is queued, but return within 10 seconds whatever the
	// handlers do; a second Stop is harmless.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println(srv.Stop(ctx), srv.Stop(ctx))
	// Output:
	// <nil> <nil>
}

func ExampleSubject() {
	spec := cqrs.SpecFor[PlaceOrder, Order]((*cqrs.CommandBus)(nil))
	fmt.Println(cqrsnats.Subject("cqrs", spec))
	fmt.Println(cqrsnats.DurableSubject("cqrs", spec))
	// Output:
	// cqrs.command.github.com/typedcqrs/dispatch/transport/nats_test.PlaceOrder
	// cqrs.durable.command.github.com/typedcqrs/dispatch/transport/nats_test.PlaceOrder
}
