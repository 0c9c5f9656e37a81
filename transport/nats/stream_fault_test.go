package nats_test

import (
	"context"
	"encoding/binary"
	"errors"
	"iter"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// lastError ranges over seq and returns the items read and the last
// error, failing the test if an error is not last.
func lastError(t *testing.T, seq iter.Seq2[Item, error]) (int, error) {
	t.Helper()
	read := 0
	var last error
	for _, err := range seq {
		require.NoError(t, last, "an item after an error")
		if err != nil {
			last = err
			continue
		}
		read++
	}
	return read, last
}

// TestStreamServingProcessDies: a serving process killed mid-stream (its
// connection closed, no Stop) gives the caller a transport error, soon.
func TestStreamServingProcessDies(t *testing.T) {
	ns := startServer(t, -1)
	serving := connect(t, ns.ClientURL())
	_, p := serveStreams(t, serving)
	queries := callStreams(t, connect(t, ns.ClientURL()))

	next, stop := iter.Pull2(cqrs.Stream(context.Background(), queries, ListItems{Count: -1, Pause: time.Millisecond}))
	defer stop()
	for range 5 {
		_, err, ok := next()
		require.True(t, ok)
		require.NoError(t, err)
	}
	serving.Close()
	start := time.Now()
	var last error
	for {
		_, err, ok := next()
		if !ok {
			break
		}
		last = err
	}
	t.Logf("the caller saw %v after %v", last, time.Since(start))
	require.ErrorIs(t, last, cqrsnats.ErrTransport)
	assert.Less(t, time.Since(start), 5*time.Second, "the caller waited too long")
	p.awaitExit(t)
}

// TestStreamNATSServerDies: the NATS server shut down mid-stream gives the
// caller a transport error at once, and the producer, whose caller is
// silent, stops within its heartbeats; once NATS is back, streams run.
func TestStreamNATSServerDies(t *testing.T) {
	ns := startServer(t, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	_, p := serveStreams(t, connect(t, ns.ClientURL(), reconnecting()...))
	queries := callStreams(t, connect(t, ns.ClientURL(), reconnecting()...))
	var read int
	var last error
	start := time.Now()
	for _, err := range cqrs.Stream(context.Background(), queries, ListItems{Count: -1, Pause: time.Millisecond}) {
		if err != nil {
			last = err
			continue
		}
		if read++; read == 5 {
			start = time.Now()
			ns.Shutdown()
		}
	}
	require.ErrorIs(t, last, cqrsnats.ErrTransport)
	assert.Less(t, time.Since(start), 5*time.Second)
	exit := p.awaitExit(t)
	assert.ErrorIs(t, exit.ctxErr, context.Canceled)

	// Once NATS is back, both processes reconnect and streams run again.
	ns.WaitForShutdown()
	startServer(t, port)
	require.Eventually(t, func() bool {
		read, err := lastError(t, cqrs.Stream(context.Background(), queries, ListItems{Count: 10}))
		return err == nil && read == 10
	}, 10*time.Second, 50*time.Millisecond, "no stream ran after the restart")
}

// TestStreamCallerVanishes: a caller whose process dies without a word
// (its connection closed while it reads) leaves no producer behind: the
// serving side cancels it after 4 of the caller's heartbeats.
func TestStreamCallerVanishes(t *testing.T) {
	ns := startServer(t, -1)
	srv, p := serveStreams(t, connect(t, ns.ClientURL()))
	calling := connect(t, ns.ClientURL())
	queries := callStreams(t, calling)
	next, stop := iter.Pull2(cqrs.Stream(context.Background(), queries, ListItems{Count: -1}))
	defer stop()
	for range 5 {
		_, err, ok := next()
		require.True(t, ok)
		require.NoError(t, err)
	}
	start := time.Now()
	calling.Close() // the loop body never returns: no cancel is sent
	exit := p.awaitExit(t)
	t.Logf("the producer stopped %v after its caller vanished", time.Since(start))
	assert.ErrorIs(t, exit.ctxErr, context.Canceled)
	assert.Less(t, time.Since(start), 5*time.Second)
	require.Eventually(t, func() bool { return srv.Stats().Types[0].Vanished == 1 }, 5*time.Second, time.Millisecond)
	stop()
}

// TestStreamServerStops: Stop waits for running streams until its ctx
// ends, then cancels them; their callers get ErrUnavailable.
func TestStreamServerStops(t *testing.T) {
	ns := startServer(t, -1)
	p := &producer{exits: make(chan producerExit, 1)}
	bus := cqrs.NewQueryBus()
	require.NoError(t, cqrs.HandleStream(bus, p.stream))
	srv, err := cqrsnats.ServeStreams(connect(t, ns.ClientURL()), bus, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[ListItems, Item]()})
	require.NoError(t, err)
	queries := callStreams(t, connect(t, ns.ClientURL()))

	var wg sync.WaitGroup
	var last error
	started := make(chan struct{})
	wg.Go(func() {
		read := 0
		for _, err := range cqrs.Stream(context.Background(), queries, ListItems{Count: -1, Pause: time.Millisecond}) {
			if err != nil {
				last = err
				continue
			}
			if read++; read == 1 {
				close(started)
			}
		}
	})
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = srv.Stop(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "ListItems")
	wg.Wait()
	assert.ErrorIs(t, last, cqrsnats.ErrUnavailable)
	p.awaitExit(t)
	require.NoError(t, srv.Stop(context.Background()), "a second Stop, once no stream runs")

	// A stopped server takes no new stream.
	_, err = lastError(t, cqrs.Stream(context.Background(), queries, ListItems{Count: 1}))
	assert.ErrorIs(t, err, cqrsnats.ErrNoResponders)
}

// TestStreamsDoNotMix: concurrent streams on one connection each get
// their own items, none lost, duplicated or misrouted.
func TestStreamsDoNotMix(t *testing.T) {
	queries, srv, _ := streamPair(t)
	const streams, n = 8, 5000
	var wg sync.WaitGroup
	bad := make([]int, streams)
	for s := range streams {
		wg.Go(func() {
			next := s * n
			for item, err := range cqrs.Stream(context.Background(), queries, ListItems{From: s * n, Count: n}) {
				if err != nil || item.N != next {
					bad[s]++
				}
				next = item.N + 1
			}
			if next != (s+1)*n {
				bad[s]++
			}
		})
	}
	wg.Wait()
	assert.Equal(t, make([]int, streams), bad, "lost, duplicated or misrouted items per stream")
	assert.Equal(t, uint64(streams*n), srv.Stats().Types[0].Items)
}

// Tail and Line are a stream whose type does not declare its items; the
// serving side streams strings, the calling side expects Lines.
type (
	Tail struct{ Lines int }
	Line string
)

// TestStreamItemTypeChecked: items of another type than the caller's are
// refused before any is decoded.
func TestStreamItemTypeChecked(t *testing.T) {
	ns := startServer(t, -1)
	bus := cqrs.NewQueryBus()
	require.NoError(t, cqrs.RegisterStream(bus, cqrs.StreamFunc[Tail, string](func(_ context.Context, q Tail, yield func(string) bool) error {
		for range q.Lines {
			if !yield("line") {
				return nil
			}
		}
		return nil
	})))
	srv, err := cqrsnats.ServeStreams(connect(t, ns.ClientURL()), bus, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[Tail, string]()})
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()

	queries := cqrs.NewQueryBus()
	client := cqrsnats.NewClient(connect(t, ns.ClientURL()))
	require.NoError(t, cqrsnats.ForwardStream[Tail, Line](queries, client))
	var errs []error
	for _, err := range cqrs.StreamOf[Line](context.Background(), queries, Tail{Lines: 3}) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1, "no item decoded into the wrong type")
	assert.ErrorIs(t, errs[0], cqrsnats.ErrBadReply)
	assert.Contains(t, errs[0].Error(), "string")
}

