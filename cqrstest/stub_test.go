package cqrstest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/cqrstest"
)

// TestStub: a stub's function answers, typed, and the stub keeps what it
// received, in order.
func TestStub(t *testing.T) {
	commands := cqrs.NewCommandBus()
	place := cqrstest.Stub(t, commands, func(_ context.Context, c PlaceOrder) (OrderID, error) {
		return OrderID(len(c.Items)), nil
	})
	ctx := context.Background()
	id, err := cqrs.Send(ctx, commands, PlaceOrder{Items: []string{"tea", "cup"}})
	require.NoError(t, err)
	assert.Equal(t, OrderID(2), id)
	_, err = cqrs.Send(ctx, commands, PlaceOrder{Customer: "bob"})
	require.NoError(t, err)
	assert.Equal(t, []PlaceOrder{{Items: []string{"tea", "cup"}}, {Customer: "bob"}}, place.Received())

	got := place.Received()
	got[0].Customer = "changed"
	assert.Empty(t, place.Received()[0].Customer, "Received returns a copy")
}

// TestReturnsAndFails: Returns answers with its result, Fails with its
// error, each for the message type written.
func TestReturnsAndFails(t *testing.T) {
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	place := cqrstest.Returns[PlaceOrder](t, commands, OrderID(7))
	get := cqrstest.Fails[GetOrder](t, queries, errNotFound)
	cancel := cqrstest.Returns[CancelOrder](t, commands, cqrs.NoResult{})

	ctx := context.Background()
	id, err := cqrs.Send(ctx, commands, PlaceOrder{Customer: "ada"})
	require.NoError(t, err)
	assert.Equal(t, OrderID(7), id)
	order, err := cqrs.Ask(ctx, queries, GetOrder{ID: 7})
	assert.ErrorIs(t, err, errNotFound)
	assert.Zero(t, order)
	_, err = cqrs.Send(ctx, commands, CancelOrder{Order: 7})
	require.NoError(t, err)

	assert.Equal(t, []PlaceOrder{{Customer: "ada"}}, place.Received())
	assert.Equal(t, []GetOrder{{ID: 7}}, get.Received())
	assert.Equal(t, []CancelOrder{{Order: 7}}, cancel.Received())
}

// TestStubMistakes: a second handler of one type, a nil function and a
// nil error end the test with a message that says what is wrong.
func TestStubMistakes(t *testing.T) {
	commands := cqrs.NewCommandBus()
	cqrstest.Returns[PlaceOrder](t, commands, OrderID(1))
	for name, tc := range map[string]struct {
		stub func(t testing.TB)
		want string
	}{
		"twice": {
			stub: func(t testing.TB) { cqrstest.Returns[PlaceOrder](t, commands, OrderID(2)) },
			want: "cqrstest: stubbing cqrstest_test.PlaceOrder: cqrs: handler already registered",
		},
		"nil function": {
			stub: func(t testing.TB) { cqrstest.Stub[GetOrder](t, cqrs.NewQueryBus(), nil) },
			want: "cqrstest: stubbing cqrstest_test.GetOrder: the function is nil",
		},
		"nil error": {
			stub: func(t testing.TB) { cqrstest.Fails[GetOrder](t, cqrs.NewQueryBus(), nil) },
			want: "cqrstest: Fails[cqrstest_test.GetOrder]: the error is nil; use Returns for a handler that succeeds",
		},
		"sink twice": {
			stub: func(t testing.TB) {
				events := cqrs.NewEventBus()
				cqrstest.Sink[OrderPlaced](t, events)
				cqrstest.Sink[OrderPlaced](t, events)
			},
			want: "cqrstest: Sink[cqrstest_test.OrderPlaced]: cqrs: handler already registered",
		},
	} {
		t.Run(name, func(t *testing.T) {
			ft := newFakeT(t)
			assert.False(t, ft.run(func() { tc.stub(ft) }), "the test ends")
			// The rest is cqrs's own error.
			assert.True(t, strings.HasPrefix(ft.failures(), tc.want), ft.failures())
		})
	}
}

// TestSink: a sink receives every event of its type, and is cancelled
// when its test ends.
func TestSink(t *testing.T) {
	events := cqrs.NewEventBus()
	t.Run("sub", func(t *testing.T) {
		placed := cqrstest.Sink[OrderPlaced](t, events)
		require.NoError(t, cqrs.Publish(context.Background(), events, OrderPlaced{Order: 1}))
		require.NoError(t, cqrs.Publish(context.Background(), events, OrderPlaced{Order: 2}))
		assert.Equal(t, []OrderPlaced{{Order: 1}, {Order: 2}}, placed.Received())
		assert.Len(t, events.Specs(), 1)
	})
	assert.Empty(t, events.Specs(), "cancelled when the test ended")
}
