package cqrs_test

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

type (
	idCommand struct {
		cqrs.Command[cqrs.Identity]
		Then bool // send idFollowUp from the handler
	}
	idFollowUp struct{ cqrs.Command[cqrs.Identity] }
	idQuery    struct{ cqrs.Query[cqrs.Identity] }
	idEvent    struct{ cqrs.Event }
	idStream   struct {
		cqrs.StreamQuery[cqrs.Identity]
	}
)

var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewIDIsAVersion7UUIDThatSortsByTime(t *testing.T) {
	seen := make(map[string]bool)
	millis := func(id string) string { return id[:8] + id[9:13] } // the first 48 bits
	prev := cqrs.NewID()
	for range 1000 {
		id := cqrs.NewID()
		require.Regexp(t, uuidV7, id)
		assert.False(t, seen[id], "ID %s made twice", id)
		seen[id] = true
		assert.GreaterOrEqual(t, millis(id), millis(prev), "an ID made later never sorts earlier")
		prev = id
	}
}

// identityBuses returns a command bus whose idCommand handler returns its
// identity and, when asked, that of the idFollowUp it sends.
func identityBuses(t *testing.T, opts ...cqrs.Option) (*cqrs.CommandBus, *[]cqrs.Identity) {
	t.Helper()
	var mu sync.Mutex
	var seen []cqrs.Identity
	record := func(ctx context.Context) cqrs.Identity {
		id, _ := cqrs.IdentityOf(ctx)
		mu.Lock()
		seen = append(seen, id)
		mu.Unlock()
		return id
	}
	commands := cqrs.NewCommandBus(opts...)
	require.NoError(t, cqrs.Handle(commands, func(ctx context.Context, c idCommand) (cqrs.Identity, error) {
		id := record(ctx)
		if c.Then {
			if _, err := cqrs.Send(ctx, commands, idFollowUp{}); err != nil {
				return id, err
			}
		}
		return id, nil
	}))
	require.NoError(t, cqrs.Handle(commands, func(ctx context.Context, _ idFollowUp) (cqrs.Identity, error) {
		return record(ctx), nil
	}))
	return commands, &seen
}