// TestServeStreamsChecksTypes: ServeStreams serves exactly the bus's
// streaming queries.
func TestServeStreamsChecksTypes(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	bus := cqrs.NewQueryBus()
	p := &producer{exits: make(chan producerExit, 1)}
	require.NoError(t, cqrs.HandleStream(bus, p.stream))
	for name, types := range map[string][]cqrsnats.StreamType{
		"missing":                 nil,
		"not a stream on the bus": {cqrsnats.StreamTypeFor[ListItems, Item](), cqrsnats.StreamTypeFor[Tail, string]()},
		"nil":                     {nil},
	} {
		_, err := cqrsnats.ServeStreams(nc, bus, types)
		assert.ErrorIs(t, err, cqrs.ErrHandlerNotFound, name)
	}
	_, err := cqrsnats.ServeStreams(nc, bus, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[ListItems, string]()})
	assert.ErrorIs(t, err, cqrs.ErrResultType, "other items")
	_, err = cqrsnats.ServeStreams(nc, nil, nil)
	assert.ErrorIs(t, err, cqrs.ErrNilBus)
	assert.ErrorIs(t, cqrsnats.ForwardStream[ListItems, Item](nil, cqrsnats.NewClient(nc)), cqrs.ErrNilBus)
	assert.ErrorIs(t, cqrsnats.ForwardStream[ListItems, Item](cqrs.NewQueryBus(), nil), cqrs.ErrNilHandler)
}

