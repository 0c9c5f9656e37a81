package nats_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// benchWindow is the window both sides of the stream benchmark use.
const benchWindow = 256

// Blob is an item that is its own bytes, and Blobs the stream of N of
// them.
type (
	Blob  []byte
	Blobs struct {
		cqrs.StreamQuery[Blob]
		N int
	}
	// Text is a stream of N items of 1 KiB of JSON.
	Text struct {
		cqrs.StreamQuery[Item]
		N int
	}
)

// blobCodec sends a Blob as it is, and other values as JSON: the
// benchmark measures the transport, not a codec.
type blobCodec struct{}

func (blobCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(Blob); ok {
		return b, nil
	}
	return json.Marshal(v)
}

func (blobCodec) Unmarshal(data []byte, v any) error {
	if b, ok := v.(*Blob); ok {
		*b = data // each NATS message has bytes of its own
		return nil
	}
	return json.Unmarshal(data, v)
}

// BenchmarkStream reads b.N items of 1 KiB in one stream, with a window
// of 256 items acknowledged every 128: through cqrs.Stream over
// ServeStreams and ForwardStream, and as raw nats.go messages with the
// same flow control done by hand. items/s is the figure to compare.
func BenchmarkStream(b *testing.B) {
	payload := []byte(strings.Repeat("x", 1024))
	ns := startServer(b, -1)
	config := cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{Window: benchWindow})

	b.Run("raw", func(b *testing.B) {
		pub, sub := connect(b, ns.ClientURL()), connect(b, ns.ClientURL())
		inbox, control := sub.NewInbox(), pub.NewInbox()
		var acked atomic.Uint64
		credit := make(chan struct{}, 1)
		ctl, err := pub.Subscribe(control, func(m *natsgo.Msg) {
			n, _ := binary.Uvarint(m.Data[1:])
			acked.Store(n)
			select {
			case credit <- struct{}{}:
			default:
			}
		})
		require.NoError(b, err)
		defer func() { _ = ctl.Unsubscribe() }()
		ch := make(chan *natsgo.Msg, benchWindow+16)
		items, err := sub.ChanSubscribe(inbox, ch)
		require.NoError(b, err)
		defer func() { _ = items.Unsubscribe() }()
		require.NoError(b, pub.Flush())
		require.NoError(b, sub.Flush())
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		b.ResetTimer()
		done := make(chan struct{})
		go func() {
			defer close(done)
			frame := make([]byte, 0, len(payload)+8)
			for i := uint64(0); i < uint64(b.N); i++ {
				for i >= acked.Load()+benchWindow {
					<-credit
				}
				frame = append(binary.AppendUvarint(append(frame[:0], 'I'), i+1), payload...)
				if pub.Publish(inbox, frame) != nil {
					return
				}
			}
		}()
		ack := make([]byte, 0, 16)
		var read, last uint64
		for read < uint64(b.N) {
			m := <-ch
			if len(m.Data) != len(payload)+len(binary.AppendUvarint(nil, read+1))+1 {
				b.Fatalf("item %d has %d bytes", read, len(m.Data))
			}
			read++
			if read-last >= benchWindow/2 {
				last = read
				ack = binary.AppendUvarint(append(ack[:0], 'K'), read)
				_ = sub.Publish(control, ack)
			}
		}
		b.StopTimer()
		<-done
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
	})

	b.Run("cqrs", func(b *testing.B) {
		serving, calling := connect(b, ns.ClientURL()), connect(b, ns.ClientURL())
		bus := cqrs.NewQueryBus()
		require.NoError(b, cqrs.HandleStream(bus, func(_ context.Context, q Blobs, yield func(Blob) bool) error {
			for range q.N {
				if !yield(payload) {
					return nil
				}
			}
			return nil
		}))
		srv, err := cqrsnats.ServeStreams(serving, bus, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[Blobs, Blob]()},
			cqrsnats.WithCodec(blobCodec{}), config)
		require.NoError(b, err)
		defer func() { _ = srv.Stop(context.Background()) }()
		queries := cqrs.NewQueryBus()
		require.NoError(b, cqrsnats.ForwardStream[Blobs, Blob](queries, cqrsnats.NewClient(calling, cqrsnats.WithCodec(blobCodec{})), config))
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		b.ResetTimer()
		read := 0
		for blob, err := range cqrs.Stream(context.Background(), queries, Blobs{N: b.N}) {
			if err != nil || len(blob) != len(payload) {
				b.Fatalf("item %d: %d bytes, %v", read, len(blob), err)
			}
			read++
		}
		b.StopTimer()
		if read != b.N {
			b.Fatalf("%d items of %d", read, b.N)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
	})

	// The same through the default JSON codec, for an item that holds
	// 1 KiB of text: what a codec adds.
	b.Run("cqrs-json", func(b *testing.B) {
		serving, calling := connect(b, ns.ClientURL()), connect(b, ns.ClientURL())
		bus := cqrs.NewQueryBus()
		text := string(payload)
		require.NoError(b, cqrs.HandleStream(bus, func(_ context.Context, q Text, yield func(Item) bool) error {
			for i := range q.N {
				if !yield(Item{N: i, Text: text}) {
					return nil
				}
			}
			return nil
		}))
		srv, err := cqrsnats.ServeStreams(serving, bus, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[Text, Item]()}, config)
		require.NoError(b, err)
		defer func() { _ = srv.Stop(context.Background()) }()
		queries := cqrs.NewQueryBus()
		require.NoError(b, cqrsnats.ForwardStream[Text, Item](queries, cqrsnats.NewClient(calling), config))
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		b.ResetTimer()
		read := 0
		for item, err := range cqrs.Stream(context.Background(), queries, Text{N: b.N}) {
			if err != nil || item.N != read {
				b.Fatalf("item %d: %+v, %v", read, item.N, err)
			}
			read++
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
	})
}
