package nats_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// placeOrderID is the identity PlaceOrder's requests carry.
const placeOrderID = "github.com/typedcqrs/dispatch/transport/nats_test.PlaceOrder"

// runs records the handler runs of a test server.
type runs struct {
	started, running, late atomic.Int64
	deadlines              sync.Map // order id -> the caller's deadline
	lastStart              atomic.Int64
}

// slowServer serves PlaceOrder with a handler that takes d, or less if
// its context ends first, and records its runs.
func slowServer(t *testing.T, url string, d time.Duration, opts ...cqrsnats.Option) (*cqrsnats.Server, *runs) {
	t.Helper()
	r := &runs{}
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(ctx context.Context, c PlaceOrder) (Order, error) {
		now := time.Now()
		r.started.Add(1)
		r.running.Add(1)
		defer r.running.Add(-1)
		r.lastStart.Store(now.UnixNano())
		if d, ok := r.deadlines.Load(c.ID); ok && now.After(d.(time.Time)) {
			r.late.Add(1)
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return Order{}, ctx.Err()
		}
		return Order{ID: c.ID}, nil
	})))
	srv, err := cqrsnats.Serve(connect(t, url), bus, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	return srv, r
}

// TestFloodStartsNoHandlerAfterItsCallersDeadline overloads a server whose
// handler takes 3 ms with 64 callers that each give up after 100 ms:
// the requests that wait too long must be dropped, never started late.
func TestFloodStartsNoHandlerAfterItsCallersDeadline(t *testing.T) {
	ns := startServer(t, -1)
	srv, r := slowServer(t, ns.ClientURL(), 3*time.Millisecond)
	commands, _ := calling(t, connect(t, ns.ClientURL()))

	var next atomic.Int64
	var ok, failed atomic.Int64
	stop := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				id := int(next.Add(1))
				deadline := time.Now().Add(100 * time.Millisecond)
				r.deadlines.Store(id, deadline)
				ctx, cancel := context.WithDeadline(context.Background(), deadline)
				_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: id, Item: "x"})
				cancel()
				if err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	callersDone := time.Now()
	time.Sleep(100 * time.Millisecond) // anything still queued would start now
	st := srv.Stats()[0]
	t.Logf("flood: %d calls, %d ok, %d failed; server: %d started, %d late, %d expired, %d unavailable; last start %v after the last caller returned",
		next.Load(), ok.Load(), failed.Load(), r.started.Load(), r.late.Load(), st.Expired, st.Unavailable,
		time.Duration(r.lastStart.Load()-callersDone.UnixNano()))
	assert.Zero(t, r.late.Load(), "handler runs started after their caller's deadline")
	assert.Positive(t, st.Expired, "the flood overloaded the server: some requests expired in its queue")
	assert.Positive(t, ok.Load())
	assert.LessOrEqual(t, r.lastStart.Load(), callersDone.UnixNano(), "work went on after every caller had gone")
}

// TestClientTimeoutReachesTheServer: a caller with no deadline of its own
// but a client timeout of 200 ms; the handler must get that deadline and
// end with it, not run on.
func TestClientTimeoutReachesTheServer(t *testing.T) {
	ns := startServer(t, -1)
	var seen atomic.Value
	ended := make(chan time.Time, 1)
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(ctx context.Context, c PlaceOrder) (Order, error) {
		if d, ok := ctx.Deadline(); ok {
			seen.Store(d)
		}
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
		ended <- time.Now()
		return Order{}, ctx.Err()
	})))
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), bus)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()
	commands, _ := calling(t, connect(t, ns.ClientURL()), cqrsnats.WithTimeout(200*time.Millisecond))

	start := time.Now()
	_, err = cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 1, Item: "x"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	end := <-ended
	d, ok := seen.Load().(time.Time)
	require.True(t, ok, "the handler's context has the caller's deadline")
	assert.WithinDuration(t, start.Add(200*time.Millisecond), d, 100*time.Millisecond)
	assert.Less(t, end.Sub(start), time.Second, "the handler ran on after the caller gave up")
}