// listItemsSubject is the stream subject of ListItems, and its identity.
func listItemsSubject() (subject, id string) {
	spec := cqrs.SpecFor[ListItems, Item](cqrs.NewQueryBus())
	subject = "cqrs.stream." + strings.TrimPrefix(cqrsnats.Subject("cqrs", spec), "cqrs.")
	return subject, reflect.TypeFor[ListItems]().PkgPath() + ".ListItems"
}

// testKey is the key of the streams the tests open by hand.
var testKey = [16]byte{'t', 'h', 'e', ' ', 't', 'e', 's', 't', 's', ' ', 'k', 'e', 'y', 1, 2, 3}

// streamRequest builds a stream request by hand, with testKey.
func streamRequest(window, heartbeat uint64, envelope []byte) []byte {
	out := binary.AppendUvarint([]byte{'S'}, window)
	out = binary.AppendUvarint(out, heartbeat)
	out = append(out, testKey[:]...)
	return append(out, envelope...)
}

// requestKey returns the key of a stream request.
func requestKey(data []byte) []byte {
	rest := data[1:]
	for range 2 { // the window and the heartbeat
		_, n := binary.Uvarint(rest)
		rest = rest[n:]
	}
	return rest[:16]
}

// keyed returns frame, of a stream whose key is key: its kind, the key,
// the rest.
func keyed(frame, key []byte) []byte {
	out := append([]byte{frame[0]}, key...)
	return append(out, frame[1:]...)
}

