package nats_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// Orders and ListOrders are the streaming query of the examples.
type (
	ListOrders struct {
		cqrs.StreamQuery[OrderLine]
		Customer string
		Count    int
	}
	OrderLine struct {
		Customer string
		N        int
	}
)

// errNoSuchCustomer is the orders service's own error, named on the wire.
var (
	errNoSuchCustomer = errors.New("no such customer")
	ordersErrors      = []cqrsnats.ErrorCode{{Code: "orders.no_such_customer", Err: errNoSuchCustomer}}
)

// listOrders is the serving process's handler.
func listOrders(ctx context.Context, q ListOrders, yield func(OrderLine) bool) error {
	if q.Customer == "" {
		return errNoSuchCustomer
	}
	for i := 1; i <= q.Count; i++ {
		if !yield(OrderLine{Customer: q.Customer, N: i}) {
			return nil // the reader stopped: here, or in the calling process
		}
	}
	return nil
}

// serveOrders starts the serving process of the examples.
func serveOrders(url string, opts ...cqrsnats.Option) (*cqrsnats.StreamServer, func()) {
	nc, err := natsgo.Connect(url)
	if err != nil {
		panic(err)
	}
	handlers := cqrs.NewQueryBus()
	if err := cqrs.HandleStream(handlers, listOrders); err != nil {
		panic(err)
	}
	opts = append(opts, cqrsnats.WithErrors(ordersErrors...))
	srv, err := cqrsnats.ServeStreams(nc, handlers, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[ListOrders, OrderLine]()}, opts...)
	if err != nil {
		panic(err)
	}
	return srv, func() {
		_ = srv.Stop(context.Background())
		nc.Close()
	}
}

// callOrders returns the calling process's bus, on which ListOrders
// streams over NATS.
func callOrders(url string, opts ...cqrsnats.Option) (*cqrs.QueryBus, func()) {
	nc, err := natsgo.Connect(url)
	if err != nil {
		panic(err)
	}
	queries := cqrs.NewQueryBus()
	client := cqrsnats.NewClient(nc, cqrsnats.WithErrors(ordersErrors...))
	if err := cqrsnats.ForwardStream[ListOrders, OrderLine](queries, client, opts...); err != nil {
		panic(err)
	}
	return queries, nc.Close
}

func ExampleServeStreams() {
	ns, stop := exampleNATS(false)
	defer stop()

	// The process that handles ListOrders serves its stream.
	serving, _ := natsgo.Connect(ns.ClientURL())
	defer serving.Close()
	handlers := cqrs.NewQueryBus()
	_ = cqrs.HandleStream(handlers, listOrders)
	srv, err := cqrsnats.ServeStreams(serving, handlers, []cqrsnats.StreamType{
		cqrsnats.StreamTypeFor[ListOrders, OrderLine](),
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	// The calling process forwards it, then reads it as a local stream.
	queries, closeCalling := callOrders(ns.ClientURL())
	defer closeCalling()
	for line, err := range cqrs.Stream(context.Background(), queries, ListOrders{Customer: "c-1", Count: 3}) {
		if err != nil {
			fmt.Println("error:", err)
			break
		}
		fmt.Println(line.Customer, line.N)
	}
	// Output:
	// c-1 1
	// c-1 2
	// c-1 3
}

func ExampleForwardStream() {
	ns, stop := exampleNATS(false)
	defer stop()
	_, stopServing := serveOrders(ns.ClientURL())
	defer stopServing()

	// ForwardStream registers on the caller's own bus; callers read
	// cqrs.Stream as they would a local handler's.
	nc, _ := natsgo.Connect(ns.ClientURL())
	defer nc.Close()
	queries := cqrs.NewQueryBus()
	client := cqrsnats.NewClient(nc, cqrsnats.WithErrors(ordersErrors...))
	if err := cqrsnats.ForwardStream[ListOrders, OrderLine](queries, client); err != nil {
		panic(err)
	}

	// Breaking out of the loop cancels the producer in the other process.
	for line, err := range cqrs.Stream(context.Background(), queries, ListOrders{Customer: "c-2", Count: 1_000_000}) {
		if err != nil {
			panic(err)
		}
		fmt.Println("first:", line.N)
		break
	}

	// The producer's error arrives as the last item, with its identity.
	for _, err := range cqrs.Stream(context.Background(), queries, ListOrders{Count: 3}) {
		fmt.Println("no such customer:", errors.Is(err, errNoSuchCustomer))
	}

	// The caller's deadline travels with the request and bounds the
	// producer; the stream ends with the context's error.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var last error
	for _, err := range cqrs.Stream(ctx, queries, ListOrders{Customer: "c-3", Count: 100_000_000}) {
		last = err
	}
	fmt.Println("deadline:", errors.Is(last, context.DeadlineExceeded))
	// Output:
	// first: 1
	// no such customer: true
	// deadline: true
}

// The identity of the caller's context travels with the stream: the
// stream handler in the serving process reads it, and the messages it
// sends join the caller's conversation.
func ExampleForwardStream_identity() {
	ns, stop := exampleNATS(false)
	defer stop()
	serving, _ := natsgo.Connect(ns.ClientURL())
	defer serving.Close()
	handlers := cqrs.NewQueryBus()
	_ = cqrs.HandleStream(handlers, func(ctx context.Context, q ListOrders, yield func(OrderLine) bool) error {
		id, _ := cqrs.IdentityOf(ctx)
		fmt.Println("serving a stream for conversation", id.CorrelationID)
		return listOrders(ctx, q, yield)
	})
	srv, err := cqrsnats.ServeStreams(serving, handlers, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[ListOrders, OrderLine]()})
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	queries, closeCalling := callOrders(ns.ClientURL())
	defer closeCalling()
	// A conversation of the caller's own, such as one per HTTP request.
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{CorrelationID: "http-request-42"})
	n := 0
	for _, err := range cqrs.Stream(ctx, queries, ListOrders{Customer: "c-1", Count: 3}) {
		if err != nil {
			panic(err)
		}
		n++
	}
	fmt.Println(n, "lines")
	// Output:
	// serving a stream for conversation http-request-42
	// 3 lines
}

