package outbox_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	"github.com/typedcqrs/dispatch/outbox"
)

// orders makes the business table of the inbox tests.
func (b *backend) orders(t testing.TB) string {
	t.Helper()
	table := "orders_" + b.cfg.Table
	_, err := b.db.Exec("CREATE TABLE " + table + " (id integer PRIMARY KEY)")
	require.NoError(t, err)
	return table
}

func (b *backend) count(t testing.TB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, b.db.QueryRow("SELECT count(*) FROM "+table).Scan(&n))
	return n
}

func (b *backend) inbox(t testing.TB) *outbox.Inbox {
	t.Helper()
	in, err := outbox.NewInbox(b.db, b.cfg)
	require.NoError(t, err)
	return in
}

// placeHandler is a handler whose writes, an order row and an event, go
// into the inbox's transaction; fail makes it fail after writing them.
func placeHandler(b *backend, table string, fail *atomic.Bool, effects *atomic.Int64) func(ctx context.Context, c ShipOrder) (cqrs.NoResult, error) {
	return func(ctx context.Context, c ShipOrder) (cqrs.NoResult, error) {
		tx, ok := outbox.Tx(ctx)
		if !ok {
			return cqrs.NoResult{}, errors.New("no transaction in ctx")
		}
		q := "INSERT INTO " + table + " (id) VALUES ($1)"
		if b.name == "sqlite" {
			q = "INSERT INTO " + table + " (id) VALUES (?)"
		}
		if _, err := tx.ExecContext(ctx, q, c.Order); err != nil {
			return cqrs.NoResult{}, err
		}
		if err := outbox.Publish(ctx, b.box, nil, OrderPlaced{Order: c.Order}); err != nil {
			return cqrs.NoResult{}, err
		}
		if fail != nil && fail.Load() {
			return cqrs.NoResult{}, errors.New("failed after writing")
		}
		effects.Add(1)
		return cqrs.NoResult{}, nil
	}
}

func TestInboxCommitsTheRecordWithTheHandlersWrites(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		table := b.orders(t)
		var fail atomic.Bool
		var effects atomic.Int64
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Idempotent(b.inbox(t))))
		require.NoError(t, cqrs.Handle(bus, placeHandler(b, table, &fail, &effects)))
		ctx := cqrs.ContextWithIdentity(t.Context(), cqrs.Identity{ID: "cmd-1"})

		fail.Store(true)
		_, err := cqrs.Send(ctx, bus, ShipOrder{Order: 7})
		require.Error(t, err)
		assert.Zero(t, b.count(t, table), "a failed handler's row rolled back")
		assert.Zero(t, b.count(t, b.cfg.Table), "and its event")
		assert.Zero(t, b.count(t, b.cfg.InboxTable), "and the record: it may run again")

		fail.Store(false)
		for range 3 { // the first delivery that succeeds, then two duplicates
			_, err = cqrs.Send(ctx, bus, ShipOrder{Order: 7})
			require.NoError(t, err)
		}
		assert.EqualValues(t, 1, effects.Load())
		assert.Equal(t, 1, b.count(t, table), "one row")
		assert.Equal(t, 1, b.count(t, b.cfg.Table), "one event")
		assert.Equal(t, 1, b.count(t, b.cfg.InboxTable), "one record")
	})
}

func TestInboxConcurrentDuplicatesRunOnce(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		table := b.orders(t)
		var effects atomic.Int64
		in := b.inbox(t)
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Idempotent(in)))
		require.NoError(t, cqrs.Handle(bus, placeHandler(b, table, nil, &effects)))
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() {
				ctx := cqrs.ContextWithIdentity(t.Context(), cqrs.Identity{ID: "dup"})
				_, errs[i] = cqrs.Send(ctx, bus, ShipOrder{Order: 1})
			})
		}
		wg.Wait()
		for _, err := range errs {
			assert.NoError(t, err, "a duplicate waits for the first, then skips")
		}
		assert.EqualValues(t, 1, effects.Load())
		assert.Equal(t, 1, b.count(t, table))
	})
}

func TestInboxCleanup(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		in := b.inbox(t)
		ok := func(context.Context) error { return nil }
		ran, err := in.Once(t.Context(), "c", "old", ok)
		require.NoError(t, err)
		require.True(t, ran)
		time.Sleep(1100 * time.Millisecond) // a database clock: no synctest here
		ran, err = in.Once(t.Context(), "c", "new", ok)
		require.NoError(t, err)
		require.True(t, ran)
		n, err := in.Cleanup(t.Context(), time.Second)
		require.NoError(t, err)
		assert.EqualValues(t, 1, n, "only the record older than a second")
		ran, err = in.Once(t.Context(), "c", "old", ok)
		require.NoError(t, err)
		assert.True(t, ran, "a message whose record is gone runs again")
		ran, err = in.Once(t.Context(), "c", "new", ok)
		require.NoError(t, err)
		assert.False(t, ran)
	})
}

func TestInboxErrors(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		in := b.inbox(t)
		_, err := in.Once(t.Context(), "c", "m", nil)
		assert.ErrorIs(t, err, cqrs.ErrNilHandler)
		var zero outbox.Inbox
		_, err = zero.Once(t.Context(), "c", "m", func(context.Context) error { return nil })
		assert.ErrorIs(t, err, outbox.ErrConfig)
		// A handler that ends the transaction itself.
		ran, err := in.Once(t.Context(), "c", "m", func(ctx context.Context) error {
			tx, _ := outbox.Tx(ctx)
			return tx.Commit()
		})
		assert.True(t, ran)
		assert.ErrorIs(t, err, outbox.ErrDatabase)
		// A panic rolls back and goes on up.
		assert.PanicsWithValue(t, "boom", func() {
			_, _ = in.Once(t.Context(), "c", "p", func(context.Context) error { panic("boom") })
		})
		ran, err = in.Once(t.Context(), "c", "p", func(context.Context) error { return nil })
		assert.NoError(t, err)
		assert.True(t, ran, "the panic recorded nothing")
		_, ok := outbox.Tx(t.Context())
		assert.False(t, ok)
	})
}