// TestStreamMalformedRequests: malformed requests and control messages are
// refused and counted, never a crash, and the server serves on.
func TestStreamMalformedRequests(t *testing.T) {
	ns := startServer(t, -1)
	srv, _ := serveStreams(t, connect(t, ns.ClientURL()), cqrsnats.WithMaxPayload(4096))
	nc := connect(t, ns.ClientURL())
	subject, id := listItemsSubject()
	for name, data := range map[string][]byte{
		"empty":            nil,
		"plain JSON":       []byte(`{"Count":1}`),
		"truncated":        {'S', 0x80},
		"no envelope":      streamRequest(8, 1e9, nil),
		"bad envelope":     streamRequest(8, 1e9, []byte{0x01, 0xff}),
		"another type":     streamRequest(8, 1e9, sealFor("example.com/other.ListItems", time.Second, `{}`)),
		"bad JSON":         streamRequest(8, 1e9, sealFor(id, time.Second, `{"Count":`)),
		"wrong JSON shape": streamRequest(8, 1e9, sealFor(id, time.Second, `{"Count":"many"}`)),
		"too large":        streamRequest(8, 1e9, sealFor(id, time.Second, `{"Do":"`+strings.Repeat("x", 5000)+`"}`)),
	} {
		reply, err := nc.Request(subject, data, 2*time.Second)
		require.NoError(t, err, name)
		require.NotEmpty(t, reply.Data, name)
		assert.Equal(t, byte('E'), reply.Data[0], name)
		want := "bad_request"
		if name == "too large" {
			want = "payload_too_large"
		}
		assert.Contains(t, string(reply.Data), want, name)
	}
	// A request with no inbox to answer is dropped.
	require.NoError(t, nc.Publish(subject, streamRequest(8, 1e9, sealFor(id, time.Second, `{}`))))

	// Control messages: malformed for a live stream, and for no stream.
	inbox := nc.NewInbox()
	frames, err := nc.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, nc.PublishRequest(subject, inbox, streamRequest(4, 1e9, sealFor(id, 10*time.Second, `{"Count":-1}`))))
	accept, err := frames.NextMsg(2 * time.Second)
	require.NoError(t, err)
	require.Equal(t, byte('A'), accept.Data[0])
	for _, data := range [][]byte{nil, {'K'}, {'K', 0xff}, {'P', 1}, {'Z'}} {
		require.NoError(t, nc.Publish(accept.Reply, data))
	}
	unknown := accept.Reply[:strings.LastIndexByte(accept.Reply, '.')+1] + "nobody"
	require.NoError(t, nc.Publish(unknown, []byte{'K', 1}))
	reply, err := nc.Request(unknown, append([]byte{'P', 0, 1}, testKey[:]...), 2*time.Second)
	require.NoError(t, err)
	assert.Equal(t, keyed([]byte{'X'}, testKey[:]), reply.Data, "a ping for no stream is told so, with its key")
	require.NoError(t, nc.Publish(accept.Reply, []byte{'C'}))
	require.NoError(t, nc.Flush())

	require.Eventually(t, func() bool {
		st := srv.Stats()
		return st.Types[0].Refused == 10 && st.Malformed == 5 && st.Stray == 2 && st.Types[0].Cancelled == 1
	}, 5*time.Second, 5*time.Millisecond, "counts: %+v", srv.Stats())

	// The server serves on.
	queries := callStreams(t, nc)
	read, err := lastError(t, cqrs.Stream(context.Background(), queries, ListItems{Count: 100}))
	require.NoError(t, err)
	assert.Equal(t, 100, read)
}

