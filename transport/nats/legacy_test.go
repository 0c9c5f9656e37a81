package nats_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
	ordersa "github.com/typedcqrs/dispatch/transport/nats/internal/twoservices/a/orders"
	ordersb "github.com/typedcqrs/dispatch/transport/nats/internal/twoservices/b/orders"
)

// The wire of v0.1.0, the previous release, written again from its code
// (git show ec0ac16:transport/nats/client.go, server.go, envelope.go,
// errors.go), so that a caller and a server of that release can talk to
// this version's on the embedded server in these tests:
//
//   - the subject is prefix.kind.name, the type's name (its declared
//     CommandName or QueryName, else its Go type as reflect prints it)
//     with every byte but letters, digits, '-', '_' and '.' made '_';
//   - a request is 0x00, uvarint(the caller's remaining time in ns, 0
//     for none), the JSON message; anything that does not start with
//     0x00 is taken as the JSON message alone;
//   - an error reply has the headers Nats-Service-Error-Code (the code)
//     and Nats-Service-Error (the error's whole text), and, for a
//     validation failure, a body that is the JSON array of its fields;
//   - the queue group is "cqrs".

// oldSubject returns the subject v0.1.0 gave spec's message type.
func oldSubject(prefix string, spec cqrs.Spec) string {
	return prefix + "." + spec.Kind.String() + "." + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		default:
			return '_'
		}
	}, spec.Name)
}

// placeOrderOldSubject is PlaceOrder's subject in v0.1.0: its package's
// name, not its path, so not the subject it has now.
var placeOrderOldSubject = oldSubject("cqrs", cqrs.SpecFor[PlaceOrder, Order](cqrs.NewCommandBus()))

// oldField is a validation failure's field as v0.1.0 sent it.
type oldField struct {
	Field string `json:"field"`
	Tag   string `json:"tag"`
	Param string `json:"param,omitempty"`
	Value any    `json:"value"`
}

// oldRemoteError is what v0.1.0's client made of an error reply.
type oldRemoteError struct {
	Code, Message string
	Fields        []oldField
}

func (e *oldRemoteError) Error() string { return e.Message }

// oldCall sends msg on subject as v0.1.0's Forward did, with a 10 s
// timeout when ctx has no deadline, and decodes the reply as it did.
func oldCall[R any](ctx context.Context, nc *natsgo.Conn, subject string, msg any) (R, error) {
	var zero R
	data, err := json.Marshal(msg)
	if err != nil {
		return zero, err
	}
	var timeout time.Duration
	if deadline, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(deadline), 1)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	out := binary.AppendUvarint([]byte{0x00}, uint64(timeout))
	reply, err := nc.RequestMsgWithContext(ctx, &natsgo.Msg{Subject: subject, Data: append(out, data...)})
	if err != nil {
		if ctx.Err() != nil {
			return zero, ctx.Err()
		}
		return zero, err
	}
	if code := reply.Header.Get("Nats-Service-Error-Code"); code != "" {
		e := &oldRemoteError{Code: code, Message: reply.Header.Get("Nats-Service-Error")}
		if code == "validation" && len(reply.Data) > 0 {
			if err := json.Unmarshal(reply.Data, &e.Fields); err != nil {
				return zero, fmt.Errorf("the fields of a validation error do not decode as v0.1.0's: %w", err)
			}
		}
		return zero, e
	}
	var res R
	if err := json.Unmarshal(reply.Data, &res); err != nil {
		return zero, fmt.Errorf("undecodable reply: %w", err)
	}
	return res, nil
}

