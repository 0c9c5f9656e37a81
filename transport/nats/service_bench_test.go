package nats_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// newServiceStream is newCQRSStream's stream served by ServeService,
// which runs it through QueryBus.ExecuteStream rather than
// cqrs.StreamOf, boxing each item.
func newServiceStream(b *testing.B, url string, payload []byte) *cqrsStream {
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
	srv, err := cqrsnats.ServeService(connect(b, url), cqrsnats.Service{Queries: bus}, cqrsnats.WithCodec(blobCodec{}), config)
	require.NoError(b, err)
	b.Cleanup(func() { _ = srv.Stop(context.Background()) })
	queries := cqrs.NewQueryBus()
	require.NoError(b, cqrsnats.ForwardDeclaredStream[Blobs](queries, cqrsnats.NewClient(connect(b, url), cqrsnats.WithCodec(blobCodec{})), config))
	return &cqrsStream{queries: queries}
}

// BenchmarkServiceStream reads b.N items of 1 KiB, as BenchmarkStream's
// cqrs row does, from a stream served by ServeStreams with its type
// listed (typed) and by ServeService without (service); and the two
// alternating in streams of 10,000 items (interleaved), which reports
// both rates and their ratio, service/typed, over the same stretch of a
// shared machine's time.
func BenchmarkServiceStream(b *testing.B) {
	payload := []byte(strings.Repeat("x", 1024))
	ns := startServer(b, -1)
	for _, tc := range []struct {
		name  string
		start func(*testing.B, string, []byte) *cqrsStream
	}{{"typed", newCQRSStream}, {"service", newServiceStream}} {
		b.Run(tc.name, func(b *testing.B) {
			c := tc.start(b, ns.ClientURL(), payload)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.ResetTimer()
			c.stream(b, b.N)
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		typed := newCQRSStream(b, ns.ClientURL(), payload)
		service := newServiceStream(b, ns.ClientURL(), payload)
		const chunk = 10_000
		var t, s time.Duration
		b.ResetTimer()
		for done := 0; done < b.N; done += chunk {
			n := min(chunk, b.N-done)
			start := time.Now()
			typed.stream(b, n)
			mid := time.Now()
			service.stream(b, n)
			t, s = t+mid.Sub(start), s+time.Since(mid)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/t.Seconds(), "typed-items/s")
		b.ReportMetric(float64(b.N)/s.Seconds(), "service-items/s")
		b.ReportMetric(s.Seconds()/t.Seconds(), "service/typed")
	})
}
