package outbox_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	"github.com/typedcqrs/dispatch/outbox"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// captureSink passes batches on to JetStream and keeps a copy of what
// JetStream took.
type captureSink struct {
	next *outbox.JetStreamSink
	mu   sync.Mutex
	msgs []outbox.Message
}

func (s *captureSink) Send(ctx context.Context, msgs []outbox.Message) (int, error) {
	n, err := s.next.Send(ctx, msgs)
	s.mu.Lock()
	s.msgs = append(s.msgs, msgs[:n]...)
	s.mu.Unlock()
	return n, err
}

// sent returns the first message sent on subject.
func (s *captureSink) sent(subject string) (outbox.Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs {
		if m.Subject == subject {
			return m, true
		}
	}
	return outbox.Message{}, false
}

func (s *captureSink) all() []outbox.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]outbox.Message(nil), s.msgs...)
}

// natsMsgOf returns a copy of m as a NATS message, to publish again.
func natsMsgOf(m outbox.Message) *natsgo.Msg {
	h := natsgo.Header{}
	for k, v := range m.Header {
		h[k] = append([]string(nil), v...)
	}
	return &natsgo.Msg{Subject: m.Subject, Header: h, Data: m.Payload}
}

// eventSpec is the spec of OrderPlaced, as transport/nats names its
// subject.
func eventSpec() cqrs.Spec {
	return cqrs.Spec{Kind: cqrs.KindEvent, MessageType: reflect.TypeFor[OrderPlaced]()}
}

// failAfterCommit is an interceptor, outside middleware.Idempotent, that
// counts the deliveries of each message and fails the first after the
// handler and its inbox record have committed: what a consumer that died
// before its acknowledgement looks like to JetStream, which delivers the
// message again.
type failAfterCommit struct {
	mu         sync.Mutex
	deliveries map[string]int // by message ID
}

var errAfterCommit = errors.New("failed after the commit, before the acknowledgement")

func (f *failAfterCommit) interceptor() cqrs.Interceptor {
	return cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			id, _ := cqrs.IdentityOf(ctx)
			f.mu.Lock()
			f.deliveries[id.ID]++
			first := f.deliveries[id.ID] == 1
			f.mu.Unlock()
			if err := next(ctx, c); err != nil || !first {
				return err
			}
			return errAfterCommit
		}
	})
}

func (f *failAfterCommit) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deliveries[id]
}

