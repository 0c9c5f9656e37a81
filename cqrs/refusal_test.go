package cqrs_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

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
