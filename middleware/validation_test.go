package middleware_test

import (
	"context"
	"errors"
	"testing"

	"github.com/go-playground/validator/v10"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

type Address struct {
	City string `validate:"required"`
}

type CreateUser struct {
	Name    string  `validate:"required,min=2"`
	Email   string  `validate:"required,email"`
	Age     int     `validate:"gte=0,lte=150"`
	Address Address // nested: its tags count
}

// Transfer checks itself, on the value.
type Transfer struct{ Amount int }

func (t Transfer) Validate() error {
	if t.Amount <= 0 {
		return errors.New("amount must be positive")
	}
	return nil
}

// Refund checks itself, on the pointer.
type Refund struct{ Amount int }

func (r *Refund) Validate() error {
	if r.Amount <= 0 {
		return errors.New("refund must be positive")
	}
	return nil
}

// Plain has nothing to check.
type Plain struct{ N int }

// counted registers a handler for C on bus that counts its calls.
func counted[C any](t *testing.T, bus cqrs.Bus) *int {
	t.Helper()
	calls := new(int)
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[C, cqrs.NoResult](func(context.Context, C) (cqrs.NoResult, error) {
		*calls++
		return cqrs.NoResult{}, nil
	})))
	return calls
}

func TestValidationTags(t *testing.T) {
	t.Parallel()
	bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{})))
	calls := counted[CreateUser](t, bus)
	ctx := context.Background()

	_, err := cqrs.Dispatch[cqrs.NoResult](ctx, bus, CreateUser{Name: "A", Email: "not-an-email", Age: 200})
	require.ErrorIs(t, err, cqrs.ErrValidation)
	var verr *cqrs.ValidationError
	require.ErrorAs(t, err, &verr)
	assert.Equal(t, "command middleware_test.CreateUser", verr.Message)
	assert.Equal(t, []cqrs.FieldError{
		{Field: "CreateUser.Name", Tag: "min", Param: "2", Value: "A"},
		{Field: "CreateUser.Email", Tag: "email", Value: "not-an-email"},
		{Field: "CreateUser.Age", Tag: "lte", Param: "150", Value: 200},
		{Field: "CreateUser.Address.City", Tag: "required", Value: ""},
	}, verr.Fields)
	var raw validator.ValidationErrors
	require.ErrorAs(t, err, &raw, "the validator's own error is wrapped too")
	assert.Len(t, raw, 4)
	assert.Contains(t, err.Error(), `CreateUser.Email fails "email"`)
	assert.Zero(t, *calls, "the handler does not run")

	_, err = cqrs.Dispatch[cqrs.NoResult](ctx, bus, CreateUser{Name: "Ada", Email: "ada@example.com", Age: 36, Address: Address{City: "London"}})
	require.NoError(t, err)
	assert.Equal(t, 1, *calls)
}

func TestValidationMethods(t *testing.T) {
	t.Parallel()
	bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{})))
	transfers := counted[Transfer](t, bus)
	refunds := counted[Refund](t, bus)
	refundPtrs := counted[*Refund](t, bus)
	ctx := context.Background()

	for _, msg := range []any{Transfer{}, Refund{}, &Refund{}} {
		_, err := cqrs.ExecuteTyped[cqrs.NoResult](ctx, bus, msg)
		require.ErrorIs(t, err, cqrs.ErrValidation, "%T", msg)
		var verr *cqrs.ValidationError
		require.ErrorAs(t, err, &verr)
		assert.Empty(t, verr.Fields)
	}
	assert.Zero(t, *transfers+*refunds+*refundPtrs)

	for _, msg := range []any{Transfer{Amount: 1}, Refund{Amount: 1}, &Refund{Amount: 1}} {
		_, err := cqrs.ExecuteTyped[cqrs.NoResult](ctx, bus, msg)
		require.NoError(t, err, "%T", msg)
	}
	assert.Equal(t, 3, *transfers+*refunds+*refundPtrs)
}

func TestValidationSkipsTypesWithNothingToCheck(t *testing.T) {
	// For a type without tags or a Validate method, Validation hands back
	// the next invoker itself: a dispatch allocates nothing, where checking
	// would box the message.
	bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{})))
	calls := counted[Plain](t, bus)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, Plain{N: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
	assert.Positive(t, *calls)
}

func TestValidationWithOwnValidator(t *testing.T) {
	t.Parallel()
	v := validator.New()
	require.NoError(t, v.RegisterValidation("even", func(fl validator.FieldLevel) bool { return fl.Field().Int()%2 == 0 }))
	type Pair struct {
		N int `validate:"even"`
	}
	bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{Validator: v})))
	counted[Pair](t, bus)
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, Pair{N: 3})
	var verr *cqrs.ValidationError
	require.ErrorAs(t, err, &verr)
	assert.Equal(t, "even", verr.Fields[0].Tag)
	_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, Pair{N: 4})
	require.NoError(t, err)
}
