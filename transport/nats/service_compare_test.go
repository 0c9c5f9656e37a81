package nats_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// The same warehouse service put on NATS twice: with the calls of v0.1.0
// and the streams and events added since (the way a user wrote it before
// ServeService), and with ServeService and ForwardService. Each is
// written as a careful user would, errors checked, and returns what stops
// it. docs/distributed.md counts their lines, with
//
//	awk '/^func serveTheOldWay/,/^}/' service_compare_test.go | wc -l
//
// and TestTheSameServiceBothWays checks that both behave alike.

func serveTheOldWay(nc *natsgo.Conn, w *warehouse) (func(context.Context) error, error) {
	opts := []cqrsnats.Option{cqrsnats.WithErrors(warehouseErrors...)}
	var stops []func(context.Context) error
	stopAll := func(ctx context.Context) error {
		var errs []error
		for _, stop := range stops {
			errs = append(errs, stop(ctx))
		}
		return errors.Join(errs...)
	}
	for _, bus := range []cqrs.Bus{w.commands, w.queries} {
		srv, err := cqrsnats.Serve(nc, bus, opts...)
		if err != nil {
			return nil, errors.Join(err, stopAll(context.Background()))
		}
		stops = append(stops, srv.Stop)
	}
	streams, err := cqrsnats.ServeStreams(nc, w.queries, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[Picks, Pick]()}, opts...)
	if err != nil {
		return nil, errors.Join(err, stopAll(context.Background()))
	}
	stops = append(stops, streams.Stop)
	publisher, err := cqrsnats.NewPublisher(nc, cqrsnats.EventConfig{}, opts...)
	if err != nil {
		return nil, errors.Join(err, stopAll(context.Background()))
	}
	forwarder, err := cqrsnats.ForwardEvents[Reserved](w.events, publisher)
	if err != nil {
		return nil, errors.Join(err, stopAll(context.Background()))
	}
	return func(ctx context.Context) error {
		err := stopAll(ctx)
		forwarder.Cancel()
		return errors.Join(err, nc.Flush())
	}, nil
}

func forwardTheOldWay(nc *natsgo.Conn, c *customer) (func(context.Context) error, error) {
	client := cqrsnats.NewClient(nc, cqrsnats.WithErrors(warehouseErrors...))
	if err := errors.Join(
		cqrsnats.Forward[Reserve, Reservation](c.commands, client),
		cqrsnats.Forward[Lookup, Reservation](c.queries, client),
		cqrsnats.ForwardStream[Picks, Pick](c.queries, client),
	); err != nil {
		return nil, err
	}
	receiver, err := cqrsnats.NewReceiver(nc, cqrsnats.EventConfig{})
	if err != nil {
		return nil, err
	}
	_, err = cqrsnats.Subscribe(receiver, "customer", func(ctx context.Context, e Reserved) error {
		id, _ := cqrs.IdentityOf(ctx)
		return cqrs.PublishWith(cqrs.ContextWithIdentity(ctx, id), c.events, cqrs.Sequential(), e)
	})
	if err != nil {
		_ = receiver.Stop(context.Background())
		return nil, err
	}
	return receiver.Stop, nil
}

func serveTheNewWay(nc *natsgo.Conn, w *warehouse) (func(context.Context) error, error) {
	srv, err := cqrsnats.ServeService(nc, cqrsnats.Service{
		Commands: w.commands, Queries: w.queries, Events: w.events,
		Routes: warehouseRoutes, Errors: warehouseErrors,
	})
	if err != nil {
		return nil, err
	}
	return srv.Stop, nil
}

func forwardTheNewWay(nc *natsgo.Conn, c *customer) (func(context.Context) error, error) {
	remote, err := cqrsnats.ForwardService(nc, cqrsnats.Service{
		Commands: c.commands, Queries: c.queries, Events: c.events,
		Routes: warehouseRoutes, Errors: warehouseErrors, Subscriber: "customer",
	})
	if err != nil {
		return nil, err
	}
	return remote.Stop, nil
}

// TestTheSameServiceBothWays puts the warehouse on NATS the old way and
// the new, and checks that a caller sees the same of both: each result,
// each stream, each event with its identity, and the service's own error.
func TestTheSameServiceBothWays(t *testing.T) {
	type way struct {
		serve   func(*natsgo.Conn, *warehouse) (func(context.Context) error, error)
		forward func(*natsgo.Conn, *customer) (func(context.Context) error, error)
	}
	seen := map[string][]string{}
	for name, w := range map[string]way{"old": {serveTheOldWay, forwardTheOldWay}, "new": {serveTheNewWay, forwardTheNewWay}} {
		t.Run(name, func(t *testing.T) {
			ns := startServer(t, -1)
			wh := newWarehouse(t, "w1")
			stopServing, err := w.serve(connect(t, ns.ClientURL()), wh)
			require.NoError(t, err)
			c := &customer{
				commands: cqrs.NewCommandBus(), queries: cqrs.NewQueryBus(), events: cqrs.NewEventBus(),
				received: map[int]int{}, ids: map[int]cqrs.Identity{}, arrived: make(chan int, 16),
			}
			_, err = cqrs.Subscribe(c.events, "ledger", func(ctx context.Context, e Reserved) error {
				id, _ := cqrs.IdentityOf(ctx)
				c.mu.Lock()
				c.ids[e.ID] = id
				c.mu.Unlock()
				c.arrived <- e.ID
				return nil
			})
			require.NoError(t, err)
			stopCalling, err := w.forward(connect(t, ns.ClientURL()), c)
			require.NoError(t, err)

			var got []string
			ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{CorrelationID: "basket-1"})
			for id := 1; id <= 3; id++ {
				r, err := cqrs.Send(ctx, c.commands, Reserve{ID: id, SKU: "lamp"})
				got = append(got, fmt.Sprintf("send %+v %v", r, err))
				l, err := cqrs.Ask(ctx, c.queries, Lookup{ID: id})
				got = append(got, fmt.Sprintf("ask %+v %v", l, err))
				for p, err := range cqrs.Stream(ctx, c.queries, Picks{ID: id, N: 2}) {
					got = append(got, fmt.Sprintf("pick %+v %v", p, err))
				}
				c.await(t, 1)
			}
			_, err = cqrs.Send(ctx, c.commands, Reserve{ID: 4, SKU: "none"})
			got = append(got, fmt.Sprintf("out of stock: %v %v", errors.Is(err, errOutOfStock), err))
			c.mu.Lock()
			for id := 1; id <= 3; id++ {
				sent, _ := wh.ids.Load(id)
				got = append(got, fmt.Sprintf("event %d with its identity: %v, correlation %s", id, sent == c.ids[id], c.ids[id].CorrelationID))
			}
			c.mu.Unlock()
			require.NoError(t, stopCalling(context.Background()))
			require.NoError(t, stopServing(context.Background()))
			seen[name] = got
		})
	}
	require.Len(t, seen["new"], 3*4+1+3)
	assert.Equal(t, seen["old"], seen["new"])
	assert.Contains(t, seen["new"], "out of stock: true sku none: out of stock")
	assert.Contains(t, seen["new"], "event 2 with its identity: true, correlation basket-1")
}
