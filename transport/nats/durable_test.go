package nats_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// startJetStream runs an embedded NATS server with JetStream, storing in a
// temporary directory, and connects to it.
func startJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	return process(t, startJetStreamServer(t))
}

// Ship is a durable command.
type Ship struct{ Parcel int }

// shipper handles Ship, failing each parcel's first fails attempts.
type shipper struct {
	fails    int
	mu       sync.Mutex
	attempts map[int]int
	shipped  map[int]int
	done     chan int
}

func newShipper(fails int) *shipper {
	return &shipper{fails: fails, attempts: map[int]int{}, shipped: map[int]int{}, done: make(chan int, 1000)}
}

func (s *shipper) handle(_ context.Context, c Ship) (cqrs.NoResult, error) {
	s.mu.Lock()
	s.attempts[c.Parcel]++
	n := s.attempts[c.Parcel]
	s.mu.Unlock()
	if n <= s.fails {
		panic("the handler crashed") // recovered by the bus, then redelivered
	}
	s.mu.Lock()
	s.shipped[c.Parcel]++
	s.mu.Unlock()
	s.done <- c.Parcel
	return cqrs.NoResult{}, nil
}

// await waits for n successful shipments.
func (s *shipper) await(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Fatal("a command was lost")
		}
	}
}

func serveDurable(t *testing.T, js jetstream.JetStream, s *shipper, cfg cqrsnats.DurableConfig) {
	t.Helper()
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](s.handle)))
	serveCommands(t, js, bus, cfg)
}

func TestDurableCommandsWaitForAHandler(t *testing.T) {
	js := startJetStream(t)
	// Nobody serves Ship yet: the commands wait in the stream.
	enqueueAll(t, js, 20, parcel, shipKey, cqrsnats.DurableConfig{})
	s := newShipper(0)
	serveDurable(t, js, s, cqrsnats.DurableConfig{})
	s.await(t, 20)
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range 20 {
		assert.Equal(t, 1, s.shipped[p], "parcel %d shipped once", p)
	}
}

func TestDurableCommandsAreRedeliveredAfterACrash(t *testing.T) {
	js := startJetStream(t)
	s := newShipper(2) // every parcel's first two attempts crash
	cfg := cqrsnats.DurableConfig{MaxDeliver: 5, BackOff: []time.Duration{10 * time.Millisecond}}
	serveDurable(t, js, s, cfg)
	enqueueAll(t, js, 10, parcel, shipKey, cfg)
	s.await(t, 10)
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range 10 {
		assert.Equal(t, 3, s.attempts[p], "parcel %d: two crashes, then success", p)
		assert.Equal(t, 1, s.shipped[p])
	}
}

// durableSubjectOf returns the subject of command type C's durable
// commands, and deadSubjectOf that of its dead letters, with the default
// prefix and dead-letter subject.
func durableSubjectOf[C any]() string {
	return cqrsnats.DurableSubject("cqrs", cqrs.SpecFor[C, cqrs.NoResult]((*cqrs.CommandBus)(nil)))
}

func deadSubjectOf[C any]() string {
	return "cqrs.dead." + strings.TrimPrefix(durableSubjectOf[C](), "cqrs.durable.")
}

// deadLetters returns the dead letters kept in the default dead-letter
// stream, oldest first.
func deadLetters(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, "CQRS_DEAD")
	require.NoError(t, err, "no dead-letter stream")
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

