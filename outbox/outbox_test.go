package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/outbox"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

func TestMigrateIsRepeatableAndConcurrent(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = b.box.Migrate(t.Context()) })
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		var versions int
		require.NoError(t, b.db.QueryRow("SELECT count(*) FROM "+b.cfg.Table+"_migrations").Scan(&versions))
		assert.Equal(t, 1, versions, "version 1 applied once")
		b.write(t, true, OrderPlaced{Order: 1})
		require.NoError(t, b.box.Migrate(t.Context()))
		lag, err := b.box.Lag(t.Context())
		require.NoError(t, err)
		assert.EqualValues(t, 1, lag.Pending, "a migration again keeps what is there")
		assert.Contains(t, b.box.Schema(), "CREATE TABLE IF NOT EXISTS "+b.cfg.Table+" (")
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	db, err := sql.Open("pgx", pgDSN)
	require.NoError(t, err)
	defer db.Close()
	for name, cfg := range map[string]outbox.Config{
		"no dialect":   {},
		"bad table":    {Dialect: outbox.Postgres, Table: "orders; DROP TABLE x"},
		"upper case":   {Dialect: outbox.SQLite, InboxTable: "Inbox"},
		"same tables":  {Dialect: outbox.SQLite, Table: "t", InboxTable: "t"},
		"long name":    {Dialect: outbox.Postgres, Table: "a234567890123456789012345678901234567890123456789"},
		"bad dialect":  {Dialect: 9},
		"digit first":  {Dialect: outbox.Postgres, Table: "1t"},
		"hyphen table": {Dialect: outbox.Postgres, Table: "my-outbox"},
	} {
		_, err := outbox.New(db, cfg)
		assert.ErrorIs(t, err, outbox.ErrConfig, name)
		_, err = outbox.NewInbox(db, cfg)
		assert.ErrorIs(t, err, outbox.ErrConfig, name)
	}
	_, err = outbox.New(nil, outbox.Config{Dialect: outbox.SQLite})
	assert.ErrorIs(t, err, outbox.ErrConfig)
	_, err = outbox.OpenSQLite(":memory:")
	assert.ErrorIs(t, err, outbox.ErrConfig)
}

func TestNothingLeavesBeforeTheCommit(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		sink := &memorySink{}
		relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{})
		require.NoError(t, err)

		b.write(t, false, OrderPlaced{Order: 1}, OrderPlaced{Order: 2})
		n, err := relay.Forward(t.Context())
		require.NoError(t, err)
		assert.Zero(t, n, "a rolled-back transaction's messages never leave")

		// Open, not committed: not visible to the relay.
		tx, err := b.db.BeginTx(t.Context(), nil)
		require.NoError(t, err)
		require.NoError(t, outbox.Publish(t.Context(), b.box, tx, OrderPlaced{Order: 3}))
		if b.name == "postgres" {
			n, err = relay.Forward(t.Context())
			require.NoError(t, err)
			assert.Zero(t, n, "an open transaction's messages do not leave")
		}
		require.NoError(t, tx.Commit())
		n, err = relay.Forward(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		sent := sink.sent()
		require.Len(t, sent, 1)
		var got OrderPlaced
		assert.Equal(t, cqrsnats.EventSubject("cqrs", cqrs.Spec{Kind: cqrs.KindEvent, MessageType: reflect.TypeFor[OrderPlaced]()}, true), sent[0].Subject)
		assert.Equal(t, sent[0].ID, sent[0].Header[cqrsnats.HeaderID][0])
		assert.Equal(t, sent[0].ID, sent[0].Header[jetstream.MsgIDHeader][0], "the ID is JetStream's de-duplication key")
		require.NotEmpty(t, sent[0].Payload)
		// The payload is the event envelope; its tail is the JSON.
		i := len(sent[0].Payload) - len(`{"Order":3,"Writer":0}`)
		require.NoError(t, json.Unmarshal(sent[0].Payload[i:], &got))
		assert.Equal(t, 3, got.Order)
		lag, err := b.box.Lag(t.Context())
		require.NoError(t, err)
		assert.Zero(t, lag.Pending, "a sent message is removed")
	})
}

