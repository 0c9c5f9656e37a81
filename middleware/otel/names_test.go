package otel_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
)

// Two types that print alike, as orders.Place from two packages would.
type (
	placeA struct{}
	placeB struct{}
)

func (placeA) CommandName() string { return "orders.Place" }
func (placeB) CommandName() string { return "orders.Place" }

// TestTypesThatPrintAlikeKeepTheirSeries: one interceptor on two buses
// whose types print alike gives the second its full import path, so that
// their spans and series never merge.
func TestTypesThatPrintAlikeKeepTheirSeries(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	ic, err := cqrsotel.New(cqrsotel.WithTracerProvider(tp))
	require.NoError(t, err)
	one := cqrs.NewCommandBus(cqrs.WithInterceptors(ic))
	two := cqrs.NewCommandBus(cqrs.WithInterceptors(ic))
	require.NoError(t, cqrs.Register(one, cqrs.HandlerFunc[placeA, cqrs.NoResult](func(context.Context, placeA) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil })))
	require.NoError(t, cqrs.Register(two, cqrs.HandlerFunc[placeB, cqrs.NoResult](func(context.Context, placeB) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil })))

	ctx := context.Background()
	_, err = cqrs.Dispatch[cqrs.NoResult](ctx, one, placeA{})
	require.NoError(t, err)
	_, err = cqrs.Dispatch[cqrs.NoResult](ctx, two, placeB{})
	require.NoError(t, err)

	var types []string
	for _, span := range spans.Ended() {
		for _, kv := range span.Attributes() {
			if kv.Key == cqrsotel.KeyMessageType {
				types = append(types, kv.Value.AsString())
			}
		}
	}
	assert.Equal(t, []string{"orders.Place", "github.com/typedcqrs/dispatch/middleware/otel_test.placeB"}, types)
}