// Commands that keep failing while nobody listens for dead letters are
// kept in the dead-letter stream, with why they died, and come back to
// the handlers with ReplayDeadLetters once the cause is mended.
func TestDurableDeadLettersAreKeptAndReplayed(t *testing.T) {
	js := startJetStream(t)
	s := newShipper(3) // each parcel's first three attempts crash
	cfg := cqrsnats.DurableConfig{MaxDeliver: 3, BackOff: []time.Duration{10 * time.Millisecond}}
	serveDurable(t, js, s, cfg)
	enqueueAll(t, js, 10, parcel, shipKey, cfg)
	var dead []*jetstream.RawStreamMsg
	require.Eventually(t, func() bool {
		dead = deadLetters(t, js)
		return len(dead) == 10
	}, 10*time.Second, 20*time.Millisecond, "dead letters kept")
	parcels := map[string]bool{}
	for _, m := range dead {
		parcels[string(m.Data)] = true
		assert.Equal(t, deadSubjectOf[Ship](), m.Subject)
		assert.Equal(t, "panic", m.Header.Get("Nats-Service-Error-Code"))
		assert.Contains(t, m.Header.Get("Nats-Service-Error"), "the handler crashed")
		assert.Equal(t, durableSubjectOf[Ship](), m.Header.Get("Cqrs-Subject"))
		assert.Equal(t, "3", m.Header.Get("Cqrs-Deliveries"))
	}
	assert.Len(t, parcels, 10, "one dead letter per command")
	assertDrained(t, js, "CQRS_COMMANDS")
	s.mu.Lock()
	assert.Empty(t, s.shipped)
	s.mu.Unlock()

	// The handler is mended (its fourth attempt succeeds): replay.
	n, err := cqrsnats.ReplayDeadLetters[Ship](context.Background(), js, cfg)
	require.NoError(t, err)
	assert.Equal(t, 10, n)
	s.await(t, 10)
	assert.Empty(t, deadLetters(t, js), "replayed dead letters are removed")
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range 10 {
		assert.Equal(t, 1, s.shipped[p], "parcel %d shipped once", p)
	}

	// Nothing left: a second replay moves nothing.
	n, err = cqrsnats.ReplayDeadLetters[Ship](context.Background(), js, cfg)
	require.NoError(t, err)
	assert.Zero(t, n)
}

// A replay leaves the dead letters of other types where they are.
func TestDurableReplayTakesOneType(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{MaxDeliver: 1}
	bus := cqrs.NewCommandBus()
	fail := errors.New("downstream down")
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(context.Context, Ship) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, fail
	})))
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Invoice, cqrs.NoResult](func(context.Context, Invoice) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, fail
	})))
	stop := serveCommands(t, js, bus, cfg)
	require.NoError(t, cqrsnats.Enqueue(ctx, js, Ship{Parcel: 1}, cfg))
	require.NoError(t, cqrsnats.Enqueue(ctx, js, Invoice{Number: 2}, cfg))
	require.Eventually(t, func() bool { return len(deadLetters(t, js)) == 2 }, 10*time.Second, 20*time.Millisecond)
	stop()

	n, err := cqrsnats.ReplayDeadLetters[Ship](ctx, js, cfg)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	dead := deadLetters(t, js)
	require.Len(t, dead, 1)
	assert.JSONEq(t, `{"Number":2}`, string(dead[0].Data))
	assert.Equal(t, "error", dead[0].Header.Get("Nats-Service-Error-Code"))
	assert.Equal(t, "downstream down", dead[0].Header.Get("Nats-Service-Error"))
}

// attempts records when each delivery of a failing command started.
type attempts struct {
	mu    sync.Mutex
	times []time.Time
}

func (a *attempts) fail(context.Context, Ship) (cqrs.NoResult, error) {
	a.mu.Lock()
	a.times = append(a.times, time.Now())
	a.mu.Unlock()
	return cqrs.NoResult{}, errors.New("downstream down")
}

func (a *attempts) await(t *testing.T, n int, within time.Duration) []time.Time {
	t.Helper()
	require.Eventually(t, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.times) >= n
	}, within, 10*time.Millisecond, "%d attempts", n)
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.times...)
}

// A failed command waits before its next delivery: BackOff[0] after the
// first failure, BackOff[1] after the second.
func TestDurableBackOff(t *testing.T) {
	js := startJetStream(t)
	a := &attempts{}
	cfg := cqrsnats.DurableConfig{MaxDeliver: 3, BackOff: []time.Duration{200 * time.Millisecond, 600 * time.Millisecond}}
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](a.fail)))
	serveCommands(t, js, bus, cfg)
	require.NoError(t, cqrsnats.Enqueue(context.Background(), js, Ship{Parcel: 1}, cfg))
	times := a.await(t, 3, 5*time.Second)
	// The server's redelivery timer may fire a little early or late;
	// 20 ms either way is far from the milliseconds of an immediate
	// redelivery.
	assert.Greater(t, times[1].Sub(times[0]), 180*time.Millisecond, "wait after the first failure")
	assert.Greater(t, times[2].Sub(times[1]), 580*time.Millisecond, "wait after the second failure")
	assert.Less(t, times[2].Sub(times[1]), 3*time.Second, "the second wait is BackOff[1]")
}

