package nats_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// roundTrip is one request and its decoded reply, whichever way it is made.
type roundTrip func(ctx context.Context, id int) (Order, error)

// rawNATS is the baseline: the same JSON payload over a plain nats.go
// request-reply, with a plain queue subscription answering it. With
// headers it sends one NATS header, to show what a header costs: the
// reason this transport carries the caller's deadline in the payload.
func rawNATS(b *testing.B, url string, withHeaders bool) roundTrip {
	subject := "raw.PlaceOrder"
	if withHeaders {
		subject = "rawh.PlaceOrder"
	}
	server := connect(b, url)
	_, err := server.QueueSubscribe(subject, "q", func(m *natsgo.Msg) {
		var c PlaceOrder
		if err := json.Unmarshal(m.Data, &c); err != nil {
			return
		}
		data, _ := json.Marshal(Order{ID: c.ID, Item: c.Item, Server: "raw"})
		_ = m.Respond(data)
	})
	require.NoError(b, err)
	require.NoError(b, server.Flush())
	client := connect(b, url)
	return func(ctx context.Context, id int) (Order, error) {
		data, err := json.Marshal(PlaceOrder{ID: id, Item: "lamp"})
		if err != nil {
			return Order{}, err
		}
		var reply *natsgo.Msg
		if withHeaders {
			m := &natsgo.Msg{Subject: subject, Data: data, Header: natsgo.Header{"Cqrs-Timeout": {"59999999999"}}}
			reply, err = client.RequestMsgWithContext(ctx, m)
		} else {
			reply, err = client.RequestWithContext(ctx, subject, data)
		}
		if err != nil {
			return Order{}, err
		}
		var o Order
		err = json.Unmarshal(reply.Data, &o)
		return o, err
	}
}

// transport is the same request through this package.
func transport(b *testing.B, url string, opts ...cqrsnats.Option) roundTrip {
	return transportOn(b, url, cqrs.NewCommandBus(), opts...)
}

// transportOn is transport with commands as the calling side's bus: one
// made with cqrs.WithIdentity sends every request with its identity in
// three headers.
func transportOn(b *testing.B, url string, commands *cqrs.CommandBus, opts ...cqrsnats.Option) roundTrip {
	bus := cqrs.NewCommandBus()
	require.NoError(b, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(_ context.Context, c PlaceOrder) (Order, error) {
		return Order{ID: c.ID, Item: c.Item, Server: "cqrs"}, nil
	})))
	srv, err := cqrsnats.Serve(connect(b, url), bus, opts...)
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, srv.Stop(context.Background())) })
	require.NoError(b, cqrsnats.Forward[PlaceOrder, Order](commands, cqrsnats.NewClient(connect(b, url), opts...)))
	return func(ctx context.Context, id int) (Order, error) {
		return cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: id, Item: "lamp"})
	}
}

// percentile returns the q-quantile of sorted durations.
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(q*float64(len(sorted)-1))].Nanoseconds())
}

// BenchmarkRequestReply measures a round trip through this transport and
// through raw nats.go, on the same embedded server, with the same JSON
// payload: one caller at a time (with p50 and p99), and 8 concurrent
// callers (throughput). TransportIdentity is Transport with an identity
// on every message (a calling bus made with cqrs.WithIdentity): a new ID
// made per call, and three headers on the request, parsed on both sides.
//
// Each row reports cpu-ns/op, the CPU time of the whole process (the
// embedded NATS server's included) per request: on a shared machine, a
// cost that other processes' load changes far less than the time. With 8
// callers on 2 cores, sec/op and p50 measure the scheduler as much as the
// code; compare rows within one pass of interleaved -count=1 passes.
func BenchmarkRequestReply(b *testing.B) {
	ns := startServer(b, -1)
	impls := []struct {
		name string
		rt   roundTrip
	}{
		{"RawNATS", rawNATS(b, ns.ClientURL(), false)},
		{"RawNATSHeaders", rawNATS(b, ns.ClientURL(), true)},
		{"Transport", transport(b, ns.ClientURL())},
		{"TransportConcurrency64", transport(b, ns.ClientURL(), cqrsnats.WithConcurrency(64), cqrsnats.WithPrefix("c64"))},
		{"TransportIdentity", transportOn(b, ns.ClientURL(), cqrs.NewCommandBus(cqrs.WithIdentity()), cqrsnats.WithPrefix("ids"))},
	}
	for _, impl := range impls {
		b.Run(impl.name+"/Serial", func(b *testing.B) {
			b.ReportAllocs()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			lat := make([]time.Duration, 0, 1<<16)
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				o, err := impl.rt(ctx, i)
				lat = append(lat, time.Since(start))
				if err != nil || o.ID != i {
					b.Fatal(o, err)
				}
			}
			reportCPU(b, cpu)
			slices.Sort(lat)
			b.ReportMetric(percentile(lat, 0.50), "p50-ns")
			b.ReportMetric(percentile(lat, 0.99), "p99-ns")
		})
		b.Run(impl.name+"/Callers8", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(4) // 4 per core: 8 callers on this 2-core machine
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var mu sync.Mutex
			var lat []time.Duration
			cpu := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for i := 0; pb.Next(); i++ {
					start := time.Now()
					o, err := impl.rt(ctx, i)
					mine = append(mine, time.Since(start))
					if err != nil || o.ID != i {
						b.Error(o, err)
						return
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			reportCPU(b, cpu)
			slices.Sort(lat)
			b.ReportMetric(percentile(lat, 0.50), "p50-ns")
			b.ReportMetric(percentile(lat, 0.99), "p99-ns")
		})
	}
}
