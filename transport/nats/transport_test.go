package nats_test

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// PlaceOrder and GetOrder are the messages the tests send.
type PlaceOrder struct {
	ID    int    `json:"id"`
	Item  string `json:"item" validate:"required"`
	Email string `json:"email" validate:"omitempty,email"`
	Do    string `json:"do,omitempty"`
}

type GetOrder struct{ ID int }

type Order struct {
	ID     int
	Item   string
	Server string
}

// The subjects of the test messages.
var (
	placeOrderSubject = cqrsnats.Subject("cqrs", cqrs.SpecFor[PlaceOrder, Order](cqrs.NewCommandBus()))
	getOrderSubject   = cqrsnats.Subject("cqrs", cqrs.SpecFor[GetOrder, Order](cqrs.NewQueryBus()))
)

// serving builds a command bus and a query bus with handlers that record
// which server handled what, and serves them on nc.
type serving struct {
	name     string
	handled  sync.Map // order id -> server name
	started  chan struct{}
	release  chan struct{}
	servers  []*cqrsnats.Server
	deadline atomic.Value // time.Time the last handler's context carried
	traceID  atomic.Value // trace.TraceID the last handler saw
}

func serve(t *testing.T, nc *natsgo.Conn, name string, opts ...cqrsnats.Option) *serving {
	t.Helper()
	s := &serving{name: name, started: make(chan struct{}, 100), release: make(chan struct{})}
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{})))
	queries := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, Order](func(ctx context.Context, c PlaceOrder) (Order, error) {
		if d, ok := ctx.Deadline(); ok {
			s.deadline.Store(d)
		}
		s.traceID.Store(trace.SpanContextFromContext(ctx).TraceID())
		if _, dup := s.handled.LoadOrStore(c.ID, name); dup {
			t.Errorf("order %d handled twice", c.ID)
		}
		switch c.Do {
		case "block":
			s.started <- struct{}{}
			select {
			case <-s.release:
			case <-ctx.Done():
				return Order{}, ctx.Err()
			}
		case "fail":
			return Order{}, errors.New("warehouse on fire")
		case "not_found":
			return Order{}, fmt.Errorf("inner bus: %w", cqrs.ErrHandlerNotFound)
		case "open":
			return Order{}, fmt.Errorf("payments: %w", cqrs.ErrCircuitOpen)
		case "limited":
			return Order{}, fmt.Errorf("payments: %w", cqrs.ErrRateLimited)
		case "timeout":
			return Order{}, fmt.Errorf("%w: %w", cqrs.ErrExecutionTimeout, context.DeadlineExceeded)
		case "panic":
			panic("handler exploded")
		case "big":
			return Order{ID: c.ID, Item: strings.Repeat("x", 2048)}, nil
		case "huge_error":
			return Order{}, errors.New(strings.Repeat("e", 2<<20))
		case "lines":
			return Order{}, errors.New("line one\r\nline two")
		case "secret_panic":
			panic("db password=hunter2 at 10.0.0.7")
		case "missing":
			return Order{}, middleware.Permanent(fmt.Errorf("order %d: %w", c.ID, errOrderMissing))
		}
		return Order{ID: c.ID, Item: c.Item, Server: name}, nil
	})))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](func(_ context.Context, q GetOrder) (Order, error) {
		return Order{ID: q.ID, Server: name}, nil
	})))
	for _, bus := range []cqrs.Bus{commands, queries} {
		srv, err := cqrsnats.Serve(nc, bus, opts...)
		require.NoError(t, err)
		s.servers = append(s.servers, srv)
		t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	}
	return s
}

// calling returns local buses whose PlaceOrder and GetOrder go over nc.
func calling(t *testing.T, nc *natsgo.Conn, opts ...cqrsnats.Option) (*cqrs.CommandBus, *cqrs.QueryBus) {
	t.Helper()
	client := cqrsnats.NewClient(nc, opts...)
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	require.NoError(t, cqrsnats.Forward[PlaceOrder, Order](commands, client))
	require.NoError(t, cqrsnats.Forward[GetOrder, Order](queries, client))
	return commands, queries
}