// With the default configuration, a failed command waits a second, not
// milliseconds, so that a brief outage downstream does not use up its
// deliveries.
func TestDurableDefaultBackOffIsSeconds(t *testing.T) {
	js := startJetStream(t)
	a := &attempts{}
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](a.fail)))
	serveCommands(t, js, bus, cqrsnats.DurableConfig{})
	require.NoError(t, cqrsnats.Enqueue(context.Background(), js, Ship{Parcel: 1}, cqrsnats.DurableConfig{}))
	times := a.await(t, 2, 5*time.Second)
	assert.Greater(t, times[1].Sub(times[0]), 900*time.Millisecond)
}

// An error another attempt cannot mend (the handler marked it
// Permanent, or the command failed validation) goes to the dead letters
// after one delivery; a rate-limited one is retried.
func TestDurablePermanentErrorsAreNotRetried(t *testing.T) {
	cases := []struct {
		name       string
		err        error
		deliveries int
		code       string
	}{
		{"permanent", middleware.Permanent(errors.New("no such parcel")), 1, "error"},
		{"validation", fmt.Errorf("%w: parcel must be positive", cqrs.ErrValidation), 1, "validation"},
		{"rate limited", fmt.Errorf("%w: slow down", cqrs.ErrRateLimited), 3, "rate_limited"},
		{"outage", errors.New("database down"), 3, "error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			js := startJetStream(t)
			var calls atomic.Int32
			bus := cqrs.NewCommandBus()
			require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(context.Context, Ship) (cqrs.NoResult, error) {
				calls.Add(1)
				return cqrs.NoResult{}, tc.err
			})))
			cfg := cqrsnats.DurableConfig{MaxDeliver: 3, BackOff: []time.Duration{10 * time.Millisecond}}
			serveCommands(t, js, bus, cfg)
			require.NoError(t, cqrsnats.Enqueue(context.Background(), js, Ship{Parcel: 1}, cfg))
			var dead []*jetstream.RawStreamMsg
			require.Eventually(t, func() bool {
				dead = deadLetters(t, js)
				return len(dead) == 1
			}, 10*time.Second, 20*time.Millisecond)
			assert.Equal(t, int32(tc.deliveries), calls.Load(), "handler runs")
			assert.Equal(t, strconv.Itoa(tc.deliveries), dead[0].Header.Get("Cqrs-Deliveries"))
			assert.Equal(t, tc.code, dead[0].Header.Get("Nats-Service-Error-Code"))
		})
	}
}

// A command that does not decode goes to the dead letters at once.
func TestDurableUndecodableCommand(t *testing.T) {
	js := startJetStream(t)
	s := newShipper(0)
	serveDurable(t, js, s, cqrsnats.DurableConfig{})
	_, err := js.Publish(context.Background(), durableSubjectOf[Ship](), []byte("{not json"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(deadLetters(t, js)) == 1 }, 10*time.Second, 20*time.Millisecond)
	dead := deadLetters(t, js)[0]
	assert.Equal(t, "bad_request", dead.Header.Get("Nats-Service-Error-Code"))
	assert.Equal(t, "1", dead.Header.Get("Cqrs-Deliveries"))
}

