package nats_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// benchNames are the subscriber names every event of the benchmark goes
// to, each on a connection of its own.
var benchNames = []string{"email", "stock", "analytics"}

// fanOut publishes event i and returns once every subscriber name has
// handled it.
type fanOut func(ctx context.Context, i int) error

// rawEvents is the baseline: the same JSON bytes published with plain
// nats.go, to a plain queue subscription per name (core) or a plain
// durable consumer per name that acknowledges each message (JetStream),
// each decoding the JSON as the transport's subscribers do. With headers,
// each message carries an identity in headers as this package's do.
func rawEvents(b *testing.B, url string, durable, headers bool) fanOut {
	delivered := make(chan int, 64)
	handle := func(data []byte) {
		var e ParcelShipped
		if json.Unmarshal(data, &e) == nil {
			delivered <- e.Parcel
		}
	}
	subject, stream := "raw.event.ParcelShipped", "RAW"
	if headers {
		subject, stream = "rawh.event.ParcelShipped", "RAWH"
	}
	pub := connect(b, url)
	var js jetstream.JetStream
	if durable {
		subject = "js" + subject
		var err error
		js, err = jetstream.New(pub)
		require.NoError(b, err)
		ctx := context.Background()
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subject}, Retention: jetstream.InterestPolicy})
		require.NoError(b, err)
		for _, name := range benchNames {
			sjs, err := jetstream.New(connect(b, url))
			require.NoError(b, err)
			c, err := sjs.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "raw_" + name, FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy})
			require.NoError(b, err)
			cc, err := c.Consume(func(m jetstream.Msg) {
				handle(m.Data())
				_ = m.Ack()
			}, jetstream.PullMaxMessages(32))
			require.NoError(b, err)
			b.Cleanup(cc.Stop)
		}
	} else {
		for _, name := range benchNames {
			nc := connect(b, url)
			_, err := nc.QueueSubscribe(subject, name, func(m *natsgo.Msg) { handle(m.Data) })
			require.NoError(b, err)
			require.NoError(b, nc.Flush())
		}
	}
	return func(ctx context.Context, i int) error {
		data, err := json.Marshal(ParcelShipped{Parcel: i})
		if err != nil {
			return err
		}
		m := &natsgo.Msg{Subject: subject, Data: data}
		if headers {
			m.Header = identityHeaders(durable)
		}
		if durable {
			_, err = js.PublishMsg(ctx, m)
		} else {
			err = pub.PublishMsg(m)
		}
		if err != nil {
			return err
		}
		return awaitAll(ctx, delivered, i)
	}
}

// identityHeaders returns the headers of a new event's identity, as this
// package sends them for a conversation's first message: its ID (its
// correlation, the same, is left out), and with JetStream the ID as
// Nats-Msg-Id.
func identityHeaders(durable bool) natsgo.Header {
	id := cqrs.NewID()
	h := natsgo.Header{cqrsnats.HeaderID: {id}}
	if durable {
		h.Set(jetstream.MsgIDHeader, id)
	}
	return h
}