func TestRoundTrip(t *testing.T) {
	ns := startServer(t, -1)
	serve(t, connect(t, ns.ClientURL()), "s1")
	commands, queries := calling(t, connect(t, ns.ClientURL()))
	ctx := context.Background()

	order, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "lamp"})
	require.NoError(t, err)
	assert.Equal(t, Order{ID: 1, Item: "lamp", Server: "s1"}, order)

	order, err = cqrs.ExecuteTyped[Order](ctx, queries, any(GetOrder{ID: 7}))
	require.NoError(t, err)
	assert.Equal(t, Order{ID: 7, Server: "s1"}, order)
}

func TestQueueGroupSharesTheLoad(t *testing.T) {
	ns := startServer(t, -1)
	servers := []*serving{
		serve(t, connect(t, ns.ClientURL()), "s1"),
		serve(t, connect(t, ns.ClientURL()), "s2"),
		serve(t, connect(t, ns.ClientURL()), "s3"),
	}
	commands, _ := calling(t, connect(t, ns.ClientURL()))

	const requests = 1000
	ids := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for id := range ids {
				order, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: id, Item: "x"})
				if err != nil || order.ID != id {
					failed.Add(1)
				}
			}
		})
	}
	for id := range requests {
		ids <- id
	}
	close(ids)
	wg.Wait()
	require.Zero(t, failed.Load())

	total := 0
	for _, s := range servers {
		n := 0
		s.handled.Range(func(any, any) bool { n++; return true })
		assert.Positive(t, n, "%s got none of the load", s.name)
		total += n
	}
	assert.Equal(t, requests, total, "every request handled exactly once")
}

func TestErrorsKeepTheirIdentity(t *testing.T) {
	ns := startServer(t, -1)
	serve(t, connect(t, ns.ClientURL()), "s1")
	commands, _ := calling(t, connect(t, ns.ClientURL()))
	ctx := context.Background()
	for i, tc := range []struct {
		do   string
		want []error
	}{
		{"not_found", []error{cqrs.ErrHandlerNotFound}},
		{"open", []error{cqrs.ErrCircuitOpen}},
		{"limited", []error{cqrs.ErrRateLimited}},
		{"timeout", []error{cqrs.ErrExecutionTimeout, context.DeadlineExceeded}},
		{"panic", []error{cqrs.ErrHandlerPanic}},
	} {
		_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 100 + i, Item: "x", Do: tc.do})
		for _, target := range tc.want {
			require.ErrorIs(t, err, target, tc.do)
		}
		var remote *cqrsnats.RemoteError
		require.ErrorAs(t, err, &remote)
	}

	// Another error arrives with its message and no identity it did not have.
	_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 200, Item: "x", Do: "fail"})
	require.EqualError(t, err, "warehouse on fire")
	assert.NotErrorIs(t, err, cqrs.ErrHandlerNotFound)

	// Validation keeps its fields.
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 201, Email: "nope"})
	require.ErrorIs(t, err, cqrs.ErrValidation)
	var verr *cqrs.ValidationError
	require.ErrorAs(t, err, &verr)
	assert.Equal(t, []cqrs.FieldError{
		{Field: "PlaceOrder.Item", Tag: "required", Value: ""},
		{Field: "PlaceOrder.Email", Tag: "email", Value: "nope"},
	}, verr.Fields)
}

func TestTransportErrors(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	ctx := context.Background()

	// Nobody serves the type.
	commands, _ := calling(t, nc)
	_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x"})
	require.ErrorIs(t, err, cqrsnats.ErrNoResponders)

	// A reply that is not an Order.
	sub, err := nc.Subscribe(getOrderSubject, func(m *natsgo.Msg) { _ = m.Respond([]byte("{not json")) })
	require.NoError(t, err)
	_, queries := calling(t, nc)
	_, err = cqrs.Dispatch[Order](ctx, queries, GetOrder{ID: 1})
	require.ErrorIs(t, err, cqrsnats.ErrBadReply)
	require.NoError(t, sub.Unsubscribe())

	// Payloads over the limit, on the sending and on the serving side.
	serve(t, connect(t, ns.ClientURL()), "s1", cqrsnats.WithMaxPayload(1024))
	small, _ := calling(t, nc, cqrsnats.WithMaxPayload(64))
	_, err = cqrs.Dispatch[Order](ctx, small, PlaceOrder{ID: 2, Item: strings.Repeat("y", 100)})
	require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
	assert.Contains(t, err.Error(), "message of")
	big, _ := calling(t, nc)
	_, err = cqrs.Dispatch[Order](ctx, big, PlaceOrder{ID: 3, Item: strings.Repeat("y", 2000)})
	require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge, "the server refuses a request over its limit")
	_, err = cqrs.Dispatch[Order](ctx, big, PlaceOrder{ID: 4, Item: "x", Do: "big"})
	require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge, "and a result over it")
}