// A handler error of any size and shape fits in a dead letter's header:
// one line, bounded.
func TestDurableDeadLetterBoundsTheError(t *testing.T) {
	js := startJetStream(t)
	huge := "line one\r\nline two " + strings.Repeat("é", 1<<20)
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(context.Context, Ship) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, middleware.Permanent(errors.New(huge))
	})))
	serveCommands(t, js, bus, cqrsnats.DurableConfig{})
	require.NoError(t, cqrsnats.Enqueue(context.Background(), js, Ship{Parcel: 1}, cqrsnats.DurableConfig{}))
	require.Eventually(t, func() bool { return len(deadLetters(t, js)) == 1 }, 10*time.Second, 20*time.Millisecond)
	text := deadLetters(t, js)[0].Header.Get("Nats-Service-Error")
	assert.True(t, strings.HasPrefix(text, "line one  line two é"), text[:40])
	assert.LessOrEqual(t, len(text), 1100)
	assert.True(t, utf8.ValidString(text))
}

// A stream the operator made, with limits and memory storage, is used as
// it is: Enqueue and ServeDurable work on it and change none of it.
func TestDurableUsesTheOperatorsStream(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	want := jetstream.StreamConfig{
		Name:      "CQRS_COMMANDS",
		Subjects:  []string{"cqrs.durable.>"},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.MemoryStorage,
		MaxAge:    time.Hour,
		MaxMsgs:   1000,
		MaxBytes:  1 << 20,
		Discard:   jetstream.DiscardNew,
	}
	_, err := js.CreateStream(ctx, want)
	require.NoError(t, err)

	for p := range 10 {
		require.NoError(t, cqrsnats.Enqueue(ctx, js, Ship{Parcel: p}, cqrsnats.DurableConfig{}))
	}
	s := newShipper(0)
	serveDurable(t, js, s, cqrsnats.DurableConfig{})
	s.await(t, 10)

	stream, err := js.Stream(ctx, "CQRS_COMMANDS")
	require.NoError(t, err)
	got := stream.CachedInfo().Config
	assert.Equal(t, want.Storage, got.Storage)
	assert.Equal(t, want.MaxAge, got.MaxAge)
	assert.Equal(t, want.MaxMsgs, got.MaxMsgs)
	assert.Equal(t, want.MaxBytes, got.MaxBytes)
	assert.Equal(t, want.Discard, got.Discard)
	assert.Equal(t, want.Subjects, got.Subjects)
}

// A stream that cannot keep durable commands correctly is refused with
// a clear error, and left as it is.
func TestDurableRefusesAnIncompatibleStream(t *testing.T) {
	cases := []struct {
		name   string
		stream jetstream.StreamConfig
	}{
		{"limits retention", jetstream.StreamConfig{Name: "CQRS_COMMANDS", Subjects: []string{"cqrs.durable.>"}}},
		{"interest retention", jetstream.StreamConfig{Name: "CQRS_COMMANDS", Subjects: []string{"cqrs.durable.>"}, Retention: jetstream.InterestPolicy}},
		{"other subjects", jetstream.StreamConfig{Name: "CQRS_COMMANDS", Subjects: []string{"orders.>"}, Retention: jetstream.WorkQueuePolicy}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			js := startJetStream(t)
			ctx := context.Background()
			_, err := js.CreateStream(ctx, tc.stream)
			require.NoError(t, err)
			bus := cqrs.NewCommandBus()
			require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](newShipper(0).handle)))
			_, err = cqrsnats.ServeDurable(ctx, js, bus, cqrsnats.DurableConfig{})
			assert.ErrorIs(t, err, cqrsnats.ErrStreamIncompatible)
			stream, err := js.Stream(ctx, "CQRS_COMMANDS")
			require.NoError(t, err)
			assert.Equal(t, tc.stream.Subjects, stream.CachedInfo().Config.Subjects)
			assert.Equal(t, tc.stream.Retention, stream.CachedInfo().Config.Retention)
		})
	}
}

// Enqueue never stores a command in a stream other than the one it is
// configured with, even if that one takes the subject.
func TestDurableEnqueueRefusesAnotherStream(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"cqrs.durable.>"}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	err = cqrsnats.Enqueue(ctx, js, Ship{Parcel: 1}, cqrsnats.DurableConfig{})
	require.ErrorIs(t, err, cqrsnats.ErrStreamIncompatible)
	stream, err := js.Stream(ctx, "OTHER")
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	assert.Zero(t, info.State.Msgs)
}

