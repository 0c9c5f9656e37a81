package otel_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
)

// CancelOrder is the command whose handler panics.
type CancelOrder struct{ ID string }

// TestSpanOfAPanic: a panicking handler ends its dispatch span like any
// failure, with error.type "panic", because the bus recovers the panic
// where it calls the handler, inside the interceptor.
func TestSpanOfAPanic(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	ic, err := cqrsotel.New(cqrsotel.WithTracerProvider(tp))
	require.NoError(t, err)
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(ic))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CancelOrder, cqrs.NoResult](func(context.Context, CancelOrder) (cqrs.NoResult, error) {
		panic("cancel exploded")
	})))

	_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, CancelOrder{ID: "o-1"})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "cancel exploded", pe.Value)

	ended := spans.Ended()
	require.Len(t, ended, 1, "one span, ended")
	span := ended[0]
	assert.Equal(t, "command otel_test.CancelOrder", span.Name())
	var errorType string
	for _, kv := range span.Attributes() {
		if kv.Key == "error.type" {
			errorType = kv.Value.AsString()
		}
	}
	assert.Equal(t, "panic", errorType)
	assert.Equal(t, codes.Error, span.Status().Code)
}
