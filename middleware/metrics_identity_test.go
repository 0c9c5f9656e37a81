package middleware_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Two command types that share a name, as two orders.Place types from
// different packages would.
type (
	placeV1 struct{}
	placeV2 struct{}
)

func (placeV1) CommandName() string { return "orders.Place" }
func (placeV2) CommandName() string { return "orders.Place" }

func noop[C any](context.Context, C) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil }

// TestMetricsKeyedByType checks that one Metrics serving two buses keeps
// apart two types that share a name: state is keyed by identity, names
// are for people.
func TestMetricsKeyedByType(t *testing.T) {
	t.Parallel()
	m := middleware.NewMetrics()
	one := cqrs.NewCommandBus(cqrs.WithInterceptors(m))
	two := cqrs.NewCommandBus(cqrs.WithInterceptors(m))
	require.NoError(t, cqrs.Register(one, cqrs.HandlerFunc[placeV1, cqrs.NoResult](noop[placeV1])))
	require.NoError(t, cqrs.Register(two, cqrs.HandlerFunc[placeV2, cqrs.NoResult](noop[placeV2])))
	ctx := context.Background()
	for range 2 {
		_, err := cqrs.Dispatch[cqrs.NoResult](ctx, one, placeV1{})
		require.NoError(t, err)
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](ctx, two, placeV2{})
	require.NoError(t, err)

	snap := m.Snapshot()
	require.Len(t, snap, 2, "one entry per type, not per name")
	calls := map[string]uint64{}
	for _, mm := range snap {
		calls[mm.Name] = mm.Calls
	}
	// The type set up second prints with its import path.
	assert.Equal(t, map[string]uint64{
		"orders.Place": 2,
		"github.com/typedcqrs/dispatch/middleware_test.placeV2": 1,
	}, calls)
}
