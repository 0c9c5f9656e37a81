package otel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type PlaceOrder struct{ ID string }

type GetOrder struct{ ID string }

var errOutOfStock = errors.New("out of stock")

// harness is a bus instrumented with an in-memory span recorder and a
// manual metric reader.
type harness struct {
	spans    *tracetest.SpanRecorder
	reader   *sdkmetric.ManualReader
	ic       cqrs.Interceptor
	commands *cqrs.CommandBus
	queries  *cqrs.QueryBus
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	t.Cleanup(func() {
		require.NoError(t, tp.Shutdown(context.Background()))
		require.NoError(t, mp.Shutdown(context.Background()))
	})
	ic, err := cqrsotel.New(cqrsotel.WithTracerProvider(tp), cqrsotel.WithMeterProvider(mp))
	require.NoError(t, err)
	h.ic = ic
	h.commands = cqrs.NewCommandBus(cqrs.WithInterceptors(ic))
	h.queries = cqrs.NewQueryBus(cqrs.WithInterceptors(ic))
	require.NoError(t, cqrs.Register(h.commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](func(ctx context.Context, c PlaceOrder) (cqrs.NoResult, error) {
		// The handler's own span is a child of the dispatch span.
		_, child := trace.SpanFromContext(ctx).TracerProvider().Tracer("store").Start(ctx, "store.save")
		defer child.End()
		if c.ID == "" {
			return cqrs.NoResult{}, errOutOfStock
		}
		return cqrs.NoResult{}, nil
	})))
	require.NoError(t, cqrs.Register(h.queries, cqrs.HandlerFunc[GetOrder, string](func(_ context.Context, q GetOrder) (string, error) {
		return "order " + q.ID, nil
	})))
	return h
}

func attrs(kvs []attribute.KeyValue) map[string]string {
	out := map[string]string{}
	for _, kv := range kvs {
		out[string(kv.Key)] = kv.Value.String()
	}
	return out
}

func TestSpans(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	_, err := cqrs.Dispatch[cqrs.NoResult](ctx, h.commands, PlaceOrder{ID: "o-1"})
	require.NoError(t, err)
	_, err = cqrs.Dispatch[string](ctx, h.queries, GetOrder{ID: "o-1"})
	require.NoError(t, err)

	ended := h.spans.Ended()
	require.Len(t, ended, 3)
	child, place, get := ended[0], ended[1], ended[2]

	assert.Equal(t, "command otel_test.PlaceOrder", place.Name())
	assert.Equal(t, trace.SpanKindInternal, place.SpanKind())
	assert.Equal(t, map[string]string{"cqrs.kind": "command", "cqrs.message.type": "otel_test.PlaceOrder"}, attrs(place.Attributes()))
	assert.Equal(t, codes.Unset, place.Status().Code)

	assert.Equal(t, "store.save", child.Name())
	assert.Equal(t, place.SpanContext().SpanID(), child.Parent().SpanID(), "the handler's span is the dispatch span's child")
	assert.Equal(t, place.SpanContext().TraceID(), child.SpanContext().TraceID())

	assert.Equal(t, "query otel_test.GetOrder", get.Name())
	assert.Equal(t, "query", attrs(get.Attributes())["cqrs.kind"])
}

func TestSpanOfAFailure(t *testing.T) {
	h := newHarness(t)
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), h.commands, PlaceOrder{})
	require.ErrorIs(t, err, errOutOfStock)

	ended := h.spans.Ended()
	require.Len(t, ended, 2)
	span := ended[1]
	assert.Equal(t, codes.Error, span.Status().Code)
	assert.Equal(t, "out of stock", span.Status().Description)
	assert.Equal(t, "_OTHER", attrs(span.Attributes())["error.type"])
	require.Len(t, span.Events(), 1)
	assert.Equal(t, "exception", span.Events()[0].Name)
}

