package nats_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// ListItems streams Count items numbered from From (forever when Count
// is negative), then does what Do says.
type ListItems struct {
	cqrs.StreamQuery[Item]
	From, Count int
	Do          string
	Pause       time.Duration // between items
}

// Item is what ListItems streams.
type Item struct {
	N    int
	Text string `json:",omitempty"`
}

// errShelfEmpty is a service's own sentinel, registered with WithErrors
// on both sides.
var errShelfEmpty = errors.New("shelf empty")

var streamErrors = []cqrsnats.ErrorCode{{Code: "shop.shelf_empty", Err: errShelfEmpty}}

// producer is a serving process's ListItems handler, with what it saw.
type producer struct {
	yielded atomic.Int64 // items whose yield returned true
	exits   chan producerExit
}

// producerExit is what the producer saw when it returned.
type producerExit struct {
	ctxErr      error
	hadDeadline bool
}

func (p *producer) stream(ctx context.Context, q ListItems, yield func(Item) bool) error {
	_, hadDeadline := ctx.Deadline()
	defer func() {
		select {
		case p.exits <- producerExit{ctxErr: ctx.Err(), hadDeadline: hadDeadline}:
		default:
		}
	}()
	for i := q.From; q.Count < 0 || i < q.From+q.Count; i++ {
		if q.Pause > 0 {
			select {
			case <-time.After(q.Pause):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		item := Item{N: i}
		if q.Do == "big" {
			item.Text = strings.Repeat("x", 4096)
		}
		if !yield(item) {
			return nil
		}
		p.yielded.Add(1)
	}
	switch q.Do {
	case "sentinel":
		return fmt.Errorf("aisle 7: %w", errShelfEmpty)
	case "not found":
		return fmt.Errorf("inner bus: %w", cqrs.ErrHandlerNotFound)
	case "validation":
		return &cqrs.ValidationError{Message: "query ListItems", Err: cqrs.ErrValidation,
			Fields: []cqrs.FieldError{{Field: "ListItems.From", Tag: "min", Param: "0", Value: -1}}}
	case "plain":
		return errors.New("warehouse on fire")
	case "panic":
		panic("shelf collapsed")
	}
	return nil
}

// awaitExit returns what the producer saw when it returned, failing the
// test after a few seconds.
func (p *producer) awaitExit(t *testing.T) producerExit {
	t.Helper()
	select {
	case e := <-p.exits:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("the producer did not stop")
		return producerExit{}
	}
}

// serveStreams serves ListItems over nc.
func serveStreams(t *testing.T, nc *natsgo.Conn, opts ...cqrsnats.Option) (*cqrsnats.StreamServer, *producer) {
	t.Helper()
	p := &producer{exits: make(chan producerExit, 16)}
	queries := cqrs.NewQueryBus()
	require.NoError(t, cqrs.HandleStream(queries, p.stream))
	opts = append([]cqrsnats.Option{cqrsnats.WithErrors(streamErrors...)}, opts...)
	srv, err := cqrsnats.ServeStreams(nc, queries, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[ListItems, Item]()}, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Stop(ctx))
	})
	return srv, p
}

// streamWindow is the window of most tests: small, so that bounds show;
// streamHeartbeat their callers' heartbeat: short, so that a side that
// goes silent shows within a second (4 heartbeats), and long enough that
// a loaded machine running the tests with -race does not seem silent.
const (
	streamWindow    = 32
	streamHeartbeat = 250 * time.Millisecond
)

// callStreams returns a local bus whose ListItems streams over nc.
func callStreams(t *testing.T, nc *natsgo.Conn, opts ...cqrsnats.Option) *cqrs.QueryBus {
	t.Helper()
	queries := cqrs.NewQueryBus()
	opts = append([]cqrsnats.Option{
		cqrsnats.WithErrors(streamErrors...),
		cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{Window: streamWindow, Heartbeat: streamHeartbeat}),
	}, opts...)
	// NewClient reads all but the stream settings; ForwardStream only them.
	require.NoError(t, cqrsnats.ForwardStream[ListItems, Item](queries, cqrsnats.NewClient(nc, opts...), opts...))
	return queries
}