// deadlineServer serves PlaceOrder with a handler that stores its
// context's deadline in the value it returns and, when wait, returns only
// when its context ends.
func deadlineServer(t *testing.T, url string, wait bool, opts ...cqrsnats.Option) *atomic.Value {
	t.Helper()
	var seen atomic.Value
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(ctx context.Context, _ PlaceOrder) (Order, error) {
		d, _ := ctx.Deadline()
		seen.Store(d)
		if wait {
			<-ctx.Done()
		}
		return Order{}, ctx.Err()
	})))
	srv, err := cqrsnats.Serve(connect(t, url), bus, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	return &seen
}

// TestRequestsWithoutDeadlineAreCapped sends requests that carry no
// deadline, or one of 2^63 ns or more, or a longer one than the cap: the
// handler gets the server's cap.
func TestRequestsWithoutDeadlineAreCapped(t *testing.T) {
	ns := startServer(t, -1)
	seen := deadlineServer(t, ns.ClientURL(), true, cqrsnats.WithMaxHandlerTime(200*time.Millisecond))
	nc := connect(t, ns.ClientURL())

	for _, data := range [][]byte{
		[]byte(`{"id":1,"item":"x"}`),
		sealWith(1<<63, `{"id":2,"item":"x"}`),
		sealWith(1<<64-1, `{"id":3,"item":"x"}`),
		sealFor(placeOrderID, time.Hour, `{"id":4,"item":"x"}`),
	} {
		start := time.Now()
		reply, err := nc.Request(placeOrderSubject, data, 5*time.Second)
		require.NoError(t, err)
		assert.Equal(t, "deadline_exceeded", reply.Header.Get("Nats-Service-Error-Code"))
		assert.Less(t, time.Since(start), 2*time.Second)
		d, _ := seen.Load().(time.Time)
		assert.WithinDuration(t, start.Add(200*time.Millisecond), d, 100*time.Millisecond)
	}
}

// sealWith builds PlaceOrder's envelope with any timeout varint.
func sealWith(ns uint64, payload string) []byte {
	out := binary.AppendUvarint([]byte{0x01}, ns)
	out = binary.AppendUvarint(out, 0)
	out = binary.AppendUvarint(out, uint64(len(placeOrderID)))
	return append(append(out, placeOrderID...), payload...)
}

// TestSkewedClockShortensAQuarterAtMost: the caller's wall-clock deadline
// moves the handler's deadline earlier by at most a quarter of the
// remaining time, however far ahead the serving clock seems to run, and
// never later.
func TestSkewedClockShortensAQuarterAtMost(t *testing.T) {
	ns := startServer(t, -1)
	seen := deadlineServer(t, ns.ClientURL(), false)
	nc := connect(t, ns.ClientURL())
	for _, tc := range []struct {
		wall time.Duration // the caller's wall-clock deadline, from now
		want time.Duration // the handler's deadline, from now
	}{
		{-time.Hour, 300 * time.Millisecond}, // the serving clock runs an hour ahead
		{time.Hour, 400 * time.Millisecond},  // or behind
		{350 * time.Millisecond, 350 * time.Millisecond},
	} {
		start := time.Now()
		data := binary.AppendUvarint([]byte{0x01}, uint64(400*time.Millisecond))
		data = binary.AppendUvarint(data, uint64(start.Add(tc.wall).UnixNano()))
		data = binary.AppendUvarint(data, uint64(len(placeOrderID)))
		data = append(append(data, placeOrderID...), `{"id":1,"item":"x"}`...)
		_, err := nc.Request(placeOrderSubject, data, 5*time.Second)
		require.NoError(t, err)
		d, _ := seen.Load().(time.Time)
		assert.WithinDuration(t, start.Add(tc.want), d, 30*time.Millisecond, "wall deadline %v", tc.wall)
	}
}