func TestIdentity(t *testing.T) {
	ctx := context.Background()

	t.Run("a bus without WithIdentity gives none to a message sent from a plain context", func(t *testing.T) {
		commands, seen := identityBuses(t)
		_, err := cqrs.Send(ctx, commands, idCommand{Then: true})
		require.NoError(t, err)
		assert.Equal(t, []cqrs.Identity{{}, {}}, *seen)
	})

	t.Run("WithIdentity starts a conversation that a message sent by the handler joins", func(t *testing.T) {
		commands, seen := identityBuses(t, cqrs.WithIdentity())
		_, err := cqrs.Send(ctx, commands, idCommand{Then: true})
		require.NoError(t, err)
		require.Len(t, *seen, 2)
		first, second := (*seen)[0], (*seen)[1]
		assert.Regexp(t, uuidV7, first.ID)
		assert.Equal(t, first.ID, first.CorrelationID, "the first message starts the conversation")
		assert.Empty(t, first.CausationID)
		assert.Regexp(t, uuidV7, second.ID)
		assert.NotEqual(t, first.ID, second.ID)
		assert.Equal(t, first.CorrelationID, second.CorrelationID)
		assert.Equal(t, first.ID, second.CausationID)
	})

	t.Run("every dispatch gets a new ID", func(t *testing.T) {
		commands, seen := identityBuses(t, cqrs.WithIdentity())
		for range 3 {
			_, err := cqrs.Send(ctx, commands, idCommand{})
			require.NoError(t, err)
		}
		ids := map[string]bool{}
		for _, id := range *seen {
			ids[id.ID] = true
		}
		assert.Len(t, ids, 3)
	})

	t.Run("a caller's correlation is kept and each message gets its own ID", func(t *testing.T) {
		commands, seen := identityBuses(t) // no WithIdentity: the context carries one
		req := cqrs.ContextWithIdentity(ctx, cqrs.Identity{CorrelationID: "request-7"})
		for range 2 {
			_, err := cqrs.Send(req, commands, idCommand{Then: true})
			require.NoError(t, err)
		}
		require.Len(t, *seen, 4)
		for i, id := range *seen {
			assert.Equal(t, "request-7", id.CorrelationID, "message %d", i)
			assert.Regexp(t, uuidV7, id.ID)
		}
		assert.NotEqual(t, (*seen)[0].ID, (*seen)[2].ID)
		assert.Empty(t, (*seen)[0].CausationID)
		assert.Equal(t, (*seen)[0].ID, (*seen)[1].CausationID)
	})

	t.Run("an identity set whole is the handler's, as a transport passes it on", func(t *testing.T) {
		commands, seen := identityBuses(t)
		want := cqrs.Identity{ID: "m-1", CorrelationID: "c-1", CausationID: "p-1"}
		got, err := cqrs.Send(cqrs.ContextWithIdentity(ctx, want), commands, idCommand{Then: true})
		require.NoError(t, err)
		assert.Equal(t, want, got)
		require.Len(t, *seen, 2)
		assert.Equal(t, cqrs.Identity{ID: (*seen)[1].ID, CorrelationID: "c-1", CausationID: "m-1"}, (*seen)[1])
	})

	t.Run("an ID set alone starts its own conversation", func(t *testing.T) {
		commands, _ := identityBuses(t)
		got, err := cqrs.Send(cqrs.ContextWithIdentity(ctx, cqrs.Identity{ID: "key-9"}), commands, idCommand{})
		require.NoError(t, err)
		assert.Equal(t, cqrs.Identity{ID: "key-9", CorrelationID: "key-9"}, got)
	})

	t.Run("a context set inside a handler keeps the handler's conversation", func(t *testing.T) {
		commands := cqrs.NewCommandBus(cqrs.WithIdentity())
		var outer, inner cqrs.Identity
		require.NoError(t, cqrs.Handle(commands, func(ctx context.Context, _ idFollowUp) (cqrs.Identity, error) {
			id, _ := cqrs.IdentityOf(ctx)
			return id, nil
		}))
		require.NoError(t, cqrs.Handle(commands, func(ctx context.Context, _ idCommand) (cqrs.Identity, error) {
			outer, _ = cqrs.IdentityOf(ctx)
			set := cqrs.ContextWithIdentity(ctx, cqrs.Identity{ID: "chosen"})
			again, ok := cqrs.IdentityOf(set)
			assert.True(t, ok, "the handler's own identity is still readable")
			assert.Equal(t, outer, again)
			var err error
			inner, err = cqrs.Send(set, commands, idFollowUp{})
			return outer, err
		}))
		_, err := cqrs.Send(ctx, commands, idCommand{})
		require.NoError(t, err)
		assert.Equal(t, cqrs.Identity{ID: "chosen", CorrelationID: outer.CorrelationID, CausationID: outer.ID}, inner)
	})

	t.Run("queries, through interceptors, with ExecuteTyped and Execute", func(t *testing.T) {
		var intercepted cqrs.Identity
		ic := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
			return func(ctx context.Context, call cqrs.Call) error {
				intercepted, _ = cqrs.IdentityOf(ctx)
				return next(ctx, call)
			}
		})
		queries := cqrs.NewQueryBus(cqrs.WithIdentity(), cqrs.WithInterceptors(ic))
		require.NoError(t, cqrs.Handle(queries, func(ctx context.Context, _ idQuery) (cqrs.Identity, error) {
			id, _ := cqrs.IdentityOf(ctx)
			return id, nil
		}))
		got, err := cqrs.Ask(ctx, queries, idQuery{})
		require.NoError(t, err)
		assert.Regexp(t, uuidV7, got.ID)
		assert.Equal(t, got, intercepted, "the interceptor sees the handler's identity")
		typed, err := cqrs.ExecuteTyped[cqrs.Identity](ctx, queries, any(idQuery{}))
		require.NoError(t, err)
		assert.Regexp(t, uuidV7, typed.ID)
		untyped, err := queries.Execute(ctx, idQuery{})
		require.NoError(t, err)
		assert.Regexp(t, uuidV7, untyped.(cqrs.Identity).ID)
	})

	t.Run("every subscriber of one event sees the same identity, on every strategy", func(t *testing.T) {
		for _, s := range []cqrs.Strategy{cqrs.Sequential(), cqrs.StopOnError(), cqrs.Concurrent(2), cqrs.Async()} {
			t.Run(s.String(), func(t *testing.T) {
				events := cqrs.NewEventBus()
				var mu sync.Mutex
				var got []cqrs.Identity
				for _, name := range []string{"a", "b"} {
					_, err := cqrs.Subscribe(events, name, func(ctx context.Context, _ idEvent) error {
						id, _ := cqrs.IdentityOf(ctx)
						mu.Lock()
						got = append(got, id)
						mu.Unlock()
						return nil
					})
					require.NoError(t, err)
				}
				pub := cqrs.ContextWithIdentity(ctx, cqrs.Identity{CorrelationID: "c"})
				require.NoError(t, cqrs.PublishWith(pub, events, s, idEvent{}))
				require.NoError(t, events.Close(ctx))
				require.Len(t, got, 2)
				assert.Equal(t, got[0], got[1])
				assert.Equal(t, "c", got[0].CorrelationID)
				assert.Regexp(t, uuidV7, got[0].ID)
			})
		}
	})

	t.Run("a stream's handler has its query's identity", func(t *testing.T) {
		queries := cqrs.NewQueryBus(cqrs.WithIdentity())
		require.NoError(t, cqrs.HandleStream(queries, func(ctx context.Context, _ idStream, yield func(cqrs.Identity) bool) error {
			id, _ := cqrs.IdentityOf(ctx)
			yield(id)
			return nil
		}))
		var got []cqrs.Identity
		for id, err := range cqrs.Stream(ctx, queries, idStream{}) {
			require.NoError(t, err)
			got = append(got, id)
		}
		require.Len(t, got, 1)
		assert.Regexp(t, uuidV7, got[0].ID)
	})

	t.Run("a refused dispatch runs nothing and makes no identity", func(t *testing.T) {
		commands, seen := identityBuses(t, cqrs.WithIdentity())
		done, cancel := context.WithCancel(ctx)
		cancel()
		_, err := cqrs.Send(done, commands, idCommand{})
		assert.True(t, errors.Is(err, context.Canceled))
		assert.Empty(t, *seen)
	})
}

