package nats_test

import (
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
	ordersa "github.com/typedcqrs/dispatch/transport/nats/internal/twoservices/a/orders"
	ordersb "github.com/typedcqrs/dispatch/transport/nats/internal/twoservices/b/orders"
)

// placeSpaced and placeUnderscored declare names that a lossy sanitiser
// maps to one subject.
type placeSpaced struct{ ID int }

func (placeSpaced) CommandName() string { return "place order" }

type placeUnderscored struct{ ID int }

func (placeUnderscored) CommandName() string { return "place_order" }

// longNamed declares a name over NATS's 4 KiB protocol line.
type longNamed struct{ ID int }

func (longNamed) CommandName() string { return strings.Repeat("n", 5000) }

// box is generic: reflect names its type arguments without their package.
type box[T any] struct{ V T }

// hidden has a field JSON leaves out.
type hidden struct {
	ID     int
	secret string
}

// withTime holds a type with unexported fields that encodes itself.
type withTime struct{ At time.Time }

func TestSubjectsAreDistinctAndValid(t *testing.T) {
	commands := cqrs.NewCommandBus()
	subjects := []string{
		cqrsnats.Subject("cqrs", cqrs.SpecFor[PlaceOrder, Order](commands)),
		cqrsnats.Subject("cqrs", cqrs.SpecFor[*PlaceOrder, Order](commands)),
		cqrsnats.Subject("cqrs", cqrs.SpecFor[[]PlaceOrder, Order](commands)),
		cqrsnats.Subject("cqrs", cqrs.SpecFor[map[string]PlaceOrder, Order](commands)),
		cqrsnats.Subject("cqrs", cqrs.SpecFor[ordersa.Place, ordersa.Placed](commands)),
		cqrsnats.Subject("cqrs", cqrs.SpecFor[ordersb.Place, ordersb.Placed](commands)),
		cqrsnats.Subject("cqrs", cqrs.SpecFor[placeSpaced, Order](commands)),
		cqrsnats.Subject("cqrs", cqrs.SpecFor[placeUnderscored, Order](commands)),
		cqrsnats.Subject("cqrs", cqrs.SpecFor[PlaceOrder, Order](cqrs.NewQueryBus())),
		cqrsnats.DurableSubject("cqrs", cqrs.SpecFor[PlaceOrder, Order](commands)),
	}
	seen := map[string]bool{}
	for _, s := range subjects {
		assert.False(t, seen[s], "%s is shared", s)
		seen[s] = true
		assert.False(t, strings.ContainsAny(s, "*> \t\r\n"), "%s holds a wildcard or white space", s)
		for token := range strings.SplitSeq(s, ".") {
			assert.NotEmpty(t, token, "%s has an empty token", s)
		}
	}
	assert.Equal(t, "cqrs.command.github.com/typedcqrs/dispatch/transport/nats/internal/twoservices/a/orders.Place", subjects[4])
	assert.Equal(t, "cqrs.command.%2Agithub.com/typedcqrs/dispatch/transport/nats_test.PlaceOrder", subjects[1])
}

// TestTwoServicesOnOneNATS runs two services whose commands share the
// short name orders.Place, with the same prefix and queue group, on one
// NATS: no request may reach the other service's handler.
func TestTwoServicesOnOneNATS(t *testing.T) {
	ns := startServer(t, -1)
	counts := twoServices(t, ns.ClientURL(), 300)
	t.Logf("two services, one NATS: %+v", counts)
	assert.Equal(t, faultCounts{Sent: 600, OK: 600}, counts)
}

// faultCounts are the outcomes of a run of requests under a fault.
type faultCounts struct {
	Sent, OK, Failed            int // calls made, succeeded, failed with an error
	Lost, Duplicated, Misrouted int // see checkCounts
}

