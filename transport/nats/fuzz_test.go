package nats_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// FuzzServe sends arbitrary bytes as a PlaceOrder request: the serving
// side never panics, and answers every request it does not count as
// expired, with a result or an error.
func FuzzServe(f *testing.F) {
	f.Add([]byte(`{"id":1,"item":"x"}`))
	f.Add([]byte(`{"id":"1"}`))
	f.Add([]byte{0x00, 0xff})
	f.Add(sealFor(placeOrderID, time.Second, `{"id":1,"item":"x"}`))
	f.Add(sealFor("other.Type", time.Second, `{}`))
	f.Add([]byte{0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00, 0x05})
	ns := startServer(f, -1)
	bus := cqrs.NewCommandBus()
	require.NoError(f, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(_ context.Context, c PlaceOrder) (Order, error) {
		return Order{ID: c.ID}, nil
	})))
	srv, err := cqrsnats.Serve(connect(f, ns.ClientURL()), bus)
	require.NoError(f, err)
	f.Cleanup(func() { require.NoError(f, srv.Stop(context.Background())) })
	nc := connect(f, ns.ClientURL())

	f.Fuzz(func(t *testing.T, data []byte) {
		expired := srv.Stats()[0].Expired
		_, err := nc.Request(placeOrderSubject, data, 2*time.Second)
		if err != nil {
			require.Equal(t, expired+1, srv.Stats()[0].Expired, "no reply to %q: %v", data, err)
		}
	})
}
