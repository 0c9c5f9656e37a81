package cqrs_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/typedcqrs/dispatch/cqrs"
)

// PlaceOrder is a command; Order and GetOrder a result and a query.
type (
	PlaceOrder struct {
		ID    string
		Items int
	}
	GetOrder struct{ ID string }
	Order    struct {
		ID    string
		Items int
	}
)

// orders is the store the example handlers share.
var orders = map[string]Order{}

func placeOrder(_ context.Context, c PlaceOrder) (cqrs.NoResult, error) {
	if c.Items <= 0 {
		return cqrs.NoResult{}, errors.New("an order needs items")
	}
	orders[c.ID] = Order(c)
	return cqrs.NoResult{}, nil
}

func getOrder(_ context.Context, q GetOrder) (Order, error) {
	return orders[q.ID], nil
}

func ExampleRegister() {
	commands := cqrs.NewCommandBus()
	err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](placeOrder))
	fmt.Println("first:", err)

	// A type has one handler per bus.
	err = cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](placeOrder))
	fmt.Println("second:", errors.Is(err, cqrs.ErrHandlerExists))
	fmt.Println(commands.Registered())
	// Output:
	// first: <nil>
	// second: true
	// [cqrs_test.PlaceOrder]
}

func ExampleDispatch() {
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	if err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](placeOrder)); err != nil {
		panic(err)
	}
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](getOrder)); err != nil {
		panic(err)
	}
	ctx := context.Background()

	// The result type is written; the message type is inferred.
	_, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, PlaceOrder{ID: "o-1", Items: 3})
	fmt.Println("placed:", err)
	order, err := cqrs.Dispatch[Order](ctx, queries, GetOrder{ID: "o-1"})
	fmt.Println(order.Items, err)

	_, err = cqrs.Dispatch[cqrs.NoResult](ctx, commands, PlaceOrder{ID: "o-2"})
	fmt.Println("empty:", err)
	// Output:
	// placed: <nil>
	// 3 <nil>
	// empty: an order needs items
}

func ExampleExecuteTyped() {
	queries := cqrs.NewQueryBus()
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](getOrder)); err != nil {
		panic(err)
	}
	orders["o-9"] = Order{ID: "o-9", Items: 9}
	ctx := context.Background()

	// The message arrives as an interface, say from a router; the result
	// is still typed.
	var msg any = GetOrder{ID: "o-9"}
	order, err := cqrs.ExecuteTyped[Order](ctx, queries, msg)
	fmt.Println(order.Items, err)

	// Asking for the wrong result type is an error; the handler does not run.
	_, err = cqrs.ExecuteTyped[string](ctx, queries, msg)
	fmt.Println(err)
	// Output:
	// 9 <nil>
	// cqrs: wrong result type: query cqrs_test.GetOrder returns cqrs_test.Order, not string
}

func ExampleCommandBus_Execute() {
	commands := cqrs.NewCommandBus()
	if err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](placeOrder)); err != nil {
		panic(err)
	}
	res, err := commands.Execute(context.Background(), PlaceOrder{ID: "o-3", Items: 1})
	fmt.Printf("%T %v\n", res, err)

	_, err = commands.Execute(context.Background(), "not a command")
	fmt.Println(err)
	// Output:
	// cqrs.NoResult <nil>
	// cqrs: handler not found for string on the command bus
}

func ExampleQueryBus_Execute() {
	queries := cqrs.NewQueryBus()
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](getOrder)); err != nil {
		panic(err)
	}
	orders["o-4"] = Order{ID: "o-4", Items: 4}
	res, err := queries.Execute(context.Background(), GetOrder{ID: "o-4"})
	fmt.Printf("%+v %v\n", res, err)
	// Output:
	// {ID:o-4 Items:4} <nil>
}

func ExampleNewCommandBus() {
	// With no options the bus has no interceptors, no metrics and a
	// logger that discards.
	commands := cqrs.NewCommandBus()
	fmt.Println(commands.Kind(), len(commands.Registered()))
	// Output:
	// command 0
}

func ExampleNewQueryBus() {
	// Options set bus-wide behaviour; here, metrics for every query type.
	queries := cqrs.NewQueryBus(cqrs.WithMetrics())
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](getOrder)); err != nil {
		panic(err)
	}
	fmt.Println(queries.Kind(), queries.Registered(), len(queries.Metrics()))
	// Output:
	// query [cqrs_test.GetOrder] 1
}

// RenameUser declares its own name, used in errors, logs and metrics.
type RenameUser struct{ ID, Name string }

func (RenameUser) CommandName() string { return "users.rename" }

func ExampleRegister_messageName() {
	commands := cqrs.NewCommandBus()
	err := cqrs.Register(commands, cqrs.HandlerFunc[RenameUser, cqrs.NoResult](
		func(context.Context, RenameUser) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil }))
	fmt.Println(err, commands.Registered())
	// Output:
	// <nil> [users.rename]
}

func ExampleHandlerFunc() {
	double := cqrs.HandlerFunc[int, int](func(_ context.Context, n int) (int, error) { return 2 * n, nil })
	queries := cqrs.NewQueryBus()
	if err := cqrs.Register(queries, double); err != nil {
		panic(err)
	}
	n, err := cqrs.Dispatch[int](context.Background(), queries, 21)
	fmt.Println(n, err)
	// Output:
	// 42 <nil>
}

func ExampleKind_String() {
	fmt.Println(cqrs.KindCommand, cqrs.KindQuery)
	// Output:
	// command query
}
