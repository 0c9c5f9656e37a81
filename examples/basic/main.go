// Basic shows commands and queries with typed handlers, and every error the
// bus returns, each matched with errors.Is or errors.As.
//
//	go run ./examples/basic
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/typedcqrs/dispatch/cqrs"
)

// OpenAccount is a command; it returns the new account's number.
type OpenAccount struct{ Owner string }

// Deposit is a command with no result.
type Deposit struct {
	Account int
	Amount  int
}

// GetBalance is a query.
type GetBalance struct{ Account int }

// Bank keeps accounts in memory; its methods are the handlers.
type Bank struct{ balances []int }

// Open handles OpenAccount.
func (b *Bank) Open(_ context.Context, c OpenAccount) (int, error) {
	b.balances = append(b.balances, 0)
	return len(b.balances), nil
}

// Deposit handles Deposit.
func (b *Bank) Deposit(_ context.Context, c Deposit) (cqrs.NoResult, error) {
	if c.Account < 1 || c.Account > len(b.balances) {
		return cqrs.NoResult{}, fmt.Errorf("account %d: %w", c.Account, ErrNoAccount)
	}
	if c.Amount == 13 {
		panic("unlucky amount") // the bus recovers this
	}
	b.balances[c.Account-1] += c.Amount
	return cqrs.NoResult{}, nil
}

// Balance handles GetBalance.
func (b *Bank) Balance(_ context.Context, q GetBalance) (int, error) {
	if q.Account < 1 || q.Account > len(b.balances) {
		return 0, fmt.Errorf("account %d: %w", q.Account, ErrNoAccount)
	}
	return b.balances[q.Account-1], nil
}

// ErrNoAccount is the handlers' own error: it reaches callers unchanged.
var ErrNoAccount = errors.New("no such account")

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(w io.Writer) error {
	ctx := context.Background()
	bank := &Bank{}
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	for _, err := range []error{
		cqrs.Register(commands, cqrs.HandlerFunc[OpenAccount, int](bank.Open)),
		cqrs.Register(commands, cqrs.HandlerFunc[Deposit, cqrs.NoResult](bank.Deposit)),
		cqrs.Register(queries, cqrs.HandlerFunc[GetBalance, int](bank.Balance)),
		// At start-up: one error would name every message without a handler.
		cqrs.Require(commands, OpenAccount{}, Deposit{}),
		cqrs.Require(queries, GetBalance{}),
	} {
		if err != nil {
			return err
		}
	}

	// The happy path: typed in, typed out.
	account, err := cqrs.Dispatch[int](ctx, commands, OpenAccount{Owner: "Ada"})
	if err != nil {
		return err
	}
	if _, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, Deposit{Account: account, Amount: 100}); err != nil {
		return err
	}
	balance, err := cqrs.Dispatch[int](ctx, queries, GetBalance{Account: account})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "account %d holds %d\n", account, balance)

	// Every error, and how to tell it.
	check := func(what string, err, target error) {
		fmt.Fprintf(w, "%-22s errors.Is(err, %v) = %t\n", what+":", target, errors.Is(err, target))
	}
	_, err = cqrs.Dispatch[int](ctx, queries, GetBalance{Account: 99})
	check("handler's own error", err, ErrNoAccount)

	_, err = cqrs.Dispatch[int](ctx, queries, OpenAccount{}) // a command sent as a query
	check("no handler", err, cqrs.ErrHandlerNotFound)

	err = cqrs.Register(commands, cqrs.HandlerFunc[OpenAccount, int](bank.Open))
	check("registered twice", err, cqrs.ErrHandlerExists)

	_, err = cqrs.Dispatch[string](ctx, queries, GetBalance{Account: account})
	check("wrong result type", err, cqrs.ErrResultType)

	_, err = cqrs.ExecuteTyped[int](ctx, queries, (*GetBalance)(nil))
	check("nil message", err, cqrs.ErrNilMessage)

	_, err = cqrs.Dispatch[cqrs.NoResult](ctx, commands, Deposit{Account: account, Amount: 13})
	check("handler panicked", err, cqrs.ErrHandlerPanic)
	var pe *cqrs.PanicError
	if errors.As(err, &pe) {
		fmt.Fprintf(w, "%-22s value %q, stack of %t\n", "", pe.Value, len(pe.Stack) > 0)
	}

	err = cqrs.Register[Deposit, cqrs.NoResult](commands, nil)
	check("nil handler", err, cqrs.ErrNilHandler)

	err = cqrs.Register(commands, cqrs.HandlerFunc[fmt.Stringer, int](func(context.Context, fmt.Stringer) (int, error) { return 0, nil }))
	check("interface message", err, cqrs.ErrInvalidMessageType)

	var noBus *cqrs.QueryBus
	_, err = cqrs.Dispatch[int](ctx, noBus, GetBalance{})
	check("nil bus", err, cqrs.ErrNilBus)

	//lint:ignore SA1012 a nil context is what is shown
	_, err = cqrs.Dispatch[int](nil, queries, GetBalance{Account: account})
	check("nil context", err, cqrs.ErrNilContext)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = cqrs.Dispatch[int](cancelled, queries, GetBalance{Account: account})
	check("cancelled context", err, context.Canceled)
	return nil
}