// oldServe serves message type C on subject as v0.1.0's Serve did, in the
// queue group "cqrs", with handle, and returns the subscription: drain it
// to stop as v0.1.0's Stop did.
func oldServe[C, R any](t *testing.T, nc *natsgo.Conn, subject string, handle func(context.Context, C) (R, error)) *natsgo.Subscription {
	t.Helper()
	name := cqrs.SpecFor[C, R](cqrs.NewCommandBus()).String()
	fail := func(m *natsgo.Msg, err error) {
		code := cqrs.ErrorCode(err)
		if code == "" {
			code = "error"
		}
		reply := &natsgo.Msg{Header: natsgo.Header{"Nats-Service-Error-Code": {code}, "Nats-Service-Error": {err.Error()}}}
		var verr *cqrs.ValidationError
		if errors.As(err, &verr) && len(verr.Fields) > 0 {
			fields := make([]oldField, len(verr.Fields))
			for i, f := range verr.Fields {
				fields[i] = oldField{Field: f.Field, Tag: f.Tag, Param: f.Param, Value: f.Value}
			}
			reply.Data, _ = json.Marshal(fields)
		}
		_ = m.RespondMsg(reply)
	}
	badRequest := func(m *natsgo.Msg, err error) {
		reply := &natsgo.Msg{Header: natsgo.Header{"Nats-Service-Error-Code": {"bad_request"},
			"Nats-Service-Error": {fmt.Sprintf("cqrs/nats: undecodable request: %s: %v", name, err)}}}
		_ = m.RespondMsg(reply)
	}
	sub, err := nc.QueueSubscribe(subject, "cqrs", func(m *natsgo.Msg) {
		var timeout time.Duration
		payload := m.Data
		if len(m.Data) > 0 && m.Data[0] == 0x00 {
			ns, n := binary.Uvarint(m.Data[1:])
			if n <= 0 {
				badRequest(m, errors.New("malformed envelope"))
				return
			}
			timeout, payload = time.Duration(ns), m.Data[1+n:]
		}
		ctx := context.Background()
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		var c C
		if err := json.Unmarshal(payload, &c); err != nil {
			badRequest(m, err)
			return
		}
		res, err := handle(ctx, c)
		if err != nil {
			fail(m, err)
			return
		}
		body, err := json.Marshal(res)
		if err != nil {
			fail(m, err)
			return
		}
		_ = m.Respond(body)
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

// oldPlaceOrder is a v0.1.0 server's PlaceOrder handler: it records who
// handled which order with which deadline, and fails validation without
// an item.
type oldPlaceOrder struct {
	name     string
	handled  *sync.Map // order id -> *atomic.Int64, runs
	deadline atomic.Value
}

func (o *oldPlaceOrder) handle(ctx context.Context, c PlaceOrder) (Order, error) {
	if d, ok := ctx.Deadline(); ok {
		o.deadline.Store(d)
	}
	v, _ := o.handled.LoadOrStore(c.ID, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	if c.Item == "" {
		return Order{}, &cqrs.ValidationError{Message: "command nats_test.PlaceOrder", Err: cqrs.ErrValidation,
			Fields: []cqrs.FieldError{{Field: "PlaceOrder.Item", Tag: "required", Value: ""}}}
	}
	return Order{ID: c.ID, Item: c.Item, Server: o.name}, nil
}

// runsOf returns how many times order id was handled, by handled.
func runsOf(handled *sync.Map, id int) int64 {
	v, ok := handled.Load(id)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// TestOldCallerToNewServer: a caller of v0.1.0 reaches a server of this
// version, on its old subject, with its old envelope: the result, its
// deadline and its errors (the validation fields in v0.1.0's form) as
// v0.1.0 had them. A type whose subject did not change (one in package
// main: its path is its name) is served on that one subject.
func TestOldCallerToNewServer(t *testing.T) {
	ns := startServer(t, -1)
	s := serve(t, connect(t, ns.ClientURL()), "new")
	nc := connect(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	order, err := oldCall[Order](ctx, nc, placeOrderOldSubject, PlaceOrder{ID: 1, Item: "lamp"})
	require.NoError(t, err)
	assert.Equal(t, Order{ID: 1, Item: "lamp", Server: "new"}, order)
	seen, ok := s.deadline.Load().(time.Time)
	require.True(t, ok, "the handler has the old caller's deadline")
	want, _ := ctx.Deadline()
	assert.WithinDuration(t, want, seen, time.Second)

	_, err = oldCall[Order](ctx, nc, placeOrderOldSubject, PlaceOrder{ID: 2, Email: "nope"})
	var remote *oldRemoteError
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, "validation", remote.Code)
	assert.Equal(t, []oldField{
		{Field: "PlaceOrder.Item", Tag: "required", Value: ""},
		{Field: "PlaceOrder.Email", Tag: "email", Value: "nope"},
	}, remote.Fields)

	_, err = oldCall[Order](ctx, nc, placeOrderOldSubject, PlaceOrder{ID: 3, Item: "x", Do: "fail"})
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, oldRemoteError{Code: "error", Message: "warehouse on fire"}, *remote)

	// A type whose subject is the same in both versions.
	order, err = oldCall[Order](ctx, nc, placeOrderSubject, PlaceOrder{ID: 4, Item: "desk"})
	require.NoError(t, err)
	assert.Equal(t, Order{ID: 4, Item: "desk", Server: "new"}, order)

	for _, id := range []int{1, 3, 4} {
		_, handled := s.handled.Load(id)
		assert.True(t, handled, "order %d", id)
	}
	st := s.servers[0].Stats()[0]
	assert.Equal(t, uint64(4), st.Legacy, "the requests from v0.1.0 callers are counted")
}

// TestNewCallerToOldServer: a caller of this version reaches a server of
// v0.1.0: when nobody serves the type's new subject, it asks again on the
// old subject, in the old envelope, and reads the old error replies; when
// the subject is the same in both versions (a type in package main), it
// asks again in the old envelope once the old server has refused the new
// one. Each request runs once.
func TestNewCallerToOldServer(t *testing.T) {
	ns := startServer(t, -1)
	old := &oldPlaceOrder{name: "old", handled: &sync.Map{}}
	oldServe(t, connect(t, ns.ClientURL()), placeOrderOldSubject, old.handle)
	commands, _ := calling(t, connect(t, ns.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	order, err := cqrs.Dispatch[Order](cqrs.ContextWithIdentity(ctx, cqrs.Identity{ID: "id-1"}), commands, PlaceOrder{ID: 1, Item: "lamp"})
	require.NoError(t, err, "an old server ignores the headers it does not know")
	assert.Equal(t, Order{ID: 1, Item: "lamp", Server: "old"}, order)
	assert.Equal(t, int64(1), runsOf(old.handled, 1))
	seen, ok := old.deadline.Load().(time.Time)
	require.True(t, ok, "the old handler has the caller's deadline")
	want, _ := ctx.Deadline()
	assert.WithinDuration(t, want, seen, time.Second)

	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 2})
	require.ErrorIs(t, err, cqrs.ErrValidation)
	var verr *cqrs.ValidationError
	require.ErrorAs(t, err, &verr, "the fields in v0.1.0's form are read")
	assert.Equal(t, []cqrs.FieldError{{Field: "PlaceOrder.Item", Tag: "required", Value: ""}}, verr.Fields)

	// The same subject in both versions (here, of a built-in type; in
	// practice, of a type in package main): the old server refuses the new
	// envelope, which it takes for JSON, and the caller asks it again in
	// the old one.
	require.Equal(t, oldSubject("cqrs", cqrs.SpecFor[string, Order](cqrs.NewQueryBus())),
		cqrsnats.Subject("cqrs", cqrs.SpecFor[string, Order](cqrs.NewQueryBus())), "precondition: one subject")
	var sameRuns atomic.Int64
	oldServe(t, connect(t, ns.ClientURL()), "cqrs.query.string", func(_ context.Context, item string) (Order, error) {
		sameRuns.Add(1)
		return Order{Item: item, Server: "old-same-subject"}, nil
	})
	queries := cqrs.NewQueryBus()
	require.NoError(t, cqrsnats.Forward[string, Order](queries, cqrsnats.NewClient(connect(t, ns.ClientURL()))))
	order, err = cqrs.Dispatch[Order](ctx, queries, "chair")
	require.NoError(t, err)
	assert.Equal(t, Order{Item: "chair", Server: "old-same-subject"}, order)
	assert.Equal(t, int64(1), sameRuns.Load())
}

// TestLegacyWireOff: with WithLegacyWire(false), this version neither
// serves nor sends v0.1.0's wire: what each side of a mixed pair gets is
// what it got before the old wire was served, a clear refusal and no run.
func TestLegacyWireOff(t *testing.T) {
	ns := startServer(t, -1)
	s := serve(t, connect(t, ns.ClientURL()), "new", cqrsnats.WithLegacyWire(false))
	nc := connect(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err := oldCall[Order](ctx, nc, placeOrderOldSubject, PlaceOrder{ID: 1, Item: "x"})
	require.ErrorIs(t, err, natsgo.ErrNoResponders)
	_, err = oldCall[Order](ctx, nc, placeOrderSubject, PlaceOrder{ID: 2, Item: "x"})
	var remote *oldRemoteError
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, "bad_request", remote.Code)
	for id := 1; id <= 2; id++ {
		_, handled := s.handled.Load(id)
		assert.False(t, handled)
	}

	// A caller of this version does not ask an old server.
	for _, srv := range s.servers {
		require.NoError(t, srv.Stop(ctx))
	}
	old := &oldPlaceOrder{name: "old", handled: &sync.Map{}}
	oldServe(t, connect(t, ns.ClientURL()), placeOrderOldSubject, old.handle)
	commands, _ := calling(t, nc, cqrsnats.WithLegacyWire(false))
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 3, Item: "x"})
	require.ErrorIs(t, err, cqrsnats.ErrNoResponders)
	assert.Zero(t, runsOf(old.handled, 3))
}

// TestOldSubjectsThatTwoTypesShare: v0.1.0 gave ordersa.Place and
// ordersb.Place one subject, cqrs.command.orders.Place. A server of this
// version that serves both serves that subject for neither, and a caller
// of ordersa.Place that finds no server of this version and asks on the
// old subject is refused by a server of this version that serves
// ordersb.Place there: the type travels with the request in a header.
func TestOldSubjectsThatTwoTypesShare(t *testing.T) {
	ns := startServer(t, -1)
	specA := cqrs.SpecFor[ordersa.Place, ordersa.Placed](cqrs.NewCommandBus())
	specB := cqrs.SpecFor[ordersb.Place, ordersb.Placed](cqrs.NewCommandBus())
	shared := oldSubject("cqrs", specA)
	require.Equal(t, shared, oldSubject("cqrs", specB), "precondition: one subject in v0.1.0")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ranA, ranB atomic.Int64
	registerA := func(bus *cqrs.CommandBus) {
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[ordersa.Place, ordersa.Placed](func(_ context.Context, p ordersa.Place) (ordersa.Placed, error) {
			ranA.Add(1)
			return ordersa.Placed{ID: p.ID, Service: "a"}, nil
		})))
	}
	registerB := func(bus *cqrs.CommandBus) {
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[ordersb.Place, ordersb.Placed](func(_ context.Context, p ordersb.Place) (ordersb.Placed, error) {
			ranB.Add(1)
			return ordersb.Placed{ID: p.ID, Service: "b"}, nil
		})))
	}
	nc := connect(t, ns.ClientURL())

	// One server with both: the shared old subject is nobody's.
	both := cqrs.NewCommandBus()
	registerA(both)
	registerB(both)
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), both)
	require.NoError(t, err)
	_, err = oldCall[ordersa.Placed](ctx, nc, shared, ordersa.Place{ID: 1})
	require.ErrorIs(t, err, natsgo.ErrNoResponders)
	require.NoError(t, srv.Stop(ctx))

	// So with two names that v0.1.0 made one subject, "place order" and
	// "place_order".
	named := cqrs.NewCommandBus()
	for _, register := range []func() error{
		func() error {
			return cqrs.Register(named, cqrs.HandlerFunc[placeSpaced, Order](func(context.Context, placeSpaced) (Order, error) { return Order{}, nil }))
		},
		func() error {
			return cqrs.Register(named, cqrs.HandlerFunc[placeUnderscored, Order](func(context.Context, placeUnderscored) (Order, error) { return Order{}, nil }))
		},
	} {
		require.NoError(t, register())
	}
	srv, err = cqrsnats.Serve(connect(t, ns.ClientURL()), named)
	require.NoError(t, err)
	_, err = oldCall[Order](ctx, nc, "cqrs.command.place_order", placeSpaced{ID: 1})
	require.ErrorIs(t, err, natsgo.ErrNoResponders)
	require.NoError(t, srv.Stop(ctx))

	// B's server alone; A's caller falls back to the shared old subject.
	busB := cqrs.NewCommandBus()
	registerB(busB)
	srvB, err := cqrsnats.Serve(connect(t, ns.ClientURL()), busB)
	require.NoError(t, err)
	defer func() { require.NoError(t, srvB.Stop(context.Background())) }()
	callerA := cqrs.NewCommandBus()
	require.NoError(t, cqrsnats.Forward[ordersa.Place, ordersa.Placed](callerA, cqrsnats.NewClient(nc)))
	_, err = cqrs.Dispatch[ordersa.Placed](ctx, callerA, ordersa.Place{ID: 2})
	require.ErrorIs(t, err, cqrsnats.ErrBadRequest)
	assert.Contains(t, err.Error(), "another message type")
	assert.Zero(t, ranA.Load()+ranB.Load(), "a handler ran for another type's request")

	// B's own old callers are served there as before.
	placed, err := oldCall[ordersb.Placed](ctx, nc, shared, ordersb.Place{ID: 3})
	require.NoError(t, err)
	assert.Equal(t, ordersb.Placed{ID: 3, Service: "b"}, placed)
}