// TestPayloadLimitCountsTheEnvelope: a message under the limit whose
// envelope takes it over is refused before it is sent, as too large, not
// as a transport failure; one that fits with its envelope goes through.
// NATS's limit is its default, 1 MiB, the client's default too.
func TestPayloadLimitCountsTheEnvelope(t *testing.T) {
	ns := startServer(t, -1)
	s := serve(t, connect(t, ns.ClientURL()), "s1")
	commands, _ := calling(t, connect(t, ns.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	empty, err := json.Marshal(PlaceOrder{ID: 1})
	require.NoError(t, err)

	// 4 bytes under the limit encoded: the envelope (the deadline and the
	// type's identity) takes it over.
	item := strings.Repeat("y", 1<<20-len(empty)-4)
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: item})
	require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
	assert.NotErrorIs(t, err, cqrsnats.ErrTransport)
	assert.Contains(t, err.Error(), "with its envelope")
	_, handled := s.handled.Load(1)
	assert.False(t, handled)

	// With room for the envelope, it goes through, and so does its result.
	item = strings.Repeat("y", 1<<20-len(empty)-200)
	order, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 2, Item: item})
	require.NoError(t, err)
	assert.Equal(t, item, order.Item)

	// The client's own limit counts the envelope too, also when NATS and
	// the serving side would take the request.
	small, _ := calling(t, connect(t, ns.ClientURL()), cqrsnats.WithMaxPayload(4096))
	_, err = cqrs.Dispatch[Order](ctx, small, PlaceOrder{ID: 3, Item: strings.Repeat("y", 4096-len(empty)-4)})
	require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
	assert.Contains(t, err.Error(), "over the limit of 4096")
	_, handled = s.handled.Load(3)
	assert.False(t, handled, "a message over the client's limit was sent")
	_, err = cqrs.Dispatch[Order](ctx, small, PlaceOrder{ID: 4, Item: strings.Repeat("y", 4096-len(empty)-200)})
	require.NoError(t, err)
}

// TestPayloadOverTheNATSServersLimit: with WithMaxPayload above the NATS
// server's own limit (max_payload, here 64 KiB), a message or a result
// between the two is too large, not a transport failure, on both sides.
func TestPayloadOverTheNATSServersLimit(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxPayload: 64 << 10})
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	var ran atomic.Int64
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(_ context.Context, c PlaceOrder) (Order, error) {
		ran.Add(1)
		return Order{ID: c.ID, Item: strings.Repeat("r", 100<<10)}, nil
	})))
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), bus)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()
	commands, _ := calling(t, connect(t, ns.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: strings.Repeat("m", 100<<10)})
	require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge, "the message")
	assert.NotErrorIs(t, err, cqrsnats.ErrTransport)
	assert.Contains(t, err.Error(), "the NATS server's limit of 65536")
	assert.Zero(t, ran.Load())

	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 2, Item: "small"})
	require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge, "the result")
	assert.Contains(t, err.Error(), "result of")
	assert.Equal(t, int64(1), ran.Load())
}