// fakeServer answers ListItems requests on nc with the frames answer
// sends to the caller's inbox, given the request's key.
func fakeServer(t *testing.T, nc *natsgo.Conn, answer func(inbox string, key []byte)) {
	t.Helper()
	subject, _ := listItemsSubject()
	sub, err := nc.Subscribe(subject, func(m *natsgo.Msg) { answer(m.Reply, requestKey(m.Data)) })
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

// fakeHeartbeat is the heartbeat of the callers of fakeServer, and the
// one acceptFrame grants.
const fakeHeartbeat = 100 * time.Millisecond

// acceptFrame is the acceptance of a stream of items of type id, without
// its key.
func acceptFrame(window uint64, id string) *natsgo.Msg {
	return acceptGranting(window, fakeHeartbeat, id)
}

// acceptGranting is acceptFrame with the heartbeat it grants.
func acceptGranting(window uint64, heartbeat time.Duration, id string) *natsgo.Msg {
	data := binary.AppendUvarint([]byte{'A'}, window)
	data = binary.AppendUvarint(data, uint64(heartbeat))
	data = binary.AppendUvarint(data, uint64(len(id)))
	return &natsgo.Msg{Reply: "cqrs.stream._control.fake.1", Data: append(data, id...)}
}

func itemFrame(seq uint64, json string) []byte {
	return append(binary.AppendUvarint([]byte{'I'}, seq), json...)
}

// TestStreamCallerRejectsBadFrames: what a broken or hostile serving side
// sends ends the stream with a matchable error, never a crash or a wrong
// item. The serving side received the request, so it knows the stream's
// key: each frame below is sent with it (see keyed), as the serving side
// sends them. (A frame without it is not the serving side's, and is
// dropped: TestStreamForgedFrames.)
func TestStreamCallerRejectsBadFrames(t *testing.T) {
	itemID := reflect.TypeFor[Item]().PkgPath() + ".Item"
	for _, tc := range []struct {
		name   string
		frames []any // *natsgo.Msg or []byte, sent in order
		items  int
		want   error
		also   error
	}{
		{"an item lost", []any{acceptFrame(8, itemID), itemFrame(1, `{}`), itemFrame(3, `{}`)}, 1, cqrsnats.ErrTransport, nil},
		{"an item twice", []any{acceptFrame(8, itemID), itemFrame(1, `{}`), itemFrame(1, `{}`)}, 1, cqrsnats.ErrTransport, nil},
		{"fewer items than sent", []any{acceptFrame(8, itemID), itemFrame(1, `{}`), []byte{'E', 2}}, 1, cqrsnats.ErrTransport, nil},
		{"another item type", []any{acceptFrame(8, "example.com/x.Item")}, 0, cqrsnats.ErrBadReply, nil},
		{"a window never asked", []any{acceptFrame(1<<20, itemID)}, 0, cqrsnats.ErrBadReply, nil},
		{"a heartbeat never asked", []any{acceptGranting(8, time.Hour, itemID)}, 0, cqrsnats.ErrBadReply, nil},
		{"a heartbeat below 10ms", []any{acceptGranting(8, time.Millisecond, itemID)}, 0, cqrsnats.ErrBadReply, nil},
		{"a garbage answer", []any{[]byte("hello")}, 0, cqrsnats.ErrBadReply, nil},
		{"a garbage frame", []any{acceptFrame(8, itemID), []byte{'Q', 1}}, 0, cqrsnats.ErrBadReply, nil},
		{"a frame of its kind and key alone", []any{acceptFrame(8, itemID), []byte{'I'}}, 0, cqrsnats.ErrBadReply, nil},
		{"an undecodable item", []any{acceptFrame(8, itemID), itemFrame(1, `{"N":"one"}`)}, 0, cqrsnats.ErrBadReply, nil},
		{"a truncated item", []any{acceptFrame(8, itemID), []byte{'I', 0x80}}, 0, cqrsnats.ErrBadReply, nil},
		{"an oversized item", []any{acceptFrame(8, itemID), itemFrame(1, `{"Text":"`+strings.Repeat("x", 2048)+`"}`)}, 0, cqrsnats.ErrPayloadTooLarge, nil},
		{"a malformed end", []any{acceptFrame(8, itemID), []byte{'E', 0, 0xff}}, 0, cqrsnats.ErrBadReply, nil},
		{"the stream forgotten", []any{acceptFrame(8, itemID), []byte{'X'}}, 0, cqrsnats.ErrTransport, nil},
		{"silence after acceptance", []any{acceptFrame(8, itemID)}, 0, cqrsnats.ErrTransport, nil},
		{"no acceptance", nil, 0, cqrsnats.ErrTransport, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := startServer(t, -1)
			fake := connect(t, ns.ClientURL())
			fakeServer(t, fake, func(inbox string, key []byte) {
				for _, f := range tc.frames {
					switch f := f.(type) {
					case *natsgo.Msg:
						m := *f
						m.Subject = inbox
						m.Data = keyed(m.Data, key)
						_ = fake.PublishMsg(&m)
					case []byte:
						_ = fake.Publish(inbox, keyed(f, key))
					}
				}
			})
			client := cqrsnats.NewClient(connect(t, ns.ClientURL()), cqrsnats.WithMaxPayload(1024), cqrsnats.WithTimeout(time.Second))
			queries := cqrs.NewQueryBus()
			require.NoError(t, cqrsnats.ForwardStream[ListItems, Item](queries, client,
				cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{Window: 8, Heartbeat: fakeHeartbeat})))
			start := time.Now()
			read, err := lastError(t, cqrs.Stream(context.Background(), queries, ListItems{Count: 1}))
			assert.Equal(t, tc.items, read)
			require.ErrorIs(t, err, tc.want)
			if tc.also != nil {
				assert.ErrorIs(t, err, tc.also)
			}
			assert.Less(t, time.Since(start), 5*time.Second)
			assert.False(t, errors.Is(err, context.Canceled))
		})
	}
}