// TestRollingUpgradeFromV010 replaces, under load, the two serving
// processes of a v0.1.0 deployment with two of this version, one at a
// time, each new one up before an old one stops (drained, as v0.1.0's
// Stop did), while callers of both versions call throughout: 4 of v0.1.0
// and 4 of this version. Every call must succeed, none may run twice or
// get another's reply; lost counts a call that succeeded, or said that
// its request never ran, when the handlers say otherwise.
func TestRollingUpgradeFromV010(t *testing.T) {
	ns := startServer(t, -1)
	handled := &sync.Map{} // order id -> *atomic.Int64
	newRun := func(_ context.Context, c PlaceOrder) (Order, error) {
		v, _ := handled.LoadOrStore(c.ID, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		return Order{ID: c.ID, Item: c.Item, Server: "new"}, nil
	}
	old1 := &oldPlaceOrder{name: "old1", handled: handled}
	old2 := &oldPlaceOrder{name: "old2", handled: handled}
	oldSubs := []*natsgo.Subscription{
		oldServe(t, connect(t, ns.ClientURL()), placeOrderOldSubject, old1.handle),
		oldServe(t, connect(t, ns.ClientURL()), placeOrderOldSubject, old2.handle),
	}
	startNew := func() {
		bus := cqrs.NewCommandBus()
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](newRun)))
		srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), bus)
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	}
	stopOld := func(sub *natsgo.Subscription) {
		closed := sub.StatusChanged(natsgo.SubscriptionClosed)
		require.NoError(t, sub.Drain())
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Error("an old server did not drain")
		}
	}
	newCommands, _ := calling(t, connect(t, ns.ClientURL()))
	oldConn := connect(t, ns.ClientURL())

	type outcome struct {
		old bool
		err error
	}
	var mu sync.Mutex
	outcomes := map[int]outcome{}
	var counts faultCounts
	servedBy := map[string]int{}
	var next atomic.Int64
	const d = 1600 * time.Millisecond
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := range 8 {
		isOld := i%2 == 0
		wg.Go(func() {
			for time.Now().Before(stop) {
				id := int(next.Add(1))
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				var order Order
				var err error
				if isOld {
					order, err = oldCall[Order](ctx, oldConn, placeOrderOldSubject, PlaceOrder{ID: id, Item: "x"})
				} else {
					order, err = cqrs.Dispatch[Order](ctx, newCommands, PlaceOrder{ID: id, Item: "x"})
				}
				cancel()
				mu.Lock()
				counts.Sent++
				switch {
				case err != nil:
					counts.Failed++
				case order.ID != id:
					counts.Misrouted++
				default:
					counts.OK++
					servedBy[map[bool]string{true: "old caller", false: "new caller"}[isOld]+" by "+strings.TrimRight(order.Server, "12")]++
				}
				outcomes[id] = outcome{old: isOld, err: err}
				mu.Unlock()
			}
		})
	}
	time.Sleep(d / 4)
	startNew()
	time.Sleep(d / 8)
	stopOld(oldSubs[0])
	time.Sleep(d / 8)
	startNew()
	time.Sleep(d / 8)
	stopOld(oldSubs[1])
	wg.Wait()

	failures := map[string]int{}
	for id, o := range outcomes {
		runs := runsOf(handled, id)
		switch {
		case runs > 1:
			counts.Duplicated++
		case o.err == nil && runs == 0,
			o.err != nil && (neverRan(o.err) || errors.Is(o.err, natsgo.ErrNoResponders)) && runs > 0:
			counts.Lost++
		}
		if o.err != nil {
			failures[fmt.Sprintf("old caller %v: %v", o.old, o.err)]++
		}
	}
	t.Logf("rolling upgrade from v0.1.0: %+v; served: %v; failures: %v", counts, servedBy, failures)
	assert.Zero(t, counts.Lost, "lost")
	assert.Zero(t, counts.Duplicated, "duplicated")
	assert.Zero(t, counts.Misrouted, "misrouted")
	assert.Zero(t, counts.Failed, "failed")
	for _, path := range []string{"old caller by old", "old caller by new", "new caller by old", "new caller by new"} {
		assert.Positive(t, servedBy[path], "no call went %s", path)
	}
}

