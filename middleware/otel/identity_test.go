package otel_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
)

// TestSpanIdentity: a dispatch with an identity puts it on its span, by
// the semantic conventions' names; one with none adds nothing.
func TestSpanIdentity(t *testing.T) {
	h := newHarness(t)
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-1", CorrelationID: "c-1"})
	_, err := cqrs.Dispatch[cqrs.NoResult](ctx, h.commands, PlaceOrder{ID: "o-1"})
	require.NoError(t, err)
	caused := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-2", CorrelationID: "c-1", CausationID: "m-1"})
	_, err = cqrs.Dispatch[string](caused, h.queries, GetOrder{ID: "o-1"})
	require.NoError(t, err)
	_, err = cqrs.Dispatch[string](context.Background(), h.queries, GetOrder{ID: "o-1"})
	require.NoError(t, err)

	ended := h.spans.Ended()
	require.Len(t, ended, 4) // the handler's child, and three dispatches
	assert.Equal(t, map[string]string{
		"cqrs.kind": "command", "cqrs.message.type": "otel_test.PlaceOrder",
		"messaging.message.id": "m-1", "messaging.message.conversation_id": "c-1",
	}, attrs(ended[1].Attributes()))
	assert.Equal(t, map[string]string{
		"cqrs.kind": "query", "cqrs.message.type": "otel_test.GetOrder",
		"messaging.message.id": "m-2", "messaging.message.conversation_id": "c-1", "cqrs.message.causation_id": "m-1",
	}, attrs(ended[2].Attributes()))
	assert.Equal(t, map[string]string{"cqrs.kind": "query", "cqrs.message.type": "otel_test.GetOrder"}, attrs(ended[3].Attributes()),
		"no identity, no attribute")
	assert.Equal(t, attribute.Key("messaging.message.id"), cqrsotel.KeyMessageID)
	assert.Equal(t, attribute.Key("messaging.message.conversation_id"), cqrsotel.KeyConversationID)
}

// TestSpanIdentityOfASentMessage: a message a handler sends gets a span
// of its own with its own ID, the conversation of the message handled,
// and that message's ID as its cause.
func TestSpanIdentityOfASentMessage(t *testing.T) {
	h := newHarness(t)
	var parent cqrs.Identity
	outer := cqrs.NewCommandBus(cqrs.WithIdentity(), cqrs.WithInterceptors(h.ic))
	require.NoError(t, cqrs.Register(outer, cqrs.HandlerFunc[GetOrder, cqrs.NoResult](func(ctx context.Context, q GetOrder) (cqrs.NoResult, error) {
		parent, _ = cqrs.IdentityOf(ctx)
		_, err := cqrs.Dispatch[cqrs.NoResult](ctx, h.commands, PlaceOrder(q))
		return cqrs.NoResult{}, err
	})))
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), outer, GetOrder{ID: "o-2"})
	require.NoError(t, err)

	ended := h.spans.Ended()
	require.Len(t, ended, 3) // store.save, the sent command, the outer dispatch
	sent, first := attrs(ended[1].Attributes()), attrs(ended[2].Attributes())
	assert.Equal(t, parent.ID, first["messaging.message.id"])
	assert.Equal(t, parent.ID, first["messaging.message.conversation_id"], "a new conversation")
	assert.NotContains(t, first, "cqrs.message.causation_id")
	assert.Len(t, sent["messaging.message.id"], 36)
	assert.NotEqual(t, parent.ID, sent["messaging.message.id"])
	assert.Equal(t, parent.CorrelationID, sent["messaging.message.conversation_id"])
	assert.Equal(t, parent.ID, sent["cqrs.message.causation_id"])
	assert.Equal(t, ended[2].SpanContext().SpanID(), ended[1].Parent().SpanID())
}

