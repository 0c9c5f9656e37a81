package cqrs_test

import (
	"context"
	"fmt"

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
