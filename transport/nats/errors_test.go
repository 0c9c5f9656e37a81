package nats_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// errOrderMissing is the test service's own sentinel, and orderErrors its
// table of codes, which both sides register.
var (
	errOrderMissing = errors.New("orders: no such order")
	orderErrors     = []cqrsnats.ErrorCode{{Code: "orders.missing", Err: errOrderMissing}}
)

// TestErrorRepliesAreBounded: a 2 MiB handler error, a 200 KiB value
// echoed by validation and an error with line breaks all get a reply at
// once, cut to its bounds, instead of none.
func TestErrorRepliesAreBounded(t *testing.T) {
	ns := startServer(t, -1)
	serve(t, connect(t, ns.ClientURL()), "s1")
	commands, _ := calling(t, connect(t, ns.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	start := time.Now()
	_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x", Do: "huge_error"})
	var remote *cqrsnats.RemoteError
	require.ErrorAs(t, err, &remote)
	assert.LessOrEqual(t, len(remote.Message), 1024)
	assert.True(t, strings.HasPrefix(remote.Message, "eeee"))
	assert.Equal(t, "error", remote.Code)

	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 2, Item: "x", Email: strings.Repeat("@", 200<<10)})
	require.ErrorIs(t, err, cqrs.ErrValidation)
	var verr *cqrs.ValidationError
	require.ErrorAs(t, err, &verr)
	require.Len(t, verr.Fields, 1)
	value, _ := verr.Fields[0].Value.(string)
	assert.True(t, strings.HasPrefix(value, "@@@@"))
	assert.LessOrEqual(t, len(value), 256)

	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 3, Item: "x", Do: "lines"})
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, "line one\r\nline two", remote.Message, "the body keeps the text; only the header is one line")
	assert.Less(t, time.Since(start), 2*time.Second, "every error got its reply at once")
}

// TestRemoteErrorsHidePanicsAndGoNames: a panic's value never reaches the
// caller, and an undecodable request's reply names fields by their JSON
// names, not the Go ones.
func TestRemoteErrorsHidePanicsAndGoNames(t *testing.T) {
	ns := startServer(t, -1)
	serve(t, connect(t, ns.ClientURL()), "s1")
	nc := connect(t, ns.ClientURL())
	commands, _ := calling(t, nc)

	_, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 1, Item: "x", Do: "secret_panic"})
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	var remote *cqrsnats.RemoteError
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, "panic", remote.Code)
	assert.Equal(t, "command nats_test.PlaceOrder", remote.Name)
	assert.NotContains(t, err.Error(), "hunter2")
	assert.NotContains(t, err.Error(), "10.0.0.7")
	assert.NotContains(t, err.Error(), "goroutine")

	for _, payload := range []string{`{"id":"seven","item":"x"}`, `{"id":1,"item":["x"]}`, `[1]`, `{"id":`} {
		reply, err := nc.Request(placeOrderSubject, []byte(payload), 5*time.Second)
		require.NoError(t, err)
		assert.Equal(t, "bad_request", reply.Header.Get("Nats-Service-Error-Code"))
		text := reply.Header.Get("Nats-Service-Error") + string(reply.Data)
		for _, goName := range []string{"Go struct", "Go value", "PlaceOrder.ID", "PlaceOrder.Item", "of type"} {
			assert.NotContains(t, text, goName, payload)
		}
	}
	reply, err := nc.Request(placeOrderSubject, []byte(`{"id":"seven","item":"x"}`), 5*time.Second)
	require.NoError(t, err)
	assert.Contains(t, string(reply.Data), `field \"id\" cannot hold a JSON string`)
}

// TestApplicationErrorsKeepTheirIdentity: a service's own sentinel,
// registered on both sides, matches with errors.Is on the calling side,
// and an error the handler marked Permanent stays a caller's error there,
// so that retries and breakers leave it alone.
func TestApplicationErrorsKeepTheirIdentity(t *testing.T) {
	ns := startServer(t, -1)
	serve(t, connect(t, ns.ClientURL()), "s1", cqrsnats.WithErrors(orderErrors...))
	commands, _ := calling(t, connect(t, ns.ClientURL()), cqrsnats.WithErrors(orderErrors...))
	ctx := context.Background()

	_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 7, Item: "x", Do: "missing"})
	require.ErrorIs(t, err, errOrderMissing)
	assert.True(t, middleware.IsCallerError(err), "Permanent crosses the wire")
	var remote *cqrsnats.RemoteError
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, "orders.missing", remote.Code)
	assert.Equal(t, "order 7: orders: no such order", remote.Message)
	assert.True(t, remote.Caller)

	// An error with no code of its own: a RemoteError, never a transport failure.
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 8, Item: "x", Do: "fail"})
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, "error", remote.Code)
	assert.NotErrorIs(t, err, cqrsnats.ErrTransport)
	assert.False(t, middleware.IsCallerError(err))

	// A caller without the table still gets the code, and the caller's
	// error mark, but no sentinel to match.
	bare, _ := calling(t, connect(t, ns.ClientURL()))
	_, err = cqrs.Dispatch[Order](ctx, bare, PlaceOrder{ID: 9, Item: "x", Do: "missing"})
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, "orders.missing", remote.Code)
	assert.NotErrorIs(t, err, errOrderMissing)
	assert.True(t, middleware.IsCallerError(err))

	// Built-in caller errors stay caller errors too; a timeout does not.
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 10, Do: "x"})
	assert.True(t, middleware.IsCallerError(err))
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 11, Item: "x", Do: "timeout"})
	assert.False(t, middleware.IsCallerError(err))
}

