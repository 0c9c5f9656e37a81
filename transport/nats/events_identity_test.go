package nats_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// eventIdentities records the identity each delivery of each parcel carried,
// by subscriber name.
type eventIdentities struct {
	mu  sync.Mutex
	got map[string][]cqrs.Identity // name/parcel → one per delivery
}

func newEventIdentities() *eventIdentities {
	return &eventIdentities{got: map[string][]cqrs.Identity{}}
}

func (ids *eventIdentities) record(ctx context.Context, name string, parcel int) {
	id, _ := cqrs.IdentityOf(ctx)
	ids.mu.Lock()
	defer ids.mu.Unlock()
	key := fmt.Sprint(name, "/", parcel)
	ids.got[key] = append(ids.got[key], id)
}

func (ids *eventIdentities) of(name string, parcel int) []cqrs.Identity {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	return append([]cqrs.Identity(nil), ids.got[fmt.Sprint(name, "/", parcel)]...)
}

// spy records the messages published under the prefix cqrs, with their
// headers.
func spy(t testing.TB, url string) (<-chan *natsgo.Msg, func()) {
	t.Helper()
	raw := connect(t, url)
	got := make(chan *natsgo.Msg, 64)
	sub, err := raw.Subscribe("cqrs.>", func(m *natsgo.Msg) {
		if strings.HasPrefix(m.Subject, "cqrs.event.") || strings.HasPrefix(m.Subject, "cqrs.stored.") || strings.HasPrefix(m.Subject, "cqrs.unhandled.") {
			got <- m
		}
	})
	require.NoError(t, err)
	require.NoError(t, raw.Flush())
	return got, func() { _ = sub.Unsubscribe() }
}

// TestEventsIdentityTravels: an event's identity, set once when it is
// published, is what every subscriber name reads with cqrs.IdentityOf, on
// every delivery, in both modes; it travels in the Cqrs-Id headers, and
// with JetStream as the Nats-Msg-Id, so that an event published twice
// with one identity is kept once. An event published by a subscriber
// joins the conversation of the one it handles (issue #18, item 4, and
// issue #19).
func TestEventsIdentityTravels(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "Core", true: "JetStream"}[durable], func(t *testing.T) {
			ns := startEventServer(t, durable)
			url := ns.ClientURL()
			ev := cqrsnats.EventConfig{Durable: durable, BackOff: []time.Duration{time.Millisecond}}
			r := receiver(t, url, ev)
			ids := newEventIdentities()
			p := publisher(t, url, ev)
			var failedOnce sync.Once
			done := make(chan struct{}, 8)
			_, err := cqrsnats.Subscribe(r, "email", func(ctx context.Context, e ParcelShipped) error {
				ids.record(ctx, "email", e.Parcel)
				if durable && e.Parcel == 1 {
					var fail bool
					failedOnce.Do(func() { fail = true })
					if fail {
						return errors.New("first delivery fails") // JetStream delivers it again
					}
				}
				done <- struct{}{}
				return nil
			})
			require.NoError(t, err)
			_, err = cqrsnats.Subscribe(r, "stock", func(ctx context.Context, e ParcelShipped) error {
				ids.record(ctx, "stock", e.Parcel)
				if e.Parcel == 1 {
					// An event this subscriber publishes joins the conversation.
					if err := cqrsnats.Publish(ctx, p, ParcelShipped{Parcel: 2}); err != nil {
						return err
					}
				}
				done <- struct{}{}
				return nil
			})
			require.NoError(t, err)
			sent, stopSpying := spy(t, url)
			defer stopSpying()

			preset := cqrs.Identity{ID: cqrs.NewID(), CorrelationID: "request-42"}
			ctx := cqrs.ContextWithIdentity(context.Background(), preset)
			require.NoError(t, cqrsnats.Publish(ctx, p, ParcelShipped{Parcel: 1}))
			for range 4 { // parcels 1 and 2 to email and stock
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("the events did not arrive")
				}
			}
			for _, name := range []string{"email", "stock"} {
				got := ids.of(name, 1)
				require.NotEmpty(t, got, name)
				for _, id := range got {
					assert.Equal(t, preset.ID, id.ID, name)
					assert.Equal(t, preset.CorrelationID, id.CorrelationID, name)
				}
			}
			if durable {
				assert.Len(t, ids.of("email", 1), 2, "delivered again after its failure, with the same identity")
			}
			second := ids.of("email", 2)
			require.Len(t, second, 1)
			assert.NotEqual(t, preset.ID, second[0].ID, "a new event has a new ID")
			assert.Equal(t, preset.ID, second[0].CausationID, "caused by the event its publisher handled")
			assert.Equal(t, preset.CorrelationID, second[0].CorrelationID, "in the same conversation")
			assert.Equal(t, second, ids.of("stock", 2))

			m := <-sent
			assert.Equal(t, preset.ID, m.Header.Get(cqrsnats.HeaderID))
			assert.Equal(t, preset.CorrelationID, m.Header.Get(cqrsnats.HeaderCorrelationID))
			if durable {
				assert.Equal(t, preset.ID, m.Header.Get(jetstream.MsgIDHeader))
				// The same identity published again is kept once.
				require.NoError(t, cqrsnats.Publish(cqrs.ContextWithIdentity(context.Background(), preset), p, ParcelShipped{Parcel: 1}))
				require.NoError(t, cqrsnats.Publish(context.Background(), p, ParcelShipped{Parcel: 3}))
				for range 2 { // parcel 3 to both names: parcel 1 came before it, if at all
					<-done
				}
				assert.Len(t, ids.of("stock", 1), 1, "the event published twice was handled twice")
			} else {
				assert.Empty(t, m.Header.Get(jetstream.MsgIDHeader))
			}
		})
	}
}

