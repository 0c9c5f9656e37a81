package middleware_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// findProduct is a declared query: its marker must be invisible to the
// validator and usable as (part of) a cache key.
type findProduct struct {
	cqrs.Query[product]
	SKU string `validate:"required"`
}

type product struct {
	SKU   string
	Price int
}

func TestDeclaredQueryThroughValidationAndCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cache, err := middleware.NewCache[findProduct, product](middleware.CacheConfig{TTL: time.Minute})
	require.NoError(t, err)
	t.Cleanup(cache.Close)

	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{})))
	var calls atomic.Int64
	require.NoError(t, cqrs.Handle(queries, func(_ context.Context, q findProduct) (product, error) {
		calls.Add(1)
		return product{SKU: q.SKU, Price: 42}, nil
	}, cache.Middleware()))

	for range 3 {
		p, err := cqrs.Ask(ctx, queries, findProduct{SKU: "tea"})
		require.NoError(t, err)
		assert.Equal(t, product{SKU: "tea", Price: 42}, p)
	}
	assert.Equal(t, int64(1), calls.Load(), "the second and third asks are cache hits")

	// The validator sees the message's own fields, not the marker.
	_, err = cqrs.Ask(ctx, queries, findProduct{})
	require.ErrorIs(t, err, cqrs.ErrValidation)
	var verr *cqrs.ValidationError
	require.ErrorAs(t, err, &verr)
	require.Len(t, verr.Fields, 1)
	assert.Equal(t, "findProduct.SKU", verr.Fields[0].Field)
	assert.Equal(t, int64(1), calls.Load())
}