// TestLegacyWireUnderPermissions: where NATS lets a process use this
// version's subjects only, as a deployment that never ran v0.1.0 may, a
// server still serves them (NATS refuses the v0.1.0 subscription
// asynchronously), but a caller's fallback publish is refused too, with
// no reply, so a call that nobody serves waits for its deadline instead
// of failing at once; WithLegacyWire(false) gives back the fast failure.
// The docs say so (docs/releasing.md).
func TestLegacyWireUnderPermissions(t *testing.T) {
	newSubjects := &server.SubjectPermission{Allow: []string{"cqrs.command.github.>", "cqrs.query.github.>", "cqrs._stats", "_INBOX.>"}}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "svc", Password: "svc", Permissions: &server.Permissions{Publish: newSubjects, Subscribe: newSubjects}}}})
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	denied := make(chan error, 16)
	login := []natsgo.Option{natsgo.UserInfo("svc", "svc"), natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
		select {
		case denied <- err:
		default:
		}
	})}
	s := serve(t, connect(t, ns.ClientURL(), login...), "new")
	commands, queries := calling(t, connect(t, ns.ClientURL(), login...))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	order, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x"})
	require.NoError(t, err, "the new subject is served")
	assert.Equal(t, "new", order.Server)
	select {
	case err := <-denied:
		assert.ErrorIs(t, err, natsgo.ErrPermissionViolation, "the v0.1.0 subscription is refused")
	case <-time.After(5 * time.Second):
		t.Error("NATS did not refuse the v0.1.0 subscription")
	}

	// Nobody serves GetOrder's new subject for these callers: s's query
	// server is stopped.
	require.NoError(t, s.servers[1].Stop(ctx))
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	_, err = cqrs.Dispatch[Order](short, queries, GetOrder{ID: 2})
	require.ErrorIs(t, err, context.DeadlineExceeded, "the fallback is refused with no reply")
	assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)

	_, strict := calling(t, connect(t, ns.ClientURL(), login...), cqrsnats.WithLegacyWire(false))
	start = time.Now()
	_, err = cqrs.Dispatch[Order](ctx, strict, GetOrder{ID: 3})
	require.ErrorIs(t, err, cqrsnats.ErrNoResponders)
	assert.Less(t, time.Since(start), time.Second)
}