// TestEventsIdentityDeadLetterAndReplay: a dead letter keeps the event's
// identity headers and is stored under the key of a dead letter; its
// replay reaches the subscriber with the event's identity, stored under
// the key of a first replay.
func TestEventsIdentityDeadLetterAndReplay(t *testing.T) {
	ns := startEventServer(t, true)
	url := ns.ClientURL()
	ev := cqrsnats.EventConfig{Durable: true, MaxDeliver: 1}
	r := receiver(t, url, ev)
	ids := newEventIdentities()
	var fixed atomic.Bool
	sub, err := cqrsnats.Subscribe(r, "email", func(ctx context.Context, e ParcelShipped) error {
		ids.record(ctx, "email", e.Parcel)
		if !fixed.Load() {
			return errors.New("mail server down")
		}
		return nil
	})
	require.NoError(t, err)
	preset := cqrs.Identity{ID: cqrs.NewID(), CorrelationID: "order-7", CausationID: "place-7"}
	require.NoError(t, cqrsnats.Publish(cqrs.ContextWithIdentity(context.Background(), preset), publisher(t, url, ev), ParcelShipped{Parcel: 1}))
	require.Eventually(t, func() bool { return sub.Stats().DeadLettered == 1 }, 10*time.Second, 10*time.Millisecond)
	dead := unhandled(t, url, "CQRS_UNHANDLED")
	require.Len(t, dead, 1)
	assert.Equal(t, preset.ID, dead[0].Header.Get(cqrsnats.HeaderID))
	assert.Equal(t, preset.CorrelationID, dead[0].Header.Get(cqrsnats.HeaderCorrelationID))
	assert.Equal(t, preset.CausationID, dead[0].Header.Get(cqrsnats.HeaderCausationID))
	assert.Equal(t, preset.ID+".dead.0", dead[0].Header.Get(jetstream.MsgIDHeader))

	fixed.Store(true)
	sent, stopSpying := spy(t, url)
	defer stopSpying()
	n, err := cqrsnats.ReplayUnhandled(context.Background(), connect(t, url), ev, "email")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Eventually(t, func() bool { return sub.Stats().Handled == 1 }, 10*time.Second, 10*time.Millisecond)
	got := ids.of("email", 1)
	require.Len(t, got, 2)
	assert.Equal(t, preset, got[1], "the replay has the event's identity")
	m := <-sent
	assert.Contains(t, m.Subject, "cqrs.stored.replay.email.")
	assert.Equal(t, "1", m.Header.Get("Cqrs-Replays"))
	assert.Equal(t, preset.ID+".replay.1", m.Header.Get(jetstream.MsgIDHeader))
	assert.Empty(t, m.Header.Get("Nats-Service-Error"), "the letter's own headers stay behind")
}

