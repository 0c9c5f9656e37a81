package nats_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// ParcelShipped is the event most of these tests publish.
type ParcelShipped struct {
	cqrs.Event
	Parcel int `json:"parcel"`
}

// InvoicePaid is a second event type.
type InvoicePaid struct {
	cqrs.Event
	Invoice int `json:"invoice"`
}

// renamed declares its own name.
type renamed struct {
	cqrs.Event
	Text string
}

func (renamed) EventName() string { return "orders.renamed" }

// hiddenEvent has a field JSON would leave out.
type hiddenEvent struct {
	cqrs.Event
	secret int
}

// startEventServer runs an embedded NATS server on a loopback port, with
// JetStream storing in a temporary directory when durable.
func startEventServer(t testing.TB, durable bool) *server.Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	if durable {
		opts.JetStream, opts.StoreDir = true, t.TempDir()
	}
	s, err := server.NewServer(opts)
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second), "NATS server did not start")
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// tally counts the deliveries of each parcel to each subscriber name, and
// the deliveries each instance handled.
type tally struct {
	mu         sync.Mutex
	byName     map[string]map[int]int
	byInstance map[string]int
	changed    chan struct{} // signalled after each record
}

func newTally() *tally {
	return &tally{byName: map[string]map[int]int{}, byInstance: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (t *tally) record(name, instance string, parcel int) {
	t.mu.Lock()
	if t.byName[name] == nil {
		t.byName[name] = map[int]int{}
	}
	t.byName[name][parcel]++
	t.byInstance[instance]++
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// subscriber returns the function that records name's deliveries on
// instance.
func (t *tally) subscriber(name, instance string) func(context.Context, ParcelShipped) error {
	return func(_ context.Context, e ParcelShipped) error {
		t.record(name, instance, e.Parcel)
		return nil
	}
}

// instance returns the deliveries instance handled.
func (t *tally) instance(name string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byInstance[name]
}

// has reports whether name has had parcel.
func (t *tally) has(name string, parcel int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byName[name][parcel] > 0
}

// count returns, for name and parcels 1 to n, how many were never
// delivered and how many deliveries were extra.
func (t *tally) count(name string, n int) (lost, duplicated int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p := 1; p <= n; p++ {
		switch c := t.byName[name][p]; {
		case c == 0:
			lost++
		case c > 1:
			duplicated += c - 1
		}
	}
	return lost, duplicated
}

// await waits, at most timeout, until every name has had each of parcels
// 1 to n, and reports whether it happened.
func (t *tally) await(names []string, n int, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		done := true
		for _, name := range names {
			if lost, _ := t.count(name, n); lost > 0 {
				done = false
			}
		}
		if done {
			return true
		}
		select {
		case <-t.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return false
		}
	}
}

// receiver makes a receiver on a connection of its own and stops it with
// the test.
func receiver(t testing.TB, url string, ev cqrsnats.EventConfig, opts ...cqrsnats.Option) *cqrsnats.Receiver {
	t.Helper()
	r, err := cqrsnats.NewReceiver(connect(t, url), ev, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, r.Stop(ctx))
	})
	return r
}

// publisher makes a publisher on a connection of its own.
func publisher(t testing.TB, url string, ev cqrsnats.EventConfig, opts ...cqrsnats.Option) *cqrsnats.Publisher {
	t.Helper()
	p, err := cqrsnats.NewPublisher(connect(t, url), ev, opts...)
	require.NoError(t, err)
	return p
}

// publishParcels publishes parcels from to to, inclusive.
func publishParcels(t testing.TB, p *cqrsnats.Publisher, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := from; i <= to; i++ {
		require.NoError(t, cqrsnats.Publish(ctx, p, ParcelShipped{Parcel: i}))
	}
}

