package cqrs_test

import (
	"context"
	"fmt"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

func ExampleWithMetrics() {
	queries := cqrs.NewQueryBus(cqrs.WithMetrics())
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](getOrder)); err != nil {
		panic(err)
	}
	for range 3 {
		_, _ = cqrs.Dispatch[Order](context.Background(), queries, GetOrder{ID: "o-1"})
	}
	_, _ = cqrs.Dispatch[string](context.Background(), queries, GetOrder{ID: "o-1"}) // wrong result type: not dispatched

	for _, m := range queries.Metrics() {
		fmt.Printf("%s %s: %d calls, %d errors, p99 ≥ p50: %t\n", m.Kind, m.Name, m.Calls, m.Errors, m.P99 >= m.P50)
	}
	// Output:
	// query cqrs_test.GetOrder: 3 calls, 0 errors, p99 ≥ p50: true
}

func ExampleQueryBus_Metrics() {
	// Without WithMetrics a bus keeps no metrics and Metrics returns nil.
	queries := cqrs.NewQueryBus()
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](getOrder)); err != nil {
		panic(err)
	}
	fmt.Println(queries.Metrics() == nil)
	// Output:
	// true
}

func ExampleRecorder() {
	// A transport or an interceptor that times dispatches itself keeps
	// its figures in a Recorder, and reports them as a bus does.
	spec := cqrs.SpecFor[GetOrder, Order](cqrs.NewQueryBus())
	r := cqrs.NewRecorder(spec)
	for _, ms := range []int{3, 4, 5, 40} {
		r.Record(time.Duration(ms)*time.Millisecond, ms > 10)
	}
	m := r.Metrics()
	fmt.Printf("%s %s: %d calls, %d errors, min %v, max %v, mean %v\n", m.Kind, m.Name, m.Calls, m.Errors, m.Min, m.Max, m.Mean)
	// Output:
	// query cqrs_test.GetOrder: 4 calls, 1 errors, min 3ms, max 40ms, mean 13ms
}