func TestNextIdentity(t *testing.T) {
	ctx := context.Background()
	fresh := cqrs.NextIdentity(ctx)
	assert.Regexp(t, uuidV7, fresh.ID)
	assert.Equal(t, fresh.ID, fresh.CorrelationID)
	assert.Empty(t, fresh.CausationID)
	assert.NotEqual(t, fresh.ID, cqrs.NextIdentity(ctx).ID)

	set := cqrs.ContextWithIdentity(ctx, cqrs.Identity{ID: "x", CausationID: "y"})
	assert.Equal(t, cqrs.Identity{ID: "x", CorrelationID: "x", CausationID: "y"}, cqrs.NextIdentity(set))
	_, ok := cqrs.IdentityOf(set)
	assert.False(t, ok, "an identity set for the next message is not that of a message being handled")

	commands := cqrs.NewCommandBus(cqrs.WithIdentity())
	var handled, sent cqrs.Identity
	require.NoError(t, cqrs.Handle(commands, func(ctx context.Context, _ idCommand) (cqrs.Identity, error) {
		handled, _ = cqrs.IdentityOf(ctx)
		sent = cqrs.NextIdentity(ctx)
		return handled, nil
	}))
	_, err := cqrs.Send(ctx, commands, idCommand{})
	require.NoError(t, err)
	assert.Equal(t, handled.CorrelationID, sent.CorrelationID)
	assert.Equal(t, handled.ID, sent.CausationID)
	assert.NotEqual(t, handled.ID, sent.ID)

	var none context.Context // a nil context is returned as it is
	assert.Nil(t, cqrs.ContextWithIdentity(none, cqrs.Identity{}))
}

func TestIdentityCostsNoAllocationWhereNoneIsMade(t *testing.T) {
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Handle(commands, func(context.Context, idFollowUp) (cqrs.Identity, error) {
		return cqrs.Identity{}, nil
	}))
	// Make an identity somewhere, so that dispatches look for one.
	_ = cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{})
	ctx := context.Background()
	allocs := testing.AllocsPerRun(200, func() {
		_, _ = cqrs.Send(ctx, commands, idFollowUp{})
	})
	assert.Zero(t, allocs)

	// With WithIdentity, one: the context, holding the new ID's bytes.
	with := cqrs.NewCommandBus(cqrs.WithIdentity())
	require.NoError(t, cqrs.Handle(with, func(context.Context, idFollowUp) (cqrs.Identity, error) {
		return cqrs.Identity{}, nil
	}))
	allocs = testing.AllocsPerRun(200, func() {
		_, _ = cqrs.Send(ctx, with, idFollowUp{})
	})
	assert.Equal(t, 1.0, allocs)
}

func TestIdentityMadeOnFirstReadIsTheSameForEveryReader(t *testing.T) {
	commands := cqrs.NewCommandBus(cqrs.WithIdentity())
	var ids [16]cqrs.Identity
	require.NoError(t, cqrs.Handle(commands, func(ctx context.Context, _ idFollowUp) (cqrs.Identity, error) {
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() { ids[i], _ = cqrs.IdentityOf(ctx) })
		}
		wg.Wait()
		return ids[0], nil
	}))
	first, err := cqrs.Send(context.Background(), commands, idFollowUp{})
	require.NoError(t, err)
	require.Regexp(t, uuidV7, first.ID)
	for i, id := range ids {
		assert.Equal(t, first, id, "reader %d", i)
	}
}