// syncBuffer is a bytes.Buffer for a logger that several goroutines use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestEventsCoreEachNameOnce: three subscriber names, two instances of
// each on connections of their own; each name handles each of 1,000
// events exactly once, and both instances of every name take a share.
func TestEventsCoreEachNameOnce(t *testing.T) {
	const events = 1000
	ns := startEventServer(t, false)
	names := []string{"email", "stock", "analytics"}
	seen := newTally()
	var receivers []*cqrsnats.Receiver
	for _, name := range names {
		for i := range 2 {
			r := receiver(t, ns.ClientURL(), cqrsnats.EventConfig{})
			_, err := cqrsnats.Subscribe(r, name, seen.subscriber(name, fmt.Sprint(name, i)))
			require.NoError(t, err)
			receivers = append(receivers, r)
		}
	}
	p := publisher(t, ns.ClientURL(), cqrsnats.EventConfig{})
	publishParcels(t, p, 1, events)

	require.True(t, seen.await(names, events, 10*time.Second), "not every name got every event")
	// Stopping drains: any extra delivery under way is counted below.
	for _, r := range receivers {
		require.NoError(t, r.Stop(context.Background()))
	}
	for _, name := range names {
		lost, duplicated := seen.count(name, events)
		assert.Zero(t, lost, name)
		assert.Zero(t, duplicated, name)
		for i := range 2 {
			assert.Positive(t, seen.instance(fmt.Sprint(name, i)), "instance %d of %s took no share", i, name)
		}
	}
}

// TestEventsCoreFailureIsLoggedAndCounted: with core NATS a subscriber's
// failure does not reach the publisher; it is logged and counted, and the
// other subscriber names are not affected.
func TestEventsCoreFailureIsLoggedAndCounted(t *testing.T) {
	ns := startEventServer(t, false)
	var logs syncBuffer
	r := receiver(t, ns.ClientURL(), cqrsnats.EventConfig{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	seen := newTally()
	flaky, err := cqrsnats.Subscribe(r, "email", func(_ context.Context, e ParcelShipped) error {
		if e.Parcel%2 == 0 {
			return errors.New("mail server down")
		}
		seen.record("email", "email", e.Parcel)
		return nil
	})
	require.NoError(t, err)
	_, err = cqrsnats.Subscribe(r, "stock", seen.subscriber("stock", "stock"))
	require.NoError(t, err)

	publishParcels(t, publisher(t, ns.ClientURL(), cqrsnats.EventConfig{}), 1, 10)
	require.True(t, seen.await([]string{"stock"}, 10, 5*time.Second))
	require.Eventually(t, func() bool { return flaky.Stats().Handled+flaky.Stats().Failed == 10 }, 5*time.Second, 10*time.Millisecond)

	st := flaky.Stats()
	assert.Equal(t, uint64(5), st.Handled)
	assert.Equal(t, uint64(5), st.Failed)
	assert.Equal(t, uint64(10), st.Received)
	assert.Equal(t, "email", st.Subscriber)
	// The failure is counted before it is logged: wait for the last line.
	require.Eventually(t, func() bool { return strings.Count(logs.String(), "mail server down") >= 5 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, 5, strings.Count(logs.String(), "mail server down"), logs.String())
	lost, duplicated := seen.count("stock", 10)
	assert.Zero(t, lost+duplicated)
}

// TestEventsMalformedAreRefused sends, on the subject of ParcelShipped,
// bytes that are not a ParcelShipped event: garbage, plain JSON without
// the envelope, a truncated envelope, another type's event and a
// ParcelShipped whose JSON is broken. None reaches the subscriber, each
// is counted, nothing crashes, and the events after them arrive. With
// JetStream each is kept as a dead letter.
func TestEventsMalformedAreRefused(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "Core", true: "JetStream"}[durable], func(t *testing.T) {
			ns := startEventServer(t, durable)
			ev := cqrsnats.EventConfig{Durable: durable}
			r := receiver(t, ns.ClientURL(), ev)
			seen := newTally()
			sub, err := cqrsnats.Subscribe(r, "email", seen.subscriber("email", "email"))
			require.NoError(t, err)
			// Capture a real InvoicePaid and a real ParcelShipped as sent.
			raw := connect(t, ns.ClientURL())
			captured := make(chan *natsgo.Msg, 2)
			spy, err := raw.Subscribe("cqrs.>", func(m *natsgo.Msg) {
				if strings.Contains(m.Subject, "stored.event") || strings.HasPrefix(m.Subject, "cqrs.event.") {
					captured <- m
				}
			})
			require.NoError(t, err)
			require.NoError(t, raw.Flush())
			p := publisher(t, ns.ClientURL(), ev)
			_, err = cqrsnats.Subscribe(r, "billing", func(context.Context, InvoicePaid) error { return nil })
			require.NoError(t, err)
			ctx := context.Background()
			require.NoError(t, cqrsnats.Publish(ctx, p, InvoicePaid{Invoice: 1}))
			require.NoError(t, cqrsnats.Publish(ctx, p, ParcelShipped{Parcel: 1}))
			invoice, parcel := <-captured, <-captured
			require.NoError(t, spy.Unsubscribe())
			require.True(t, seen.await([]string{"email"}, 1, 5*time.Second))

			subject := cqrsnats.EventSubject("cqrs", sub.Spec(), durable)
			broken := bytes.Clone(parcel.Data)
			broken[len(broken)-1] = 'x' // the closing brace of the JSON
			bad := [][]byte{
				[]byte("\xff\xfe garbage"),
				[]byte(`{"parcel":2}`),
				{0x01, 0xff},
				invoice.Data,
				broken,
			}
			for _, data := range bad {
				require.NoError(t, raw.Publish(subject, data))
			}
			require.NoError(t, raw.Flush())
			publishParcels(t, p, 2, 3)
			require.True(t, seen.await([]string{"email"}, 3, 5*time.Second))
			require.Eventually(t, func() bool { return sub.Stats().Malformed == uint64(len(bad)) }, 5*time.Second, 10*time.Millisecond)
			// The subscriber records an event before the receiver counts
			// it handled: wait for the count.
			require.Eventually(t, func() bool { return sub.Stats().Handled >= 3 }, 5*time.Second, time.Millisecond)

			st := sub.Stats()
			assert.Equal(t, uint64(3), st.Handled)
			assert.Zero(t, st.Failed)
			lost, duplicated := seen.count("email", 3)
			assert.Zero(t, lost+duplicated)
			if durable {
				require.Eventually(t, func() bool { return sub.Stats().DeadLettered == uint64(len(bad)) }, 5*time.Second, 10*time.Millisecond)
				dead := unhandled(t, ns.ClientURL(), "CQRS_UNHANDLED")
				require.Len(t, dead, len(bad))
				for i, m := range dead {
					assert.Equal(t, "bad_request", m.Header.Get("Nats-Service-Error-Code"))
					assert.Equal(t, "email", m.Header.Get("Cqrs-Subscriber"))
					assert.Equal(t, bad[i], m.Data)
				}
			}
		})
	}
}