func TestPublishTakesTheIdentityOfTheHandler(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		handled := cqrs.Identity{ID: "handled-1", CorrelationID: "conv-1"}
		bus := cqrs.NewCommandBus()
		require.NoError(t, cqrs.Handle(bus, func(ctx context.Context, c ShipOrder) (cqrs.NoResult, error) {
			tx, err := b.db.BeginTx(ctx, nil)
			if err != nil {
				return cqrs.NoResult{}, err
			}
			defer func() { _ = tx.Rollback() }()
			if err := outbox.Publish(ctx, b.box, tx, OrderPlaced{Order: c.Order}); err != nil {
				return cqrs.NoResult{}, err
			}
			if err := outbox.Enqueue(ctx, b.box, tx, ShipOrder{Order: c.Order + 1}); err != nil {
				return cqrs.NoResult{}, err
			}
			return cqrs.NoResult{}, tx.Commit()
		}))
		_, err := cqrs.Send(cqrs.ContextWithIdentity(t.Context(), handled), bus, ShipOrder{Order: 1})
		require.NoError(t, err)
		sink := &memorySink{}
		relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{})
		require.NoError(t, err)
		n, err := relay.Forward(t.Context())
		require.NoError(t, err)
		require.Equal(t, 2, n)
		for _, m := range sink.sent() {
			assert.Equal(t, "conv-1", m.Header[cqrsnats.HeaderCorrelationID][0], m.Subject)
			assert.Equal(t, "handled-1", m.Header[cqrsnats.HeaderCausationID][0], m.Subject)
			assert.NotEqual(t, "handled-1", m.ID)
		}
		sent := sink.sent()
		assert.NotEqual(t, sent[0].ID, sent[1].ID)
		assert.Equal(t, cqrsnats.DurableSubject("cqrs", cqrs.SpecFor[ShipOrder, cqrs.NoResult]((*cqrs.CommandBus)(nil))), sent[1].Subject)
		assert.Equal(t, "CQRS_COMMANDS", sent[1].Header[jetstream.ExpectedStreamHeader][0], "a command lands only in its stream")
	})
}

func TestWriteErrors(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		err := outbox.Publish(t.Context(), b.box, nil, OrderPlaced{})
		assert.ErrorIs(t, err, outbox.ErrNoTx)
		var zero outbox.Outbox
		err = outbox.Publish(t.Context(), &zero, nil, OrderPlaced{})
		assert.ErrorIs(t, err, outbox.ErrConfig)
		var nilCtx context.Context // a nil context is what is tested
		err = outbox.Publish(nilCtx, b.box, nil, OrderPlaced{})
		assert.ErrorIs(t, err, cqrs.ErrNilContext)
		// A transaction that is over: the database's error, wrapped.
		tx, err := b.db.BeginTx(t.Context(), nil)
		require.NoError(t, err)
		require.NoError(t, tx.Rollback())
		err = outbox.Publish(t.Context(), b.box, tx, OrderPlaced{})
		assert.ErrorIs(t, err, outbox.ErrDatabase)
		assert.ErrorIs(t, err, sql.ErrTxDone)
		// A payload over the limit.
		big, err := outbox.New(b.db, withNATS(b.cfg, cqrsnats.WithMaxPayload(8)))
		require.NoError(t, err)
		tx, err = b.db.BeginTx(t.Context(), nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		err = outbox.Publish(t.Context(), big, tx, OrderPlaced{Order: 123456789})
		assert.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
	})
}

func withNATS(cfg outbox.Config, opts ...cqrsnats.Option) outbox.Config {
	cfg.NATS = opts
	return cfg
}

