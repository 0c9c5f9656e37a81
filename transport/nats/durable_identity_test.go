package nats_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// identities records the identity each delivery of a command was handled
// with, and that of a message its handler would send.
type identities struct {
	mu   sync.Mutex
	seen []cqrs.Identity
	sent []cqrs.Identity
}

func (r *identities) record(ctx context.Context) int {
	id, ok := cqrs.IdentityOf(ctx)
	if !ok {
		id = cqrs.Identity{ID: "none"}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, id)
	r.sent = append(r.sent, cqrs.NextIdentity(ctx))
	return len(r.seen)
}

func (r *identities) await(t *testing.T, n int) []cqrs.Identity {
	t.Helper()
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.seen) >= n
	}, 10*time.Second, 10*time.Millisecond, "%d deliveries", n)
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cqrs.Identity(nil), r.seen...)
}

// workQueueMsgs returns the commands the default work queue holds.
func workQueueMsgs(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, "CQRS_COMMANDS")
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

// An enqueued command carries its identity: stored with it, with the ID
// as its Nats-Msg-Id so that the same Enqueue sent again is kept once;
// given to the handler on every delivery; inherited by what the handler
// sends.
func TestDurableCommandsCarryTheirIdentity(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{MaxDeliver: 3, BackOff: []time.Duration{10 * time.Millisecond}}
	id := cqrs.Identity{ID: cqrs.NewID(), CorrelationID: "request-7"}
	require.NoError(t, cqrsnats.Enqueue(cqrs.ContextWithIdentity(ctx, id), js, Ship{Parcel: 1}, cfg))
	require.NoError(t, cqrsnats.Enqueue(cqrs.ContextWithIdentity(ctx, id), js, Ship{Parcel: 1}, cfg), "sent again")
	require.NoError(t, cqrsnats.Enqueue(ctx, js, Ship{Parcel: 2}, cfg))
	require.NoError(t, cqrsnats.Enqueue(ctx, js, Ship{Parcel: 3}, cfg))

	stored := workQueueMsgs(t, js)
	require.Len(t, stored, 3, "the command sent again is kept once")
	assert.Equal(t, id.ID, stored[0].Header.Get(cqrsnats.HeaderID))
	assert.Equal(t, "request-7", stored[0].Header.Get(cqrsnats.HeaderCorrelationID))
	assert.Equal(t, id.ID, stored[0].Header.Get(jetstream.MsgIDHeader))
	for _, m := range stored[1:] { // from a plain context: a new conversation each
		got := m.Header.Get(cqrsnats.HeaderID)
		assert.Len(t, got, 36)
		assert.Equal(t, got, m.Header.Get(jetstream.MsgIDHeader))
		assert.Empty(t, m.Header.Get(cqrsnats.HeaderCorrelationID), "a first message's correlation, its own ID, is left out")
	}
	assert.NotEqual(t, stored[1].Header.Get(cqrsnats.HeaderID), stored[2].Header.Get(cqrsnats.HeaderID))

	r := &identities{}
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(ctx context.Context, c Ship) (cqrs.NoResult, error) {
		if c.Parcel == 1 && r.record(ctx) == 1 {
			return cqrs.NoResult{}, errors.New("downstream down") // delivered again
		}
		return cqrs.NoResult{}, nil
	})))
	serveCommands(t, js, bus, cfg)
	seen := r.await(t, 2)
	require.Len(t, seen, 2)
	for i, got := range seen {
		assert.Equal(t, cqrs.Identity{ID: id.ID, CorrelationID: "request-7"}, got, "delivery %d", i+1)
		sent := r.sent[i]
		assert.Equal(t, "request-7", sent.CorrelationID, "what the handler sends joins the conversation")
		assert.Equal(t, id.ID, sent.CausationID, "and names the command as its cause")
	}
}