// unhandled returns the messages of the dead-letter stream.
func unhandled(t testing.TB, url, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	js, err := jetstream.New(connect(t, url))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

// TestEventsTraceContextTravels: the publisher's trace context reaches
// the subscriber, in both modes.
func TestEventsTraceContextTravels(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "Core", true: "JetStream"}[durable], func(t *testing.T) {
			ns := startEventServer(t, durable)
			ev := cqrsnats.EventConfig{Durable: durable}
			w3c := cqrsnats.WithPropagator(propagation.TraceContext{})
			r := receiver(t, ns.ClientURL(), ev, w3c)
			got := make(chan trace.SpanContext, 1)
			_, err := cqrsnats.Subscribe(r, "audit", func(ctx context.Context, _ ParcelShipped) error {
				got <- trace.SpanContextFromContext(ctx)
				return nil
			})
			require.NoError(t, err)
			sent := trace.NewSpanContext(trace.SpanContextConfig{
				TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
				SpanID:  trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled,
			})
			ctx := trace.ContextWithSpanContext(context.Background(), sent)
			require.NoError(t, cqrsnats.Publish(ctx, publisher(t, ns.ClientURL(), ev, w3c), ParcelShipped{Parcel: 1}))
			select {
			case sc := <-got:
				assert.Equal(t, sent.TraceID(), sc.TraceID())
				assert.Equal(t, sent.SpanID(), sc.SpanID())
				assert.True(t, sc.IsRemote())
			case <-time.After(5 * time.Second):
				t.Fatal("the event did not arrive")
			}
		})
	}
}

