package benchmarks

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Declared messages: the benchmark's query and a command, each with its
// result declared by a marker, so Ask and Send take no type arguments.
type (
	getUserDeclared struct {
		cqrs.Query[User]
		ID     int64
		Tenant string
	}
	renameUser struct {
		cqrs.Command[User]
		ID     int64
		Tenant string
	}
)

func getUserDeclaredHandler(_ context.Context, q getUserDeclared) (User, error) {
	return User{ID: q.ID, Name: q.Tenant}, nil
}

func renameUserHandler(_ context.Context, c renameUser) (User, error) {
	return User{ID: c.ID, Name: c.Tenant}, nil
}

// BenchmarkDeclared compares the entry points of declared messages with
// Dispatch of the same message on the same bus: Ask and Send are Dispatch
// with the types proven by the compiler, and must cost the same.
func BenchmarkDeclared(b *testing.B) {
	ctx := context.Background()
	queries, commands := cqrs.NewQueryBus(), cqrs.NewCommandBus()
	require.NoError(b, cqrs.Handle(queries, getUserDeclaredHandler))
	require.NoError(b, cqrs.Handle(commands, renameUserHandler))
	q := getUserDeclared{ID: benchQuery.ID, Tenant: benchQuery.Tenant}
	c := renameUser{ID: benchQuery.ID, Tenant: benchQuery.Tenant}

	rows := []struct {
		name string
		call func() (User, error)
	}{
		{"QueryDispatch", func() (User, error) { return cqrs.Dispatch[User](ctx, queries, q) }},
		{"QueryAsk", func() (User, error) { return cqrs.Ask(ctx, queries, q) }},
		{"CommandDispatch", func() (User, error) { return cqrs.Dispatch[User](ctx, commands, c) }},
		{"CommandSend", func() (User, error) { return cqrs.Send(ctx, commands, c) }},
	}
	for _, row := range rows {
		b.Run(row.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				u, err := row.call()
				if err != nil || u.ID != benchQuery.ID {
					b.Fatalf("got %v, %v", u, err)
				}
				sink = u
			}
		})
	}
}
