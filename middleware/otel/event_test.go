package otel_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
)

// ParcelShipped is the event whose subscribers are traced.
type ParcelShipped struct {
	cqrs.Event
	ID string
}

// TestSpanPerSubscriber: each subscriber of an event has a span of its
// own, named after it and carrying cqrs.subscriber, and a failure is the
// failing subscriber's alone.
func TestSpanPerSubscriber(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	ic, err := cqrsotel.New(cqrsotel.WithTracerProvider(tp))
	require.NoError(t, err)
	events := cqrs.NewEventBus(cqrs.WithInterceptors(ic))
	_, err = cqrs.Subscribe(events, "notify", func(context.Context, ParcelShipped) error { return nil })
	require.NoError(t, err)
	_, err = cqrs.Subscribe(events, "invoice", func(context.Context, ParcelShipped) error { return errors.New("ledger locked") })
	require.NoError(t, err)

	require.Error(t, cqrs.Publish(context.Background(), events, ParcelShipped{ID: "p-1"}))

	ended := spans.Ended()
	require.Len(t, ended, 2)
	got := map[string]map[string]string{}
	for _, span := range ended {
		attrs := map[string]string{}
		for _, kv := range span.Attributes() {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		got[span.Name()] = attrs
	}
	notify := got["event otel_test.ParcelShipped to notify"]
	invoice := got["event otel_test.ParcelShipped to invoice"]
	require.NotNil(t, notify, "spans: %v", got)
	require.NotNil(t, invoice, "spans: %v", got)
	assert.Equal(t, "notify", notify["cqrs.subscriber"])
	assert.Equal(t, "event", notify["cqrs.kind"])
	assert.Empty(t, notify["error.type"])
	assert.Equal(t, "invoice", invoice["cqrs.subscriber"])
	assert.NotEmpty(t, invoice["error.type"])
}