// TestTimeOnTheWayComesOffTheDeadline: once a caller's requests have
// shown how long their way takes at least, a request that spent longer
// on its way (as under load: more than the quarter of its time that its
// wall-clock deadline alone may take off) gets a deadline no later than
// its caller's, and a handler that starts before the caller gives up.
func TestTimeOnTheWayComesOffTheDeadline(t *testing.T) {
	ns := startServer(t, -1)
	seen := deadlineServer(t, ns.ClientURL(), false)
	nc := connect(t, ns.ClientURL())
	for _, tc := range []struct {
		timeout, wall time.Duration // the caller's remaining time, and its wall-clock deadline from now
		want          time.Duration // the handler's deadline, from now
	}{
		{time.Second, time.Second, time.Second},                       // quick: it tells the least lag
		{time.Second, 400 * time.Millisecond, 400 * time.Millisecond}, // 600 ms on its way
	} {
		start := time.Now()
		data := binary.AppendUvarint([]byte{0x01}, uint64(tc.timeout))
		data = binary.AppendUvarint(data, uint64(start.Add(tc.wall).UnixNano()))
		data = binary.AppendUvarint(data, uint64(len(placeOrderID)))
		data = append(append(data, placeOrderID...), `{"id":1,"item":"x"}`...)
		_, err := nc.Request(placeOrderSubject, data, 5*time.Second)
		require.NoError(t, err)
		d, _ := seen.Load().(time.Time)
		assert.WithinDuration(t, start.Add(tc.want), d, 30*time.Millisecond, "wall deadline %v", tc.wall)
	}
}

// flood publishes n requests of about size bytes each for PlaceOrder,
// with reply subjects under the inbox, and returns a counter of the
// replies.
func flood(t *testing.T, nc *natsgo.Conn, n, size int, timeout time.Duration) *atomic.Int64 {
	t.Helper()
	var replies atomic.Int64
	sub, err := nc.Subscribe("_INBOX.flood.>", func(*natsgo.Msg) { replies.Add(1) })
	require.NoError(t, err)
	require.NoError(t, sub.SetPendingLimits(-1, -1))
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	item := strings.Repeat("x", size)
	for i := range n {
		data := sealFor(placeOrderID, timeout, fmt.Sprintf(`{"id":%d,"item":%q}`, i, item))
		require.NoError(t, nc.PublishRequest(placeOrderSubject, fmt.Sprintf("_INBOX.flood.%d", i), data))
	}
	require.NoError(t, nc.Flush())
	return &replies
}

// TestFloodHeapIsBounded sends 60,000 requests of 1 KiB, as fast as one
// connection can, to a serving process whose handler takes 2 ms: its
// queue is bounded, so its heap is too, and the rest are refused at once.
// The serving process is this test binary run again (see TestMain and
// servingProcess), so that its heap holds neither the embedded NATS
// server nor the publisher.
func TestFloodHeapIsBounded(t *testing.T) {
	ns := startServer(t, -1)
	nc := connect(t, ns.ClientURL())
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), servingProcessEnv+"="+ns.ClientURL())
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	defer func() {
		_ = nc.Publish("flood.stop", nil)
		_ = nc.Flush()
		assert.NoError(t, cmd.Wait())
	}()
	var stats []cqrsnats.EndpointStats
	readStats := func() bool {
		reply, err := nc.Request("cqrs._stats", nil, time.Second)
		return err == nil && json.Unmarshal(reply.Data, &stats) == nil && len(stats) == 1
	}
	require.Eventually(t, readStats, 20*time.Second, 10*time.Millisecond, "the serving process came up")

	const n = 60000
	replies := flood(t, nc, n, 1024, 300*time.Millisecond)
	require.Eventually(t, func() bool {
		return readStats() && stats[0].Calls+stats[0].Expired+stats[0].Unavailable+stats[0].Dropped == n
	}, 30*time.Second, 10*time.Millisecond)
	reply, err := nc.Request("flood.heap", nil, 5*time.Second)
	require.NoError(t, err)
	var heap struct{ Live, Peak int64 }
	require.NoError(t, json.Unmarshal(reply.Data, &heap))
	st := stats[0]
	t.Logf("60,000 x 1 KiB: serving process heap: live at most +%.1f MiB, peak (garbage included) +%.1f MiB; %d ran, %d expired, %d unavailable, %d dropped by NATS, %d replies",
		float64(heap.Live)/(1<<20), float64(heap.Peak)/(1<<20), st.Calls, st.Expired, st.Unavailable, st.Dropped, replies.Load())
	assert.Less(t, heap.Live, int64(32<<20), "the serving process's live heap is bounded")
	assert.Positive(t, st.Unavailable, "a full queue refuses")
}