// twoServices serves ordersa.Place and ordersb.Place from two processes
// on url and sends each n requests.
func twoServices(t *testing.T, url string, n int) faultCounts {
	var handled sync.Map // "service/id" -> count
	var misrouted atomic.Int64
	serveOne := func(service string, register func(*cqrs.CommandBus)) {
		bus := cqrs.NewCommandBus()
		register(bus)
		srv, err := cqrsnats.Serve(connect(t, url), bus)
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	}
	record := func(service string, id int) {
		if id/100000 != map[string]int{"a": 1, "b": 2}[service] {
			misrouted.Add(1)
		}
		v, _ := handled.LoadOrStore(id, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	serveOne("a", func(bus *cqrs.CommandBus) {
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[ordersa.Place, ordersa.Placed](func(_ context.Context, p ordersa.Place) (ordersa.Placed, error) {
			record("a", p.ID)
			return ordersa.Placed{ID: p.ID, Service: "a"}, nil
		})))
	})
	serveOne("b", func(bus *cqrs.CommandBus) {
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[ordersb.Place, ordersb.Placed](func(_ context.Context, p ordersb.Place) (ordersb.Placed, error) {
			record("b", p.ID)
			return ordersb.Placed{ID: p.ID, Service: "b"}, nil
		})))
	})
	client := cqrsnats.NewClient(connect(t, url))
	busA, busB := cqrs.NewCommandBus(), cqrs.NewCommandBus()
	require.NoError(t, cqrsnats.Forward[ordersa.Place, ordersa.Placed](busA, client))
	require.NoError(t, cqrsnats.Forward[ordersb.Place, ordersb.Placed](busB, client))

	var c faultCounts
	var mu sync.Mutex
	var wg sync.WaitGroup
	ok := map[int]bool{}
	for i := range n {
		for _, svc := range []string{"a", "b"} {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				var err error
				var got string
				id := i
				if svc == "a" {
					id += 100000
					var r ordersa.Placed
					r, err = cqrs.Dispatch[ordersa.Placed](ctx, busA, ordersa.Place{ID: id})
					got = r.Service
				} else {
					id += 200000
					var r ordersb.Placed
					r, err = cqrs.Dispatch[ordersb.Placed](ctx, busB, ordersb.Place{ID: id})
					got = r.Service
				}
				mu.Lock()
				defer mu.Unlock()
				c.Sent++
				switch {
				case err != nil:
					c.Failed++
				case got != svc:
					c.Failed++ // and counted as misrouted by the handler
				default:
					c.OK++
					ok[id] = true
				}
			})
		}
	}
	wg.Wait()
	c.Misrouted += int(misrouted.Load())
	for id := range ok {
		v, found := handled.Load(id)
		switch {
		case !found:
			c.Lost++
		case v.(*atomic.Int64).Load() > 1:
			c.Duplicated++
		}
	}
	return c
}

func TestDeclaredNamesDoNotShareASubject(t *testing.T) {
	ns := startServer(t, -1)
	var spaced, underscored atomic.Int64
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[placeSpaced, Order](func(_ context.Context, c placeSpaced) (Order, error) {
		spaced.Add(1)
		return Order{ID: c.ID, Server: "spaced"}, nil
	})))
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[placeUnderscored, Order](func(_ context.Context, c placeUnderscored) (Order, error) {
		underscored.Add(1)
		return Order{ID: c.ID, Server: "underscored"}, nil
	})))
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), bus)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()

	client := cqrsnats.NewClient(connect(t, ns.ClientURL()))
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrsnats.Forward[placeSpaced, Order](commands, client))
	require.NoError(t, cqrsnats.Forward[placeUnderscored, Order](commands, client))
	for i := range 50 {
		o, err := cqrs.Dispatch[Order](context.Background(), commands, placeSpaced{ID: i})
		require.NoError(t, err)
		assert.Equal(t, "spaced", o.Server)
		o, err = cqrs.Dispatch[Order](context.Background(), commands, placeUnderscored{ID: i})
		require.NoError(t, err)
		assert.Equal(t, "underscored", o.Server)
	}
	assert.Equal(t, int64(50), spaced.Load())
	assert.Equal(t, int64(50), underscored.Load())
}

