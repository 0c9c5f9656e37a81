package cqrs_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	aorders "github.com/typedcqrs/dispatch/cqrs/internal/testtypes/a/orders"
	borders "github.com/typedcqrs/dispatch/cqrs/internal/testtypes/b/orders"
)

const (
	aPath = "github.com/typedcqrs/dispatch/cqrs/internal/testtypes/a/orders.Place"
	bPath = "github.com/typedcqrs/dispatch/cqrs/internal/testtypes/b/orders.Place"
)

// TestTypesThatPrintAlike: two message types whose %T names collide share
// a bus under different names, the second under its import path, and
// every entry point and decorator tells them apart.
func TestTypesThatPrintAlike(t *testing.T) {
	t.Parallel()
	// What the interceptors are set up with, by message type.
	specs := map[reflect.Type]cqrs.Spec{}
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		specs[spec.MessageType] = spec
		return next
	})))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[aorders.Place, string](func(_ context.Context, p aorders.Place) (string, error) {
		return "a " + p.ID, nil
	})))
	// SpecFor gives, before Register, the Spec Register will give.
	bSpec := cqrs.SpecFor[borders.Place, string](commands)
	assert.Equal(t, bPath, bSpec.Name)
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[borders.Place, string](func(_ context.Context, p borders.Place) (string, error) {
		return "b " + p.SKU, nil
	})))

	assert.Equal(t, []string{bPath, "orders.Place"}, commands.Registered())
	require.Len(t, specs, 2)
	aSpec, bGot := specs[reflect.TypeFor[aorders.Place]()], specs[reflect.TypeFor[borders.Place]()]
	assert.Equal(t, "command orders.Place", aSpec.String())
	assert.Equal(t, "command "+bPath, bGot.String())
	assert.Equal(t, bSpec, bGot)
	assert.Equal(t, bGot, cqrs.SpecFor[borders.Place, string](commands), "SpecFor after Register agrees")
	assert.NotEqual(t, aSpec.Key(), bGot.Key())

	ctx := context.Background()
	got, err := cqrs.Dispatch[string](ctx, commands, aorders.Place{ID: "1"})
	require.NoError(t, err)
	assert.Equal(t, "a 1", got)
	got, err = cqrs.Dispatch[string](ctx, commands, borders.Place{SKU: "2"})
	require.NoError(t, err)
	assert.Equal(t, "b 2", got)

	_, err = cqrs.Dispatch[int](ctx, commands, borders.Place{})
	require.ErrorIs(t, err, cqrs.ErrResultType)
	assert.Contains(t, err.Error(), "command "+bPath)
}

// TestSpecKey: a Spec's key is its kind and the import path of its type,
// whatever the type calls itself, so types that print alike on two buses,
// or one type on both, have keys of their own.
func TestSpecKey(t *testing.T) {
	t.Parallel()
	a := cqrs.NewCommandBus()
	b := cqrs.NewCommandBus()
	q := cqrs.NewQueryBus()
	aSpec := cqrs.SpecFor[aorders.Place, cqrs.NoResult](a)
	bSpec := cqrs.SpecFor[borders.Place, cqrs.NoResult](b)
	assert.Equal(t, aSpec.String(), bSpec.String(), "alone on its bus, each has the short name")
	assert.Equal(t, "command "+aPath, aSpec.Key())
	assert.Equal(t, "command "+bPath, bSpec.Key())
	assert.Equal(t, "query "+aPath, cqrs.SpecFor[aorders.Place, cqrs.NoResult](q).Key())
	assert.Equal(t, "command "+aPath, cqrs.SpecFor[aorders.Place, string](a).Key(), "the result type is no part of the key")
	assert.Equal(t, "command users.rename", cqrs.SpecFor[Renamed, cqrs.NoResult](a).String())
	assert.Equal(t, "command github.com/typedcqrs/dispatch/cqrs_test.Renamed", cqrs.SpecFor[Renamed, cqrs.NoResult](a).Key(),
		"a declared name is for people; the key is the type")

	for _, tc := range []struct {
		typ  reflect.Type
		want string
	}{
		{reflect.TypeFor[*aorders.Place](), "*" + aPath},
		{reflect.TypeFor[[]borders.Place](), "[]" + bPath},
		{reflect.TypeFor[[2]*aorders.Place](), "[2]*" + aPath},
		{reflect.TypeFor[map[string]borders.Place](), "map[string]" + bPath},
		{reflect.TypeFor[chan aorders.Place](), "chan " + aPath},
		{reflect.TypeFor[<-chan aorders.Place](), "<-chan " + aPath},
		{reflect.TypeFor[chan<- aorders.Place](), "chan<- " + aPath},
		{reflect.TypeFor[int](), "int"},
		{reflect.TypeFor[Box[borders.Place]](), "github.com/typedcqrs/dispatch/cqrs_test.Box[" + bPath + "]"},
		{reflect.TypeFor[struct{ N int }](), "struct { N int }"},
	} {
		spec := cqrs.Spec{Kind: cqrs.KindQuery, MessageType: tc.typ}
		assert.Equal(t, "query "+tc.want, spec.Key(), tc.typ.String())
	}
	assert.Equal(t, "unknown <nil>", cqrs.Spec{}.Key(), "a zero Spec has a key too")
}

// Box is a generic message type.
type Box[T any] struct{ V T }

// registerLocal registers a type declared in the function, named Local;
// so does registerOtherLocal. The two print alike even with their import
// path: one bus cannot have both.
func registerLocal(b cqrs.Bus) error {
	type Local struct{}
	return cqrs.Register(b, cqrs.HandlerFunc[Local, cqrs.NoResult](noop[Local]))
}

func registerOtherLocal(b cqrs.Bus) error {
	type Local struct{}
	return cqrs.Register(b, cqrs.HandlerFunc[Local, cqrs.NoResult](noop[Local]))
}

func TestTypesThatPrintAlikeEvenWithTheirPath(t *testing.T) {
	t.Parallel()
	commands := cqrs.NewCommandBus()
	require.NoError(t, registerLocal(commands))
	err := registerOtherLocal(commands)
	require.ErrorIs(t, err, cqrs.ErrHandlerExists)
	assert.EqualError(t, err, "cqrs: handler already registered: command cqrs_test.Local: another type on the bus has that name, "+
		"even with its import path (github.com/typedcqrs/dispatch/cqrs_test.Local); declare a CommandName method")
	assert.Equal(t, []string{"cqrs_test.Local"}, commands.Registered(), "nothing changed")
}
