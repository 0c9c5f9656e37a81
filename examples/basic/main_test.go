package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRun(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	assert.Equal(t, `account 1 holds 100
handler's own error:   errors.Is(err, no such account) = true
no handler:            errors.Is(err, cqrs: handler not found) = true
registered twice:      errors.Is(err, cqrs: handler already registered) = true
wrong result type:     errors.Is(err, cqrs: wrong result type) = true
nil message:           errors.Is(err, cqrs: nil message) = true
handler panicked:      errors.Is(err, cqrs: handler panicked) = true
                       value "unlucky amount", stack of true
nil handler:           errors.Is(err, cqrs: nil handler) = true
interface message:     errors.Is(err, cqrs: invalid message type) = true
nil bus:               errors.Is(err, cqrs: nil bus) = true
nil context:           errors.Is(err, cqrs: nil context) = true
cancelled context:     errors.Is(err, context canceled) = true
`, out.String())
}

// newBank registers a bank's handlers on buses of their own.
func newBank(t *testing.T) (*cqrs.CommandBus, *cqrs.QueryBus) {
	t.Helper()
	bank := &Bank{}
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[OpenAccount, int](bank.Open)))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[Deposit, cqrs.NoResult](bank.Deposit)))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetBalance, int](bank.Balance)))
	return commands, queries
}

func TestDeposits(t *testing.T) {
	commands, queries := newBank(t)
	ctx := context.Background()
	for want := 1; want <= 2; want++ {
		account, err := cqrs.Dispatch[int](ctx, commands, OpenAccount{Owner: "Ada"})
		require.NoError(t, err)
		assert.Equal(t, want, account)
	}
	for _, amount := range []int{100, 20} {
		_, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, Deposit{Account: 2, Amount: amount})
		require.NoError(t, err)
	}
	balance, err := cqrs.Dispatch[int](ctx, queries, GetBalance{Account: 2})
	require.NoError(t, err)
	assert.Equal(t, 120, balance)
	balance, err = cqrs.Dispatch[int](ctx, queries, GetBalance{Account: 1})
	require.NoError(t, err)
	assert.Zero(t, balance)
}

func TestNoAccount(t *testing.T) {
	commands, queries := newBank(t)
	ctx := context.Background()
	_, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, Deposit{Account: 1, Amount: 100})
	assert.ErrorIs(t, err, ErrNoAccount)
	_, err = cqrs.Dispatch[int](ctx, queries, GetBalance{Account: 0})
	assert.ErrorIs(t, err, ErrNoAccount)
}

func TestUnluckyDeposit(t *testing.T) {
	commands, queries := newBank(t)
	ctx := context.Background()
	_, err := cqrs.Dispatch[int](ctx, commands, OpenAccount{Owner: "Ada"})
	require.NoError(t, err)
	_, err = cqrs.Dispatch[cqrs.NoResult](ctx, commands, Deposit{Account: 1, Amount: 13})
	assert.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	balance, err := cqrs.Dispatch[int](ctx, queries, GetBalance{Account: 1})
	require.NoError(t, err)
	assert.Zero(t, balance, "the panicking deposit changed nothing")
}
