package nats_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// TestCallFailsAtOnceWhenItsConnectionCloses: a call waiting for its
// reply when its connection closes fails at once with ErrTransport, as
// nats.go's own request does, instead of waiting for its 4 s deadline.
func TestCallFailsAtOnceWhenItsConnectionCloses(t *testing.T) {
	ns := startServer(t, -1)
	_, r := slowServer(t, ns.ClientURL(), 10*time.Second)
	nc := connect(t, ns.ClientURL())
	commands, _ := calling(t, nc, cqrsnats.WithTimeout(4*time.Second))

	done := make(chan error, 1)
	go func() {
		_, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 1, Item: "x"})
		done <- err
	}()
	require.Eventually(t, func() bool { return r.running.Load() == 1 }, 5*time.Second, time.Millisecond)
	closed := time.Now()
	nc.Close()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, cqrsnats.ErrTransport)
		assert.Less(t, time.Since(closed), 2*time.Second)
	case <-time.After(10 * time.Second):
		t.Fatal("the call still waits 10 s after its connection closed")
	}
}

// TestLateReplyReachesNoLaterCall: a reply that arrives after its caller
// gave up is dropped, never taken by a later call of the same client
// (whose wait may reuse the same waiter).
func TestLateReplyReachesNoLaterCall(t *testing.T) {
	ns := startServer(t, -1)
	waiting := make(chan struct{})  // closed once call 1 waits for its reply
	answered := make(chan struct{}) // closed as the handler of call 0 returns
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(_ context.Context, c PlaceOrder) (Order, error) {
		switch c.ID {
		case 0: // answers after its caller's deadline, while call 1 waits
			<-waiting
			defer close(answered)
		case 1:
			close(waiting)
			<-answered
		}
		return Order{ID: c.ID}, nil
	})))
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), bus, cqrsnats.WithConcurrency(2))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	commands, _ := calling(t, connect(t, ns.ClientURL()))

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 0, Item: "x"})
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	for id := 1; id < 50; id++ {
		o, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: id, Item: "x"})
		require.NoError(t, err)
		require.Equal(t, id, o.ID, "a call got another call's reply")
	}
}