// Enqueue is one round trip: a publish, and no JetStream API request
// (stream info or update) once the stream exists.
func TestDurableEnqueueRoundTrips(t *testing.T) {
	s := startJetStreamServer(t)
	js := process(t, s)
	ctx := context.Background()
	require.NoError(t, cqrsnats.Enqueue(ctx, js, Ship{Parcel: 0}, cqrsnats.DurableConfig{})) // makes the stream

	counts := func() (api, in uint64) {
		jsz, err := s.Jsz(nil)
		require.NoError(t, err)
		varz, err := s.Varz(nil)
		require.NoError(t, err)
		return jsz.API.Total, uint64(varz.InMsgs)
	}
	api0, in0 := counts()
	const n = 100
	for p := range n {
		require.NoError(t, cqrsnats.Enqueue(ctx, js, Ship{Parcel: p}, cqrsnats.DurableConfig{}))
	}
	api1, in1 := counts()
	assert.Zero(t, api1-api0, "JetStream API requests for %d Enqueues", n)
	// One message per Enqueue; two round trips would be 2n. The server's
	// counters are read while it may still count a message, and under
	// load the client may send a slow publish again: allow a few either
	// way.
	assert.InDelta(t, n, float64(in1-in0), n/10, "messages sent for %d Enqueues", n)
}

// Label is a durable command whose encoded size the test chooses.
type Label struct{ Text string }

// A command that fits WithMaxPayload but not, with its headers and the
// room its dead letter needs, the server's max_payload is refused with
// ErrPayloadTooLarge and not stored; one that fits can die and is kept
// as a dead letter, with its error text, however long.
func TestDurableEnqueueLeavesRoomForTheDeadLetter(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	limit := int(js.Conn().MaxPayload())
	require.Equal(t, 1<<20, limit, "the embedded server's default")

	err := cqrsnats.Enqueue(ctx, js, Label{Text: strings.Repeat("x", limit-64)}, cqrsnats.DurableConfig{})
	require.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
	assert.NotErrorIs(t, err, cqrsnats.ErrTransport)

	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Label, cqrs.NoResult](func(context.Context, Label) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, middleware.Permanent(errors.New(strings.Repeat("why ", 1<<12)))
	})))
	serveCommands(t, js, bus, cqrsnats.DurableConfig{})
	require.NoError(t, cqrsnats.Enqueue(ctx, js, Label{Text: strings.Repeat("x", limit-4096)}, cqrsnats.DurableConfig{}))
	awaitDeadLetters(t, js, 1)
	assert.Greater(t, len(deadLetters(t, js)[0].Header.Get("Nats-Service-Error")), 1000)
	assertDrained(t, js, "CQRS_COMMANDS")
}

// A type is served by one queue group: a second one is refused with an
// error naming the consumer that has it, and the first keeps serving.
func TestDurableOneQueueGroupPerType(t *testing.T) {
	js := startJetStream(t)
	s := newShipper(0)
	serveDurable(t, js, s, cqrsnats.DurableConfig{})
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](newShipper(0).handle)))
	_, err := cqrsnats.ServeDurable(context.Background(), js, bus, cqrsnats.DurableConfig{}, cqrsnats.WithQueueGroup("billing"))
	require.ErrorIs(t, err, cqrsnats.ErrConsumerConflict)
	assert.Contains(t, err.Error(), "[cqrs_Ship_")

	require.NoError(t, cqrsnats.Enqueue(context.Background(), js, Ship{Parcel: 1}, cqrsnats.DurableConfig{}))
	s.await(t, 1)
}

