package cqrstest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/cqrstest"
)

// The messages of an account whose state is built from its events.

type Withdraw struct {
	cqrs.Command[int] // the balance left
	Account, Amount   int
}

type NotifyLowBalance struct {
	cqrs.Command[cqrs.NoResult]
	Account int
}

type AccountOpened struct {
	cqrs.Event
	Account int
}

type Deposited struct {
	cqrs.Event
	Account, Amount int
}

type Withdrawn struct {
	cqrs.Event
	Account, Amount int
}

var errInsufficient = errors.New("insufficient funds")

// accounts handles Withdraw from the balances its projection of the
// events keeps, and its policy asks for a notice when a balance runs low.
type accounts struct {
	events   *cqrs.EventBus
	commands *cqrs.CommandBus
	mu       sync.Mutex
	balances map[int]int
}

func (a *accounts) Withdraw(ctx context.Context, c Withdraw) (int, error) {
	a.mu.Lock()
	balance, ok := a.balances[c.Account]
	a.mu.Unlock()
	if !ok || balance < c.Amount {
		return 0, fmt.Errorf("account %d: %w", c.Account, errInsufficient)
	}
	return balance - c.Amount, cqrs.Publish(ctx, a.events, Withdrawn{Account: c.Account, Amount: c.Amount})
}

func (a *accounts) apply(account, delta int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.balances[account] += delta
}

func (a *accounts) balance(account int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.balances[account]
}

// newAccounts wires the account service on h's buses.
func newAccounts(t testing.TB, h *cqrstest.Harness) *accounts {
	t.Helper()
	a := &accounts{events: h.Events, commands: h.Commands, balances: map[int]int{}}
	_, err1 := cqrs.Subscribe(h.Events, "balances", func(_ context.Context, e AccountOpened) error {
		a.apply(e.Account, 0)
		return nil
	})
	_, err2 := cqrs.Subscribe(h.Events, "balances", func(_ context.Context, e Deposited) error {
		a.apply(e.Account, e.Amount)
		return nil
	})
	_, err3 := cqrs.Subscribe(h.Events, "balances", func(_ context.Context, e Withdrawn) error {
		a.apply(e.Account, -e.Amount)
		return nil
	})
	_, err4 := cqrs.Subscribe(h.Events, "low-balance", func(ctx context.Context, e Withdrawn) error {
		a.mu.Lock()
		low := a.balances[e.Account] < 10
		a.mu.Unlock()
		if !low {
			return nil
		}
		_, err := cqrs.Send(ctx, a.commands, NotifyLowBalance{Account: e.Account})
		return err
	})
	require.NoError(t, errors.Join(err1, err2, err3, err4, cqrs.Handle(h.Commands, a.Withdraw)))
	cqrstest.Returns[NotifyLowBalance](t, h.Commands, cqrs.NoResult{})
	return a
}

// TestGivenWhenThen: the given events build the state, the command under
// test publishes its event and returns its result.
func TestGivenWhenThen(t *testing.T) {
	h := cqrstest.NewHarness(t)
	newAccounts(t, h)
	h.Given(AccountOpened{Account: 1}, Deposited{Account: 1, Amount: 100}).
		When(Withdraw{Account: 1, Amount: 30}).
		Then(Withdrawn{Account: 1, Amount: 30}).
		ThenReturns(70).
		ThenSent()

	h.When(Withdraw{Account: 2, Amount: 1}).ThenError(errInsufficient)
	h.Given(Deposited{Account: 1, Amount: 5}).
		When(Withdraw{Account: 1, Amount: 70}).
		Then(Withdrawn{Account: 1, Amount: 70}).
		ThenSent(NotifyLowBalance{Account: 1}).
		ThenError(nil)
}

// TestWhenEvent: an event under test is published, and what its
// subscribers send is its outcome; the event itself is not.
func TestWhenEvent(t *testing.T) {
	h := cqrstest.NewHarness(t)
	newAccounts(t, h)
	out := h.Given(AccountOpened{Account: 1}).When(Withdrawn{Account: 1, Amount: 0})
	out.ThenSent(NotifyLowBalance{Account: 1}).Then()
	assert.NoError(t, out.Err())
	assert.Nil(t, out.Result())
}