func TestErrorTypes(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	_, err := cqrs.Dispatch[int](ctx, h.queries, GetOrder{}) // wrong result type: refused before the chain
	require.ErrorIs(t, err, cqrs.ErrResultType)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = cqrs.Dispatch[string](cancelled, h.queries, GetOrder{})
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, h.spans.Ended(), "a dispatch refused before the chain has no span")

	// Classes come from the sentinels an error wraps.
	for _, tc := range []struct {
		err  error
		want string
	}{
		{cqrs.ErrCircuitOpen, "circuit_open"},
		{cqrs.ErrRateLimited, "rate_limited"},
		{cqrs.ErrValidation, "validation"},
		{fmt.Errorf("store: %w", context.DeadlineExceeded), "deadline_exceeded"},
		{&cqrs.PanicError{Value: "boom"}, "panic"},
	} {
		spans := tracetest.NewSpanRecorder()
		ic, err := cqrsotel.New(cqrsotel.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))))
		require.NoError(t, err)
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(ic))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](func(context.Context, PlaceOrder) (cqrs.NoResult, error) {
			return cqrs.NoResult{}, tc.err
		})))
		_, _ = cqrs.Dispatch[cqrs.NoResult](ctx, bus, PlaceOrder{})
		require.Len(t, spans.Ended(), 1)
		assert.Equal(t, tc.want, attrs(spans.Ended()[0].Attributes())["error.type"], tc.err.Error())
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "", "c"} {
		_, _ = cqrs.Dispatch[cqrs.NoResult](ctx, h.commands, PlaceOrder{ID: id})
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, h.reader.Collect(ctx, &rm))
	require.Len(t, rm.ScopeMetrics, 1)
	assert.Equal(t, cqrsotel.ScopeName, rm.ScopeMetrics[0].Scope.Name)

	byName := map[string]metricdata.Metrics{}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		byName[m.Name] = m
	}
	duration := byName["cqrs.dispatch.duration"]
	assert.Equal(t, "s", duration.Unit)
	hist, ok := duration.Data.(metricdata.Histogram[float64])
	require.True(t, ok)
	counts := map[string]uint64{}
	for _, dp := range hist.DataPoints {
		outcome, _ := dp.Attributes.Value("cqrs.outcome")
		msgType, _ := dp.Attributes.Value("cqrs.message.type")
		assert.Equal(t, "otel_test.PlaceOrder", msgType.AsString())
		counts[outcome.AsString()] += dp.Count
		assert.Positive(t, dp.Sum)
	}
	assert.Equal(t, map[string]uint64{"ok": 3, "error": 1}, counts)

	failures, ok := byName["cqrs.dispatch.failures"].Data.(metricdata.Sum[int64])
	require.True(t, ok)
	require.Len(t, failures.DataPoints, 1)
	assert.Equal(t, int64(1), failures.DataPoints[0].Value)
	errType, _ := failures.DataPoints[0].Attributes.Value("error.type")
	assert.Equal(t, "_OTHER", errType.AsString())
}

// TestPrometheusScrape exposes everything through the OpenTelemetry
// Prometheus exporter and scrapes it over HTTP, as Prometheus would.
func TestPrometheusScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	require.NoError(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()

	ic, err := cqrsotel.New(cqrsotel.WithMeterProvider(mp))
	require.NoError(t, err)
	breaker := middleware.CircuitBreaker(middleware.BreakerConfig{ConsecutiveFailures: 1})
	cache, err := middleware.NewCache[GetOrder, string](middleware.CacheConfig{TTL: time.Minute, CountHits: true})
	require.NoError(t, err)
	defer cache.Close()

	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(ic, breaker))
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(ic))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](func(context.Context, PlaceOrder) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, errOutOfStock
	})))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, string](func(_ context.Context, q GetOrder) (string, error) {
		return q.ID, nil
	}), cache.Middleware()))
	breakerReg, err := cqrsotel.ObserveBreaker(breaker, cqrsotel.WithMeterProvider(mp))
	require.NoError(t, err)
	defer func() { require.NoError(t, breakerReg.Unregister()) }()
	cacheReg, err := cqrsotel.ObserveCache(queries, cache, cqrsotel.WithMeterProvider(mp))
	require.NoError(t, err)
	defer func() { require.NoError(t, cacheReg.Unregister()) }()

	ctx := context.Background()
	for range 2 {
		_, _ = cqrs.Dispatch[cqrs.NoResult](ctx, commands, PlaceOrder{ID: "o"}) // fails, then the breaker is open
	}
	for range 3 {
		_, err := cqrs.Dispatch[string](ctx, queries, GetOrder{ID: "o"})
		require.NoError(t, err)
	}

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	page := string(body)

	for _, want := range []string{
		"# TYPE cqrs_dispatch_duration_seconds histogram",
		`cqrs_dispatch_duration_seconds_count{cqrs_kind="query",cqrs_message_type="otel_test.GetOrder",cqrs_outcome="ok"} 3`,
		`cqrs_dispatch_duration_seconds_count{cqrs_kind="command",cqrs_message_type="otel_test.PlaceOrder",cqrs_outcome="error",error_type="_OTHER"} 1`,
		`cqrs_dispatch_failures_total{cqrs_kind="command",cqrs_message_type="otel_test.PlaceOrder",cqrs_outcome="error",error_type="circuit_open"} 1`,
		`cqrs_breaker_state{cqrs_kind="command",cqrs_message_type="otel_test.PlaceOrder"} 2`,
		`cqrs_cache_hits_total{cqrs_kind="query",cqrs_message_type="otel_test.GetOrder"} 2`,
		`cqrs_cache_misses_total{cqrs_kind="query",cqrs_message_type="otel_test.GetOrder"} 1`,
	} {
		assert.Contains(t, page, want)
	}
	if t.Failed() {
		t.Log(page)
	}
}

func TestBreakerStateValue(t *testing.T) {
	for state, want := range map[gobreaker.State]int64{
		gobreaker.StateClosed: 0, gobreaker.StateHalfOpen: 1, gobreaker.StateOpen: 2, gobreaker.State(9): -1,
	} {
		assert.Equal(t, want, cqrsotel.BreakerStateValue(state), state.String())
	}
}
