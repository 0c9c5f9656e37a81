package otel_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
)

// passThrough is an interceptor that does nothing: the chain's own cost.
var passThrough = cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker { return next })

// BenchmarkOverhead compares a dispatch through the OpenTelemetry
// interceptor, with no-op and with recording providers, to one through a
// pass-through interceptor: the difference is the decorator's cost. The
// rows named ...Identity dispatch from a context with an identity
// (cqrs.ContextWithIdentity), so that the bus gives each message a new ID
// and the recording span gets its attributes.
func BenchmarkOverhead(b *testing.B) {
	noop, err := cqrsotel.New(cqrsotel.WithTracerProvider(tracenoop.NewTracerProvider()), cqrsotel.WithMeterProvider(metricnoop.NewMeterProvider()))
	require.NoError(b, err)
	tp := sdktrace.NewTracerProvider() // records spans, exports none
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer func() {
		require.NoError(b, tp.Shutdown(context.Background()))
		require.NoError(b, mp.Shutdown(context.Background()))
	}()
	sdk, err := cqrsotel.New(cqrsotel.WithTracerProvider(tp), cqrsotel.WithMeterProvider(mp))
	require.NoError(b, err)

	benches := []struct {
		name string
		ic   cqrs.Interceptor
	}{{"PassThrough", passThrough}, {"NoopProviders", noop}, {"SDK", sdk}}
	buses := make([]*cqrs.QueryBus, len(benches))
	for i, bench := range benches {
		buses[i] = cqrs.NewQueryBus(cqrs.WithInterceptors(bench.ic))
		require.NoError(b, cqrs.Register(buses[i], cqrs.HandlerFunc[GetOrder, string](func(_ context.Context, q GetOrder) (string, error) {
			return q.ID, nil
		})))
	}
	// The rows with an identity come last: once a process has made one,
	// the bus looks for one in every later dispatch.
	for _, identity := range []bool{false, true} {
		ctx, suffix := context.Background(), ""
		if identity {
			ctx, suffix = cqrs.ContextWithIdentity(ctx, cqrs.Identity{CorrelationID: "request-42"}), "Identity"
		}
		for i, bench := range benches {
			b.Run(bench.name+suffix, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := cqrs.Dispatch[string](ctx, buses[i], GetOrder{ID: "o-1"}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