func ExampleWithStreamConfig() {
	ns, stop := exampleNATS(false)
	defer stop()

	// The serving side grants at most 64 items ahead of each caller and a
	// heartbeat of at most 500ms (so a caller that vanishes holds one of
	// its streams for at most 2s), and runs at most 100 streams at once.
	_, stopServing := serveOrders(ns.ClientURL(), cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{
		Window:     64,
		Heartbeat:  500 * time.Millisecond,
		MaxStreams: 100,
	}))
	defer stopServing()

	// This caller asks for 16 ahead, and to say it is alive every 200ms:
	// both within what the serving side grants.
	queries, closeCalling := callOrders(ns.ClientURL(), cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{
		Window:    16,
		Heartbeat: 200 * time.Millisecond,
	}))
	defer closeCalling()
	n := 0
	for _, err := range cqrs.Stream(context.Background(), queries, ListOrders{Customer: "c-1", Count: 1000}) {
		if err != nil {
			panic(err)
		}
		n++
	}
	fmt.Println(n, "lines")
	// Output: 1000 lines
}

func ExampleStreamTypeFor() {
	ns, stop := exampleNATS(false)
	defer stop()

	// Tail does not declare its items (type Tail struct{ Lines int }):
	// its handler is registered with RegisterStream, and its StreamType
	// names both types.
	serving, _ := natsgo.Connect(ns.ClientURL())
	defer serving.Close()
	handlers := cqrs.NewQueryBus()
	_ = cqrs.RegisterStream(handlers, cqrs.StreamFunc[Tail, string](func(_ context.Context, q Tail, yield func(string) bool) error {
		for i := range q.Lines {
			if !yield(fmt.Sprintf("line %d", i+1)) {
				return nil
			}
		}
		return nil
	}))
	srv, err := cqrsnats.ServeStreams(serving, handlers, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[Tail, string]()})
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	calling, _ := natsgo.Connect(ns.ClientURL())
	defer calling.Close()
	queries := cqrs.NewQueryBus()
	_ = cqrsnats.ForwardStream[Tail, string](queries, cqrsnats.NewClient(calling))
	for line, err := range cqrs.StreamOf[string](context.Background(), queries, Tail{Lines: 2}) {
		if err != nil {
			panic(err)
		}
		fmt.Println(line)
	}
	// Output:
	// line 1
	// line 2
}

func ExampleStreamServer_Stats() {
	ns, stop := exampleNATS(false)
	defer stop()
	srv, stopServing := serveOrders(ns.ClientURL())
	defer stopServing()
	queries, closeCalling := callOrders(ns.ClientURL())
	defer closeCalling()

	for range cqrs.Stream(context.Background(), queries, ListOrders{Customer: "c-1", Count: 5}) {
	}
	for range cqrs.Stream(context.Background(), queries, ListOrders{Count: 5}) {
	}
	for _, st := range srv.Stats().Types {
		fmt.Printf("%s: %d streams, %d items, %d errors\n", st.Name, st.Streams, st.Items, st.Errors)
	}
	// Output: nats_test.ListOrders: 2 streams, 5 items, 1 errors
}

func ExampleStreamServer_Stop() {
	ns, stop := exampleNATS(false)
	defer stop()
	srv, stopServing := serveOrders(ns.ClientURL())
	defer stopServing()
	queries, closeCalling := callOrders(ns.ClientURL())
	defer closeCalling()

	// A stream that would run for long is under way...
	next, stopReading := iter.Pull2(cqrs.Stream(context.Background(), queries, ListOrders{Customer: "c-1", Count: 100_000_000}))
	defer stopReading()
	if _, err, _ := next(); err != nil {
		panic(err)
	}

	// ...when the serving process stops: it waits for running streams
	// until ctx ends, then cancels them.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := srv.Stop(ctx)
	fmt.Println("gave up waiting:", errors.Is(err, context.DeadlineExceeded))

	// The caller's stream ends with ErrUnavailable: safe to retry, on
	// another serving process.
	var last error
	for {
		_, err, ok := next()
		if !ok {
			break
		}
		last = err
	}
	fmt.Println("unavailable:", errors.Is(last, cqrsnats.ErrUnavailable))
	// Output:
	// gave up waiting: true
	// unavailable: true
}
