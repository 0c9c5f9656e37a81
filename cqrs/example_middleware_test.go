package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/typedcqrs/dispatch/cqrs"
)

func ExampleMiddleware() {
	// A typed middleware sees the message as it is: here it upper-cases
	// an order's ID before the handler stores it.
	normalise := func(next cqrs.Handler[PlaceOrder, cqrs.NoResult]) cqrs.Handler[PlaceOrder, cqrs.NoResult] {
		return cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](func(ctx context.Context, c PlaceOrder) (cqrs.NoResult, error) {
			c.ID = strings.ToUpper(c.ID)
			return next.Handle(ctx, c)
		})
	}
	commands := cqrs.NewCommandBus()
	if err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](placeOrder), normalise); err != nil {
		panic(err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, PlaceOrder{ID: "o-lower", Items: 1})
	fmt.Println(err, orders["O-LOWER"].Items)
	// Output:
	// <nil> 1
}

func ExampleWithInterceptors() {
	// An interceptor sees every dispatch on the bus, whatever its types.
	audit := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			err := next(ctx, c)
			fmt.Printf("%s %s -> %v, %v\n", c.Spec().Kind, c.Spec().Name, c.Result(), err)
			return err
		}
	})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(audit))
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetOrder, Order](getOrder)); err != nil {
		panic(err)
	}
	orders["o-5"] = Order{ID: "o-5", Items: 5}
	_, _ = cqrs.Dispatch[Order](context.Background(), queries, GetOrder{ID: "o-5"})
	// Output:
	// query cqrs_test.GetOrder -> {o-5 5}, <nil>
}

func ExampleInterceptor_authorization() {
	// Interceptors can refuse a dispatch before it reaches the handler.
	errForbidden := errors.New("forbidden")
	type role struct{}
	authorize := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			if c.Spec().Kind == cqrs.KindCommand && ctx.Value(role{}) != "admin" {
				return fmt.Errorf("%s: %w", c.Spec().Name, errForbidden)
			}
			return next(ctx, c)
		}
	})
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(authorize))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](placeOrder)); err != nil {
		panic(err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, PlaceOrder{ID: "o-6", Items: 1})
	fmt.Println(err)
	admin := context.WithValue(context.Background(), role{}, "admin")
	_, err = cqrs.Dispatch[cqrs.NoResult](admin, commands, PlaceOrder{ID: "o-6", Items: 1})
	fmt.Println(err)
	// Output:
	// cqrs_test.PlaceOrder: forbidden
	// <nil>
}

func ExampleIntercept() {
	// An interceptor for one handler only: it is set up once, with the
	// message type's Spec, when the handler is registered.
	count := cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		fmt.Println("set up for", spec)
		calls := 0
		return func(ctx context.Context, c cqrs.Call) error {
			calls++
			fmt.Println(spec.Name, "call", calls)
			return next(ctx, c)
		}
	})
	commands := cqrs.NewCommandBus()
	if err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](placeOrder),
		cqrs.Intercept[PlaceOrder, cqrs.NoResult](commands, count)); err != nil {
		panic(err)
	}
	for range 2 {
		_, _ = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, PlaceOrder{ID: "o-8", Items: 1})
	}
	// Output:
	// set up for command cqrs_test.PlaceOrder
	// cqrs_test.PlaceOrder call 1
	// cqrs_test.PlaceOrder call 2
}

func ExampleSpecFor() {
	// The Spec that Register gives a type: what typed middleware needs to
	// name what it decorates.
	commands := cqrs.NewCommandBus()
	spec := cqrs.SpecFor[PlaceOrder, cqrs.NoResult](commands)
	fmt.Println(spec, spec.MessageType, spec.ResultType)
	// Output:
	// command cqrs_test.PlaceOrder cqrs_test.PlaceOrder cqrs.NoResult
}

func ExampleCommandBus_Specs() {
	commands := cqrs.NewCommandBus()
	_ = cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](placeOrder))
	_ = cqrs.Register(commands, cqrs.HandlerFunc[RenameUser, cqrs.NoResult](
		func(context.Context, RenameUser) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil }))
	// What a transport needs to receive each registered type.
	for _, spec := range commands.Specs() {
		fmt.Println(spec.Name, spec.MessageType)
	}
	// Output:
	// cqrs_test.PlaceOrder cqrs_test.PlaceOrder
	// users.rename cqrs_test.RenameUser
}