// The consumer an older version shared between all types takes the
// subjects of the new per-type consumers: ServeDurable names it, so that
// the operator can remove it, and leaves it alone.
func TestDurableNamesTheOldSharedConsumer(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	require.NoError(t, cqrsnats.Enqueue(ctx, js, Ship{Parcel: 1}, cqrsnats.DurableConfig{})) // makes the stream
	_, err := js.CreateOrUpdateConsumer(ctx, "CQRS_COMMANDS", jetstream.ConsumerConfig{
		Durable:        "cqrs-cqrs",
		FilterSubjects: []string{durableSubjectOf[Ship](), durableSubjectOf[Invoice]()},
		AckPolicy:      jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](newShipper(0).handle)))
	_, err = cqrsnats.ServeDurable(ctx, js, bus, cqrsnats.DurableConfig{})
	require.ErrorIs(t, err, cqrsnats.ErrConsumerConflict)
	assert.Contains(t, err.Error(), "[cqrs-cqrs]")
	_, err = js.Consumer(ctx, "CQRS_COMMANDS", "cqrs-cqrs")
	assert.NoError(t, err, "the old consumer is left alone")
}

func TestDurableServeRefusesBadArguments(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	queries := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Ship, int](func(context.Context, Ship) (int, error) { return 0, nil })))
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[Ship, cqrs.NoResult](newShipper(0).handle)))

	_, err := cqrsnats.ServeDurable(ctx, js, queries, cqrsnats.DurableConfig{})
	assert.ErrorIs(t, err, cqrsnats.ErrQueryNotDurable)
	_, err = cqrsnats.ServeDurable(ctx, js, nil, cqrsnats.DurableConfig{})
	assert.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = cqrsnats.ServeDurable(ctx, js, (*cqrs.CommandBus)(nil), cqrsnats.DurableConfig{})
	assert.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = cqrsnats.ServeDurable(ctx, js, cqrs.NewCommandBus(), cqrsnats.DurableConfig{})
	assert.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	_, err = cqrsnats.ServeDurable(ctx, nil, commands, cqrsnats.DurableConfig{})
	assert.ErrorIs(t, err, cqrsnats.ErrTransport)
	for _, dead := range []string{"cqrs.durable.dead", "cqrs.dead.>", "cqrs..dead", "dead letters"} {
		_, err = cqrsnats.ServeDurable(ctx, js, commands, cqrsnats.DurableConfig{DeadLetter: dead})
		assert.ErrorIs(t, err, cqrsnats.ErrDurableConfig, dead)
	}
}

// Stop with a backlog: it returns at once after the command in progress,
// hands back what was taken ahead, and no handler runs after it
// returned; another process handles the rest, none lost.
func TestDurableStopWithABacklog(t *testing.T) {
	s := startJetStreamServer(t)
	client := process(t, s)
	cfg := cqrsnats.DurableConfig{}
	keys := enqueueAll(t, client, 300, func(i int) Ship { return Ship{Parcel: i} }, shipKey, cfg)

	l := newLedger()
	var running, after atomic.Int32
	var stopped atomic.Bool
	slow := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(slow, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(_ context.Context, c Ship) (cqrs.NoResult, error) {
		running.Add(1)
		defer running.Add(-1)
		if stopped.Load() {
			after.Add(1)
		}
		time.Sleep(5 * time.Millisecond)
		l.add(shipKey(c))
		return cqrs.NoResult{}, nil
	})))
	srv, err := cqrsnats.ServeDurable(context.Background(), process(t, s), slow, cfg)
	require.NoError(t, err)
	l.await(20, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, srv.Stop(ctx))
	stopped.Store(true)
	took := time.Since(start)
	assert.Zero(t, running.Load(), "handlers running after Stop returned")
	assert.Less(t, took, time.Second, "Stop waits for the command in progress only")
	require.NoError(t, srv.Stop(ctx), "a second Stop")

	// The rest, including those taken ahead, go to another process.
	fresh := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(fresh, handling(l, shipKey)))
	serveCommands(t, process(t, s), fresh, cfg)
	l.await(300, 10*time.Second)
	lost, duplicated := l.count(keys)
	assert.Zero(t, lost)
	assert.Zero(t, duplicated)
	assert.Zero(t, after.Load(), "handlers started after Stop returned")
}