func TestInvalidErrorTablesAreRefused(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(context.Context, PlaceOrder) (Order, error) { return Order{}, nil })))
	for _, table := range [][]cqrsnats.ErrorCode{
		{{Code: "", Err: errOrderMissing}},
		{{Code: "Has Space", Err: errOrderMissing}},
		{{Code: "validation", Err: errOrderMissing}},
		{{Code: "bad_request", Err: errOrderMissing}},
		{{Code: "error", Err: errOrderMissing}},
		{{Code: "orders.nil", Err: nil}},
		{{Code: "orders.twice", Err: errOrderMissing}, {Code: "orders.twice", Err: errOrderMissing}},
	} {
		_, err := cqrsnats.Serve(nc, bus, cqrsnats.WithErrors(table...))
		require.ErrorIs(t, err, cqrsnats.ErrInvalidErrorCode, "%v", table)
		err = cqrsnats.Forward[PlaceOrder, Order](cqrs.NewCommandBus(), cqrsnats.NewClient(nc, cqrsnats.WithErrors(table...)))
		require.ErrorIs(t, err, cqrsnats.ErrInvalidErrorCode, "%v", table)
	}
}

// TestOnlyTheServersOwnRefusalsCarryTransportCodes: a handler that ran
// and failed because a call of its own was refused (ErrUnavailable from a
// busy downstream service) must not tell its caller ErrUnavailable, which
// says that the caller's request did not run and is safe to retry; nor
// ErrBadRequest ("the handler did not run") or ErrPayloadTooLarge. The
// middle service's handler makes a real call to a downstream service
// whose queue is full; the other errors are returned as they are.
func TestOnlyTheServersOwnRefusalsCarryTransportCodes(t *testing.T) {
	ns := startServer(t, -1)

	// Downstream: GetOrder, one worker, a queue of one, a handler that
	// waits for release.
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	downBus := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(downBus, cqrs.HandlerFunc[GetOrder, Order](func(_ context.Context, q GetOrder) (Order, error) {
		started <- struct{}{}
		<-release
		return Order{ID: q.ID}, nil
	})))
	down, err := cqrsnats.Serve(connect(t, ns.ClientURL()), downBus, cqrsnats.WithMaxPending(1, 1<<20))
	require.NoError(t, err)
	defer func() { require.NoError(t, down.Stop(context.Background())) }()
	downstream := cqrs.NewQueryBus()
	require.NoError(t, cqrsnats.Forward[GetOrder, Order](downstream, cqrsnats.NewClient(connect(t, ns.ClientURL()))))

	// Middle: PlaceOrder's handler asks downstream, or returns the
	// transport error its message names, wrapped as a handler would.
	ran := map[int]bool{}
	var mu sync.Mutex
	midBus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(midBus, cqrs.HandlerFunc[PlaceOrder, Order](func(ctx context.Context, c PlaceOrder) (Order, error) {
		mu.Lock()
		ran[c.ID] = true
		mu.Unlock()
		switch c.Do {
		case "ask":
			o, err := cqrs.Dispatch[Order](ctx, downstream, GetOrder{ID: c.ID})
			if err != nil {
				return Order{}, fmt.Errorf("checking stock: %w", err)
			}
			return o, nil
		case "bad_request":
			return Order{}, fmt.Errorf("checking stock: %w", cqrsnats.ErrBadRequest)
		case "payload_too_large":
			return Order{}, fmt.Errorf("checking stock: %w", cqrsnats.ErrPayloadTooLarge)
		}
		return Order{ID: c.ID}, nil
	})))
	mid, err := cqrsnats.Serve(connect(t, ns.ClientURL()), midBus)
	require.NoError(t, err)
	defer func() { require.NoError(t, mid.Stop(context.Background())) }()
	commands, _ := calling(t, connect(t, ns.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Fill downstream: one request runs, one waits, the rest are refused.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	for i := range 3 {
		wg.Go(func() { _, _ = cqrs.Dispatch[Order](ctx, downstream, GetOrder{ID: 100 + i}) })
	}
	<-started
	require.Eventually(t, func() bool { return down.Stats()[0].Unavailable > 0 }, 5*time.Second, time.Millisecond, "downstream's queue is full")

	// The handler's own call is refused: the handler ran, and its caller
	// is not told that its request did not.
	_, err = cqrs.Dispatch[Order](ctx, downstream, GetOrder{ID: 99})
	require.ErrorIs(t, err, cqrsnats.ErrUnavailable, "precondition: downstream refuses")
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x", Do: "ask"})
	require.Error(t, err)
	mu.Lock()
	assert.True(t, ran[1], "the middle handler ran")
	mu.Unlock()
	assert.NotErrorIs(t, err, cqrsnats.ErrUnavailable, "a handler's error claims its request did not run")
	var remote *cqrsnats.RemoteError
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, "error", remote.Code)
	assert.Contains(t, remote.Message, "checking stock: nats: serving process unavailable")

	for i, do := range []string{"bad_request", "payload_too_large"} {
		_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 2 + i, Item: "x", Do: do})
		require.ErrorAs(t, err, &remote, do)
		assert.Equal(t, "error", remote.Code, do)
		assert.NotErrorIs(t, err, cqrsnats.ErrBadRequest, do)
		assert.NotErrorIs(t, err, cqrsnats.ErrPayloadTooLarge, do)
	}

	// The server's own refusals keep their codes.
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 5, Item: strings.Repeat("x", 2<<20)})
	require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
	nc := connect(t, ns.ClientURL())
	reply, err := nc.Request(placeOrderSubject, []byte(`{"id":"six"}`), 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "bad_request", reply.Header.Get("Nats-Service-Error-Code"))
}