// TestIdempotentOverNATSRunsEachEffectOnce: a durable command server
// (cqrsnats.ServeDurable) and a JetStream event receiver, each with
// middleware.Idempotent and the SQL inbox, get every message twice: once
// redelivered by JetStream after a delivery that committed and did not
// acknowledge, and once resent with the same Cqrs-Id and another
// Nats-Msg-Id, as a resend past JetStream's duplicate window arrives.
// Each effect (a row written in the inbox's transaction) happens once,
// and the handlers see the identity the outbox wrote: the event's cause
// is the command, and both carry the caller's correlation.
func TestIdempotentOverNATSRunsEachEffectOnce(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		ctx := t.Context()
		orders, emails := b.table(t, "orders"), b.table(t, "emails")
		inbox := b.inbox(t)
		s := startNATS(t, t.TempDir(), -1)
		defer s.Shutdown()
		nc, js := connectNATS(t, s.ClientURL())

		// The command side: ShipOrder writes its order row and publishes
		// OrderPlaced, in the inbox's transaction.
		cmdFaults := &failAfterCommit{deliveries: map[string]int{}}
		var shipped atomic.Int64
		var cmdSeen atomic.Pointer[cqrs.Identity]
		commands := cqrs.NewCommandBus(cqrs.WithInterceptors(cmdFaults.interceptor(), middleware.Idempotent(inbox)))
		require.NoError(t, cqrs.Handle(commands, func(ctx context.Context, c ShipOrder) (cqrs.NoResult, error) {
			tx, ok := outbox.Tx(ctx)
			if !ok {
				return cqrs.NoResult{}, errors.New("no inbox transaction")
			}
			if _, err := tx.ExecContext(ctx, b.insert(orders), c.Order); err != nil {
				return cqrs.NoResult{}, err
			}
			id, _ := cqrs.IdentityOf(ctx)
			cmdSeen.Store(&id)
			shipped.Add(1)
			return cqrs.NoResult{}, outbox.Publish(ctx, b.box, nil, OrderPlaced{Order: c.Order})
		}))
		srv, err := cqrsnats.ServeDurable(ctx, js, commands, cqrsnats.DurableConfig{AckWait: 10 * time.Second, BackOff: []time.Duration{20 * time.Millisecond}})
		require.NoError(t, err)
		defer func() { assert.NoError(t, srv.Stop(context.Background())) }()

		// The event side: a subscriber that writes an e-mail row.
		evtFaults := &failAfterCommit{deliveries: map[string]int{}}
		var mailed atomic.Int64
		var evtSeen atomic.Pointer[cqrs.Identity]
		r, err := cqrsnats.NewReceiver(nc, cqrsnats.EventConfig{
			Durable: true, AckWait: 10 * time.Second, BackOff: []time.Duration{20 * time.Millisecond},
			Bus: []cqrs.Option{cqrs.WithInterceptors(evtFaults.interceptor(), middleware.Idempotent(inbox))},
		})
		require.NoError(t, err)
		defer func() { assert.NoError(t, r.Stop(context.Background())) }()
		_, err = cqrsnats.Subscribe(r, "email", func(ctx context.Context, e OrderPlaced) error {
			tx, ok := outbox.Tx(ctx)
			if !ok {
				return errors.New("no inbox transaction")
			}
			if _, err := tx.ExecContext(ctx, b.insert(emails), e.Order); err != nil {
				return err
			}
			id, _ := cqrs.IdentityOf(ctx)
			evtSeen.Store(&id)
			mailed.Add(1)
			return nil
		})
		require.NoError(t, err)

		next, err := outbox.NewJetStreamSink(js, time.Second)
		require.NoError(t, err)
		sink := &captureSink{next: next}
		relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{PollInterval: 10 * time.Millisecond})
		require.NoError(t, err)
		runRelay(t, relay)

		// The caller enqueues ShipOrder in its own transaction, in the
		// conversation of an HTTP request, say.
		callCtx := cqrs.ContextWithIdentity(ctx, cqrs.Identity{CorrelationID: "request-7"})
		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, outbox.Enqueue(callCtx, b.box, tx, ShipOrder{Order: 7}))
		require.NoError(t, tx.Commit())

		cmdSubject := cqrsnats.DurableSubject("cqrs", cqrs.SpecFor[ShipOrder, cqrs.NoResult]((*cqrs.CommandBus)(nil)))
		evtSubject := cqrsnats.EventSubject("cqrs", eventSpec(), true)
		var cmd, evt outbox.Message
		require.Eventually(t, func() bool {
			var ok1, ok2 bool
			cmd, ok1 = sink.sent(cmdSubject)
			evt, ok2 = sink.sent(evtSubject)
			return ok1 && ok2 && cmdFaults.count(cmd.ID) == 2 && evtFaults.count(evt.ID) == 2
		}, 20*time.Second, 10*time.Millisecond, "each message delivered again after its failed acknowledgement")

		// Resent as the relay sent them, within the duplicate window:
		// JetStream drops them by Nats-Msg-Id.
		for _, m := range []outbox.Message{cmd, evt} {
			ack, err := js.PublishMsg(ctx, natsMsgOf(m))
			require.NoError(t, err)
			require.True(t, ack.Duplicate, "JetStream knows %s by its Nats-Msg-Id", m.Subject)
		}
		// Resent with the same identity and a Nats-Msg-Id JetStream has
		// not seen, as after its duplicate window.
		for _, m := range []outbox.Message{cmd, evt} {
			nm := natsMsgOf(m)
			nm.Header.Set(jetstream.MsgIDHeader, m.ID+".late")
			ack, err := js.PublishMsg(ctx, nm)
			require.NoError(t, err)
			require.False(t, ack.Duplicate, "JetStream stores the late copy")
		}
		require.Eventually(t, func() bool {
			return cmdFaults.count(cmd.ID) == 3 && evtFaults.count(evt.ID) == 3
		}, 20*time.Second, 10*time.Millisecond, "the late copies are delivered")
		require.Eventually(t, func() bool { // and acknowledged: nothing left in the work queue
			info, err := js.Stream(ctx, "CQRS_COMMANDS")
			return err == nil && info.CachedInfo().State.Msgs == 0
		}, 20*time.Second, 10*time.Millisecond)

		assert.EqualValues(t, 1, shipped.Load(), "the command's handler ran once in 3 deliveries")
		assert.EqualValues(t, 1, mailed.Load(), "the subscriber ran once in 3 deliveries")
		assert.Equal(t, 1, b.count(t, orders), "one order row")
		assert.Equal(t, 1, b.count(t, emails), "one e-mail row")
		assert.Equal(t, 2, b.count(t, b.cfg.InboxTable), "one inbox record per consumer and message")
		lag, err := b.box.Lag(ctx)
		require.NoError(t, err)
		assert.Zero(t, lag.Pending)
		assert.Len(t, sink.all(), 2, "the relay sent the command and the one event the handler published")

		// The identities, from the outbox to the handlers.
		for _, m := range []outbox.Message{cmd, evt} {
			assert.Equal(t, m.ID, m.Header[cqrsnats.HeaderID][0])
			assert.Equal(t, m.ID, m.Header[jetstream.MsgIDHeader][0], "Nats-Msg-Id is the ID")
		}
		assert.Equal(t, cqrs.Identity{ID: cmd.ID, CorrelationID: "request-7"}, *cmdSeen.Load(), "the command handler's identity")
		assert.Equal(t, cqrs.Identity{ID: evt.ID, CorrelationID: "request-7", CausationID: cmd.ID}, *evtSeen.Load(),
			"the subscriber's identity: caused by the command, in its conversation")
	})
}

// table makes a business table of the tests named name_<the outbox's>,
// with no key: a row inserted twice is there twice, so that a handler
// that runs twice shows.
func (b *backend) table(t testing.TB, name string) string {
	t.Helper()
	table := name + "_" + b.cfg.Table
	_, err := b.db.Exec("CREATE TABLE " + table + " (id integer NOT NULL)")
	require.NoError(t, err)
	return table
}

// insert returns the statement that inserts an id into table.
func (b *backend) insert(table string) string {
	if b.name == "sqlite" {
		return "INSERT INTO " + table + " (id) VALUES (?)"
	}
	return "INSERT INTO " + table + " (id) VALUES ($1)"
}