func TestPlainRequestsAreServed(t *testing.T) {
	// A request that is the encoded message alone, as the NATS command
	// line sends it, is served too, with no deadline.
	ns := startServer(t, -1)
	serve(t, connect(t, ns.ClientURL()), "s1")
	nc := connect(t, ns.ClientURL())
	reply, err := nc.Request(placeOrderSubject, []byte(`{"id":5,"item":"lamp"}`), 5*time.Second)
	require.NoError(t, err)
	assert.JSONEq(t, `{"ID":5,"Item":"lamp","Server":"s1"}`, string(reply.Data))

	reply, err = nc.Request(placeOrderSubject, []byte{0x00, 0xff}, 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "bad_request", reply.Header.Get("Nats-Service-Error-Code"), "a broken envelope is refused")
}

func TestDeadlinePropagation(t *testing.T) {
	ns := startServer(t, -1)
	s := serve(t, connect(t, ns.ClientURL()), "s1")
	commands, _ := calling(t, connect(t, ns.ClientURL()))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x"})
	require.NoError(t, err)
	callerDeadline, _ := ctx.Deadline()
	seen, ok := s.deadline.Load().(time.Time)
	require.True(t, ok, "the handler's context has a deadline")
	// The remaining time travels, as gRPC's grpc-timeout does, so clocks
	// need not agree: the handler's deadline is the caller's, moved by the
	// one-way trip.
	assert.WithinDuration(t, callerDeadline, seen, time.Second)

	// A caller's expired deadline ends the handler too.
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	_, err = cqrs.Dispatch[Order](short, commands, PlaceOrder{ID: 2, Item: "x", Do: "block"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestCancelledCallerStopsWaiting(t *testing.T) {
	ns := startServer(t, -1)
	s := serve(t, connect(t, ns.ClientURL()), "s1")
	commands, _ := calling(t, connect(t, ns.ClientURL()))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x", Do: "block"})
		done <- err
	}()
	<-s.started // the handler is running
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	close(s.release) // let the handler finish before the server stops
}

func TestTraceContextPropagates(t *testing.T) {
	ns := startServer(t, -1)
	tc := propagation.TraceContext{}
	s := serve(t, connect(t, ns.ClientURL()), "s1", cqrsnats.WithPropagator(tc))
	commands, _ := calling(t, connect(t, ns.ClientURL()), cqrsnats.WithPropagator(tc))

	tp := sdktrace.NewTracerProvider()
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	ctx, span := tp.Tracer("client").Start(context.Background(), "checkout")
	_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x"})
	span.End()
	require.NoError(t, err)
	assert.Equal(t, span.SpanContext().TraceID(), s.traceID.Load(), "the handler runs in the caller's trace")
}

// gobCodec is a second codec, to show the codec is pluggable.
type gobCodec struct{}

func (gobCodec) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	err := gob.NewEncoder(&buf).Encode(v)
	return buf.Bytes(), err
}
func (gobCodec) Unmarshal(data []byte, v any) error {
	return gob.NewDecoder(bytes.NewReader(data)).Decode(v)
}

func TestOtherCodec(t *testing.T) {
	ns := startServer(t, -1)
	serve(t, connect(t, ns.ClientURL()), "s1", cqrsnats.WithCodec(gobCodec{}), cqrsnats.WithPrefix("shop"))
	commands, _ := calling(t, connect(t, ns.ClientURL()), cqrsnats.WithCodec(gobCodec{}), cqrsnats.WithPrefix("shop"))
	order, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 9, Item: "gob"})
	require.NoError(t, err)
	assert.Equal(t, Order{ID: 9, Item: "gob", Server: "s1"}, order)

	// A JSON caller cannot talk to a gob server: a clear error, not a wrong value.
	jsonCommands, _ := calling(t, connect(t, ns.ClientURL()), cqrsnats.WithPrefix("shop"))
	_, err = cqrs.Dispatch[Order](context.Background(), jsonCommands, PlaceOrder{ID: 10, Item: "json"})
	require.ErrorIs(t, err, cqrsnats.ErrBadRequest)
}