// TestThenOnlyItsConversation: what the given messages published, and
// what others publish meanwhile, is not the outcome of the message under
// test.
func TestThenOnlyItsConversation(t *testing.T) {
	h := cqrstest.NewHarness(t)
	newAccounts(t, h)
	_, err := cqrs.Subscribe(h.Events, "noise", func(context.Context, Withdrawn) error {
		// Published from a context of its own: another conversation.
		return cqrs.Publish(context.Background(), h.Events, Deposited{Account: 9, Amount: 1})
	})
	require.NoError(t, err)
	h.Given(AccountOpened{Account: 1}, Deposited{Account: 1, Amount: 100}, Withdraw{Account: 1, Amount: 1}).
		When(Withdraw{Account: 1, Amount: 30}).
		Then(Withdrawn{Account: 1, Amount: 30})
	assert.Len(t, cqrstest.Published[Deposited](h), 3, "one given, one published by the noise for each Withdrawn")
}

// TestThenAsync: with the asynchronous strategy, Then waits for the
// events, here held back five seconds in the bubble's time.
func TestThenAsync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()))
		a := newAccounts(t, h)
		cqrstest.On[Withdrawn](h.Faults).To("balances").Delay(5 * time.Second)
		start := time.Now()
		out := h.Given(AccountOpened{Account: 1}, Deposited{Account: 1, Amount: 100}).
			When(Withdraw{Account: 1, Amount: 95})
		assert.Equal(t, 100, a.balance(1), "not delivered yet: the bubble's clock has not moved")
		out.Then(Withdrawn{Account: 1, Amount: 95}).ThenReturns(5)
		assert.Equal(t, 5*time.Second, time.Since(start))
		assert.Equal(t, 5, a.balance(1), "delivered when Then returns")
		synctest.Wait()
		out.ThenSent(NotifyLowBalance{Account: 1})
	})
}

// TestScenarioFailures: each assertion says what it expected and what it
// got, with types, and a diff of the messages.
func TestScenarioFailures(t *testing.T) {
	check := func(want string, assertion func(given *cqrstest.Scenario)) {
		t.Helper()
		ft := newFakeT(t)
		h := cqrstest.NewHarness(ft)
		h.Recorder.SetTimeout(10 * time.Millisecond)
		newAccounts(t, h)
		assertion(h.Given(AccountOpened{Account: 1}, Deposited{Account: 1, Amount: 100}))
		assert.Equal(t, want, ft.failures())
	}
	check("cqrstest: When cqrstest_test.Withdraw{Command:{} Account:1 Amount:30}: the events published differ (-want +got):\n"+
		"- cqrstest_test.Withdrawn{Event:{} Account:1 Amount:3}\n"+
		"- cqrstest_test.Deposited{Event:{} Account:1 Amount:1}\n"+
		"+ cqrstest_test.Withdrawn{Event:{} Account:1 Amount:30}", func(given *cqrstest.Scenario) {
		given.When(Withdraw{Account: 1, Amount: 30}).Then(Withdrawn{Account: 1, Amount: 3}, Deposited{Account: 1, Amount: 1})
	})
	check("cqrstest: When cqrstest_test.Withdraw{Command:{} Account:1 Amount:30}: the result differs (-want +got):\n"+
		"- int64(40)\n"+
		"+ int(70)", func(given *cqrstest.Scenario) {
		given.When(Withdraw{Account: 1, Amount: 30}).ThenReturns(int64(40))
	})
	check("cqrstest: When cqrstest_test.Withdraw{Command:{} Account:1 Amount:300}: the events published differ (-want +got):\n"+
		"- cqrstest_test.Withdrawn{Event:{} Account:1 Amount:300}\n"+
		"note: it failed: account 1: insufficient funds", func(given *cqrstest.Scenario) {
		given.When(Withdraw{Account: 1, Amount: 300}).Then(Withdrawn{Account: 1, Amount: 300})
	})
	check("cqrstest: When cqrstest_test.Withdraw{Command:{} Account:1 Amount:300}: failed: account 1: insufficient funds; want the result int(1)", func(given *cqrstest.Scenario) {
		given.When(Withdraw{Account: 1, Amount: 300}).ThenReturns(1)
	})
	check(`cqrstest: When cqrstest_test.Withdraw{Command:{} Account:1 Amount:300}: failed with "account 1: insufficient funds" (*fmt.wrapError), which does not match "database down"`, func(given *cqrstest.Scenario) {
		given.When(Withdraw{Account: 1, Amount: 300}).ThenError(errDown)
	})
	check(`cqrstest: When cqrstest_test.Withdraw{Command:{} Account:1 Amount:30}: succeeded; want an error matching "insufficient funds"`, func(given *cqrstest.Scenario) {
		given.When(Withdraw{Account: 1, Amount: 30}).ThenError(errInsufficient)
	})
	check(`cqrstest: When cqrstest_test.Withdraw{Command:{} Account:1 Amount:300}: failed: account 1: insufficient funds; want success`, func(given *cqrstest.Scenario) {
		given.When(Withdraw{Account: 1, Amount: 300}).ThenError(nil)
	})
	check("cqrstest: When cqrstest_test.Withdraw{Command:{} Account:1 Amount:95}: the commands sent differ (-want +got):\n"+
		"+ cqrstest_test.NotifyLowBalance{Command:{} Account:1}", func(given *cqrstest.Scenario) {
		given.When(Withdraw{Account: 1, Amount: 95}).ThenSent()
	})
}

