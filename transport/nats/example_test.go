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

func ExampleForward() {
	ns, stop := exampleNATS(false)
	defer stop()

	// The serving process: its handler gets the caller's deadline and the
	// identity of the message, which crossed NATS with the request.
	serving, _ := natsgo.Connect(ns.ClientURL())
	defer serving.Close()
	handlers := cqrs.NewQueryBus()
	_ = cqrs.Register(handlers, cqrs.HandlerFunc[GetOrder, Order](func(ctx context.Context, q GetOrder) (Order, error) {
		id, _ := cqrs.IdentityOf(ctx)
		_, deadline := ctx.Deadline()
		fmt.Println("serving: correlation", id.CorrelationID, "deadline", deadline)
		return Order{ID: q.ID, Server: "warehouse"}, nil
	}))
	srv, err := cqrsnats.Serve(serving, handlers)
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	// The calling process forwards GetOrder; the middleware given to
	// Forward runs here, around the trip over NATS.
	calling, _ := natsgo.Connect(ns.ClientURL())
	defer calling.Close()
	queries := cqrs.NewQueryBus()
	logged := func(next cqrs.Handler[GetOrder, Order]) cqrs.Handler[GetOrder, Order] {
		return cqrs.HandlerFunc[GetOrder, Order](func(ctx context.Context, q GetOrder) (Order, error) {
			order, err := next.Handle(ctx, q)
			fmt.Println("calling: answered by", order.Server, err)
			return order, err
		})
	}
	client := cqrsnats.NewClient(calling, cqrsnats.WithTimeout(2*time.Second))
	if err := cqrsnats.Forward[GetOrder, Order](queries, client, logged); err != nil {
		panic(err)
	}

	// Callers dispatch as ever; this one starts a conversation of its own.
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{CorrelationID: "checkout-42"})
	order, err := cqrs.Dispatch[Order](ctx, queries, GetOrder{ID: 7})
	fmt.Printf("%+v %v\n", order, err)
	// Output:
	// serving: correlation checkout-42 deadline true
	// calling: answered by warehouse <nil>
	// {ID:7 Item: Server:warehouse} <nil>
}

func ExampleWithLegacyWire() {
	ns, stop := exampleNATS(false)
	defer stop()
	nc, _ := natsgo.Connect(ns.ClientURL())
	defer nc.Close()
	handlers := cqrs.NewCommandBus()
	_ = cqrs.Register(handlers, cqrs.HandlerFunc[PlaceOrder, Order](func(_ context.Context, c PlaceOrder) (Order, error) {
		return Order{ID: c.ID, Item: c.Item, Server: "new"}, nil
	}))

	// A caller of v0.1.0 sends on the type's short name, in its envelope:
	// 0x00, the remaining time as a uvarint (0: none), the JSON message.
	oldSubject := "cqrs.command.nats_test.PlaceOrder"
	oldRequest := append([]byte{0x00, 0x00}, `{"id":1,"item":"lamp"}`...)

	// By default, a server of this version answers it, and counts it.
	srv, err := cqrsnats.Serve(nc, handlers)
	if err != nil {
		panic(err)
	}
	reply, err := nc.Request(oldSubject, oldRequest, 2*time.Second)
	fmt.Println(string(reply.Data), err, "legacy requests:", srv.Stats()[0].Legacy)
	_ = srv.Stop(context.Background())

	// Once no v0.1.0 process is left, the old wire can go.
	srv, err = cqrsnats.Serve(nc, handlers, cqrsnats.WithLegacyWire(false))
	if err != nil {
		panic(err)
	}
	_, err = nc.Request(oldSubject, oldRequest, 2*time.Second)
	fmt.Println(errors.Is(err, natsgo.ErrNoResponders))
	_ = srv.Stop(context.Background())
	// Output:
	// {"ID":1,"Item":"lamp","Server":"new"} <nil> legacy requests: 1
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
