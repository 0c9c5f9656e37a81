package nats_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// outboundPlaced is the event of the outbound tests.
type outboundPlaced struct {
	cqrs.Event
	Order int
}

// TestOutboundMessagesAreWhatTheReceiversTake publishes what
// OutboundEvent and OutboundCommand return, as an outbox relay would,
// with a bare JetStream publish: a Receiver's subscriber and a durable
// server handle them, with the identity they were encoded with.
func TestOutboundMessagesAreWhatTheReceiversTake(t *testing.T) {
	s := startEventServer(t, true)
	nc := connect(t, s.ClientURL())
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	r, err := cqrsnats.NewReceiver(nc, cqrsnats.EventConfig{Durable: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, r.Stop(context.Background())) }()
	got := make(chan int, 10)
	_, err = cqrsnats.Subscribe(r, "outbox", func(_ context.Context, e outboundPlaced) error {
		got <- e.Order
		return nil
	})
	require.NoError(t, err)
	ship := newShipper(0)
	serveDurable(t, js, ship, cqrsnats.DurableConfig{})

	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{CorrelationID: "conv"})
	evt, err := cqrsnats.OutboundEvent(ctx, outboundPlaced{Order: 42})
	require.NoError(t, err)
	assert.Equal(t, evt.Header.Get(cqrsnats.HeaderID), evt.Header.Get(jetstream.MsgIDHeader))
	assert.Equal(t, "conv", evt.Header.Get(cqrsnats.HeaderCorrelationID))
	for range 2 { // sent twice, as by a relay that died before removing it
		_, err = js.PublishMsg(ctx, evt)
		require.NoError(t, err)
	}
	cmd, err := cqrsnats.OutboundCommand(ctx, Ship{Parcel: 9}, cqrsnats.DurableConfig{})
	require.NoError(t, err)
	assert.Equal(t, "CQRS_COMMANDS", cmd.Header.Get(jetstream.ExpectedStreamHeader))
	for range 2 {
		_, err = js.PublishMsg(ctx, cmd)
		require.NoError(t, err)
	}

	select {
	case order := <-got:
		assert.Equal(t, 42, order)
	case <-time.After(10 * time.Second):
		t.Fatal("the subscriber never got the outbound event")
	}
	ship.await(t, 1)
	time.Sleep(200 * time.Millisecond) // a duplicate would arrive now
	assert.Empty(t, got, "JetStream stored the event once: Nats-Msg-Id")
	ship.mu.Lock()
	assert.Equal(t, 1, ship.shipped[9], "and the command once")
	ship.mu.Unlock()

	_, err = cqrsnats.OutboundEvent(ctx, outboundPlaced{}, cqrsnats.WithPrefix("bad prefix"))
	assert.Error(t, err)
	var nilCtx context.Context // a nil context is what is tested
	_, err = cqrsnats.OutboundEvent(nilCtx, outboundPlaced{})
	assert.ErrorIs(t, err, cqrs.ErrNilContext)
	_, err = cqrsnats.OutboundCommand(ctx, Ship{Parcel: 1}, cqrsnats.DurableConfig{}, cqrsnats.WithMaxPayload(4))
	assert.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
}