func TestRelayRemovesOnlyWhatTheSinkTook(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		for i := range 10 {
			b.write(t, true, OrderPlaced{Order: i})
		}
		down := errors.New("sink down")
		sink := &memorySink{fail: func(batch []outbox.Message) (int, error) { return min(3, len(batch)), down }}
		relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{BatchSize: 5})
		require.NoError(t, err)
		n, err := relay.Forward(t.Context())
		assert.ErrorIs(t, err, down)
		assert.Equal(t, 3, n)
		sink.fail = func(batch []outbox.Message) (int, error) { panic("sink exploded") }
		n, err = relay.Forward(t.Context())
		assert.ErrorContains(t, err, "sink exploded")
		assert.Zero(t, n)
		sink.fail = nil
		for {
			n, err := relay.Forward(t.Context())
			require.NoError(t, err)
			if n == 0 {
				break
			}
		}
		sent := sink.sent()
		require.Len(t, sent, 10, "0 lost, 0 duplicated")
		for i, m := range sent {
			assert.Contains(t, string(m.Payload), `"Order":`+string(rune('0'+i)), "in order")
		}
		st := relay.Stats()
		assert.EqualValues(t, 10, st.Sent)
		assert.EqualValues(t, 2, st.Failures)
	})
}

func TestRelayRunWakesOnCommit(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		sink := &memorySink{}
		// A poll so slow that only a notification can explain a prompt
		// delivery on PostgreSQL.
		poll := time.Hour
		if b.name == "sqlite" {
			poll = 10 * time.Millisecond
		}
		relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{PollInterval: poll})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- relay.Run(ctx) }()
		defer func() { cancel(); require.NoError(t, <-done) }()
		time.Sleep(50 * time.Millisecond) // let it go idle first (not asserted)
		for i := range 5 {
			b.write(t, true, OrderPlaced{Order: i})
			require.Eventually(t, func() bool { return len(sink.sent()) == i+1 }, 5*time.Second, time.Millisecond)
		}
	})
}

// TestZeroValuesAndNilContextsAreErrors: every method of a value not made
// by its constructor, and every call with a nil context, returns an error
// rather than panicking.
func TestZeroValuesAndNilContextsAreErrors(t *testing.T) {
	b := openSQLite(t, outbox.Config{})
	var nilCtx context.Context // a nil context is what is tested
	ctx := t.Context()
	ok := func(context.Context) error { return nil }

	var box outbox.Outbox
	assert.Empty(t, box.Schema())
	assert.ErrorIs(t, box.Migrate(ctx), outbox.ErrConfig)
	_, err := box.Lag(ctx)
	assert.ErrorIs(t, err, outbox.ErrConfig)
	assert.ErrorIs(t, b.box.Migrate(nilCtx), cqrs.ErrNilContext)
	_, err = b.box.Lag(nilCtx)
	assert.ErrorIs(t, err, cqrs.ErrNilContext)

	var relay outbox.Relay
	_, err = relay.Forward(ctx)
	assert.ErrorIs(t, err, outbox.ErrConfig)
	assert.ErrorIs(t, relay.Run(ctx), outbox.ErrConfig)
	assert.Equal(t, outbox.RelayStats{}, relay.Stats())
	var nilRelay *outbox.Relay
	assert.Equal(t, outbox.RelayStats{}, nilRelay.Stats())
	real, err := outbox.NewRelay(b.box, &memorySink{}, outbox.RelayConfig{})
	require.NoError(t, err)
	_, err = real.Forward(nilCtx)
	assert.ErrorIs(t, err, outbox.ErrConfig)
	assert.ErrorIs(t, err, cqrs.ErrNilContext)
	assert.ErrorIs(t, real.Run(nilCtx), outbox.ErrConfig)
	assert.ErrorIs(t, real.Run(nilCtx), cqrs.ErrNilContext)

	var in outbox.Inbox
	_, err = in.Cleanup(ctx, time.Hour)
	assert.ErrorIs(t, err, outbox.ErrConfig)
	inbox := b.inbox(t)
	_, err = inbox.Once(nilCtx, "c", "m", ok)
	assert.ErrorIs(t, err, cqrs.ErrNilContext)
	_, err = inbox.Cleanup(nilCtx, time.Hour)
	assert.ErrorIs(t, err, cqrs.ErrNilContext)

	var sink outbox.JetStreamSink
	_, err = sink.Send(ctx, nil)
	assert.ErrorIs(t, err, outbox.ErrConfig)
	_, err = outbox.NewJetStreamSink(nil, 0)
	assert.ErrorIs(t, err, outbox.ErrConfig)
}