// streamPair starts a NATS server, a serving process and a calling one.
func streamPair(t *testing.T, opts ...cqrsnats.Option) (*cqrs.QueryBus, *cqrsnats.StreamServer, *producer) {
	t.Helper()
	ns := startServer(t, -1)
	srv, p := serveStreams(t, connect(t, ns.ClientURL()), opts...)
	return callStreams(t, connect(t, ns.ClientURL())), srv, p
}

// TestStreamInOrder: 100,000 items arrive in order, none lost or
// duplicated, and the stream ends with no error.
func TestStreamInOrder(t *testing.T) {
	queries, srv, _ := streamPair(t)
	const n = 100_000
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	next, outOfOrder := 0, 0
	for item, err := range cqrs.Stream(ctx, queries, ListItems{Count: n}) {
		require.NoError(t, err)
		if item.N != next {
			outOfOrder++
		}
		next = item.N + 1
	}
	assert.Equal(t, n, next, "items lost at the end")
	assert.Zero(t, outOfOrder, "items out of order, lost or duplicated")
	stats := srv.Stats().Types[0]
	assert.Equal(t, uint64(1), stats.Streams)
	assert.Equal(t, uint64(n), stats.Items)
	assert.Zero(t, stats.Errors)
}

// TestStreamBreakStopsProducer: a caller that breaks after 10 items
// cancels the producer, which has run at most a window ahead.
func TestStreamBreakStopsProducer(t *testing.T) {
	queries, srv, p := streamPair(t)
	read := 0
	for _, err := range cqrs.Stream(context.Background(), queries, ListItems{Count: -1}) {
		require.NoError(t, err)
		if read++; read == 10 {
			break
		}
	}
	exit := p.awaitExit(t)
	require.ErrorIs(t, exit.ctxErr, context.Canceled, "the producer's context was not cancelled")
	after := p.yielded.Load() - int64(read)
	t.Logf("items produced after the break: %d (window %d)", after, streamWindow)
	assert.LessOrEqual(t, after, int64(streamWindow), "the producer ran more than a window ahead")
	require.Eventually(t, func() bool { return srv.Stats().Types[0].Cancelled == 1 }, 5*time.Second, time.Millisecond)
	assert.Zero(t, srv.Stats().Types[0].Running)
}

// TestStreamSlowCallerBoundsProducer: while a caller reads slowly, the
// producer is never more than the window ahead of it.
func TestStreamSlowCallerBoundsProducer(t *testing.T) {
	queries, _, p := streamPair(t)
	var read, ahead int64
	for item, err := range cqrs.Stream(context.Background(), queries, ListItems{Count: 200}) {
		require.NoError(t, err)
		read++
		require.Equal(t, int(read-1), item.N)
		if read%20 == 0 {
			time.Sleep(20 * time.Millisecond) // a slow reader: the producer catches up with the window
		}
		ahead = max(ahead, p.yielded.Load()-read)
	}
	t.Logf("the producer ran at most %d items ahead (window %d)", ahead, streamWindow)
	assert.Equal(t, int64(200), read)
	assert.LessOrEqual(t, ahead, int64(streamWindow))
	assert.Positive(t, ahead, "the producer never ran ahead: the test shows nothing")
}

// TestStreamCallerContextEnds: a caller whose context ends mid-stream gets
// ctx.Err() as the last item, and the producer stops; a deadline travels
// to the producer.
func TestStreamCallerContextEnds(t *testing.T) {
	queries, _, p := streamPair(t)

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var last error
		read := 0
		for _, err := range cqrs.Stream(ctx, queries, ListItems{Count: -1, Pause: time.Millisecond}) {
			if err != nil {
				last = err
				continue
			}
			if read++; read == 10 {
				cancel()
			}
		}
		require.ErrorIs(t, last, context.Canceled)
		exit := p.awaitExit(t)
		assert.ErrorIs(t, exit.ctxErr, context.Canceled)
		assert.False(t, exit.hadDeadline)
	})

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		var last error
		for _, err := range cqrs.Stream(ctx, queries, ListItems{Count: -1, Pause: time.Millisecond}) {
			if err != nil {
				last = err
			}
		}
		require.ErrorIs(t, last, context.DeadlineExceeded)
		exit := p.awaitExit(t)
		assert.Error(t, exit.ctxErr)
		assert.True(t, exit.hadDeadline, "the caller's deadline did not travel")
	})
}

