package nats_test

import (
	"context"
	"errors"
	"strings"
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
	require.ErrorIs(t, err, cqrs.ErrCommandValidation)
	var verr *middleware.ValidationError
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