// TestEventsIdentityForwarded: ForwardEvents carries on the event its
// local publish was given, with that event's identity: the local and the
// remote subscribers read the same.
func TestEventsIdentityForwarded(t *testing.T) {
	ns := startEventServer(t, false)
	url := ns.ClientURL()
	r := receiver(t, url, cqrsnats.EventConfig{})
	ids := newEventIdentities()
	arrived := make(chan struct{})
	_, err := cqrsnats.Subscribe(r, "email", func(ctx context.Context, e ParcelShipped) error {
		ids.record(ctx, "remote", e.Parcel)
		close(arrived)
		return nil
	})
	require.NoError(t, err)
	events := cqrs.NewEventBus(cqrs.WithIdentity())
	_, err = cqrs.Subscribe(events, "local", func(ctx context.Context, e ParcelShipped) error {
		ids.record(ctx, "local", e.Parcel)
		return nil
	})
	require.NoError(t, err)
	_, err = cqrsnats.ForwardEvents[ParcelShipped](events, publisher(t, url, cqrsnats.EventConfig{}))
	require.NoError(t, err)
	require.NoError(t, cqrs.Publish(context.Background(), events, ParcelShipped{Parcel: 1}))
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the event did not arrive")
	}
	local, remote := ids.of("local", 1), ids.of("remote", 1)
	require.Len(t, local, 1)
	require.Len(t, remote, 1)
	assert.NotEmpty(t, local[0].ID)
	assert.Equal(t, local[0], remote[0])
}

// TestEventsIdentityOfForeignMessages: a message another program put on
// an event's subject without Cqrs-Id has the identity of its Nats-Msg-Id,
// or else a new one.
func TestEventsIdentityOfForeignMessages(t *testing.T) {
	ns := startEventServer(t, true)
	url := ns.ClientURL()
	ev := cqrsnats.EventConfig{Durable: true}
	r := receiver(t, url, ev)
	ids := newEventIdentities()
	sub, err := cqrsnats.Subscribe(r, "email", func(ctx context.Context, e ParcelShipped) error {
		ids.record(ctx, "email", e.Parcel)
		return nil
	})
	require.NoError(t, err)
	// A real event's bytes, as another program would copy them.
	sent, stopSpying := spy(t, url)
	require.NoError(t, cqrsnats.Publish(context.Background(), publisher(t, url, ev), ParcelShipped{Parcel: 1}))
	data := (<-sent).Data
	stopSpying()
	require.Eventually(t, func() bool { return sub.Stats().Handled == 1 }, 10*time.Second, 10*time.Millisecond)

	js, err := jetstream.New(connect(t, url))
	require.NoError(t, err)
	subject := cqrsnats.EventSubject("cqrs", sub.Spec(), true)
	foreign := func(parcel int, msgID string) {
		payload := strings.Replace(string(data), `"parcel":1`, fmt.Sprint(`"parcel":`, parcel), 1)
		m := &natsgo.Msg{Subject: subject, Data: []byte(payload), Header: natsgo.Header{}}
		if msgID != "" {
			m.Header.Set(jetstream.MsgIDHeader, msgID)
		}
		_, err := js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
	}
	foreign(2, "order-7-shipped")
	foreign(3, "")
	require.Eventually(t, func() bool { return sub.Stats().Handled == 3 }, 10*time.Second, 10*time.Millisecond)
	require.Len(t, ids.of("email", 2), 1)
	assert.Equal(t, "order-7-shipped", ids.of("email", 2)[0].ID)
	require.Len(t, ids.of("email", 3), 1)
	assert.NotEmpty(t, ids.of("email", 3)[0].ID)
}