// TestStreamErrorsKeepIdentity: the producer's error arrives after its
// items as the last one, matching errors.Is and errors.As as in process.
func TestStreamErrorsKeepIdentity(t *testing.T) {
	queries, srv, _ := streamPair(t)
	for _, tc := range []struct {
		do    string
		check func(t *testing.T, err error)
	}{
		{"sentinel", func(t *testing.T, err error) {
			assert.ErrorIs(t, err, errShelfEmpty)
			assert.Contains(t, err.Error(), "aisle 7")
		}},
		{"not found", func(t *testing.T, err error) { assert.ErrorIs(t, err, cqrs.ErrHandlerNotFound) }},
		{"validation", func(t *testing.T, err error) {
			assert.ErrorIs(t, err, cqrs.ErrValidation)
			var verr *cqrs.ValidationError
			require.ErrorAs(t, err, &verr)
			require.Len(t, verr.Fields, 1)
			assert.Equal(t, "ListItems.From", verr.Fields[0].Field)
			assert.Equal(t, "min", verr.Fields[0].Tag)
		}},
		{"plain", func(t *testing.T, err error) {
			var rerr *cqrsnats.RemoteError
			require.ErrorAs(t, err, &rerr)
			assert.Equal(t, "warehouse on fire", rerr.Message)
		}},
		{"panic", func(t *testing.T, err error) {
			assert.ErrorIs(t, err, cqrs.ErrHandlerPanic)
			assert.NotContains(t, err.Error(), "shelf collapsed", "a panic's value left the process")
		}},
	} {
		t.Run(tc.do, func(t *testing.T) {
			var items []int
			var errs []error
			for item, err := range cqrs.Stream(context.Background(), queries, ListItems{Count: 3, Do: tc.do}) {
				if err != nil {
					errs = append(errs, err)
					continue
				}
				items = append(items, item.N)
			}
			assert.Equal(t, []int{0, 1, 2}, items)
			require.Len(t, errs, 1, "one error, last")
			tc.check(t, errs[0])
		})
	}
	assert.Equal(t, uint64(5), srv.Stats().Types[0].Errors)
}

// TestStreamRefusals: the requests a serving process refuses, and what
// the caller gets.
func TestStreamRefusals(t *testing.T) {
	ns := startServer(t, -1)
	queries := callStreams(t, connect(t, ns.ClientURL()))

	// No process serves ListItems: NATS says so at once.
	start := time.Now()
	var errs []error
	for _, err := range cqrs.Stream(context.Background(), queries, ListItems{Count: 1}) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], cqrsnats.ErrNoResponders)
	assert.Less(t, time.Since(start), 2*time.Second)

	// At its most streams, a serving process refuses another.
	srv, p := serveStreams(t, connect(t, ns.ClientURL()), cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{MaxStreams: 1}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next, stop := iter.Pull2(cqrs.Stream(ctx, queries, ListItems{Count: -1, Pause: time.Millisecond}))
	defer stop()
	_, err, ok := next()
	require.True(t, ok)
	require.NoError(t, err)
	errs = errs[:0]
	for _, err := range cqrs.Stream(context.Background(), queries, ListItems{Count: 1}) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], cqrsnats.ErrUnavailable)
	stop()
	p.awaitExit(t)
	assert.Equal(t, uint64(1), srv.Stats().Types[0].Refused)
}

// hiddenItems streams items with an unexported field, which JSON would
// leave out.
type (
	hiddenItems struct {
		cqrs.StreamQuery[hiddenItem]
	}
	hiddenItem struct{ secret int }
)