// Stop is bounded by its context: a handler that ignores its context
// does not hold it, has its context cancelled, and is reported.
func TestDurableStopIsBoundedByItsContext(t *testing.T) {
	js := startJetStream(t)
	started, release := make(chan struct{}), make(chan struct{})
	var cancelled atomic.Bool
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(ctx context.Context, _ Ship) (cqrs.NoResult, error) {
		close(started)
		<-release // ignores ctx
		cancelled.Store(ctx.Err() != nil)
		return cqrs.NoResult{}, nil
	})))
	srv, err := cqrsnats.ServeDurable(context.Background(), js, bus, cqrsnats.DurableConfig{})
	require.NoError(t, err)
	require.NoError(t, cqrsnats.Enqueue(context.Background(), js, Ship{Parcel: 1}, cqrsnats.DurableConfig{}))
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = srv.Stop(ctx)
	assert.Less(t, time.Since(start), 2*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "1 durable handlers still running")

	close(release)
	require.NoError(t, srv.Stop(context.Background()), "Stop once the handler returned")
	assert.True(t, cancelled.Load(), "the handler's context was cancelled")
}

// A handler that succeeds after Stop gave up waiting for it has its
// command acknowledged, so that it does not run again: the work queue
// lets the command go. Before, the acknowledgement was sent on the
// cancelled context and never left.
func TestDurableStopAcknowledgesALateSuccess(t *testing.T) {
	js := startJetStream(t)
	started, release := make(chan struct{}), make(chan struct{})
	var runs atomic.Int32
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(context.Context, Ship) (cqrs.NoResult, error) {
		if runs.Add(1) == 1 {
			close(started)
		}
		<-release // ignores ctx, then succeeds
		return cqrs.NoResult{}, nil
	})))
	srv, err := cqrsnats.ServeDurable(context.Background(), js, bus, cqrsnats.DurableConfig{})
	require.NoError(t, err)
	require.NoError(t, cqrsnats.Enqueue(context.Background(), js, Ship{Parcel: 1}, cqrsnats.DurableConfig{}))
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, srv.Stop(ctx), context.DeadlineExceeded)
	close(release)
	require.NoError(t, srv.Stop(context.Background()), "Stop once the handler returned")

	// AckWait is 30 s: the command is gone only if it was acknowledged.
	assertDrained(t, js, "CQRS_COMMANDS")
	assert.Equal(t, int32(1), runs.Load())
}

// The zero DurableServer serves nothing and stops at once.
func TestDurableServerZeroValue(t *testing.T) {
	var srv cqrsnats.DurableServer
	assert.NoError(t, srv.Stop(context.Background()))
}

// Two command types whose names a subject may not tell apart.
type (
	durableSpaced     struct{ N int }
	durableUnderscore struct{ N int }
)

func (durableSpaced) CommandName() string     { return "place order" }
func (durableUnderscore) CommandName() string { return "place_order" }

// Two types never share a consumer: either their subjects differ and
// each command reaches its own handler, or ServeDurable refuses them.
func TestDurableTypesNeverShareAConsumer(t *testing.T) {
	js := startJetStream(t)
	spaced, underscore := newLedger(), newLedger()
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, handling(spaced, func(c durableSpaced) string { return fmt.Sprint(c.N) })))
	require.NoError(t, cqrs.Register(bus, handling(underscore, func(c durableUnderscore) string { return fmt.Sprint(c.N) })))
	srv, err := cqrsnats.ServeDurable(context.Background(), js, bus, cqrsnats.DurableConfig{})
	if err != nil {
		require.ErrorIs(t, err, cqrsnats.ErrDurableConfig)
		return
	}
	t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	require.NoError(t, cqrsnats.Enqueue(context.Background(), js, durableSpaced{N: 1}, cqrsnats.DurableConfig{}))
	require.NoError(t, cqrsnats.Enqueue(context.Background(), js, durableUnderscore{N: 2}, cqrsnats.DurableConfig{}))
	spaced.await(1, 5*time.Second)
	underscore.await(1, 5*time.Second)
	lost, _ := spaced.count([]string{"1"})
	assert.Zero(t, lost)
	lost, _ = underscore.count([]string{"2"})
	assert.Zero(t, lost)
	assert.Equal(t, 1, spaced.distinct())
	assert.Equal(t, 1, underscore.distinct())
}