// sealFor builds by hand the envelope the client sends, for the type id.
func sealFor(id string, timeout time.Duration, payload string) []byte {
	out := []byte{0x01}
	out = binary.AppendUvarint(out, uint64(timeout))
	out = binary.AppendUvarint(out, 0) // no wall-clock deadline
	out = binary.AppendUvarint(out, uint64(len(id)))
	out = append(out, id...)
	return append(out, payload...)
}

func TestRequestForAnotherTypeIsRefused(t *testing.T) {
	ns := startServer(t, -1)
	s := serve(t, connect(t, ns.ClientURL()), "s1")
	nc := connect(t, ns.ClientURL())

	// A GetOrder, sent on PlaceOrder's subject: never decoded as a PlaceOrder.
	data := sealFor("github.com/typedcqrs/dispatch/transport/nats_test.GetOrder", time.Second, `{"ID":42}`)
	reply, err := nc.Request(placeOrderSubject, data, 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "bad_request", reply.Header.Get("Nats-Service-Error-Code"))
	assert.Contains(t, string(reply.Data), "another message type")
	_, ran := s.handled.Load(42)
	assert.False(t, ran, "the handler ran for another type's request")

	// The same with PlaceOrder's identity is served.
	data = sealFor("github.com/typedcqrs/dispatch/transport/nats_test.PlaceOrder", time.Second, `{"id":43,"item":"x"}`)
	reply, err = nc.Request(placeOrderSubject, data, 5*time.Second)
	require.NoError(t, err)
	assert.Empty(t, reply.Header.Get("Nats-Service-Error-Code"), string(reply.Data))
}

func TestInvalidSubjectsAreRefused(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	served := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(served, cqrs.HandlerFunc[PlaceOrder, Order](func(context.Context, PlaceOrder) (Order, error) { return Order{}, nil })))

	for _, opt := range []cqrsnats.Option{
		cqrsnats.WithPrefix(""), cqrsnats.WithPrefix("a b"), cqrsnats.WithPrefix("a.*"),
		cqrsnats.WithPrefix("a..b"), cqrsnats.WithPrefix("a.>"), cqrsnats.WithPrefix(strings.Repeat("p", 300)),
		cqrsnats.WithQueueGroup("a b"),
	} {
		_, err := cqrsnats.Serve(nc, served, opt)
		require.ErrorIs(t, err, cqrsnats.ErrInvalidSubject)
		err = cqrsnats.Forward[PlaceOrder, Order](cqrs.NewCommandBus(), cqrsnats.NewClient(nc, opt))
		require.ErrorIs(t, err, cqrsnats.ErrInvalidSubject, "Forward says invalid, not no responders")
	}

	// A generic type, and one whose subject would be over 1 KiB.
	err := cqrsnats.Forward[box[int], Order](cqrs.NewCommandBus(), cqrsnats.NewClient(nc))
	require.ErrorIs(t, err, cqrsnats.ErrInvalidSubject)
	err = cqrsnats.Forward[deep, Order](cqrs.NewCommandBus(), cqrsnats.NewClient(nc))
	require.ErrorIs(t, err, cqrsnats.ErrInvalidSubject)
	bad := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bad, cqrs.HandlerFunc[deep, Order](func(context.Context, deep) (Order, error) { return Order{}, nil })))
	_, err = cqrsnats.Serve(nc, bad)
	require.ErrorIs(t, err, cqrsnats.ErrInvalidSubject)
	assert.True(t, nc.IsConnected())
}

// deep is a type whose printed form is over 1 KiB once encoded.
type deep = [][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][]PlaceOrder