// TestEventsForwardEvents: a local publish reaches the subscribers of
// other processes through the forwarding subscriber, whose NATS failure
// is that subscriber's error; a type is forwarded once per bus.
func TestEventsForwardEvents(t *testing.T) {
	ns := startEventServer(t, false)
	r := receiver(t, ns.ClientURL(), cqrsnats.EventConfig{})
	seen := newTally()
	_, err := cqrsnats.Subscribe(r, "email", seen.subscriber("email", "remote"))
	require.NoError(t, err)

	events := cqrs.NewEventBus()
	_, err = cqrs.Subscribe(events, "local", seen.subscriber("local", "local"))
	require.NoError(t, err)
	nc := connect(t, ns.ClientURL())
	p, err := cqrsnats.NewPublisher(nc, cqrsnats.EventConfig{})
	require.NoError(t, err)
	sub, err := cqrsnats.ForwardEvents[ParcelShipped](events, p)
	require.NoError(t, err)
	assert.Equal(t, cqrsnats.ForwarderName, sub.Spec().Subscriber)
	_, err = cqrsnats.ForwardEvents[ParcelShipped](events, p)
	assert.ErrorIs(t, err, cqrs.ErrHandlerExists)

	require.NoError(t, cqrs.Publish(context.Background(), events, ParcelShipped{Parcel: 1}))
	require.True(t, seen.await([]string{"email", "local"}, 1, 5*time.Second))

	nc.Close()
	err = cqrs.Publish(context.Background(), events, ParcelShipped{Parcel: 2})
	var failed *cqrs.SubscriberError
	require.ErrorAs(t, err, &failed)
	assert.Equal(t, cqrsnats.ForwarderName, failed.Subscriber)
	assert.ErrorIs(t, err, cqrsnats.ErrTransport)
	lost, _ := seen.count("local", 2)
	assert.Zero(t, lost, "the local subscriber still got the event")

	_, err = cqrsnats.ForwardEvents[ParcelShipped](events, nil)
	assert.ErrorIs(t, err, cqrs.ErrNilHandler)
	_, err = cqrsnats.ForwardEvents[hiddenEvent](events, p)
	assert.ErrorIs(t, err, cqrsnats.ErrUnexportedFields)
}

// TestEventsBadInput: what cannot work is refused with a clear error, and
// a refused Subscribe leaves nothing behind.
func TestEventsBadInput(t *testing.T) {
	ns := startEventServer(t, false)
	url := ns.ClientURL()
	r := receiver(t, url, cqrsnats.EventConfig{})
	ok := func(context.Context, ParcelShipped) error { return nil }

	_, err := cqrsnats.Subscribe(r, "no spaces", ok)
	assert.ErrorIs(t, err, cqrs.ErrInvalidName)
	_, err = cqrsnats.Subscribe(r, "email", func(context.Context, hiddenEvent) error { return nil })
	assert.ErrorIs(t, err, cqrsnats.ErrUnexportedFields)
	assert.Empty(t, r.Stats(), "a refused Subscribe left a subscription")
	_, err = cqrsnats.Subscribe(r, "email", ok)
	require.NoError(t, err, "the name is free again after a refused Subscribe")
	_, err = cqrsnats.Subscribe(r, "email", ok)
	assert.ErrorIs(t, err, cqrs.ErrHandlerExists)
	_, err = cqrsnats.Subscribe(r, "email", func(context.Context, InvoicePaid) error { return nil })
	assert.NoError(t, err, "one name may take several types")
	_, err = cqrsnats.Subscribe[ParcelShipped](nil, "email", ok)
	assert.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = cqrsnats.Subscribe[ParcelShipped](r, "stock", nil)
	assert.ErrorIs(t, err, cqrs.ErrNilHandler)

	_, err = cqrsnats.NewReceiver(nil, cqrsnats.EventConfig{})
	assert.ErrorIs(t, err, cqrsnats.ErrTransport)
	_, err = cqrsnats.NewReceiver(connect(t, url), cqrsnats.EventConfig{}, cqrsnats.WithPrefix("a.*"))
	assert.ErrorIs(t, err, cqrsnats.ErrInvalidSubject)
	_, err = cqrsnats.NewPublisher(nil, cqrsnats.EventConfig{})
	assert.ErrorIs(t, err, cqrsnats.ErrTransport)
	_, err = cqrsnats.NewPublisher(connect(t, url), cqrsnats.EventConfig{}, cqrsnats.WithPrefix(""))
	assert.ErrorIs(t, err, cqrsnats.ErrInvalidSubject)

	p := publisher(t, url, cqrsnats.EventConfig{}, cqrsnats.WithMaxPayload(64))
	assert.ErrorIs(t, cqrsnats.Publish(context.Background(), p, hiddenEvent{secret: 1}), cqrsnats.ErrUnexportedFields)
	assert.ErrorIs(t, cqrsnats.Publish(context.Background(), (*cqrsnats.Publisher)(nil), ParcelShipped{}), cqrs.ErrNilBus)
	//lint:ignore SA1012 a nil context is what is tested
	assert.ErrorIs(t, cqrsnats.Publish(nil, p, ParcelShipped{}), cqrs.ErrNilContext) //nolint:staticcheck
	type Big struct {
		cqrs.Event
		Text string
	}
	assert.ErrorIs(t, cqrsnats.Publish(context.Background(), p, Big{Text: strings.Repeat("x", 100)}), cqrsnats.ErrPayloadTooLarge)
	err = cqrsnats.Publish(context.Background(), p, renamed{Text: strings.Repeat("x", 100)})
	assert.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
	assert.Contains(t, err.Error(), "event orders.renamed", "errors name the event as the bus does")

	require.NoError(t, r.Stop(context.Background()))
	_, err = cqrsnats.Subscribe(r, "late", ok)
	assert.ErrorIs(t, err, cqrs.ErrClosed)
	assert.Empty(t, r.Stats())
}

