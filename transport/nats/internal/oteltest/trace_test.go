package oteltest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// PlaceOrder is the command sent across NATS; Order is its result.
type PlaceOrder struct {
	ID   int    `json:"id"`
	Item string `json:"item"`
}

type Order struct {
	ID int
}

// TestTraceWithTheOpenTelemetryModule puts the OpenTelemetry interceptor
// on both sides: the serving process's dispatch span is the child of the
// calling process's, across NATS.
func TestTraceWithTheOpenTelemetryModule(t *testing.T) {
	ns := startServer(t)
	w3c := cqrsnats.WithPropagator(propagation.TraceContext{})
	tracing := func(t *testing.T) (*tracetest.SpanRecorder, cqrs.Interceptor) {
		spans := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
		t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
		ic, err := cqrsotel.New(cqrsotel.WithTracerProvider(tp))
		require.NoError(t, err)
		return spans, ic
	}

	// The serving process.
	serverSpans, serverIC := tracing(t)
	served := cqrs.NewCommandBus(cqrs.WithInterceptors(serverIC))
	require.NoError(t, cqrs.Register(served, cqrs.HandlerFunc[PlaceOrder, Order](func(_ context.Context, c PlaceOrder) (Order, error) {
		return Order{ID: c.ID}, nil
	})))
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), served, w3c)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()

	// The calling process.
	clientSpans, clientIC := tracing(t)
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(clientIC))
	require.NoError(t, cqrsnats.Forward[PlaceOrder, Order](commands, cqrsnats.NewClient(connect(t, ns.ClientURL()), w3c)))

	_, err = cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 1, Item: "x"})
	require.NoError(t, err)

	require.Len(t, clientSpans.Ended(), 1)
	require.Len(t, serverSpans.Ended(), 1)
	caller, handler := clientSpans.Ended()[0], serverSpans.Ended()[0]
	assert.Equal(t, "command oteltest_test.PlaceOrder", caller.Name())
	assert.Equal(t, "command oteltest_test.PlaceOrder", handler.Name())
	assert.Equal(t, caller.SpanContext().TraceID(), handler.SpanContext().TraceID(), "one trace across the processes")
	assert.Equal(t, caller.SpanContext().SpanID(), handler.Parent().SpanID(), "the serving span is the calling span's child")
	assert.True(t, handler.Parent().IsRemote())
}
