package nats_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// The declared messages of the warehouse service that the Service tests
// and examples serve: a command, a query, a streaming query and an event.
type (
	Reserve struct {
		cqrs.Command[Reservation]
		ID  int    `json:"id"`
		SKU string `json:"sku"`
	}
	Reservation struct {
		ID  int    `json:"id"`
		SKU string `json:"sku"`
		By  string `json:"by"`
	}
	Lookup struct {
		cqrs.Query[Reservation]
		ID int `json:"id"`
	}
	Picks struct {
		cqrs.StreamQuery[Pick]
		ID int `json:"id"`
		N  int `json:"n"`
	}
	Pick struct {
		ID  int    `json:"id"`
		Seq int    `json:"seq"`
		By  string `json:"by"`
	}
	Reserved struct {
		cqrs.Event
		ID int    `json:"id"`
		By string `json:"by"`
	}
)

// errOutOfStock is the warehouse's own error; warehouseErrors names it on
// the wire, and warehouseRoutes are its messages: both shared by the
// serving and the calling side, as a service's package would share them.
var (
	errOutOfStock   = errors.New("out of stock")
	warehouseErrors = []cqrsnats.ErrorCode{{Code: "warehouse.out_of_stock", Err: errOutOfStock}}
	warehouseRoutes = []cqrsnats.Route{
		cqrsnats.RouteFor[Reserve](),
		cqrsnats.RouteFor[Lookup](),
		cqrsnats.RouteFor[Picks](),
		cqrsnats.EventRouteFor[Reserved](),
	}
)

// warehouse is one serving process's buses, whose handlers record what
// they handled.
type warehouse struct {
	name     string
	commands *cqrs.CommandBus
	queries  *cqrs.QueryBus
	events   *cqrs.EventBus
	handled  sync.Map      // reservation ID → the process's name
	release  chan struct{} // closed to let the "block" handlers return
	blocked  chan struct{} // one send per handler that blocks
	ids      sync.Map      // reservation ID → the identity of its Reserved event here
}

func newWarehouse(t testing.TB, name string) *warehouse {
	t.Helper()
	w := &warehouse{
		name: name, commands: cqrs.NewCommandBus(), queries: cqrs.NewQueryBus(), events: cqrs.NewEventBus(),
		release: make(chan struct{}), blocked: make(chan struct{}, 16),
	}
	require.NoError(t, cqrs.Handle(w.commands, func(ctx context.Context, c Reserve) (Reservation, error) {
		switch c.SKU {
		case "none":
			return Reservation{}, fmt.Errorf("sku %s: %w", c.SKU, errOutOfStock)
		case "block": // ignores its context: only release ends it
			w.blocked <- struct{}{}
			<-w.release
			ctx = context.WithoutCancel(ctx)
		}
		if by, dup := w.handled.LoadOrStore(c.ID, name); dup {
			t.Errorf("reservation %d handled twice, by %s and %s", c.ID, by, name)
		}
		if err := cqrs.Publish(ctx, w.events, Reserved{ID: c.ID, By: name}); err != nil {
			return Reservation{}, err
		}
		return Reservation{ID: c.ID, SKU: c.SKU, By: name}, nil
	}))
	require.NoError(t, cqrs.Handle(w.queries, func(_ context.Context, q Lookup) (Reservation, error) {
		return Reservation{ID: q.ID, By: name}, nil
	}))
	require.NoError(t, cqrs.HandleStream(w.queries, func(ctx context.Context, q Picks, yield func(Pick) bool) error {
		if q.N < 0 { // ignores its context: only release ends it
			w.blocked <- struct{}{}
			<-w.release
		}
		for i := range q.N {
			if !yield(Pick{ID: q.ID, Seq: i, By: name}) {
				return nil
			}
		}
		return nil
	}))
	_, err := cqrs.Subscribe(w.events, "audit", func(ctx context.Context, e Reserved) error {
		id, _ := cqrs.IdentityOf(ctx)
		w.ids.Store(e.ID, id)
		return nil
	})
	require.NoError(t, err)
	return w
}

// service returns w as a Service, with the warehouse's routes and errors.
func (w *warehouse) service() cqrsnats.Service {
	return cqrsnats.Service{Commands: w.commands, Queries: w.queries, Events: w.events, Routes: warehouseRoutes, Errors: warehouseErrors}
}