// TestStopUnderBacklog stops a server with thousands of requests queued,
// from three goroutines at once: each Stop returns within its bound, and
// when they have, no handler runs or starts.
func TestStopUnderBacklog(t *testing.T) {
	ns := startServer(t, -1)
	srv, r := slowServer(t, ns.ClientURL(), 2*time.Millisecond)
	replies := flood(t, connect(t, ns.ClientURL()), 5000, 1024, 10*time.Second)
	require.Eventually(t, func() bool { return r.started.Load() >= 5 }, 5*time.Second, time.Millisecond)

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := srv.Stop(ctx)
			assert.Less(t, time.Since(start), time.Second, "Stop outlived its context")
			if err != nil {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.NoError(t, srv.Stop(ctx), "a later Stop waits for the last handler")
	assert.Zero(t, r.running.Load(), "a handler still runs after Stop")
	started := r.started.Load()
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, started, r.started.Load(), "a handler started after Stop")
	t.Logf("stop under a backlog of 5,000: %d handlers ran, %d requests got a reply", started, replies.Load())
}

// TestStopReportsHandlersStillRunning: a handler that ignores its context
// outlives Stop's; Stop says which, and a later Stop waits for it.
func TestStopReportsHandlersStillRunning(t *testing.T) {
	ns := startServer(t, -1)
	release := make(chan struct{})
	started := make(chan struct{})
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(context.Context, PlaceOrder) (Order, error) {
		close(started)
		<-release
		return Order{}, nil
	})))
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), bus)
	require.NoError(t, err)
	commands, _ := calling(t, connect(t, ns.ClientURL()))
	done := make(chan error)
	go func() {
		_, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 1, Item: "x"})
		done <- err
	}()
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = srv.Stop(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "1 handlers still running: command nats_test.PlaceOrder")
	close(release)
	require.NoError(t, srv.Stop(context.Background()))
	require.NoError(t, <-done, "the request was answered")
}

// TestStopCancelsHandlersNotAsTheCallersError: a handler whose context
// Stop cancels fails with "canceled", which is the serving process's
// doing: on the calling side it is not a caller's error, so a retry may
// take it to another process.
func TestStopCancelsHandlersNotAsTheCallersError(t *testing.T) {
	ns := startServer(t, -1)
	started := make(chan struct{})
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(ctx context.Context, _ PlaceOrder) (Order, error) {
		close(started)
		<-ctx.Done()
		return Order{}, ctx.Err()
	})))
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), bus)
	require.NoError(t, err)
	commands, _ := calling(t, connect(t, ns.ClientURL()))
	done := make(chan error)
	go func() {
		_, err := cqrs.Dispatch[Order](context.Background(), commands, PlaceOrder{ID: 1, Item: "x"})
		done <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = srv.Stop(ctx)
	require.NoError(t, srv.Stop(context.Background()))
	err = <-done
	var remote *cqrsnats.RemoteError
	require.ErrorAs(t, err, &remote)
	assert.Equal(t, "canceled", remote.Code)
	assert.NotErrorIs(t, err, context.Canceled)
	assert.False(t, middleware.IsCallerError(err))
}

// slowDecoding is JSON whose Unmarshal takes a while, as a worker held up
// on a loaded machine would.
type slowDecoding struct {
	cqrsnats.JSON
	took time.Duration
}

func (c slowDecoding) Unmarshal(data []byte, v any) error {
	time.Sleep(c.took)
	return c.JSON.Unmarshal(data, v)
}

// TestRequestLateAfterDecodingIsNotStarted: a request whose caller gives
// up while the worker decodes it is dropped as expired, and its handler
// never starts. The worker looks at the deadline again just before the
// handler; before, only when it took the request.
func TestRequestLateAfterDecodingIsNotStarted(t *testing.T) {
	ns := startServer(t, -1)
	codec := slowDecoding{took: 300 * time.Millisecond}
	srv, r := slowServer(t, ns.ClientURL(), time.Millisecond, cqrsnats.WithCodec(codec))
	commands, _ := calling(t, connect(t, ns.ClientURL()), cqrsnats.WithCodec(codec))

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool { return srv.Stats()[0].Expired == 1 }, 2*time.Second, 5*time.Millisecond,
		"the request is counted as expired once decoded")
	assert.Zero(t, r.started.Load(), "the handler never started")
}