// TestLongNameKeepsTheConnection declares a name over NATS's 4 KiB
// protocol line: the name does not route, so the type is served, and the
// connection, shared with other types, stays up.
func TestLongNameKeepsTheConnection(t *testing.T) {
	ns := startServer(t, -1)
	serving := connect(t, ns.ClientURL())
	s := serve(t, serving, "s1")
	long := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(long, cqrs.HandlerFunc[longNamed, Order](func(_ context.Context, c longNamed) (Order, error) {
		return Order{ID: c.ID}, nil
	})))
	srv, err := cqrsnats.Serve(serving, long)
	require.NoError(t, err)
	s.servers = append(s.servers, srv)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()

	calling := connect(t, ns.ClientURL())
	client := cqrsnats.NewClient(calling)
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrsnats.Forward[longNamed, Order](commands, client))
	require.NoError(t, cqrsnats.Forward[PlaceOrder, Order](commands, client))
	o, err := cqrs.Dispatch[Order](context.Background(), commands, longNamed{ID: 3})
	require.NoError(t, err)
	assert.Equal(t, 3, o.ID)
	_, err = cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 4, Item: "x"})
	require.NoError(t, err, "the other types on the connection still work")
	assert.True(t, serving.IsConnected())
	assert.True(t, calling.IsConnected())
}

func TestUnexportedFieldsAreRefused(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	err := cqrsnats.Forward[hidden, Order](cqrs.NewCommandBus(), cqrsnats.NewClient(nc))
	require.ErrorIs(t, err, cqrsnats.ErrUnexportedFields)
	assert.Contains(t, err.Error(), "hidden.secret")
	err = cqrsnats.Forward[PlaceOrder, hidden](cqrs.NewCommandBus(), cqrsnats.NewClient(nc))
	require.ErrorIs(t, err, cqrsnats.ErrUnexportedFields, "the result type is checked too")
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[hidden, Order](func(context.Context, hidden) (Order, error) { return Order{}, nil })))
	_, err = cqrsnats.Serve(nc, bus)
	require.ErrorIs(t, err, cqrsnats.ErrUnexportedFields)

	// A type that encodes itself, and another codec, are left to themselves.
	require.NoError(t, cqrsnats.Forward[withTime, Order](cqrs.NewCommandBus(), cqrsnats.NewClient(nc)))
	require.NoError(t, cqrsnats.Forward[hidden, Order](cqrs.NewCommandBus(), cqrsnats.NewClient(nc, cqrsnats.WithCodec(gobCodec{}))))
}

// TestReplySubjectInjection sends a PlaceOrder whose reply subject is
// GetOrder's request subject: the server must not publish its result
// there, so GetOrder's handler must not run with it as its request.
func TestReplySubjectInjection(t *testing.T) {
	ns := startServer(t, -1)
	s := serve(t, connect(t, ns.ClientURL()), "s1")
	nc := connect(t, ns.ClientURL())

	require.NoError(t, nc.PublishRequest(placeOrderSubject, getOrderSubject, []byte(`{"id":42,"item":"x"}`)))
	require.NoError(t, nc.Publish(placeOrderSubject, []byte(`{"id":43,"item":"x"}`))) // no reply subject at all
	require.NoError(t, nc.Flush())
	commands, queries := s.servers[0], s.servers[1]
	require.Eventually(t, func() bool {
		st := commands.Stats()[0]
		return st.Refused+st.Calls >= 2
	}, 5*time.Second, 5*time.Millisecond)
	// Whatever the server published has reached GetOrder's subscription
	// by the time a request sent after it is answered.
	_, callingQueries := calling(t, nc)
	_, err := cqrs.Dispatch[Order](context.Background(), callingQueries, GetOrder{ID: 1})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), queries.Stats()[0].Calls, "GetOrder ran with PlaceOrder's result as its request")
	assert.Equal(t, uint64(2), commands.Stats()[0].Refused)
	_, ran := s.handled.Load(42)
	assert.False(t, ran, "a request that cannot be answered is not run")
}