// TestThenShowsWhatPrintsAlike: two messages that differ but print alike
// are shown with %#v.
func TestThenShowsWhatPrintsAlike(t *testing.T) {
	ft := newFakeT(t)
	h := cqrstest.NewHarness(ft)
	cqrstest.Stub(t, h.Commands, func(ctx context.Context, c PlaceOrder) (OrderID, error) {
		return 1, cqrs.Publish(ctx, h.Events, OrderPlaced{Order: 1, Customer: c.Customer, Items: c.Items})
	})
	cqrstest.Sink[OrderPlaced](t, h.Events)
	h.When(PlaceOrder{Customer: "ada", Items: []string{}}).Then(OrderPlaced{Order: 1, Customer: "ada"})
	assert.Equal(t, `cqrstest: When cqrstest_test.PlaceOrder{Command:{} Customer:ada Items:[]}: the events published differ (-want +got):`+"\n"+
		`- cqrstest_test.OrderPlaced{Event:cqrs.Event{}, Order:1, Customer:"ada", Items:[]string(nil)}`+"\n"+
		`+ cqrstest_test.OrderPlaced{Event:cqrs.Event{}, Order:1, Customer:"ada", Items:[]string{}}`, ft.failures())
}

// TestThenNamesUnsubscribedEvents: an expected event that nothing
// subscribes to cannot be seen, and the failure says how to see it.
func TestThenNamesUnsubscribedEvents(t *testing.T) {
	ft := newFakeT(t)
	h := cqrstest.NewHarness(ft)
	h.Recorder.SetTimeout(10 * time.Millisecond)
	wire(t, h.Commands, h.Queries, h.Events)
	h.When(PlaceOrder{Customer: "ada", Items: []string{"tea"}}).Then(OrderPlaced{Order: 1, Customer: "ada", Items: []string{"tea"}})
	assert.Equal(t, "cqrstest: When cqrstest_test.PlaceOrder{Command:{} Customer:ada Items:[tea]}: the events published differ (-want +got):\n"+
		"- cqrstest_test.OrderPlaced{Event:{} Order:1 Customer:ada Items:[tea]}\n"+
		"note: cqrstest_test.OrderPlaced has no subscriber on the event bus, and an event is recorded as it is delivered: "+
		"subscribe one, such as cqrstest.Sink[cqrstest_test.OrderPlaced](t, h.Events)", ft.failures())
}