// serveWarehouse serves w on nc until the test ends.
func serveWarehouse(t testing.TB, nc *natsgo.Conn, w *warehouse, opts ...cqrsnats.Option) *cqrsnats.ServiceServer {
	t.Helper()
	srv, err := cqrsnats.ServeService(nc, w.service(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	return srv
}

// customer is a calling process: its buses forward the warehouse's
// routes, and its local subscriber counts the Reserved events it gets.
type customer struct {
	commands *cqrs.CommandBus
	queries  *cqrs.QueryBus
	events   *cqrs.EventBus
	client   *cqrsnats.ServiceClient

	mu       sync.Mutex
	received map[int]int           // reservation ID → deliveries
	ids      map[int]cqrs.Identity // reservation ID → the identity it arrived with
	arrived  chan int
}

func forwardWarehouse(t testing.TB, nc *natsgo.Conn, ev cqrsnats.EventConfig, opts ...cqrsnats.Option) *customer {
	t.Helper()
	c := &customer{
		commands: cqrs.NewCommandBus(), queries: cqrs.NewQueryBus(), events: cqrs.NewEventBus(),
		received: map[int]int{}, ids: map[int]cqrs.Identity{}, arrived: make(chan int, 10000),
	}
	_, err := cqrs.Subscribe(c.events, "ledger", func(ctx context.Context, e Reserved) error {
		id, _ := cqrs.IdentityOf(ctx)
		c.mu.Lock()
		c.received[e.ID]++
		c.ids[e.ID] = id
		c.mu.Unlock()
		c.arrived <- e.ID
		return nil
	})
	require.NoError(t, err)
	svc := cqrsnats.Service{
		Commands: c.commands, Queries: c.queries, Events: c.events,
		Routes: warehouseRoutes, Errors: warehouseErrors, EventConfig: ev, Subscriber: "customer",
	}
	c.client, err = cqrsnats.ForwardService(nc, svc, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.client.Stop(context.Background())) })
	return c
}

// await waits for the events of n reservations.
func (c *customer) await(t testing.TB, n int) {
	t.Helper()
	for range n {
		select {
		case <-c.arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("an event did not arrive")
		}
	}
}

// TestServiceOverNATS serves a whole service with one call and calls it
// with another: its command, query, streaming query and event, and its
// own sentinel error, each as it behaves in process.
func TestServiceOverNATS(t *testing.T) {
	ns := startServer(t, -1)
	w := newWarehouse(t, "w1")
	srv := serveWarehouse(t, connect(t, ns.ClientURL()), w)
	c := forwardWarehouse(t, connect(t, ns.ClientURL()), cqrsnats.EventConfig{})
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{CorrelationID: "basket-7"})

	res, err := cqrs.Send(ctx, c.commands, Reserve{ID: 1, SKU: "lamp"})
	require.NoError(t, err)
	assert.Equal(t, Reservation{ID: 1, SKU: "lamp", By: "w1"}, res)

	got, err := cqrs.Ask(ctx, c.queries, Lookup{ID: 1})
	require.NoError(t, err)
	assert.Equal(t, Reservation{ID: 1, By: "w1"}, got)

	var picks []Pick
	for p, err := range cqrs.Stream(ctx, c.queries, Picks{ID: 1, N: 3}) {
		require.NoError(t, err)
		picks = append(picks, p)
	}
	assert.Equal(t, []Pick{{ID: 1, Seq: 0, By: "w1"}, {ID: 1, Seq: 1, By: "w1"}, {ID: 1, Seq: 2, By: "w1"}}, picks)

	// The event the handler published reached the caller's subscriber,
	// with the identity it has on the serving side.
	c.await(t, 1)
	sent, ok := w.ids.Load(1)
	require.True(t, ok)
	c.mu.Lock()
	assert.Equal(t, map[int]int{1: 1}, c.received)
	assert.Equal(t, sent, c.ids[1], "the event's identity changed on the way")
	assert.Equal(t, "basket-7", c.ids[1].CorrelationID)
	c.mu.Unlock()

	// One table of errors, in the Service, serves both sides.
	_, err = cqrs.Send(ctx, c.commands, Reserve{ID: 2, SKU: "none"})
	require.ErrorIs(t, err, errOutOfStock)
	assert.Equal(t, "sku none: out of stock", err.Error())

	st := srv.Stats()
	require.Len(t, st.Requests, 2)
	assert.Equal(t, uint64(2), st.Requests[0].Calls, "Reserve") // sorted by name: Reserve is a command, served first
	assert.Equal(t, uint64(1), st.Requests[1].Calls, "Lookup")
	require.Len(t, st.Streams.Types, 1)
	assert.Equal(t, uint64(1), st.Streams.Types[0].Streams)
	assert.Equal(t, uint64(1), st.Events.Published)
	require.Len(t, c.client.Stats(), 1)
	assert.Equal(t, uint64(1), c.client.Stats()[0].Handled)
}