// TestStreamSetupErrors: what ForwardStream, ServeStreams and a stream
// refuse before anything travels.
func TestStreamSetupErrors(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	client := cqrsnats.NewClient(nc)

	assert.ErrorIs(t, cqrsnats.ForwardStream[ListItems, Item](cqrs.NewQueryBus(), cqrsnats.NewClient(nc, cqrsnats.WithPrefix("a b"))), cqrsnats.ErrInvalidSubject)
	assert.ErrorIs(t, cqrsnats.ForwardStream[hiddenItems, hiddenItem](cqrs.NewQueryBus(), client), cqrsnats.ErrUnexportedFields)
	assert.ErrorIs(t, cqrsnats.ForwardStream[ListItems, struct{ N int }](cqrs.NewQueryBus(), client), cqrsnats.ErrInvalidSubject, "an item type with no identity")
	assert.ErrorIs(t, cqrsnats.ForwardStream[Tail, Line](cqrs.NewQueryBus(), cqrsnats.NewClient(nil)), cqrs.ErrNilHandler)

	bus := cqrs.NewQueryBus()
	p := &producer{exits: make(chan producerExit, 1)}
	require.NoError(t, cqrs.HandleStream(bus, p.stream))
	types := []cqrsnats.StreamType{cqrsnats.StreamTypeFor[ListItems, Item]()}
	_, err := cqrsnats.ServeStreams(nil, bus, types)
	assert.ErrorIs(t, err, cqrsnats.ErrTransport)
	_, err = cqrsnats.ServeStreams(nc, bus, types, cqrsnats.WithQueueGroup(""))
	assert.ErrorIs(t, err, cqrsnats.ErrInvalidSubject)
	hidden := cqrs.NewQueryBus()
	require.NoError(t, cqrs.HandleStream(hidden, func(_ context.Context, _ hiddenItems, yield func(hiddenItem) bool) error {
		yield(hiddenItem{secret: 1})
		return nil
	}))
	_, err = cqrsnats.ServeStreams(nc, hidden, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[hiddenItems, hiddenItem]()})
	assert.ErrorIs(t, err, cqrsnats.ErrUnexportedFields)

	// A query over the caller's limit never leaves; a stream on a closed
	// connection fails at once.
	queries := callStreams(t, nc, cqrsnats.WithMaxPayload(64))
	_, err = lastError(t, cqrs.Stream(context.Background(), queries, ListItems{Do: strings.Repeat("x", 100)}))
	assert.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge)
	closed := connect(t, ns.ClientURL())
	queries = callStreams(t, closed)
	closed.Close()
	_, err = lastError(t, cqrs.Stream(context.Background(), queries, ListItems{Count: 1}))
	assert.ErrorIs(t, err, cqrsnats.ErrTransport)
}

// panickyCodec is JSON, but panics on the item numbered 1.
type panickyCodec struct{ cqrsnats.JSON }

func (c panickyCodec) Marshal(v any) ([]byte, error) {
	if item, ok := v.(Item); ok && item.N == 1 {
		panic("codec bug")
	}
	return c.JSON.Marshal(v)
}

// TestStreamItemFailures: an item the serving side cannot send ends the
// stream with an error, after the items before it.
func TestStreamItemFailures(t *testing.T) {
	ns := startServer(t, -1)
	serveStreams(t, connect(t, ns.ClientURL()), cqrsnats.WithMaxPayload(1024))
	queries := callStreams(t, connect(t, ns.ClientURL()))
	read, err := lastError(t, cqrs.Stream(context.Background(), queries, ListItems{Count: 3, Do: "big"}))
	assert.Zero(t, read)
	assert.ErrorIs(t, err, cqrsnats.ErrPayloadTooLarge, "an item over the serving side's limit")

	other := startServer(t, -1)
	serveStreams(t, connect(t, other.ClientURL()), cqrsnats.WithCodec(panickyCodec{}))
	queries = callStreams(t, connect(t, other.ClientURL()))
	read, err = lastError(t, cqrs.Stream(context.Background(), queries, ListItems{Count: 3}))
	assert.Equal(t, 1, read)
	var rerr *cqrsnats.RemoteError
	require.ErrorAs(t, err, &rerr, "a codec's panic is an error, not a crash")
	assert.Contains(t, rerr.Message, "encoding an item")
}

