package nats_test

import (
	"context"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// The errors of this file are those a user met without a word on the fix
// (issue #20, item 5): each test checks that the text names it.

// TestJetStreamOffSaysSo: every durable set-up and publish, against a
// NATS server without JetStream, says that JetStream is off and how to
// turn it on, not just "no responders".
func TestJetStreamOffSaysSo(t *testing.T) {
	ns := startServer(t, -1) // no JetStream
	nc := connect(t, ns.ClientURL())
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	durable := cqrsnats.EventConfig{Durable: true}

	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[Ship, cqrs.NoResult](newShipper(0).handle)))
	receiver, err := cqrsnats.NewReceiver(nc, durable)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, receiver.Stop(context.Background())) })
	publisher, err := cqrsnats.NewPublisher(nc, durable)
	require.NoError(t, err)

	for name, call := range map[string]func() error{
		"ServeDurable": func() error {
			_, err := cqrsnats.ServeDurable(ctx, js, commands, cqrsnats.DurableConfig{})
			return err
		},
		"Enqueue": func() error { return cqrsnats.Enqueue(ctx, js, Ship{Parcel: 1}, cqrsnats.DurableConfig{}) },
		"Subscribe": func() error {
			_, err := cqrsnats.Subscribe(receiver, "email", func(context.Context, ParcelShipped) error { return nil })
			return err
		},
		"Publish": func() error { return cqrsnats.Publish(ctx, publisher, ParcelShipped{Parcel: 1}) },
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := call()
			require.Error(t, err)
			assert.Less(t, time.Since(start), 2*time.Second, "it waited for a timeout")
			assert.ErrorIs(t, err, cqrsnats.ErrTransport)
			assert.ErrorIs(t, err, jetstream.ErrJetStreamNotEnabled)
			assert.ErrorIs(t, err, natsgo.ErrNoResponders, "NATS's own error is kept")
			assert.Contains(t, err.Error(), "so the NATS server runs without it: enable it (nats-server -js, or a jetstream block in its configuration)")
		})
	}
}

// TestForwardOfTheWrongKindSaysWhichForward: a streaming query given to
// Forward, or a query with one result given to ForwardStream, is refused
// with the forwarding call to use, not the in-process registration.
func TestForwardOfTheWrongKindSaysWhichForward(t *testing.T) {
	client := cqrsnats.NewClient(connect(t, startServer(t, -1).ClientURL()))
	queries, commands := cqrs.NewQueryBus(), cqrs.NewCommandBus()

	err := cqrsnats.Forward[Picks, Pick](queries, client)
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.Contains(t, err.Error(), "nats_test.Picks is declared a streaming query, which Forward cannot carry: forward it with cqrsnats.ForwardDeclaredStream[nats_test.Picks]")
	assert.NotContains(t, err.Error(), "HandleStream")
	// Whatever the bus, and whatever result was written.
	err = cqrsnats.Forward[Picks, []Pick](commands, client)
	assert.Contains(t, err.Error(), "forward it with cqrsnats.ForwardDeclaredStream[nats_test.Picks]")

	err = cqrsnats.ForwardStream[Lookup, Reservation](queries, client)
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.Contains(t, err.Error(), "nats_test.Lookup is declared a command or query with one result, which ForwardStream cannot carry: forward it with cqrsnats.ForwardDeclared[nats_test.Lookup]")
	err = cqrsnats.ForwardStream[Reserve, Reservation](queries, client)
	assert.Contains(t, err.Error(), "forward it with cqrsnats.ForwardDeclared[nats_test.Reserve]")

	// Other refusals keep their own text: an event is neither.
	err = cqrsnats.Forward[Reserved, cqrs.NoResult](commands, client)
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.NotContains(t, err.Error(), "Forward")
	err = cqrsnats.ForwardStream[Reserved, cqrs.NoResult](queries, client)
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.NotContains(t, err.Error(), "Forward")
	assert.Empty(t, queries.Registered())
	assert.Empty(t, commands.Registered())
}

// TestServingWhileNotConnectedSaysSo: serving on a connection that is not
// connected says so, with its state, rather than "nats: timeout".
func TestServingWhileNotConnectedSaysSo(t *testing.T) {
	ns := startServer(t, -1)
	w := newWarehouse(t, "w1")

	closed := connect(t, ns.ClientURL())
	closed.Close()
	_, err := cqrsnats.Serve(closed, w.commands)
	require.ErrorIs(t, err, cqrsnats.ErrTransport)
	assert.Contains(t, err.Error(), "not connected to a NATS server (the connection is CLOSED): check the server's URL and that it runs")

	down := connect(t, ns.ClientURL(), reconnecting()...)
	ns.Shutdown()
	ns.WaitForShutdown()
	require.Eventually(t, func() bool { return down.Status() == natsgo.RECONNECTING }, 5*time.Second, time.Millisecond)
	start := time.Now()
	_, err = cqrsnats.ServeService(down, w.service())
	require.ErrorIs(t, err, cqrsnats.ErrTransport)
	assert.Contains(t, err.Error(), "serve service: not connected to a NATS server (the connection is RECONNECTING): check the server's URL and that it runs")
	_, err = cqrsnats.ForwardService(down, cqrsnats.Service{Events: cqrs.NewEventBus(), Routes: warehouseRoutes[3:], Subscriber: "customer"})
	require.ErrorIs(t, err, cqrsnats.ErrTransport)
	assert.Contains(t, err.Error(), "forward service: receiving events: not connected to a NATS server (the connection is RECONNECTING)")
	assert.Less(t, time.Since(start), time.Second, "it waited for a timeout")
}

// TestRemoteErrorSaysTheClientLacksItsCode: a caller without the serving
// side's error table gets the remote sentinel's text with what to do so
// that errors.Is finds it.
func TestRemoteErrorSaysTheClientLacksItsCode(t *testing.T) {
	ns := startServer(t, -1)
	w := newWarehouse(t, "w1")
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), w.commands, cqrsnats.WithErrors(warehouseErrors...))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	nc := connect(t, ns.ClientURL())

	without := cqrs.NewCommandBus()
	require.NoError(t, cqrsnats.ForwardDeclared[Reserve](without, cqrsnats.NewClient(nc)))
	_, err = cqrs.Send(context.Background(), without, Reserve{ID: 1, SKU: "none"})
	var remote *cqrsnats.RemoteError
	require.ErrorAs(t, err, &remote)
	assert.NotErrorIs(t, err, errOutOfStock)
	assert.Equal(t, "sku none: out of stock", remote.Message, "the message itself is the remote one")
	assert.Equal(t, `sku none: out of stock (error code "warehouse.out_of_stock" of the serving side is unknown here, so errors.Is cannot match its sentinel: give this side the same codes, with WithErrors or a Service's Errors)`, err.Error())

	with := cqrs.NewCommandBus()
	require.NoError(t, cqrsnats.ForwardDeclared[Reserve](with, cqrsnats.NewClient(nc, cqrsnats.WithErrors(warehouseErrors...))))
	_, err = cqrs.Send(context.Background(), with, Reserve{ID: 2, SKU: "none"})
	require.ErrorIs(t, err, errOutOfStock)
	assert.Equal(t, "sku none: out of stock", err.Error())
	// An error with no code to keep ("error") has no table to be in, and
	// no hint: TestErrorsKeepTheirIdentity checks its text.
}
