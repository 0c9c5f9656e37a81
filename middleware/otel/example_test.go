package otel_test

import (
	"context"
	"fmt"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
)

func ExampleNew() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	ic, err := cqrsotel.New(cqrsotel.WithTracerProvider(tp))
	if err != nil {
		panic(err)
	}
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(ic))
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, string](func(_ context.Context, q GetOrder) (string, error) {
		return "order " + q.ID, nil
	})); err != nil {
		panic(err)
	}
	_, _ = cqrs.Dispatch[string](context.Background(), queries, GetOrder{ID: "o-1"})

	for _, s := range spans.Ended() {
		fmt.Println(s.Name(), s.SpanKind())
		for _, kv := range s.Attributes() {
			fmt.Printf("  %s=%s\n", kv.Key, kv.Value.String())
		}
	}
	// Output:
	// query otel_test.GetOrder internal
	//   cqrs.kind=query
	//   cqrs.message.type=otel_test.GetOrder
}

// A message with an identity puts it on its span, by the names of the
// OpenTelemetry messaging semantic conventions.
func ExampleNew_identity() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	ic, err := cqrsotel.New(cqrsotel.WithTracerProvider(tp))
	if err != nil {
		panic(err)
	}
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(ic))
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, string](func(_ context.Context, q GetOrder) (string, error) {
		return "order " + q.ID, nil
	})); err != nil {
		panic(err)
	}
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-1", CorrelationID: "request-42"})
	_, _ = cqrs.Dispatch[string](ctx, queries, GetOrder{ID: "o-1"})

	for _, kv := range spans.Ended()[0].Attributes() {
		fmt.Printf("%s=%s\n", kv.Key, kv.Value.String())
	}
	// Output:
	// cqrs.kind=query
	// cqrs.message.type=otel_test.GetOrder
	// messaging.message.id=m-1
	// messaging.message.conversation_id=request-42
}

func ExampleObserveBreaker() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	breaker := middleware.CircuitBreaker(middleware.BreakerConfig{})
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(breaker))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](func(context.Context, PlaceOrder) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, nil
	})); err != nil {
		panic(err)
	}
	reg, err := cqrsotel.ObserveBreaker(breaker, cqrsotel.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	defer func() { _ = reg.Unregister() }()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		panic(err)
	}
	gauge := rm.ScopeMetrics[0].Metrics[0]
	fmt.Println(gauge.Name, gauge.Data.(metricdata.Gauge[int64]).DataPoints[0].Value)
	// Output:
	// cqrs.breaker.state 0
}

func ExampleObserveCache() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	cache, err := middleware.NewCache[GetOrder, string](middleware.CacheConfig{TTL: time.Minute, CountHits: true})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	queries := cqrs.NewQueryBus()
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, string](func(_ context.Context, q GetOrder) (string, error) {
		return q.ID, nil
	}), cache.Middleware()); err != nil {
		panic(err)
	}
	reg, err := cqrsotel.ObserveCache(queries, cache, cqrsotel.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	defer func() { _ = reg.Unregister() }()
	for range 3 {
		_, _ = cqrs.Dispatch[string](context.Background(), queries, GetOrder{ID: "o-1"})
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		panic(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		fmt.Println(m.Name, m.Data.(metricdata.Sum[int64]).DataPoints[0].Value)
	}
	// Output:
	// cqrs.cache.hits 2
	// cqrs.cache.misses 1
}

func ExampleBreakerStateValue() {
	for _, s := range []middleware.BreakerState{middleware.BreakerClosed, middleware.BreakerHalfOpen, middleware.BreakerOpen} {
		fmt.Println(s, cqrsotel.BreakerStateValue(s))
	}
	// Output:
	// closed 0
	// half-open 1
	// open 2
}