func TestServerRestart(t *testing.T) {
	ns := startServer(t, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	url := ns.ClientURL()
	reconnects := func(ch chan struct{}) []natsgo.Option {
		return []natsgo.Option{natsgo.MaxReconnects(-1), natsgo.ReconnectWait(20 * time.Millisecond),
			natsgo.ReconnectHandler(func(*natsgo.Conn) { ch <- struct{}{} })}
	}
	servingBack, clientBack := make(chan struct{}, 1), make(chan struct{}, 1)
	servingConn := connect(t, url, reconnects(servingBack)...)
	s := serve(t, servingConn, "s1")
	commands, _ := calling(t, connect(t, url, reconnects(clientBack)...))

	_, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 1, Item: "x"})
	require.NoError(t, err)

	// The server goes down: requests fail with a clear error.
	ns.Shutdown()
	ns.WaitForShutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 2, Item: "x"})
	cancel()
	// As the docs say: a connection failure is ErrTransport, also when
	// the deadline passes while the connection is down.
	require.ErrorIs(t, err, cqrsnats.ErrTransport)

	// It comes back on the same port; both connections reconnect, and the
	// serving one has its subscriptions back once the server has seen its
	// flush.
	startServer(t, port)
	for _, back := range []chan struct{}{servingBack, clientBack} {
		select {
		case <-back:
		case <-time.After(10 * time.Second):
			t.Fatal("a connection did not reconnect")
		}
	}
	require.NoError(t, servingConn.Flush())
	order, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 3, Item: "x"})
	require.NoError(t, err)
	assert.Equal(t, 3, order.ID)

	// Stop while the server is up, so that the subscriptions drain.
	for _, srv := range s.servers {
		require.NoError(t, srv.Stop(context.Background()))
	}
}

func TestStats(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(_ context.Context, c PlaceOrder) (Order, error) {
		if c.Do == "fail" {
			return Order{}, errors.New("no")
		}
		return Order{ID: c.ID}, nil
	})))
	srv, err := cqrsnats.Serve(nc, bus, cqrsnats.WithPrefix("shop"))
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()
	commands, _ := calling(t, connect(t, ns.ClientURL()), cqrsnats.WithPrefix("shop"))
	for _, do := range []string{"", "", "fail"} {
		_, _ = cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 1, Item: "x", Do: do})
	}

	// The server counts a call once its reply is sent: the caller can
	// have the reply first.
	require.Eventually(t, func() bool {
		local := srv.Stats()
		return len(local) == 1 && local[0].Calls == 3
	}, 10*time.Second, time.Millisecond, "the server counts the three calls")
	local := srv.Stats()
	require.Len(t, local, 1)
	assert.Equal(t, "shop.command.github.com/typedcqrs/dispatch/transport/nats_test.PlaceOrder", local[0].Subject)
	assert.Equal(t, uint64(3), local[0].Calls)
	assert.Equal(t, uint64(1), local[0].Errors)
	assert.Positive(t, local[0].P99)

	// The same, over NATS.
	reply, err := nc.Request("shop._stats", nil, 5*time.Second)
	require.NoError(t, err)
	var remote []cqrsnats.EndpointStats
	require.NoError(t, json.Unmarshal(reply.Data, &remote))
	require.Len(t, remote, 1)
	assert.Equal(t, uint64(3), remote[0].Calls)
	assert.Equal(t, "command", remote[0].Kind)

}

