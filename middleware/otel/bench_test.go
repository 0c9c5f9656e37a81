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
// pass-through interceptor: the difference is the decorator's cost.
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

	for _, bench := range []struct {
		name string
		ic   cqrs.Interceptor
	}{{"PassThrough", passThrough}, {"NoopProviders", noop}, {"SDK", sdk}} {
		bus := cqrs.NewQueryBus(cqrs.WithInterceptors(bench.ic))
		require.NoError(b, cqrs.Register(bus, cqrs.HandlerFunc[GetOrder, string](func(_ context.Context, q GetOrder) (string, error) {
			return q.ID, nil
		})))
		b.Run(bench.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			for b.Loop() {
				if _, err := cqrs.Dispatch[string](ctx, bus, GetOrder{ID: "o-1"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
