package nats_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// loadResult is what a run of load saw: the counts, and the errors of the
// failed calls by kind.
type loadResult struct {
	faultCounts
	kinds map[string]int
}

// errorKind names the class of a failed call's error.
func errorKind(err error) string {
	switch {
	case errors.Is(err, cqrsnats.ErrTransport) && errors.Is(err, context.DeadlineExceeded):
		return "transport+deadline"
	case errors.Is(err, cqrsnats.ErrTransport):
		return "transport"
	case errors.Is(err, cqrsnats.ErrNoResponders):
		return "no responders"
	case errors.Is(err, cqrsnats.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	default:
		return err.Error()
	}
}

// neverRan reports whether err says the request was not handled.
func neverRan(err error) bool {
	return errors.Is(err, cqrsnats.ErrNoResponders) || errors.Is(err, cqrsnats.ErrUnavailable) ||
		errors.Is(err, cqrsnats.ErrTransport) && !errors.Is(err, context.DeadlineExceeded)
}

// load sends PlaceOrder with distinct ids from callers goroutines for d,
// calls fault once after a third of d, and counts, against the handlers'
// records in servers: lost (a call that succeeded or said its request
// never ran, when the handlers say otherwise), duplicated (handled more
// than once; the handler also fails the test) and misrouted (a reply for
// another request).
func load(t *testing.T, commands *cqrs.CommandBus, servers []*serving, callers int, d time.Duration, fault func()) loadResult {
	t.Helper()
	res := loadResult{kinds: map[string]int{}}
	var mu sync.Mutex
	outcome := map[int]error{}
	var next atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				id := int(next.Add(1))
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				order, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: id, Item: "x"})
				cancel()
				mu.Lock()
				res.Sent++
				switch {
				case err != nil:
					res.Failed++
					res.kinds[errorKind(err)]++
				case order.ID != id:
					res.Misrouted++
				default:
					res.OK++
				}
				outcome[id] = err
				mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond) // as a caller's backoff would
				}
			}
		})
	}
	time.Sleep(d / 3)
	fault()
	wg.Wait()
	for id, err := range outcome {
		handled := 0
		for _, s := range servers {
			if _, ok := s.handled.Load(id); ok {
				handled++
			}
		}
		switch {
		case handled > 1:
			res.Duplicated++
		case err == nil && handled == 0, err != nil && neverRan(err) && handled > 0:
			res.Lost++
		}
	}
	return res
}

// reconnecting are the options of a connection that rides out a restart.
func reconnecting() []natsgo.Option {
	return []natsgo.Option{natsgo.MaxReconnects(-1), natsgo.ReconnectWait(20 * time.Millisecond)}
}

// TestLoadAcrossServerRestart restarts the NATS server under load.
func TestLoadAcrossServerRestart(t *testing.T) {
	ns := startServer(t, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	s := serve(t, connect(t, ns.ClientURL(), reconnecting()...), "s1")
	commands, _ := calling(t, connect(t, ns.ClientURL(), reconnecting()...))
	res := load(t, commands, []*serving{s}, 16, 1500*time.Millisecond, func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		time.Sleep(200 * time.Millisecond)
		startServer(t, port)
	})
	t.Logf("server restart: %+v, failures %v", res.faultCounts, res.kinds)
	assert.Zero(t, res.Lost, "lost")
	assert.Zero(t, res.Duplicated, "duplicated")
	assert.Zero(t, res.Misrouted, "misrouted")
	assert.Positive(t, res.OK)
	for kind := range res.kinds {
		assert.Contains(t, []string{"transport", "transport+deadline", "no responders", "deadline"}, kind, "an error the docs do not list")
	}
}

// TestLoadAcrossAnAbruptKill closes one of two serving processes'
// connections under load, with no Stop: its queued requests die with it,
// and the other process takes the rest.
func TestLoadAcrossAnAbruptKill(t *testing.T) {
	ns := startServer(t, -1)
	victim := connect(t, ns.ClientURL())
	servers := []*serving{serve(t, victim, "victim"), serve(t, connect(t, ns.ClientURL()), "survivor")}
	commands, _ := calling(t, connect(t, ns.ClientURL()))
	res := load(t, commands, servers, 16, 1500*time.Millisecond, victim.Close)
	t.Logf("abrupt kill of one of two serving processes: %+v, failures %v", res.faultCounts, res.kinds)
	assert.Zero(t, res.Lost, "lost")
	assert.Zero(t, res.Duplicated, "duplicated")
	assert.Zero(t, res.Misrouted, "misrouted")
	assert.Positive(t, res.OK)
}

// TestFailFastWhenNATSCanTell: with the only serving process gone, or the
// connection down, a call fails at once with a clear error instead of
// waiting for its deadline.
func TestFailFastWhenNATSCanTell(t *testing.T) {
	ns := startServer(t, -1)
	serving := connect(t, ns.ClientURL())
	serve(t, serving, "s1")
	callingConn := connect(t, ns.ClientURL(), reconnecting()...)
	commands, _ := calling(t, callingConn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 1, Item: "x"})
	require.NoError(t, err)

	serving.Close() // killed, no Stop
	require.Eventually(t, func() bool { return ns.NumClients() == 1 }, 5*time.Second, time.Millisecond, "NATS saw the process go")
	start := time.Now()
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 2, Item: "x"})
	require.ErrorIs(t, err, cqrsnats.ErrNoResponders)
	assert.Less(t, time.Since(start), 500*time.Millisecond)

	ns.Shutdown()
	ns.WaitForShutdown()
	require.Eventually(t, func() bool { return !callingConn.IsConnected() }, 5*time.Second, time.Millisecond)
	start = time.Now()
	_, err = cqrs.Dispatch[Order](ctx, commands, PlaceOrder{ID: 3, Item: "x"})
	require.ErrorIs(t, err, cqrsnats.ErrTransport)
	assert.Less(t, time.Since(start), 500*time.Millisecond, "a call waited for its deadline on a connection that is down")
}
