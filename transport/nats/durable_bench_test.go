package nats_test

import (
	"context"
	"testing"

	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// BenchmarkEnqueue measures one Enqueue on a file-storage stream of an
// embedded server, from the second on (the first creates the stream).
func BenchmarkEnqueue(b *testing.B) {
	js := startJetStream(b)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{}
	if err := cqrsnats.Enqueue(ctx, js, Ship{Parcel: -1}, cfg); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := cqrsnats.Enqueue(ctx, js, Ship{Parcel: i}, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
