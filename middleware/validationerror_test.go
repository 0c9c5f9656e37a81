package middleware_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Lookup is a query that validates itself.
type Lookup struct {
	Email string `validate:"required,email"`
}

// TestValidationErrorIsTheCoreType: the validation middleware's error is a
// *cqrs.ValidationError, next to its sentinel, and the middleware's old
// name for the type is an alias of it, so errors.As finds it by either.
func TestValidationErrorIsTheCoreType(t *testing.T) {
	t.Parallel()
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{})))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Lookup, string](func(_ context.Context, q Lookup) (string, error) {
		return q.Email, nil
	})))
	_, err := cqrs.Dispatch[string](context.Background(), queries, Lookup{Email: "nope"})
	require.ErrorIs(t, err, cqrs.ErrValidation)

	var ve *cqrs.ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "query middleware_test.Lookup", ve.Message)
	require.Len(t, ve.Fields, 1)
	assert.Equal(t, cqrs.FieldError{Field: "Lookup.Email", Tag: "email", Value: "nope"}, ve.Fields[0])

	var old *middleware.ValidationError
	require.ErrorAs(t, err, &old)
	assert.Same(t, ve, old)
}
