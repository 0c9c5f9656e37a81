package nats_test

import (
	"context"
	"testing"

	"github.com/typedcqrs/dispatch/cqrs"
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

// BenchmarkServeDurable measures handling one durable command, from a
// backlog, by one process: taking it, handling it (a no-op) and the
// confirmed acknowledgement.
func BenchmarkServeDurable(b *testing.B) {
	js := startJetStream(b)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{}
	for i := range b.N {
		if err := cqrsnats.Enqueue(ctx, js, Ship{Parcel: i}, cfg); err != nil {
			b.Fatal(err)
		}
	}
	done := make(chan struct{})
	var n int
	bus := cqrs.NewCommandBus()
	if err := cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(context.Context, Ship) (cqrs.NoResult, error) {
		if n++; n == b.N {
			close(done)
		}
		return cqrs.NoResult{}, nil
	})); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	srv, err := cqrsnats.ServeDurable(ctx, js, bus, cfg)
	if err != nil {
		b.Fatal(err)
	}
	<-done
	b.StopTimer()
	if err := srv.Stop(ctx); err != nil {
		b.Fatal(err)
	}
}
