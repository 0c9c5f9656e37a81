package nats_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// rawStream is the baseline: 1 KiB messages from one connection to an
// inbox on another, with the stream's flow control done by hand. Counts
// run on across its streams, so that a late acknowledgement of one
// stream is still right for the next.
type rawStream struct {
	pub, sub       *natsgo.Conn
	inbox, control string
	acked          atomic.Uint64
	credit         chan struct{}
	ch             chan *natsgo.Msg
	sent, read     uint64
	payload, ack   []byte
}

func newRawStream(b *testing.B, url string, payload []byte) *rawStream {
	r := &rawStream{pub: connect(b, url), sub: connect(b, url), credit: make(chan struct{}, 1),
		ch: make(chan *natsgo.Msg, benchWindow+16), payload: payload}
	r.inbox, r.control = r.sub.NewInbox(), r.pub.NewInbox()
	_, err := r.pub.Subscribe(r.control, func(m *natsgo.Msg) {
		n, _ := binary.Uvarint(m.Data[1:])
		r.acked.Store(n)
		select {
		case r.credit <- struct{}{}:
		default:
		}
	})
	require.NoError(b, err)
	_, err = r.sub.ChanSubscribe(r.inbox, r.ch)
	require.NoError(b, err)
	require.NoError(b, r.pub.Flush())
	require.NoError(b, r.sub.Flush())
	return r
}

// stream sends and reads n items.
func (r *rawStream) stream(b *testing.B, n int) {
	done := make(chan struct{})
	first, last := r.sent, r.sent+uint64(n)
	go func() {
		defer close(done)
		frame := make([]byte, 0, len(r.payload)+8)
		for i := first; i < last; i++ {
			for i >= r.acked.Load()+benchWindow {
				<-r.credit
			}
			frame = append(binary.AppendUvarint(append(frame[:0], 'I'), i+1), r.payload...)
			if r.pub.Publish(r.inbox, frame) != nil {
				return
			}
		}
	}()
	acked := r.read
	for r.read < last {
		m := <-r.ch
		if seq, _ := binary.Uvarint(m.Data[1:]); seq != r.read+1 || len(m.Data) < len(r.payload) {
			b.Fatalf("item %d: seq %d, %d bytes", r.read+1, seq, len(m.Data))
		}
		r.read++
		if r.read-acked >= benchWindow/2 {
			acked = r.read
			r.ack = binary.AppendUvarint(append(r.ack[:0], 'K'), r.read)
			_ = r.sub.Publish(r.control, r.ack)
		}
	}
	<-done
	r.sent = last
}

// cqrsStream is the same through ServeStreams, ForwardStream and
// cqrs.Stream, from ctx (context.Background() when nil).
type cqrsStream struct {
	queries *cqrs.QueryBus
	ctx     context.Context
}

func newCQRSStream(b *testing.B, url string, payload []byte) *cqrsStream {
	config := cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{Window: benchWindow})
	bus := cqrs.NewQueryBus()
	require.NoError(b, cqrs.HandleStream(bus, func(_ context.Context, q Blobs, yield func(Blob) bool) error {
		for range q.N {
			if !yield(payload) {
				return nil
			}
		}
		return nil
	}))
	srv, err := cqrsnats.ServeStreams(connect(b, url), bus, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[Blobs, Blob]()},
		cqrsnats.WithCodec(blobCodec{}), config)
	require.NoError(b, err)
	b.Cleanup(func() { _ = srv.Stop(context.Background()) })
	queries := cqrs.NewQueryBus()
	require.NoError(b, cqrsnats.ForwardStream[Blobs, Blob](queries, cqrsnats.NewClient(connect(b, url), cqrsnats.WithCodec(blobCodec{})), config))
	return &cqrsStream{queries: queries}
}

// stream reads one stream of n items.
func (c *cqrsStream) stream(b *testing.B, n int) {
	ctx := c.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	read := 0
	for blob, err := range cqrs.Stream(ctx, c.queries, Blobs{N: n}) {
		if err != nil || len(blob) != 1024 {
			b.Fatalf("item %d: %d bytes, %v", read, len(blob), err)
		}
		read++
	}
	if read != n {
		b.Fatalf("%d items of %d", read, n)
	}
}