// awaitAll waits for event i to reach every name.
func awaitAll(ctx context.Context, delivered <-chan int, i int) error {
	for range benchNames {
		select {
		case got := <-delivered:
			if got != i {
				return fmt.Errorf("got event %d, want %d", got, i)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// transportEvents is the same fan-out through this package.
func transportEvents(b *testing.B, url string, durable bool) fanOut {
	ev := cqrsnats.EventConfig{Durable: durable}
	delivered := make(chan int, 64)
	for _, name := range benchNames {
		r, err := cqrsnats.NewReceiver(connect(b, url), ev)
		require.NoError(b, err)
		b.Cleanup(func() { require.NoError(b, r.Stop(context.Background())) })
		_, err = cqrsnats.Subscribe(r, name, func(_ context.Context, e ParcelShipped) error {
			delivered <- e.Parcel
			return nil
		})
		require.NoError(b, err)
	}
	p, err := cqrsnats.NewPublisher(connect(b, url), ev)
	require.NoError(b, err)
	return func(ctx context.Context, i int) error {
		if err := cqrsnats.Publish(ctx, p, ParcelShipped{Parcel: i}); err != nil {
			return err
		}
		return awaitAll(ctx, delivered, i)
	}
}

// reportCPU reports the CPU time the process used since cpu, per
// operation, as cpu-ns/op: the whole process's, the embedded server's
// included, which a shared machine disturbs less than the time.
func reportCPU(b *testing.B, cpu time.Duration) {
	if now := cpuTime(); cpu > 0 && now > 0 {
		b.ReportMetric(float64(now-cpu)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkEvents publishes one event at a time to three subscriber
// names, each on a connection of its own, and waits for the last
// delivery: through this package and through plain nats.go with the same
// JSON bytes, without headers (Raw) and with the identity headers this
// package sends (RawHeaders), over core NATS and over JetStream, on one
// embedded server. Compare each Transport row with the Raw rows of its
// mode, in one run.
func BenchmarkEvents(b *testing.B) {
	ns := startEventServer(b, true)
	url := ns.ClientURL()
	for _, mode := range []struct {
		name    string
		durable bool
	}{{"Core", false}, {"JetStream", true}} {
		impls := []struct {
			name string
			fan  fanOut
		}{
			{"Raw", rawEvents(b, url, mode.durable, false)},
			{"RawHeaders", rawEvents(b, url, mode.durable, true)},
			{"Transport", transportEvents(b, url, mode.durable)},
		}
		for _, impl := range impls {
			b.Run(mode.name+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cpu := cpuTime()
				for i := 0; b.Loop(); i++ {
					if err := impl.fan(ctx, i); err != nil {
						b.Fatal(err)
					}
				}
				reportCPU(b, cpu)
			})
		}
	}
}

// BenchmarkEventsDrain measures one subscriber draining a backlog of
// JetStream events with a handler that does nothing: taking each event,
// decoding it, running the subscriber's bus and acknowledging it. The
// backlog is published with the timer stopped.
func BenchmarkEventsDrain(b *testing.B) {
	ns := startEventServer(b, true)
	url := ns.ClientURL()
	ev := cqrsnats.EventConfig{Durable: true}
	r, err := cqrsnats.NewReceiver(connect(b, url), ev)
	require.NoError(b, err)
	_, err = cqrsnats.Subscribe(r, "email", func(context.Context, ParcelShipped) error { return nil })
	require.NoError(b, err) // makes the consumer
	require.NoError(b, r.Stop(context.Background()))
	p, err := cqrsnats.NewPublisher(connect(b, url), ev)
	require.NoError(b, err)
	ctx := context.Background()
	for i := range b.N {
		require.NoError(b, cqrsnats.Publish(ctx, p, ParcelShipped{Parcel: i}))
	}
	done := make(chan struct{})
	n := 0
	r, err = cqrsnats.NewReceiver(connect(b, url), ev)
	require.NoError(b, err)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	_, err = cqrsnats.Subscribe(r, "email", func(context.Context, ParcelShipped) error {
		if n++; n == b.N {
			close(done)
		}
		return nil
	})
	require.NoError(b, err)
	<-done
	b.StopTimer()
	reportCPU(b, cpu)
	require.NoError(b, r.Stop(context.Background()))
}

// BenchmarkEventsPublishCore measures the publishing side alone: one core
// NATS publish of an event, nobody subscribed, through this package
// (which sends the event's identity in headers) and through plain nats.go
// with the same JSON bytes, without headers (Raw) and with the same
// headers (RawHeaders). The embedded server runs in the benchmark's
// process: its allocations count too.
func BenchmarkEventsPublishCore(b *testing.B) {
	ns := startEventServer(b, false)
	nc := connect(b, ns.ClientURL())
	p, err := cqrsnats.NewPublisher(nc, cqrsnats.EventConfig{})
	require.NoError(b, err)
	ctx := context.Background()
	raw := func(headers bool) func(i int) error {
		return func(i int) error {
			data, err := json.Marshal(ParcelShipped{Parcel: i})
			if err != nil {
				return err
			}
			m := &natsgo.Msg{Subject: "raw.event.ParcelShipped", Data: data}
			if headers {
				m.Header = identityHeaders(false)
			}
			return nc.PublishMsg(m)
		}
	}
	for _, impl := range []struct {
		name    string
		publish func(i int) error
	}{
		{"Raw", raw(false)},
		{"RawHeaders", raw(true)},
		{"Transport", func(i int) error { return cqrsnats.Publish(ctx, p, ParcelShipped{Parcel: i}) }},
	} {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				if err := impl.publish(i); err != nil {
					b.Fatal(err)
				}
			}
			require.NoError(b, nc.Flush())
			reportCPU(b, cpu)
		})
	}
}
