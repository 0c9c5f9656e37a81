package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/typedcqrs/dispatch/cqrs"
)

func ExamplePanicError() {
	commands := cqrs.NewCommandBus()
	if err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](
		func(context.Context, PlaceOrder) (cqrs.NoResult, error) { panic("out of stock") })); err != nil {
		panic(err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, PlaceOrder{ID: "o-7"})
	var pe *cqrs.PanicError
	if errors.As(err, &pe) {
		fmt.Println(pe.Message, "panicked with", pe.Value, "; stack kept:", len(pe.Stack) > 0)
	}
	fmt.Println(errors.Is(err, cqrs.ErrHandlerPanic))
	// Output:
	// command cqrs_test.PlaceOrder panicked with out of stock ; stack kept: true
	// true
}

func Example_errors() {
	queries := cqrs.NewQueryBus()
	if err := cqrs.Register(queries, cqrs.HandlerFunc[*GetOrder, Order](
		func(_ context.Context, q *GetOrder) (Order, error) { return orders[q.ID], nil })); err != nil {
		panic(err)
	}
	ctx := context.Background()

	_, err := cqrs.Dispatch[Order](ctx, queries, GetOrder{ID: "o-1"}) // registered for *GetOrder only
	fmt.Println(errors.Is(err, cqrs.ErrHandlerNotFound), err)

	_, err = cqrs.Dispatch[Order](ctx, queries, (*GetOrder)(nil))
	fmt.Println(errors.Is(err, cqrs.ErrNilMessage), err)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = cqrs.Dispatch[Order](cancelled, queries, &GetOrder{ID: "o-1"})
	fmt.Println(errors.Is(err, context.Canceled))
	// Output:
	// true cqrs: handler not found for cqrs_test.GetOrder on the query bus; its handler takes *cqrs_test.GetOrder: send a pointer, not the value
	// true cqrs: nil message: query *cqrs_test.GetOrder
	// true
}

func ExampleWithLogger() {
	// The bus logs the panics it recovers; this logger drops the time and
	// the stack to keep the output short.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "stack" {
				return slog.Attr{}
			}
			return a
		},
	}))
	commands := cqrs.NewCommandBus(cqrs.WithLogger(logger))
	if err := cqrs.Register(commands, cqrs.HandlerFunc[PlaceOrder, cqrs.NoResult](
		func(context.Context, PlaceOrder) (cqrs.NoResult, error) { panic("boom") })); err != nil {
		panic(err)
	}
	_, _ = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, PlaceOrder{})
	// Output:
	// level=ERROR msg="cqrs: handler panicked" kind=command message=cqrs_test.PlaceOrder panic.message="command cqrs_test.PlaceOrder" panic.value=boom
}

func ExampleErrorCode() {
	err := fmt.Errorf("charging card: %w", cqrs.ErrCircuitOpen)
	code := cqrs.ErrorCode(err)
	fmt.Println(code, cqrs.ErrorOfCode(code) == cqrs.ErrCircuitOpen)
	fmt.Printf("%q %v\n", cqrs.ErrorCode(errors.New("disk full")), cqrs.ErrorOfCode("no such code"))
	// Output:
	// circuit_open true
	// "" <nil>
}
