package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// identityOf returns the "identity" group of a JSON record, and whether it
// has one.
func identityOf(rec map[string]any) (map[string]any, bool) {
	id, ok := rec["identity"].(map[string]any)
	return id, ok
}

// TestLoggingIdentity: a dispatch that carries an identity is logged with
// it, as one group of its non-empty fields; one that carries none is
// logged without.
func TestLoggingIdentity(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	bus, _ := jobBus(t, middleware.Logging(middleware.LoggingConfig{Logger: jsonLogger(&buf, slog.LevelInfo)}))

	_, err := runCtx(cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-1", CorrelationID: "c-1"}), bus, Job{})
	require.NoError(t, err)
	_, err = runCtx(cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-2", CorrelationID: "c-1", CausationID: "m-1"}), bus, Job{Do: "fail"})
	require.ErrorIs(t, err, errJob)
	_, err = run(bus, Job{})
	require.NoError(t, err)

	recs := records(t, &buf)
	require.Len(t, recs, 3)
	id, ok := identityOf(recs[0])
	require.True(t, ok, "%v", recs[0])
	assert.Equal(t, map[string]any{"id": "m-1", "correlation_id": "c-1"}, id, "no empty causation_id")
	id, ok = identityOf(recs[1])
	require.True(t, ok, "%v", recs[1])
	assert.Equal(t, map[string]any{"id": "m-2", "correlation_id": "c-1", "causation_id": "m-1"}, id, "on a failure too")
	assert.Equal(t, "job failed", recs[1]["error"])
	assert.NotContains(t, recs[2], "identity", "a dispatch with no identity")
}

// TestLoggingIdentityOfEveryKind: the identity is logged for a message a
// handler sends (with its cause), on a bus that gives every message one,
// for an event's subscribers, a stream, and by LoggingFor and Recovery.
func TestLoggingIdentityOfEveryKind(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := jsonLogger(&buf, slog.LevelInfo)
	logging := middleware.Logging(middleware.LoggingConfig{Logger: logger})

	// A bus that gives every message an identity; its handler publishes an
	// event, which inherits the conversation.
	events := cqrs.NewEventBus(cqrs.WithInterceptors(logging))
	_, err := cqrs.Subscribe(events, "mail", func(context.Context, logRotated) error { return nil })
	require.NoError(t, err)
	commands := cqrs.NewCommandBus(cqrs.WithIdentity(), cqrs.WithInterceptors(logging))
	var sent cqrs.Identity
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[Job, Done](func(ctx context.Context, _ Job) (Done, error) {
		sent, _ = cqrs.IdentityOf(ctx)
		return Done{}, cqrs.Publish(ctx, events, logRotated{File: "app.log"})
	})))
	_, err = run(commands, Job{})
	require.NoError(t, err)

	recs := records(t, &buf)
	require.Len(t, recs, 2)
	event, ok := identityOf(recs[0])
	require.True(t, ok, "the subscriber's record: %v", recs[0])
	assert.Equal(t, "mail", recs[0]["subscriber"])
	assert.Equal(t, sent.ID, event["causation_id"], "the event was sent by the command's handler")
	assert.Equal(t, sent.CorrelationID, event["correlation_id"])
	command, ok := identityOf(recs[1])
	require.True(t, ok, "the command's record: %v", recs[1])
	assert.Equal(t, map[string]any{"id": sent.ID, "correlation_id": sent.ID}, command, "a new conversation")
	assert.Len(t, sent.ID, 36)

	// A stream, LoggingFor and Recovery.
	buf.Reset()
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(logging))
	require.NoError(t, cqrs.HandleStream(queries, func(_ context.Context, _ tailLog, yield func(string) bool) error {
		yield("line")
		return nil
	}))
	typed := cqrs.NewQueryBus()
	j := &jobs{}
	require.NoError(t, cqrs.Register(typed, cqrs.HandlerFunc[Job, Done](j.handle),
		middleware.LoggingFor[Job, Done](typed, middleware.LoggingConfig{Logger: logger})))
	recovered := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Recovery(middleware.RecoveryConfig{Logger: logger})))
	require.NoError(t, cqrs.Register(recovered, cqrs.HandlerFunc[Job, Done](j.handle)))

	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "s-1", CorrelationID: "c-9"})
	for _, err := range cqrs.Stream(ctx, queries, tailLog{}) {
		require.NoError(t, err)
	}
	_, err = runCtx(cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "t-1", CorrelationID: "c-9"}), typed, Job{})
	require.NoError(t, err)
	_, err = runCtx(cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "p-1", CorrelationID: "c-9"}), recovered, Job{Do: "panic"})
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)

	recs = records(t, &buf)
	require.Len(t, recs, 3)
	for i, want := range []string{"s-1", "t-1", "p-1"} {
		id, ok := identityOf(recs[i])
		require.True(t, ok, "%v", recs[i])
		assert.Equal(t, map[string]any{"id": want, "correlation_id": "c-9"}, id)
	}
	assert.Equal(t, float64(1), recs[0]["items"])
	assert.Equal(t, "cqrs: panic recovered", recs[2]["msg"])
}

// TestLoggingIdentityCostsNothingWhenOff: with the logger's level above
// every level the interceptor logs at, a dispatch that carries an
// identity allocates no more than the bus itself does for it.
func TestLoggingIdentityCostsNothingWhenOff(t *testing.T) {
	var buf bytes.Buffer
	bare, _ := jobBus(t)
	quiet, _ := jobBus(t, middleware.Logging(middleware.LoggingConfig{Logger: jsonLogger(&buf, slog.LevelError+4)}))
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{CorrelationID: "c-1"})
	allocs := func(bus cqrs.Bus) float64 {
		return testing.AllocsPerRun(100, func() {
			if _, err := runCtx(ctx, bus, Job{Do: "fail"}); !errors.Is(err, errJob) {
				t.Fatal(err)
			}
		})
	}
	assert.Equal(t, allocs(bare), allocs(quiet))
	assert.Zero(t, buf.Len())
}