// TestEventsSubscriptionStop: after Stop returns the subscriber is never
// called again, and the other subscriptions go on.
func TestEventsSubscriptionStop(t *testing.T) {
	ns := startEventServer(t, false)
	r := receiver(t, ns.ClientURL(), cqrsnats.EventConfig{})
	seen := newTally()
	email, err := cqrsnats.Subscribe(r, "email", seen.subscriber("email", "email"))
	require.NoError(t, err)
	_, err = cqrsnats.Subscribe(r, "stock", seen.subscriber("stock", "stock"))
	require.NoError(t, err)
	p := publisher(t, ns.ClientURL(), cqrsnats.EventConfig{})
	publishParcels(t, p, 1, 5)
	require.True(t, seen.await([]string{"email", "stock"}, 5, 5*time.Second))

	require.NoError(t, email.Stop(context.Background()))
	require.NoError(t, email.Stop(context.Background()), "Stop twice")
	assert.Len(t, r.Stats(), 1)
	publishParcels(t, p, 6, 10)
	require.True(t, seen.await([]string{"stock"}, 10, 5*time.Second))
	assert.Equal(t, 5, seen.instance("email"), "a stopped subscriber was called")
}

// panickyEventCodec is JSON whose Unmarshal panics on parcel 13.
type panickyEventCodec struct{ cqrsnats.JSON }

func (c panickyEventCodec) Unmarshal(data []byte, v any) error {
	if err := c.JSON.Unmarshal(data, v); err != nil {
		return err
	}
	if e, ok := v.(*ParcelShipped); ok && e.Parcel == 13 {
		panic("the codec broke")
	}
	return nil
}

// TestEventsCodecPanicIsRefused: a codec that panics on an event refuses
// that event; the process and the other events go on.
func TestEventsCodecPanicIsRefused(t *testing.T) {
	ns := startEventServer(t, false)
	r := receiver(t, ns.ClientURL(), cqrsnats.EventConfig{}, cqrsnats.WithCodec(panickyEventCodec{}))
	seen := newTally()
	sub, err := cqrsnats.Subscribe(r, "email", seen.subscriber("email", "email"))
	require.NoError(t, err)
	publishParcels(t, publisher(t, ns.ClientURL(), cqrsnats.EventConfig{}), 1, 20)
	require.Eventually(t, func() bool { return sub.Stats().Handled+sub.Stats().Malformed == 20 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, uint64(1), sub.Stats().Malformed)
	lost, duplicated := seen.count("email", 20)
	assert.Equal(t, 1, lost, "only the event the codec panicked on")
	assert.Zero(t, duplicated)
}

// TestEventsStopWaitsForTheHandler: Stop waits for the event being
// handled, bounded by its ctx, and may be called again.
func TestEventsStopWaitsForTheHandler(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "Core", true: "JetStream"}[durable], func(t *testing.T) {
			ns := startEventServer(t, durable)
			ev := cqrsnats.EventConfig{Durable: durable}
			r, err := cqrsnats.NewReceiver(connect(t, ns.ClientURL()), ev)
			require.NoError(t, err)
			entered, release := make(chan struct{}), make(chan struct{})
			_, err = cqrsnats.Subscribe(r, "email", func(context.Context, ParcelShipped) error {
				close(entered)
				<-release
				return nil
			})
			require.NoError(t, err)
			publishParcels(t, publisher(t, ns.ClientURL(), ev), 1, 1)
			<-entered

			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			err = r.Stop(ctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Contains(t, err.Error(), "to email")
			close(release)
			require.NoError(t, r.Stop(context.Background()))
		})
	}
}

