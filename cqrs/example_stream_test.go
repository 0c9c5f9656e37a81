package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// ListCarts is a streaming query: its handler yields Carts one at a time.
type ListCarts struct {
	cqrs.StreamQuery[Cart]
	Customer string
}

func ExampleHandleStream() {
	queries := cqrs.NewQueryBus()
	carts := []Cart{{ID: 1, Customer: "c-1"}, {ID: 2, Customer: "c-2"}, {ID: 3, Customer: "c-1"}}
	// The handler's types are inferred: a ListCarts in, Carts out.
	err := cqrs.HandleStream(queries, func(ctx context.Context, q ListCarts, yield func(Cart) bool) error {
		for _, c := range carts {
			if c.Customer == q.Customer && !yield(c) {
				return nil // the reader stopped
			}
		}
		return nil
	})
	fmt.Println(err)
	for cart, err := range cqrs.Stream(context.Background(), queries, ListCarts{Customer: "c-1"}) {
		fmt.Println(cart.ID, err)
	}
	// Output:
	// <nil>
	// 1 <nil>
	// 3 <nil>
}

// Tail is a streaming query that declares nothing: a type of another
// package, say.
type Tail struct{ Text string }

func ExampleRegisterStream() {
	queries := cqrs.NewQueryBus()
	lines := cqrs.StreamFunc[Tail, string](func(_ context.Context, q Tail, yield func(string) bool) error {
		for line := range strings.Lines(q.Text) {
			if !yield(strings.TrimSpace(line)) {
				return nil
			}
		}
		return nil
	})
	if err := cqrs.RegisterStream(queries, lines); err != nil {
		panic(err)
	}
	// StreamOf takes the item type written out.
	for line, err := range cqrs.StreamOf[string](context.Background(), queries, Tail{Text: "one\ntwo\nthree\n"}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		if line == "three" {
			break
		}
		fmt.Println(line)
	}
	// Output:
	// one
	// two
}

func ExampleStreamOf() {
	queries := cqrs.NewQueryBus()
	// Tail declares no items, so its handler is registered with
	// RegisterStream, and its stream read with StreamOf.
	err := cqrs.RegisterStream(queries, cqrs.StreamFunc[Tail, string](func(_ context.Context, q Tail, yield func(string) bool) error {
		for _, word := range strings.Fields(q.Text) {
			if !yield(word) {
				return nil
			}
		}
		return nil
	}))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for word, err := range cqrs.StreamOf[string](ctx, queries, Tail{Text: "to be read"}) {
		fmt.Println(word, err)
	}
	// Items of another type than the handler's: one error, and no item.
	for n, err := range cqrs.StreamOf[int](ctx, queries, Tail{Text: "1 2"}) {
		fmt.Println(n, errors.Is(err, cqrs.ErrResultType))
	}
	// Output:
	// to <nil>
	// be <nil>
	// read <nil>
	// 0 true
}

func ExampleWithFirstItemTimeout() {
	queries := cqrs.NewQueryBus()
	// This search yields nothing until its context ends.
	stuck := func(ctx context.Context, _ ListCarts, _ func(Cart) bool) error {
		<-ctx.Done()
		return ctx.Err()
	}
	if err := cqrs.HandleStream(queries, stuck, cqrs.WithFirstItemTimeout(10*time.Millisecond)); err != nil {
		panic(err)
	}
	for _, err := range cqrs.Stream(context.Background(), queries, ListCarts{Customer: "c-1"}) {
		fmt.Println(errors.Is(err, cqrs.ErrExecutionTimeout), errors.Is(err, context.DeadlineExceeded))
	}
	// Output:
	// true true
}

// ExecuteStream serves a router or a transport that holds the query in an
// interface: the items come boxed.
func ExampleQueryBus_ExecuteStream() {
	queries := cqrs.NewQueryBus()
	_ = cqrs.HandleStream(queries, func(ctx context.Context, q ListCarts, yield func(Cart) bool) error {
		yield(Cart{ID: 1, Customer: q.Customer})
		yield(Cart{ID: 2, Customer: q.Customer})
		return nil
	})
	var q any = ListCarts{Customer: "c-9"} // as a router decoded it
	for item, err := range queries.ExecuteStream(context.Background(), q) {
		fmt.Printf("%T %+v %v\n", item, item, err)
	}
	// Output:
	// cqrs_test.Cart {ID:1 Customer:c-9 Items:[]} <nil>
	// cqrs_test.Cart {ID:2 Customer:c-9 Items:[]} <nil>
}