// TestStreamTwoServingProcesses: two processes serving ListItems share
// the streams, each stream runs on one; when one is killed, its streams
// fail with a transport error and new ones go to the other. No stream
// loses, repeats or mixes items.
func TestStreamTwoServingProcesses(t *testing.T) {
	ns := startServer(t, -1)
	victim := connect(t, ns.ClientURL())
	a, _ := serveStreams(t, victim)
	b, _ := serveStreams(t, connect(t, ns.ClientURL()))
	queries := callStreams(t, connect(t, ns.ClientURL()))

	// run reads streams streams of n items at once, each paced so that
	// the kill finds some under way, and counts how they ended.
	run := func(streams, n int, pause time.Duration, during func()) (ok, transport, broken int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		started := make(chan struct{}, streams)
		for s := range streams {
			wg.Go(func() {
				next := s * n
				var last error
				for item, err := range cqrs.Stream(context.Background(), queries, ListItems{From: s * n, Count: n, Pause: pause}) {
					if err != nil {
						last = err
						continue
					}
					if item.N == s*n {
						started <- struct{}{}
					}
					if item.N != next {
						last = errors.New("an item lost, repeated or misrouted")
					}
					next = item.N + 1
				}
				mu.Lock()
				defer mu.Unlock()
				switch {
				case last == nil && next == (s+1)*n:
					ok++
				case errors.Is(last, cqrsnats.ErrTransport):
					transport++
				default:
					t.Log(s, last)
					broken++
				}
			})
		}
		for range streams {
			<-started
		}
		during()
		wg.Wait()
		return ok, transport, broken
	}

	ok, transport, broken := run(32, 200, time.Millisecond, func() {})
	assert.Equal(t, 32, ok)
	assert.Zero(t, transport+broken)
	sa, sb := a.Stats().Types[0], b.Stats().Types[0]
	assert.Equal(t, uint64(32), sa.Streams+sb.Streams, "each stream ran once")
	assert.Positive(t, sa.Streams)
	assert.Positive(t, sb.Streams)

	ok, transport, broken = run(16, 200, time.Millisecond, victim.Close)
	t.Logf("with one of two serving processes killed: %d streams ended, %d failed with ErrTransport", ok, transport)
	assert.Equal(t, 16, ok+transport, "every stream either ended whole or failed with ErrTransport")
	assert.Zero(t, broken)
	assert.Positive(t, transport, "the killed process ran none of the streams: the test shows nothing")
	require.Eventually(t, func() bool { return a.Stats().Types[0].Running == 0 }, 5*time.Second, time.Millisecond,
		"the killed process's producers stopped")

	ok, transport, broken = run(8, 100, 0, func() {})
	assert.Equal(t, 8, ok, "new streams go to the surviving process")
	assert.Zero(t, transport+broken)
}