// FuzzEventsReceive publishes arbitrary bytes on an event subject: the
// receiver never crashes, and each message is either handled as a
// ParcelShipped (only when it is one) or refused and counted.
func FuzzEventsReceive(f *testing.F) {
	id := "github.com/typedcqrs/dispatch/transport/nats_test.ParcelShipped"
	envelope := func(id, payload string) []byte {
		return append([]byte{0x01, 0x00, 0x00, byte(len(id))}, id+payload...)
	}
	f.Add(envelope(id, `{"parcel":7}`))
	f.Add(envelope(id, `{"parcel":"seven"}`))
	f.Add(envelope(id[:len(id)-1]+"X", `{"parcel":7}`))
	f.Add([]byte(`{"parcel":7}`))
	f.Add([]byte{0x01, 0xff, 0xff})
	f.Add([]byte{0x00})
	f.Add([]byte{})

	ns := startEventServer(f, false)
	r := receiver(f, ns.ClientURL(), cqrsnats.EventConfig{})
	var handled []int
	var mu sync.Mutex
	sub, err := cqrsnats.Subscribe(r, "email", func(_ context.Context, e ParcelShipped) error {
		mu.Lock()
		handled = append(handled, e.Parcel)
		mu.Unlock()
		return nil
	})
	require.NoError(f, err)
	raw := connect(f, ns.ClientURL())
	subject := cqrsnats.EventSubject("cqrs", sub.Spec(), false)

	f.Fuzz(func(t *testing.T, data []byte) {
		before := sub.Stats()
		require.NoError(t, raw.Publish(subject, data))
		require.NoError(t, raw.Flush())
		require.Eventually(t, func() bool { return sub.Stats().Received > before.Received }, 5*time.Second, time.Millisecond)
		require.Eventually(t, func() bool {
			st := sub.Stats()
			return st.Handled+st.Malformed+st.Failed == st.Received
		}, 5*time.Second, time.Millisecond)
		after := sub.Stats()
		assert.Zero(t, after.Failed)
		if after.Handled > before.Handled {
			assert.True(t, isParcelShipped(data, id), "handled something that is not a ParcelShipped: %q", data)
		}
	})
}

// isParcelShipped reports whether data is the envelope of a ParcelShipped
// (0x01, two uvarints, the length of the identity as a uvarint, the
// identity, the JSON), read independently of the package.
func isParcelShipped(data []byte, id string) bool {
	if len(data) == 0 || data[0] != 0x01 {
		return false
	}
	rest := data[1:]
	var size uint64
	for range 3 {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return false
		}
		size, rest = v, rest[n:]
	}
	if size != uint64(len(id)) || len(rest) < len(id) || string(rest[:len(id)]) != id {
		return false
	}
	var e ParcelShipped
	return json.Unmarshal(rest[len(id):], &e) == nil
}