// TestServeServiceChecksBeforeServing: what ServeService refuses, each
// with the error that names the fix, and that a refusal leaves nothing
// served.
func TestServeServiceChecksBeforeServing(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	w := newWarehouse(t, "w1")
	bare := cqrs.NewCommandBus()
	for _, tc := range []struct {
		name string
		svc  cqrsnats.Service
		is   error
		says string
	}{
		{"a route without its handler", cqrsnats.Service{Commands: bare, Queries: w.queries, Routes: warehouseRoutes[:3]},
			cqrs.ErrHandlerNotFound, "command nats_test.Reserve has no handler on the serving side"},
		{"a route whose bus is missing", cqrsnats.Service{Commands: w.commands, Routes: warehouseRoutes[:2]},
			cqrs.ErrNilBus, "query nats_test.Lookup: the Service has no Queries bus"},
		{"an event route without an event bus", cqrsnats.Service{Commands: w.commands, Routes: warehouseRoutes[3:]},
			cqrs.ErrNilBus, "the Service has no Events bus"},
		{"an event given to RouteFor", cqrsnats.Service{Commands: w.commands, Events: w.events, Routes: []cqrsnats.Route{cqrsnats.RouteFor[Reserved]()}},
			cqrs.ErrInvalidMessageType, "route it with cqrsnats.EventRouteFor[nats_test.Reserved]()"},
		{"a nil route", cqrsnats.Service{Commands: w.commands, Routes: []cqrsnats.Route{nil}},
			cqrs.ErrInvalidMessageType, "make routes with RouteFor or EventRouteFor"},
		{"a route twice", cqrsnats.Service{Commands: w.commands, Routes: []cqrsnats.Route{cqrsnats.RouteFor[Reserve](), cqrsnats.RouteFor[Reserve]()}},
			cqrs.ErrHandlerExists, "routed twice"},
		{"nothing to serve", cqrsnats.Service{Commands: bare},
			cqrs.ErrHandlerNotFound, "no handler registered, and no event route"},
		{"a bad error code", cqrsnats.Service{Commands: w.commands, Errors: []cqrsnats.ErrorCode{{Code: "Bad Code", Err: errOutOfStock}}},
			cqrsnats.ErrInvalidErrorCode, `"Bad Code"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := cqrsnats.ServeService(nc, tc.svc)
			require.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.says)
			assert.Nil(t, srv)
		})
	}

	// A refusal after the event forwarders were subscribed (here, a type
	// that cannot travel) leaves none behind, and serves nothing.
	type hiddenReserved struct {
		cqrs.Event
		secret int
	}
	_ = hiddenReserved{secret: 1} // what JSON would drop
	svc := w.service()
	svc.Routes = []cqrsnats.Route{cqrsnats.EventRouteFor[Reserved](), cqrsnats.EventRouteFor[hiddenReserved]()}
	_, err := cqrsnats.ServeService(nc, svc)
	require.ErrorIs(t, err, cqrsnats.ErrUnexportedFields)
	for _, spec := range w.events.Specs() {
		assert.NotEqual(t, cqrsnats.ForwarderName, spec.Subscriber, "a forwarder of %s was left behind", spec.Name)
	}
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrsnats.ForwardDeclared[Reserve](commands, cqrsnats.NewClient(nc)))
	_, err = cqrs.Send(context.Background(), commands, Reserve{ID: 1})
	require.ErrorIs(t, err, cqrsnats.ErrNoResponders, "a failed ServeService served something")
}

// TestForwardServiceChecksBeforeRegistering: one route that cannot be
// forwarded fails ForwardService before any forwarder is registered or
// any event subscribed.
func TestForwardServiceChecksBeforeRegistering(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	type hiddenLookup struct {
		cqrs.Query[Reservation]
		id int
	}
	_ = hiddenLookup{id: 1} // what JSON would drop
	commands, queries, events := cqrs.NewCommandBus(), cqrs.NewQueryBus(), cqrs.NewEventBus()
	full := cqrsnats.Service{Commands: commands, Queries: queries, Events: events, Subscriber: "customer"}
	withRoutes := func(svc cqrsnats.Service, routes ...cqrsnats.Route) cqrsnats.Service {
		svc.Routes = routes
		return svc
	}
	noSubscriber := full
	noSubscriber.Subscriber = ""
	for _, tc := range []struct {
		name string
		svc  cqrsnats.Service
		is   error
		says string
	}{
		{"a type that cannot travel", withRoutes(full, append(warehouseRoutes, cqrsnats.RouteFor[hiddenLookup]())...),
			cqrsnats.ErrUnexportedFields, "nats_test.hiddenLookup"},
		{"a route whose bus is missing", withRoutes(cqrsnats.Service{Commands: commands}, warehouseRoutes[:2]...),
			cqrs.ErrNilBus, "query nats_test.Lookup: the Service has no Queries bus"},
		{"an event route without a subscriber name", withRoutes(noSubscriber, warehouseRoutes...),
			cqrs.ErrInvalidName, "the Service has no Subscriber"},
		{"an event given to RouteFor", withRoutes(full, cqrsnats.RouteFor[Reserve](), cqrsnats.RouteFor[Reserved]()),
			cqrs.ErrInvalidMessageType, "route it with cqrsnats.EventRouteFor[nats_test.Reserved]()"},
		{"a route twice", withRoutes(full, cqrsnats.RouteFor[Picks](), cqrsnats.RouteFor[Picks]()),
			cqrs.ErrHandlerExists, "streaming query nats_test.Picks is routed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cqrsnats.ForwardService(nc, tc.svc)
			require.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.says)
			assert.Empty(t, commands.Registered(), "a forwarder was registered")
			assert.Empty(t, queries.Registered(), "a forwarder was registered")
			assert.Empty(t, events.Specs(), "a subscriber was left")
		})
	}

	// A type the bus already handles is refused, not forwarded beside it.
	require.NoError(t, cqrs.Handle(queries, func(context.Context, Lookup) (Reservation, error) { return Reservation{}, nil }))
	_, err := cqrsnats.ForwardService(nc, withRoutes(full, warehouseRoutes...))
	require.ErrorIs(t, err, cqrs.ErrHandlerExists)
	assert.Contains(t, err.Error(), "query nats_test.Lookup already has a handler on the calling side's bus")
	assert.Empty(t, commands.Registered())
}

// TestServiceStopIsBoundedAndReportsEverything: a Stop whose context ends
// while a handler and a stream still run returns both, joined, and a
// later Stop returns nil once they have returned.
func TestServiceStopIsBoundedAndReportsEverything(t *testing.T) {
	ns := startServer(t, -1)
	w := newWarehouse(t, "w1")
	srv, err := cqrsnats.ServeService(connect(t, ns.ClientURL()), w.service())
	require.NoError(t, err)
	c := forwardWarehouse(t, connect(t, ns.ClientURL()), cqrsnats.EventConfig{})

	var wg sync.WaitGroup
	var sendErr, streamErr error
	wg.Go(func() { _, sendErr = cqrs.Send(context.Background(), c.commands, Reserve{ID: 1, SKU: "block"}) })
	wg.Go(func() {
		for _, err := range cqrs.Stream(context.Background(), c.queries, Picks{ID: 1, N: -1}) {
			streamErr = err
		}
	})
	<-w.blocked
	<-w.blocked

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = srv.Stop(ctx)
	assert.Less(t, time.Since(start), 2*time.Second, "Stop outlived its context")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "1 handlers still running: command nats_test.Reserve")
	assert.Contains(t, err.Error(), "1 streams still running: query nats_test.Picks")

	close(w.release)
	wg.Wait()
	require.NoError(t, srv.Stop(context.Background()))
	require.NoError(t, sendErr, "the handler that was running answered")
	require.ErrorIs(t, streamErr, cqrsnats.ErrUnavailable, "the stream cut short says so")
	c.await(t, 1) // the last handler's event was sent before Stop returned
}

// TestServiceEventsAreNotSentBack: a process that both receives an event
// from NATS (ForwardService) and sends it (ServeService) on one bus
// neither sends back what it received nor refuses what its subscribers
// publish in turn; and ForwardService refuses a bus that already sends
// the event, in the other order.
func TestServiceEventsAreNotSentBack(t *testing.T) {
	ns := startServer(t, -1)
	origin := newWarehouse(t, "origin")
	serveWarehouse(t, connect(t, ns.ClientURL()), origin)

	// The relay receives Reserved onto its bus, then serves it from there.
	relayConn := connect(t, ns.ClientURL())
	relay := newWarehouse(t, "relay")
	relayed := make(chan int, 10)
	_, err := cqrs.Subscribe(relay.events, "relay", func(ctx context.Context, e Reserved) error {
		if e.By == "origin" { // publish one of its own in turn
			return cqrs.Publish(ctx, relay.events, Reserved{ID: e.ID + 100, By: "relay"})
		}
		relayed <- e.ID
		return nil
	})
	require.NoError(t, err)
	in := relay.service()
	in.Commands, in.Queries, in.Routes, in.Subscriber = nil, nil, warehouseRoutes[3:], "relay"
	client, err := cqrsnats.ForwardService(relayConn, in)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, client.Stop(context.Background())) })
	out := relay.service()
	out.Commands, out.Queries, out.Routes = nil, nil, warehouseRoutes[3:]
	relaySrv, err := cqrsnats.ServeService(relayConn, out)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, relaySrv.Stop(context.Background())) })

	watcher := forwardWarehouse(t, connect(t, ns.ClientURL()), cqrsnats.EventConfig{})
	_, err = cqrs.Send(context.Background(), watcher.commands, Reserve{ID: 1, SKU: "lamp"})
	require.NoError(t, err)
	watcher.await(t, 2) // origin's, then the relay's in turn
	// The relay's subscriber gets its own event twice: from its bus, and
	// from NATS, where the relay receives every Reserved.
	require.Equal(t, 101, <-relayed)
	require.Equal(t, 101, <-relayed)
	require.Never(t, func() bool { return len(watcher.arrived) > 0 || len(relayed) > 0 }, 200*time.Millisecond, 10*time.Millisecond,
		"an event came back")
	watcher.mu.Lock()
	assert.Equal(t, map[int]int{1: 1, 101: 1}, watcher.received)
	watcher.mu.Unlock()
	assert.Equal(t, uint64(1), relaySrv.Stats().Events.Published, "the relay sent what it received back to NATS")

	// In the other order, the bus already sends Reserved to NATS.
	_, err = cqrsnats.ForwardService(relayConn, in)
	require.ErrorIs(t, err, cqrs.ErrHandlerExists)
	assert.Contains(t, err.Error(), "give ForwardService another EventBus")
}

// TestServiceEventsWithJetStream: with a durable EventConfig the caller
// gets each event at least once: a local subscriber's failure has it
// delivered again, to every local subscriber.
func TestServiceEventsWithJetStream(t *testing.T) {
	ns := startEventServer(t, true)
	ev := cqrsnats.EventConfig{Durable: true, BackOff: []time.Duration{10 * time.Millisecond}}
	c := forwardWarehouse(t, connect(t, ns.ClientURL()), ev)
	var mu sync.Mutex
	calls := map[int]int{} // reservation ID → calls
	_, err := cqrs.Subscribe(c.events, "flaky", func(_ context.Context, e Reserved) error {
		mu.Lock()
		calls[e.ID]++
		first := calls[e.ID] == 1
		mu.Unlock()
		if first {
			return errors.New("the ledger is busy")
		}
		return nil
	})
	require.NoError(t, err)
	w := newWarehouse(t, "w1")
	svc := w.service()
	svc.EventConfig = ev
	srv, err := cqrsnats.ServeService(connect(t, ns.ClientURL()), svc)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })

	_, err = cqrs.Send(context.Background(), c.commands, Reserve{ID: 1, SKU: "lamp"})
	require.NoError(t, err)
	c.await(t, 2) // delivered, failed by flaky, delivered again
	require.Eventually(t, func() bool {
		st := c.client.Stats()
		return len(st) == 1 && st[0].Handled == 1
	}, 5*time.Second, 5*time.Millisecond)
	st := c.client.Stats()[0]
	assert.Equal(t, uint64(1), st.Failed)
	assert.Equal(t, "customer", st.Subscriber)
	c.mu.Lock()
	assert.Equal(t, map[int]int{1: 2}, c.received)
	c.mu.Unlock()
	assert.Equal(t, uint64(1), srv.Stats().Events.Published)
}
