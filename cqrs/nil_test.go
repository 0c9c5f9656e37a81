package cqrs_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// nilCheck registers a counting handler for M on a fresh bus and returns a
// function that dispatches m and reports whether the bus refused it as
// nil, and whether the handler ran.
func nilCheck[M any](t *testing.T) func(m M) (refused, ran bool) {
	t.Helper()
	commands := cqrs.NewCommandBus(cqrs.WithMetrics())
	ran := 0
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[M, cqrs.NoResult](func(context.Context, M) (cqrs.NoResult, error) {
		ran++
		return cqrs.NoResult{}, nil
	})))
	return func(m M) (bool, bool) {
		before := ran
		_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, m)
		if err != nil {
			require.ErrorIs(t, err, cqrs.ErrNilMessage)
		}
		return err != nil, ran > before
	}
}

// TestNilMessageOfEveryKind checks, for every kind of message that can be
// nil, that a nil one is refused and never reaches the handler, and that
// an empty but non-nil one is dispatched.
func TestNilMessageOfEveryKind(t *testing.T) {
	t.Parallel()
	type tc struct {
		name       string
		dispatch   func() (refused, ran bool)
		wantRefuse bool
	}
	slices, maps, chans, funcs, ptrs := nilCheck[[]int](t), nilCheck[map[int]int](t), nilCheck[chan int](t), nilCheck[func()](t), nilCheck[*int](t)
	nonNil := make([]int, 3)
	cases := []tc{
		{"nil slice", func() (bool, bool) { return slices(nil) }, true},
		{"empty slice", func() (bool, bool) { return slices([]int{}) }, false},
		{"made slice of length 0", func() (bool, bool) { return slices(make([]int, 0)) }, false},
		{"non-nil slice cut to length 0", func() (bool, bool) { return slices(nonNil[:0]) }, false},
		{"nil slice cut to length 0", func() (bool, bool) { var s []int; return slices(s[:0]) }, true},
		{"nil map", func() (bool, bool) { return maps(nil) }, true},
		{"empty map", func() (bool, bool) { return maps(map[int]int{}) }, false},
		{"nil chan", func() (bool, bool) { return chans(nil) }, true},
		{"chan", func() (bool, bool) { return chans(make(chan int)) }, false},
		{"nil func", func() (bool, bool) { return funcs(nil) }, true},
		{"func", func() (bool, bool) { return funcs(func() {}) }, false},
		{"nil pointer", func() (bool, bool) { return ptrs(nil) }, true},
		{"pointer", func() (bool, bool) { return ptrs(new(int)) }, false},
	}
	for _, c := range cases {
		refused, ran := c.dispatch()
		assert.Equal(t, c.wantRefuse, refused, "%s: refused", c.name)
		assert.Equal(t, !c.wantRefuse, ran, "%s: the handler ran", c.name)
	}
}

// TestRefusalsAreCounted checks that a dispatch refused before its handler
// runs (a nil message, a context already done) is counted as a failed call
// by the bus's metrics.
func TestRefusalsAreCounted(t *testing.T) {
	t.Parallel()
	commands := cqrs.NewCommandBus(cqrs.WithMetrics())
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[*CreateUser, cqrs.NoResult](func(context.Context, *CreateUser) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, nil
	})))
	done, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, (*CreateUser)(nil))
	require.ErrorIs(t, err, cqrs.ErrNilMessage)
	_, err = cqrs.Dispatch[cqrs.NoResult](done, commands, &CreateUser{Name: "x"})
	require.ErrorIs(t, err, context.Canceled)
	_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, &CreateUser{Name: "x"})
	require.NoError(t, err)

	m := commands.Metrics()
	require.Len(t, m, 1)
	assert.Equal(t, uint64(3), m[0].Calls)
	assert.Equal(t, uint64(2), m[0].Errors)
}