// A dead letter keeps its command's identity and is keyed by it; a
// replay stores the command again under the same identity, marked with
// its replays, so that the handler sees the same ID before and after.
func TestDurableDeadLettersKeepTheIdentity(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{MaxDeliver: 1}
	id := cqrs.Identity{ID: cqrs.NewID(), CorrelationID: "request-8", CausationID: "cause-8"}
	r := &identities{}
	var mended sync.Map
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(ctx context.Context, c Ship) (cqrs.NoResult, error) {
		r.record(ctx)
		if _, ok := mended.Load(c.Parcel); !ok {
			return cqrs.NoResult{}, middleware.Permanent(errors.New("no address"))
		}
		return cqrs.NoResult{}, nil
	})))
	stop := serveCommands(t, js, bus, cfg)
	require.NoError(t, cqrsnats.Enqueue(cqrs.ContextWithIdentity(ctx, id), js, Ship{Parcel: 1}, cfg))
	awaitDeadLetters(t, js, 1)
	letter := deadLetters(t, js)[0]
	assert.Equal(t, id.ID, letter.Header.Get(cqrsnats.HeaderID))
	assert.Equal(t, "request-8", letter.Header.Get(cqrsnats.HeaderCorrelationID))
	assert.Equal(t, "cause-8", letter.Header.Get(cqrsnats.HeaderCausationID))
	assert.Equal(t, id.ID+".dead.0", letter.Header.Get(jetstream.MsgIDHeader))

	// Replayed while nobody serves: the work queue holds the command
	// again, with its identity and none of the dead letter's headers.
	stop()
	n, err := cqrsnats.ReplayDeadLetters[Ship](ctx, js, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	stored := workQueueMsgs(t, js)
	require.Len(t, stored, 1)
	assert.Equal(t, id.ID, stored[0].Header.Get(cqrsnats.HeaderID))
	assert.Equal(t, "request-8", stored[0].Header.Get(cqrsnats.HeaderCorrelationID))
	assert.Equal(t, "cause-8", stored[0].Header.Get(cqrsnats.HeaderCausationID))
	assert.Equal(t, "1", stored[0].Header.Get("Cqrs-Replays"))
	assert.Equal(t, id.ID+".replay.1", stored[0].Header.Get(jetstream.MsgIDHeader))
	for _, h := range []string{"Nats-Service-Error-Code", "Nats-Service-Error", "Cqrs-Subject", "Cqrs-Deliveries"} {
		assert.Empty(t, stored[0].Header.Get(h), h)
	}

	// It fails again: the new letter has a key of its own, so it is kept.
	serveCommands(t, js, bus, cfg)
	awaitDeadLetters(t, js, 1)
	letter = deadLetters(t, js)[0]
	assert.Equal(t, id.ID+".dead.1", letter.Header.Get(jetstream.MsgIDHeader))
	assert.Equal(t, "1", letter.Header.Get("Cqrs-Replays"))

	mended.Store(1, true)
	n, err = cqrsnats.ReplayDeadLetters[Ship](ctx, js, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	for i, got := range r.await(t, 3) {
		assert.Equal(t, id, got, "delivery %d", i+1)
	}
	assertDrained(t, js, "CQRS_COMMANDS")
}

// A command another publisher stored without an identity (plain `nats
// pub`) is handled with its Nats-Msg-Id as its ID, or with a new ID if it
// has none; its dead letter keeps the ID it was last handled with.
func TestDurableForeignCommandsGetAnIdentity(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{MaxDeliver: 1}
	r := &identities{}
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(ctx context.Context, c Ship) (cqrs.NoResult, error) {
		r.record(ctx)
		return cqrs.NoResult{}, middleware.Permanent(errors.New("no address"))
	})))
	serveCommands(t, js, bus, cfg) // makes the stream
	_, err := js.PublishMsg(ctx, &natsgo.Msg{Subject: durableSubjectOf[Ship](), Data: []byte(`{"Parcel":1}`),
		Header: natsgo.Header{jetstream.MsgIDHeader: {"order-1"}}})
	require.NoError(t, err)
	_, err = js.Publish(ctx, durableSubjectOf[Ship](), []byte(`{"Parcel":2}`))
	require.NoError(t, err)

	seen := r.await(t, 2)
	assert.Equal(t, "order-1", seen[0].ID)
	assert.Len(t, seen[1].ID, 36, "a new ID")
	awaitDeadLetters(t, js, 2)
	dead := deadLetters(t, js)
	byParcel := map[string]*jetstream.RawStreamMsg{}
	for _, m := range dead {
		byParcel[string(m.Data)] = m
	}
	assert.Equal(t, "order-1", byParcel[`{"Parcel":1}`].Header.Get(cqrsnats.HeaderID))
	assert.Equal(t, "order-1.dead.0", byParcel[`{"Parcel":1}`].Header.Get(jetstream.MsgIDHeader))
	assert.Equal(t, seen[1].ID, byParcel[`{"Parcel":2}`].Header.Get(cqrsnats.HeaderID))
	assert.True(t, strings.HasPrefix(byParcel[`{"Parcel":2}`].Header.Get(jetstream.MsgIDHeader), seen[1].ID))
}
