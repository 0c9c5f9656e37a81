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
// each decoding the JSON as the transport's subscribers do.
func rawEvents(b *testing.B, url string, durable bool) fanOut {
	delivered := make(chan int, 64)
	handle := func(data []byte) {
		var e ParcelShipped
		if json.Unmarshal(data, &e) == nil {
			delivered <- e.Parcel
		}
	}
	subject := "raw.event.ParcelShipped"
	pub := connect(b, url)
	var js jetstream.JetStream
	if durable {
		subject = "rawjs.event.ParcelShipped"
		var err error
		js, err = jetstream.New(pub)
		require.NoError(b, err)
		ctx := context.Background()
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"rawjs.>"}, Retention: jetstream.InterestPolicy})
		require.NoError(b, err)
		for _, name := range benchNames {
			sjs, err := jetstream.New(connect(b, url))
			require.NoError(b, err)
			c, err := sjs.CreateOrUpdateConsumer(ctx, "RAW", jetstream.ConsumerConfig{Durable: "raw_" + name, FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy})
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
		if durable {
			_, err = js.Publish(ctx, subject, data)
		} else {
			err = pub.Publish(subject, data)
		}
		if err != nil {
			return err
		}
		return awaitAll(ctx, delivered, i)
	}
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

// BenchmarkEvents publishes one event at a time to three subscriber
// names, each on a connection of its own, and waits for the last
// delivery: through this package and through plain nats.go with the same
// JSON bytes, over core NATS and over JetStream, on one embedded server.
// Compare each Transport row with the Raw row of its mode, in one run.
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
			{"Raw", rawEvents(b, url, mode.durable)},
			{"Transport", transportEvents(b, url, mode.durable)},
		}
		for _, impl := range impls {
			b.Run(mode.name+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				for i := 0; b.Loop(); i++ {
					if err := impl.fan(ctx, i); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
