package cqrs_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/typedcqrs/dispatch/cqrs"
)

// TestErrValidationNamesNoKind: validation fails for queries too, so its
// sentinel names no kind; the old name is the same error value, so
// errors.Is matches either way round.
func TestErrValidationNamesNoKind(t *testing.T) {
	t.Parallel()
	old := cqrs.ErrCommandValidation
	assert.ErrorIs(t, fmt.Errorf("wrapped: %w", cqrs.ErrValidation), old)
	assert.ErrorIs(t, fmt.Errorf("wrapped: %w", old), cqrs.ErrValidation)
	assert.Equal(t, "validation", cqrs.ErrorCode(cqrs.ErrValidation))
	assert.Equal(t, cqrs.ErrValidation, cqrs.ErrorOfCode("validation"))
}

func TestValidationError(t *testing.T) {
	t.Parallel()
	bad := errors.New("email is required")
	tests := []struct {
		name string
		err  *cqrs.ValidationError
		want string
	}{
		{"method", &cqrs.ValidationError{Message: "query users.Find", Err: bad},
			"cqrs: validation failed: query users.Find: email is required"},
		{"fields", &cqrs.ValidationError{Message: "command users.Create", Err: bad, Fields: []cqrs.FieldError{
			{Field: "Create.Email", Tag: "required"},
			{Field: "Create.Name", Tag: "min", Param: "3", Value: "ab"},
		}}, `cqrs: validation failed: command users.Create: Create.Email fails "required", Create.Name fails "min" (3)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := fmt.Errorf("outer: %w", tc.err)
			assert.EqualError(t, tc.err, tc.want)
			assert.ErrorIs(t, err, cqrs.ErrValidation)
			assert.ErrorIs(t, err, bad, "the validator's own error is wrapped too")
			var ve *cqrs.ValidationError
			if assert.ErrorAs(t, err, &ve) {
				assert.Same(t, tc.err, ve)
			}
		})
	}
}