// TestIdentityIsAnExemplarNotAMetricAttribute: the measurements of a
// dispatch with an identity carry no ID as an attribute, so their series
// stay one per type and outcome, while their exemplars point at the
// dispatch's span, which has the ID.
func TestIdentityIsAnExemplarNotAMetricAttribute(t *testing.T) {
	h := newHarness(t)
	for i, id := range []string{"m-1", "m-2", "m-3"} {
		ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: id, CorrelationID: "c-1"})
		order := PlaceOrder{ID: "o"}
		if i == 2 {
			order.ID = "" // fails: the failures counter records it too
		}
		_, _ = cqrs.Dispatch[cqrs.NoResult](ctx, h.commands, order)
	}
	spanOf := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range h.spans.Ended() {
		spanOf[s.SpanContext().SpanID().String()] = s
	}

	var rm metricdata.ResourceMetrics
	require.NoError(t, h.reader.Collect(context.Background(), &rm))
	require.Len(t, rm.ScopeMetrics, 1)
	// messageIDs returns the IDs of the messages whose spans the exemplars
	// of a series lead to, and checks that the series has no ID.
	messageIDs := func(name string, set attribute.Set, spanIDs [][]byte) []string {
		for _, kv := range set.ToSlice() {
			assert.NotContains(t, []attribute.Key{cqrsotel.KeyMessageID, cqrsotel.KeyConversationID, cqrsotel.KeyCausationID}, kv.Key,
				"%s: an ID is no metric attribute", name)
		}
		var ids []string
		for _, id := range spanIDs {
			span, ok := spanOf[hex.EncodeToString(id)]
			require.True(t, ok, "%s: an exemplar of a dispatch span", name)
			ids = append(ids, attrs(span.Attributes())["messaging.message.id"])
		}
		return ids
	}
	outcome := func(set attribute.Set) string {
		v, _ := set.Value(cqrsotel.KeyOutcome)
		return v.AsString()
	}
	got := map[string][]string{} // instrument and outcome: message IDs
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch data := m.Data.(type) {
		case metricdata.Histogram[float64]:
			for _, dp := range data.DataPoints {
				var spanIDs [][]byte
				for _, e := range dp.Exemplars {
					spanIDs = append(spanIDs, e.SpanID)
					assert.Empty(t, e.FilteredAttributes)
				}
				got[m.Name+" "+outcome(dp.Attributes)] = messageIDs(m.Name, dp.Attributes, spanIDs)
			}
		case metricdata.Sum[int64]:
			for _, dp := range data.DataPoints {
				var spanIDs [][]byte
				for _, e := range dp.Exemplars {
					spanIDs = append(spanIDs, e.SpanID)
				}
				got[m.Name+" "+outcome(dp.Attributes)] = messageIDs(m.Name, dp.Attributes, spanIDs)
			}
		default:
			t.Fatalf("%s: %T", m.Name, m.Data)
		}
	}
	require.Len(t, got, 3, "one series per instrument and outcome, whatever the IDs: %v", got)
	require.NotEmpty(t, got["cqrs.dispatch.duration ok"])
	assert.Subset(t, []string{"m-1", "m-2"}, got["cqrs.dispatch.duration ok"])
	assert.Equal(t, []string{"m-3"}, got["cqrs.dispatch.duration error"])
	assert.Equal(t, []string{"m-3"}, got["cqrs.dispatch.failures error"])
}

// TestPrometheusExemplars: scraped as OpenMetrics, the duration histogram
// carries an exemplar with the trace and span ID of the dispatch span,
// which holds the message's ID; its series carry no ID.
func TestPrometheusExemplars(t *testing.T) {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	require.NoError(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() {
		require.NoError(t, mp.Shutdown(context.Background()))
		require.NoError(t, tp.Shutdown(context.Background()))
	}()
	ic, err := cqrsotel.New(cqrsotel.WithMeterProvider(mp), cqrsotel.WithTracerProvider(tp))
	require.NoError(t, err)
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(ic))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, string](func(_ context.Context, q GetOrder) (string, error) {
		return q.ID, nil
	})))
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-7", CorrelationID: "c-7"})
	_, err = cqrs.Dispatch[string](ctx, queries, GetOrder{ID: "o"})
	require.NoError(t, err)
	require.Len(t, spans.Ended(), 1)
	span := spans.Ended()[0]
	require.Equal(t, "m-7", attrs(span.Attributes())["messaging.message.id"])

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	page := string(body)

	traceID := fmt.Sprintf(`trace_id="%s"`, span.SpanContext().TraceID())
	spanID := fmt.Sprintf(`span_id="%s"`, span.SpanContext().SpanID())
	var found bool
	for line := range strings.Lines(page) {
		_, exemplar, ok := strings.Cut(line, " # {")
		if ok && strings.HasPrefix(line, "cqrs_dispatch_duration_seconds_bucket{") &&
			strings.Contains(exemplar, traceID) && strings.Contains(exemplar, spanID) {
			found = true
		}
	}
	assert.True(t, found, "an exemplar of the dispatch span, %s %s:\n%s", traceID, spanID, page)
	assert.NotContains(t, page, "m-7", "no series has the message's ID")
	assert.NotContains(t, page, "messaging_message")
}