// TestIdentityTravelsWithARequest: a request dispatched from a context
// that carries an identity carries it in its headers, and the handler on
// the serving side reads the very same one; a message that handler sends
// on joins the conversation. A plain request carries no header at all,
// and its handler no identity.
func TestIdentityTravelsWithARequest(t *testing.T) {
	ns := startServer(t, -1)
	var mu sync.Mutex
	seen := map[int]cqrs.Identity{} // order id -> what the serving handler saw; absent for none
	record := func(ctx context.Context, id int) {
		if got, ok := cqrs.IdentityOf(ctx); ok {
			mu.Lock()
			seen[id] = got
			mu.Unlock()
		}
	}
	seenOf := func(id int) (cqrs.Identity, bool) {
		mu.Lock()
		defer mu.Unlock()
		got, ok := seen[id]
		return got, ok
	}

	// Downstream serves GetOrder; the middle service serves PlaceOrder,
	// and asks downstream from its handler's context when told to.
	downBus := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(downBus, cqrs.HandlerFunc[GetOrder, Order](func(ctx context.Context, q GetOrder) (Order, error) {
		record(ctx, q.ID)
		return Order{ID: q.ID}, nil
	})))
	down, err := cqrsnats.Serve(connect(t, ns.ClientURL()), downBus)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, down.Stop(context.Background())) })
	_, askDown := calling(t, connect(t, ns.ClientURL()))
	midBus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(midBus, cqrs.HandlerFunc[PlaceOrder, Order](func(ctx context.Context, c PlaceOrder) (Order, error) {
		record(ctx, c.ID)
		if c.Do == "ask" {
			return cqrs.Dispatch[Order](ctx, askDown, GetOrder{ID: c.ID + 1000})
		}
		return Order{ID: c.ID}, nil
	})))
	mid, err := cqrsnats.Serve(connect(t, ns.ClientURL()), midBus)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, mid.Stop(context.Background())) })

	// A spy beside the queue group sees every request's headers.
	nc := connect(t, ns.ClientURL())
	headers := make(chan natsgo.Header, 10)
	spy, err := nc.Subscribe(placeOrderSubject, func(m *natsgo.Msg) { headers <- m.Header })
	require.NoError(t, err)
	t.Cleanup(func() { _ = spy.Unsubscribe() })
	require.NoError(t, nc.Flush())
	commands, _ := calling(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// A plain request: no header, no identity.
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x"})
	require.NoError(t, err)
	assert.Empty(t, <-headers, "a plain request pays for a header")
	_, ok := seenOf(1)
	assert.False(t, ok, "the handler of a plain request has an identity")

	// A caller's identity arrives whole, in the headers and in the handler.
	want := cqrs.Identity{ID: "id-2", CorrelationID: "corr-2", CausationID: "cause-2"}
	_, err = cqrs.Dispatch[Order](cqrs.ContextWithIdentity(ctx, want), commands, PlaceOrder{ID: 2, Item: "x"})
	require.NoError(t, err)
	h := <-headers
	assert.Equal(t, []string{"id-2", "corr-2", "cause-2"},
		[]string{h.Get(cqrsnats.HeaderID), h.Get(cqrsnats.HeaderCorrelationID), h.Get(cqrsnats.HeaderCausationID)})
	got, ok := seenOf(2)
	require.True(t, ok, "the serving handler has the caller's identity")
	assert.Equal(t, want, got)

	// What the handler sends on joins the conversation, one hop further.
	_, err = cqrs.Dispatch[Order](cqrs.ContextWithIdentity(ctx, cqrs.Identity{ID: "id-3", CorrelationID: "corr-3"}), commands, PlaceOrder{ID: 3, Item: "x", Do: "ask"})
	require.NoError(t, err)
	<-headers
	got, ok = seenOf(1003)
	require.True(t, ok, "downstream has an identity")
	assert.Equal(t, "corr-3", got.CorrelationID)
	assert.Equal(t, "id-3", got.CausationID)
	assert.NotEmpty(t, got.ID)
	assert.NotEqual(t, "id-3", got.ID)

	// A local bus that gives every message an identity sends the one its
	// dispatch gave: the forwarding handler's, as a middleware around it
	// sees it.
	var local atomic.Value
	withIDs := cqrs.NewCommandBus(cqrs.WithIdentity())
	require.NoError(t, cqrsnats.Forward[PlaceOrder, Order](withIDs, cqrsnats.NewClient(nc), func(next cqrs.Handler[PlaceOrder, Order]) cqrs.Handler[PlaceOrder, Order] {
		return cqrs.HandlerFunc[PlaceOrder, Order](func(ctx context.Context, c PlaceOrder) (Order, error) {
			id, _ := cqrs.IdentityOf(ctx)
			local.Store(id)
			return next.Handle(ctx, c)
		})
	}))
	_, err = cqrs.Dispatch[Order](ctx, withIDs, PlaceOrder{ID: 4, Item: "x"})
	require.NoError(t, err)
	<-headers
	got, ok = seenOf(4)
	require.True(t, ok)
	assert.Equal(t, local.Load(), got)
	assert.NotEmpty(t, got.ID)
}