// TestScenarioMistakes: a message no bus takes, and a given message that
// fails, end the test.
func TestScenarioMistakes(t *testing.T) {
	ft := newFakeT(t)
	h := cqrstest.NewHarness(ft)
	newAccounts(t, h)
	assert.False(t, ft.run(func() { h.When(GetOrder{ID: 1}) }))
	assert.Equal(t, "cqrstest: When cqrstest_test.GetOrder{Query:{} ID:1}: cqrstest: no bus of the harness takes this message: "+
		"cqrstest_test.GetOrder has no handler on the command or query bus, and is not an event: register its handler first", ft.failures())

	ft.errs = nil
	assert.False(t, ft.run(func() {
		h.Given(AccountOpened{Account: 1}, Withdraw{Account: 1, Amount: 5}).When(Withdraw{Account: 1, Amount: 1})
	}))
	assert.Equal(t, "cqrstest: Given message 2, cqrstest_test.Withdraw{Command:{} Account:1 Amount:5}: account 1: insufficient funds", ft.failures())

	ft.errs = nil
	assert.False(t, ft.run(func() { h.When(nil) }))
	assert.Equal(t, "cqrstest: When <nil>: cqrstest: no bus of the harness takes this message: a nil message", ft.failures())
}

// TestThenDiff: the diff keeps what is in both lists in place, and shows
// pointers as such.
func TestThenDiff(t *testing.T) {
	ft := newFakeT(t)
	h := cqrstest.NewHarness(ft)
	cqrstest.Stub(t, h.Commands, func(ctx context.Context, c PlaceOrder) (OrderID, error) {
		for _, o := range []OrderID{1, 3, 4} {
			if err := cqrs.Publish(ctx, h.Events, OrderPlaced{Order: o}); err != nil {
				return 0, err
			}
		}
		return 4, nil
	})
	cqrstest.Sink[OrderPlaced](t, h.Events)
	h.When(PlaceOrder{}).
		Then(OrderPlaced{Order: 1}, OrderPlaced{Order: 2}, OrderPlaced{Order: 3}).
		ThenReturns(&Order{ID: 4})
	assert.Equal(t, "cqrstest: When cqrstest_test.PlaceOrder{Command:{} Customer: Items:[]}: the events published differ (-want +got):\n"+
		"  cqrstest_test.OrderPlaced{Event:{} Order:1 Customer: Items:[]}\n"+
		"- cqrstest_test.OrderPlaced{Event:{} Order:2 Customer: Items:[]}\n"+
		"  cqrstest_test.OrderPlaced{Event:{} Order:3 Customer: Items:[]}\n"+
		"+ cqrstest_test.OrderPlaced{Event:{} Order:4 Customer: Items:[]}\n"+
		"cqrstest: When cqrstest_test.PlaceOrder{Command:{} Customer: Items:[]}: the result differs (-want +got):\n"+
		"- &cqrstest_test.Order{ID:4 Customer: Items:[]}\n"+
		"+ cqrstest_test.OrderID(4)", ft.failures())
}

// TestResultWithError: a handler that returns a result and an error has
// both in the outcome, as cqrs.Send returns them.
func TestResultWithError(t *testing.T) {
	h := cqrstest.NewHarness(t)
	cqrstest.Stub(t, h.Commands, func(context.Context, PlaceOrder) (OrderID, error) { return 3, errDown })
	out := h.When(PlaceOrder{}).ThenError(errDown)
	assert.Equal(t, OrderID(3), out.Result())
	cqrstest.On[CancelOrder](h.Faults).Fail(errDown)
	cqrstest.Returns[CancelOrder](t, h.Commands, cqrs.NoResult{})
	assert.Equal(t, cqrs.NoResult{}, h.When(CancelOrder{}).ThenError(errDown).Result(), "refused before the handler: its zero result")
}
