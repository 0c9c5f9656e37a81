package cqrs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Messages that declare what they are and what they return, with the
// marker as their first field.
type (
	// OpenCart is a command that returns the new cart's ID.
	OpenCart struct {
		cqrs.Command[CartID]
		Customer string
	}
	// AddItem is a command that returns nothing but an error.
	AddItem struct {
		cqrs.Command[cqrs.NoResult]
		Cart CartID
		SKU  string
	}
	// GetCart is a query that returns a Cart.
	GetCart struct {
		cqrs.Query[Cart]
		ID CartID
	}

	CartID int
	Cart   struct {
		ID       CartID
		Customer string
		Items    []string
	}
)

// Carts keeps carts in memory; its methods are the handlers.
type Carts struct {
	mu    sync.Mutex
	carts []Cart
}

func (s *Carts) Open(_ context.Context, c OpenCart) (CartID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := CartID(len(s.carts) + 1)
	s.carts = append(s.carts, Cart{ID: id, Customer: c.Customer})
	return id, nil
}

func (s *Carts) Add(_ context.Context, c AddItem) (cqrs.NoResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Cart < 1 || int(c.Cart) > len(s.carts) {
		return cqrs.NoResult{}, fmt.Errorf("no cart %d", c.Cart)
	}
	s.carts[c.Cart-1].Items = append(s.carts[c.Cart-1].Items, c.SKU)
	return cqrs.NoResult{}, nil
}

func (s *Carts) Get(_ context.Context, q GetCart) (Cart, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q.ID < 1 || int(q.ID) > len(s.carts) {
		return Cart{}, fmt.Errorf("no cart %d", q.ID)
	}
	return s.carts[q.ID-1], nil
}

// cartBuses registers the Carts handlers, every type inferred.
func cartBuses() (*cqrs.CommandBus, *cqrs.QueryBus) {
	carts := &Carts{}
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	if err := errors.Join(
		cqrs.Handle(commands, carts.Open),
		cqrs.Handle(commands, carts.Add),
		cqrs.Handle(queries, carts.Get),
	); err != nil {
		panic(err)
	}
	return commands, queries
}

func ExampleSend() {
	ctx := context.Background()
	commands, _ := cartBuses()

	// No type arguments: the result's type is OpenCart's declared CartID.
	id, err := cqrs.Send(ctx, commands, OpenCart{Customer: "c-1"})
	fmt.Println(id, err)

	_, err = cqrs.Send(ctx, commands, AddItem{Cart: 9, SKU: "tea"})
	fmt.Println(err)
	// Output:
	// 1 <nil>
	// no cart 9
}

func ExampleAsk() {
	ctx := context.Background()
	commands, queries := cartBuses()
	id, _ := cqrs.Send(ctx, commands, OpenCart{Customer: "c-1"})
	_, _ = cqrs.Send(ctx, commands, AddItem{Cart: id, SKU: "tea"})

	// cart is a Cart: GetCart declares it.
	cart, err := cqrs.Ask(ctx, queries, GetCart{ID: id})
	fmt.Println(cart.Customer, cart.Items, err)
	// Output:
	// c-1 [tea] <nil>
}

func ExampleHandle() {
	queries := cqrs.NewQueryBus()

	// A plain function or a method value: C and R are inferred from it,
	// and a function whose result is not GetCart's Cart does not compile.
	err := cqrs.Handle(queries, func(_ context.Context, q GetCart) (Cart, error) {
		return Cart{ID: q.ID, Customer: "c-7"}, nil
	})
	fmt.Println(err)

	cart, err := cqrs.Ask(context.Background(), queries, GetCart{ID: 7})
	fmt.Println(cart.ID, cart.Customer, err)
	// Output:
	// <nil>
	// 7 c-7 <nil>
}

func ExampleRequire() {
	commands, queries := cartBuses()

	// At start-up, one error names every message with no handler.
	fmt.Println(cqrs.Require(queries, GetCart{}))
	err := cqrs.Require(commands, OpenCart{}, AddItem{}, PlaceOrder{})
	fmt.Println(errors.Is(err, cqrs.ErrHandlerNotFound))
	fmt.Println(err)
	// Output:
	// <nil>
	// true
	// cqrs: the command bus cannot dispatch 1 of 3 message types
	// 	cqrs_test.PlaceOrder: cqrs: handler not found
}

func ExampleCommand() {
	// A command declares its result by embedding Command[R]; one with no
	// result declares NoResult.
	type RenameCart struct {
		cqrs.Command[cqrs.NoResult]
		ID   CartID
		Name string
	}
	commands := cqrs.NewCommandBus()
	renamed := map[CartID]string{}
	_ = cqrs.Handle(commands, func(_ context.Context, c RenameCart) (cqrs.NoResult, error) {
		renamed[c.ID] = c.Name
		return cqrs.NoResult{}, nil
	})
	_, err := cqrs.Send(context.Background(), commands, RenameCart{ID: 3, Name: "weekly"})
	fmt.Println(renamed[3], err)

	// Register checks the declaration when it runs: here, the result.
	err = cqrs.Register(commands, cqrs.HandlerFunc[OpenCart, string](
		func(context.Context, OpenCart) (string, error) { return "", nil }))
	fmt.Println(errors.Is(err, cqrs.ErrResultType))
	// Output:
	// weekly <nil>
	// true
}

func ExampleQuery() {
	// A query declares its result by embedding Query[R] as its first
	// field. The marker has no fields: encodings do not see it.
	data, err := json.Marshal(GetCart{ID: 4})
	fmt.Println(string(data), err)

	// A query's handler cannot be registered on a command bus.
	err = cqrs.Register(cqrs.NewCommandBus(), cqrs.HandlerFunc[GetCart, Cart](
		func(context.Context, GetCart) (Cart, error) { return Cart{}, nil }))
	fmt.Println(errors.Is(err, cqrs.ErrInvalidMessageType))
	// Output:
	// {"ID":4} <nil>
	// true
}