// BenchmarkStream reads b.N items of 1 KiB, with a window of 256 items
// acknowledged every 128: as raw nats.go messages with that flow control
// done by hand (raw), and through cqrs.Stream over ServeStreams and
// ForwardStream (cqrs), each as one stream; and the two alternating in
// streams of 10,000 items (interleaved), which reports both rates and
// their ratio, cqrs/raw, taken over the same stretch of a shared
// machine's time. items/s is the figure to compare. cqrs-json is the
// cqrs row through the default JSON codec, for an item holding 1 KiB of
// text: what a codec adds. Each row also reports the CPU time the whole
// process (both sides and the embedded NATS server) spent per item,
// cpu-ns/item: on a shared machine, a figure that others' load moves
// less than the rate.
func BenchmarkStream(b *testing.B) {
	payload := []byte(strings.Repeat("x", 1024))
	ns := startServer(b, -1)
	perSecond := func(b *testing.B, n int, d time.Duration) float64 { return float64(n) / d.Seconds() }
	perItem := func(b *testing.B, n int, cpu time.Duration, unit string) {
		if cpu > 0 {
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), unit)
		}
	}

	// one reads b.N items in one stream of what start returns.
	one := func(start func(b *testing.B) func(*testing.B, int)) func(*testing.B) {
		return func(b *testing.B) {
			stream := start(b)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			stream(b, b.N)
			cpu = cpuTime() - cpu
			b.StopTimer()
			b.ReportMetric(perSecond(b, b.N, b.Elapsed()), "items/s")
			perItem(b, b.N, cpu, "cpu-ns/item")
		}
	}
	b.Run("raw", one(func(b *testing.B) func(*testing.B, int) { return newRawStream(b, ns.ClientURL(), payload).stream }))
	b.Run("cqrs", one(func(b *testing.B) func(*testing.B, int) { return newCQRSStream(b, ns.ClientURL(), payload).stream }))

	b.Run("interleaved", func(b *testing.B) {
		r := newRawStream(b, ns.ClientURL(), payload)
		c := newCQRSStream(b, ns.ClientURL(), payload)
		const chunk = 10_000
		var raw, forwarded, rawCPU, forwardedCPU time.Duration
		b.ResetTimer()
		for done := 0; done < b.N; done += chunk {
			n := min(chunk, b.N-done)
			start, cpu0 := time.Now(), cpuTime()
			r.stream(b, n)
			mid, cpu1 := time.Now(), cpuTime()
			c.stream(b, n)
			raw, forwarded = raw+mid.Sub(start), forwarded+time.Since(mid)
			rawCPU, forwardedCPU = rawCPU+cpu1-cpu0, forwardedCPU+cpuTime()-cpu1
		}
		b.StopTimer()
		b.ReportMetric(perSecond(b, b.N, raw), "raw-items/s")
		b.ReportMetric(perSecond(b, b.N, forwarded), "cqrs-items/s")
		b.ReportMetric(raw.Seconds()/forwarded.Seconds(), "cqrs/raw")
		perItem(b, b.N, rawCPU, "raw-cpu-ns/item")
		perItem(b, b.N, forwardedCPU, "cqrs-cpu-ns/item")
	})

	// The same through the default JSON codec, for an item that holds
	// 1 KiB of text: what a codec adds.
	b.Run("cqrs-json", func(b *testing.B) {
		config := cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{Window: benchWindow})
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
		srv, err := cqrsnats.ServeStreams(connect(b, ns.ClientURL()), bus, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[Text, Item]()}, config)
		require.NoError(b, err)
		defer func() { _ = srv.Stop(context.Background()) }()
		queries := cqrs.NewQueryBus()
		require.NoError(b, cqrsnats.ForwardStream[Text, Item](queries, cqrsnats.NewClient(connect(b, ns.ClientURL())), config))
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
		b.ReportMetric(perSecond(b, b.N, b.Elapsed()), "items/s")
	})
}

// BenchmarkStreamOpen runs b.N streams of one 1 KiB item each, one after
// another, through cqrs.Stream over ServeStreams and ForwardStream: what a
// stream costs besides its items (the request, the inbox's subscription,
// the acceptance, the end). identity runs them from a context that
// carries an identity ([cqrs.ContextWithIdentity]), which travels with
// each request. cpu-ns/stream is the CPU time of the whole process per
// stream.
func BenchmarkStreamOpen(b *testing.B) {
	payload := []byte(strings.Repeat("x", 1024))
	ns := startServer(b, -1)
	for _, tc := range []struct {
		name string
		ctx  func() context.Context
	}{
		{"plain", context.Background},
		{"identity", func() context.Context {
			return cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{CorrelationID: "bench"})
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := newCQRSStream(b, ns.ClientURL(), payload)
			c.ctx = tc.ctx()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for range b.N {
				c.stream(b, 1)
			}
			if cpu = cpuTime() - cpu; cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/stream")
			}
		})
	}
}