// TestServeLeavesStreamsToServeStreams: Serve does not serve a bus's
// streaming queries as request-reply endpoints, which could only answer
// that the type streams; ServeStreams serves them beside it.
func TestServeLeavesStreamsToServeStreams(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	bus := cqrs.NewQueryBus()
	p := &producer{exits: make(chan producerExit, 1)}
	require.NoError(t, cqrs.HandleStream(bus, p.stream))
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[GetOrder, Order](func(_ context.Context, q GetOrder) (Order, error) {
		return Order{ID: q.ID}, nil
	})))
	srv, err := cqrsnats.Serve(nc, bus)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()
	var served []string
	for _, st := range srv.Stats() {
		served = append(served, st.Name)
	}
	assert.Equal(t, []string{"nats_test.GetOrder"}, served)
	_, err = nc.Request(cqrsnats.Subject("cqrs", cqrs.SpecFor[ListItems, Item](bus)), []byte(`{}`), time.Second)
	assert.ErrorIs(t, err, natsgo.ErrNoResponders)

	streams, err := cqrsnats.ServeStreams(nc, bus, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[ListItems, Item]()})
	require.NoError(t, err)
	defer func() { require.NoError(t, streams.Stop(context.Background())) }()
	read, err := lastError(t, cqrs.Stream(context.Background(), callStreams(t, connect(t, ns.ClientURL())), ListItems{Count: 3}))
	require.NoError(t, err)
	assert.Equal(t, 3, read)
}

// TestStreamCarriesIdentity: the identity of the caller's context
// travels with the request, in the identity headers, and the serving
// side's stream handler reads it with cqrs.IdentityOf; a caller's context
// without one sends no identity headers, and the handler gets a new
// identity, which starts a conversation of its own.
func TestStreamCarriesIdentity(t *testing.T) {
	ns := startServer(t, -1)
	seen := make(chan cqrs.Identity, 1)
	bus := cqrs.NewQueryBus()
	require.NoError(t, cqrs.HandleStream(bus, func(ctx context.Context, q ListItems, yield func(Item) bool) error {
		id, _ := cqrs.IdentityOf(ctx)
		seen <- id
		for i := range q.Count {
			if !yield(Item{N: i}) {
				return nil
			}
		}
		return nil
	}))
	srv, err := cqrsnats.ServeStreams(connect(t, ns.ClientURL()), bus, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[ListItems, Item]()})
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()
	sniffer := connect(t, ns.ClientURL())
	subject, _ := listItemsSubject()
	requests, err := sniffer.SubscribeSync(subject)
	require.NoError(t, err)
	require.NoError(t, sniffer.Flush())
	queries := callStreams(t, connect(t, ns.ClientURL()))

	// stream runs a stream of 3 from ctx, and returns the identity its
	// handler saw and the headers of its request.
	stream := func(ctx context.Context) (cqrs.Identity, natsgo.Header) {
		t.Helper()
		read, err := lastError(t, cqrs.Stream(ctx, queries, ListItems{Count: 3}))
		require.NoError(t, err)
		require.Equal(t, 3, read)
		var id cqrs.Identity
		select {
		case id = <-seen:
		case <-time.After(5 * time.Second):
			t.Fatal("the handler did not run")
		}
		req, err := requests.NextMsg(5 * time.Second)
		require.NoError(t, err)
		return id, req.Header
	}

	sent := cqrs.Identity{ID: "0190a8b2-7d4e-7000-8000-000000000001", CorrelationID: "order-7"}
	got, h := stream(cqrs.ContextWithIdentity(context.Background(), sent))
	assert.Equal(t, sent, got, "the identity the stream handler read")
	assert.Equal(t, sent.ID, h.Get(cqrsnats.HeaderID))
	assert.Equal(t, sent.CorrelationID, h.Get(cqrsnats.HeaderCorrelationID))
	assert.Empty(t, h.Get(cqrsnats.HeaderCausationID))

	got, h = stream(context.Background())
	assert.Empty(t, h, "headers sent for a context with no identity")
	assert.NotEmpty(t, got.ID, "the handler of a stream with no identity got none")
	assert.Equal(t, got.ID, got.CorrelationID, "a stream with no identity starts a conversation")
	assert.NotEqual(t, sent.ID, got.ID)
}