// TestEventsBusStrategyIgnored: an asynchronous strategy in
// EventConfig.Bus does not let an event be acknowledged before its
// subscriber has handled it: a failure is still delivered again.
func TestEventsBusStrategyIgnored(t *testing.T) {
	ns := startEventServer(t, true)
	ev := cqrsnats.EventConfig{Durable: true, BackOff: []time.Duration{time.Millisecond},
		Bus: []cqrs.Option{cqrs.WithStrategy(cqrs.Async())}}
	r := receiver(t, ns.ClientURL(), ev)
	var n atomic.Int32
	sub, err := cqrsnats.Subscribe(r, "email", func(context.Context, ParcelShipped) error {
		if n.Add(1) == 1 {
			return errors.New("first attempt fails")
		}
		return nil
	})
	require.NoError(t, err)
	publishParcels(t, publisher(t, ns.ClientURL(), ev), 1, 1)
	require.Eventually(t, func() bool { return n.Load() == 2 }, 5*time.Second, time.Millisecond, "the failed event was not delivered again")
	require.Eventually(t, func() bool { return sub.Stats().Handled == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, uint64(1), sub.Stats().Failed)
}

// TestEventsPayloadLimitCountsTheEnvelope: an event under WithMaxPayload
// but over the server's max_payload once its envelope and headers are
// added is refused with ErrPayloadTooLarge, not ErrTransport, in both
// modes; the largest event Publish takes arrives, and with JetStream its
// dead letter and its replay fit too. Before, such an event failed as
// ErrTransport (issue #18, item 7).
func TestEventsPayloadLimitCountsTheEnvelope(t *testing.T) {
	const limit = 8 << 10 // the server's max_payload
	type Big struct {
		cqrs.Event
		Text string
	}
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "Core", true: "JetStream"}[durable], func(t *testing.T) {
			opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxPayload: limit}
			if durable {
				opts.JetStream, opts.StoreDir = true, t.TempDir()
			}
			ns, err := server.NewServer(opts)
			require.NoError(t, err)
			go ns.Start()
			require.True(t, ns.ReadyForConnections(10*time.Second))
			t.Cleanup(func() {
				ns.Shutdown()
				ns.WaitForShutdown()
			})
			url := ns.ClientURL()
			ev := cqrsnats.EventConfig{Durable: durable, MaxDeliver: 1}
			r := receiver(t, url, ev)
			var fixed atomic.Bool
			got := make(chan int, 4)
			sub, err := cqrsnats.Subscribe(r, "email", func(_ context.Context, e Big) error {
				if durable && !fixed.Load() {
					return errors.New("mail server down")
				}
				got <- len(e.Text)
				return nil
			})
			require.NoError(t, err)
			p := publisher(t, url, ev)
			ctx := context.Background()

			// Under WithMaxPayload (1 MiB) and under max_payload, but not
			// with the envelope and the headers.
			err = cqrsnats.Publish(ctx, p, Big{Text: strings.Repeat("x", limit-20)})
			require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
			assert.NotErrorIs(t, err, cqrsnats.ErrTransport)
			// The largest event Publish takes.
			size := limit
			for ; size > 0; size-- {
				err = cqrsnats.Publish(ctx, p, Big{Text: strings.Repeat("x", size)})
				if err == nil {
					break
				}
				require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge, "%d bytes", size)
			}
			t.Logf("the largest event: a text of %d bytes, under a max_payload of %d", size, limit)
			if durable {
				assert.Less(t, size, limit-2048, "JetStream keeps room for the dead letter's headers")
				// A stream whose operator bounds its messages: its refusal
				// is ErrPayloadTooLarge too.
				js, err := jetstream.New(connect(t, url))
				require.NoError(t, err)
				_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL_EVENTS", Subjects: []string{"small.stored.>"}, MaxMsgSize: 512})
				require.NoError(t, err)
				err = cqrsnats.Publish(ctx, publisher(t, url, ev, cqrsnats.WithPrefix("small")), Big{Text: strings.Repeat("x", 600)})
				require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
				assert.NotErrorIs(t, err, cqrsnats.ErrTransport)
				require.Eventually(t, func() bool { return sub.Stats().DeadLettered == 1 }, 10*time.Second, 10*time.Millisecond, "the dead letter did not fit")
				fixed.Store(true)
				n, err := cqrsnats.ReplayUnhandled(ctx, connect(t, url), ev, "email")
				require.NoError(t, err)
				assert.Equal(t, 1, n)
			}
			select {
			case n := <-got:
				assert.Equal(t, size, n)
			case <-time.After(10 * time.Second):
				t.Fatal("the largest event did not arrive")
			}
			assert.Zero(t, sub.Stats().Malformed)
		})
	}
}
