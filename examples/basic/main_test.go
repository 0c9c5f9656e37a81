package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/cqrstest"
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

// newBank registers a bank's handlers on a test harness's buses.
func newBank(t *testing.T) *cqrstest.Harness {
	bank, h := &Bank{}, cqrstest.NewHarness(t)
	require.NoError(t, cqrs.Register(h.Commands, cqrs.HandlerFunc[OpenAccount, int](bank.Open)))
	require.NoError(t, cqrs.Register(h.Commands, cqrs.HandlerFunc[Deposit, cqrs.NoResult](bank.Deposit)))
	require.NoError(t, cqrs.Register(h.Queries, cqrs.HandlerFunc[GetBalance, int](bank.Balance)))
	return h
}

func TestDeposits(t *testing.T) {
	h := newBank(t)
	h.When(OpenAccount{Owner: "Ada"}).ThenReturns(1)
	h.When(OpenAccount{Owner: "Ada"}).ThenReturns(2)
	h.Given(Deposit{Account: 2, Amount: 100}, Deposit{Account: 2, Amount: 20}).When(GetBalance{Account: 2}).ThenReturns(120)
	h.When(GetBalance{Account: 1}).ThenReturns(0)
}

func TestNoAccount(t *testing.T) {
	h := newBank(t)
	h.When(Deposit{Account: 1, Amount: 100}).ThenError(ErrNoAccount)
	h.When(GetBalance{Account: 0}).ThenError(ErrNoAccount)
}

func TestUnluckyDeposit(t *testing.T) {
	h := newBank(t)
	h.Given(OpenAccount{Owner: "Ada"}).When(Deposit{Account: 1, Amount: 13}).ThenError(cqrs.ErrHandlerPanic)
	h.When(GetBalance{Account: 1}).ThenReturns(0) // the panicking deposit changed nothing
}
