package nats_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// serviceCounts are what a run of serviceLoad saw, each kind of call
// counted apart.
type serviceCounts struct {
	Commands, Queries, Streams faultCounts
	// Events: LostEvents counts the commands whose caller saw them
	// succeed and whose event never reached the caller's subscriber;
	// Unsent those handled whose event never came (their caller saw a
	// failure); the others, the events delivered twice, or for no handled
	// command.
	Events, LostEvents, Unsent, DuplicatedEvents, MisroutedEvents int
	kinds                                                         map[string]int
}

// serviceLoad calls the warehouse service forwarded on c from callers
// goroutines for d: each caller reserves an ID of its own, looks it up
// and reads a stream of 3 picks for it, each call with a deadline of
// 1 s of its own. After a third of d it calls fault. It then counts, against the
// handlers' records in servers: commands lost (a success nobody handled,
// or one handled whose caller was told it never ran), duplicated (handled
// twice) and misrouted (a reply for another ID, or from another
// process); queries and streams that answered for another ID; and the
// commands' events, as serviceCounts says.
func serviceLoad(t *testing.T, c *customer, servers []*warehouse, callers int, d time.Duration, fault func()) serviceCounts {
	t.Helper()
	res := serviceCounts{kinds: map[string]int{}}
	var mu sync.Mutex
	outcome := map[int]error{}
	names := map[string]bool{}
	for _, w := range servers {
		names[w.name] = true
	}
	failed := func(counts *faultCounts, what string, err error) {
		counts.Failed++
		res.kinds[what+": "+errorKind(err)]++
	}
	var next atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				id := int(next.Add(1))
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				r, err := cqrs.Send(ctx, c.commands, Reserve{ID: id, SKU: "lamp"})
				cancel()
				mu.Lock()
				res.Commands.Sent++
				outcome[id] = err
				switch {
				case err != nil:
					failed(&res.Commands, "command", err)
				case r.ID != id || !names[r.By]:
					res.Commands.Misrouted++
				default:
					res.Commands.OK++
				}
				mu.Unlock()

				ctx, cancel = context.WithTimeout(context.Background(), time.Second)
				got, qerr := cqrs.Ask(ctx, c.queries, Lookup{ID: id})
				cancel()
				mu.Lock()
				res.Queries.Sent++
				switch {
				case qerr != nil:
					failed(&res.Queries, "query", qerr)
				case got.ID != id || !names[got.By]:
					res.Queries.Misrouted++
				default:
					res.Queries.OK++
				}
				mu.Unlock()

				ctx, cancel = context.WithTimeout(context.Background(), time.Second)
				var picks []Pick
				var serr error
				for p, err := range cqrs.Stream(ctx, c.queries, Picks{ID: id, N: 3}) {
					if err != nil {
						serr = err
						break
					}
					picks = append(picks, p)
				}
				cancel()
				mu.Lock()
				res.Streams.Sent++
				wrong := false
				for i, p := range picks {
					wrong = wrong || p.ID != id || p.Seq != i || !names[p.By] || p.By != picks[0].By
				}
				switch {
				case wrong:
					res.Streams.Misrouted++
				case serr != nil:
					failed(&res.Streams, "stream", serr)
				case len(picks) != 3:
					res.Streams.Lost++ // ended without an error, short
				default:
					res.Streams.OK++
				}
				mu.Unlock()
				if err != nil || qerr != nil || serr != nil {
					time.Sleep(5 * time.Millisecond) // as a caller's backoff would
				}
			}
		})
	}
	time.Sleep(d / 3)
	fault()
	wg.Wait()

	handledBy := func(id int) int {
		n := 0
		for _, w := range servers {
			if _, ok := w.handled.Load(id); ok {
				n++
			}
		}
		return n
	}
	var handled, answered []int
	for id, err := range outcome {
		n := handledBy(id)
		switch {
		case n > 1:
			res.Commands.Duplicated++
		case err == nil && n == 0, err != nil && neverRan(err) && n > 0:
			res.Commands.Lost++
		}
		if n > 0 {
			handled = append(handled, id)
			if err == nil {
				answered = append(answered, id)
			}
		}
	}
	// Every answered command's event was sent before its reply, on the
	// same connection: wait for those, then give the others a moment.
	received := func(id int) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.received[id]
	}
	assert.Eventually(t, func() bool {
		for _, id := range answered {
			if received(id) == 0 {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "the events of answered commands")
	time.Sleep(100 * time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, n := range c.received {
		res.Events += n
		switch {
		case handledBy(id) == 0:
			res.MisroutedEvents++
		case n > 1:
			res.DuplicatedEvents++
		}
	}
	for _, id := range handled {
		if c.received[id] == 0 {
			if outcome[id] == nil {
				res.LostEvents++
			} else {
				res.Unsent++
			}
		}
	}
	return res
}

// servedSome reports how many commands each warehouse handled.
func servedSome(servers ...*warehouse) map[string]int {
	out := map[string]int{}
	for _, w := range servers {
		w.handled.Range(func(any, any) bool {
			out[w.name]++
			return true
		})
	}
	return out
}

// TestServiceRestartMidTraffic restarts the serving side of a service,
// served with ServeService, under traffic of all four kinds: a new
// process comes up, then the old one stops, as a rolling restart does.
// Nothing is lost, duplicated or misrouted; the only failures are
// streams that the stopping process refused ([ErrUnavailable]: safe to
// retry), and every command's event reaches the caller.
func TestServiceRestartMidTraffic(t *testing.T) {
	ns := startServer(t, -1)
	c := forwardWarehouse(t, connect(t, ns.ClientURL()), cqrsnats.EventConfig{})
	old, fresh := newWarehouse(t, "old"), newWarehouse(t, "new")
	oldConn := connect(t, ns.ClientURL())
	oldSrv, err := cqrsnats.ServeService(oldConn, old.service())
	require.NoError(t, err)

	res := serviceLoad(t, c, []*warehouse{old, fresh}, 8, 1500*time.Millisecond, func() {
		serveWarehouse(t, connect(t, ns.ClientURL()), fresh)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, oldSrv.Stop(ctx))
		oldConn.Close()
	})
	served := servedSome(old, fresh)
	t.Logf("restart of the serving side: commands %+v, queries %+v, streams %+v; events %d, lost %d, unsent %d, duplicated %d, misrouted %d; served %v; failures %v",
		res.Commands, res.Queries, res.Streams, res.Events, res.LostEvents, res.Unsent, res.DuplicatedEvents, res.MisroutedEvents, served, res.kinds)
	for _, kind := range []faultCounts{res.Commands, res.Queries, res.Streams} {
		assert.Zero(t, kind.Lost, "lost")
		assert.Zero(t, kind.Duplicated, "duplicated")
		assert.Zero(t, kind.Misrouted, "misrouted")
		assert.Positive(t, kind.OK)
	}
	assert.Zero(t, res.Commands.Failed, "a command failed across a rolling restart")
	assert.Zero(t, res.Queries.Failed, "a query failed across a rolling restart")
	for kind := range res.kinds {
		assert.Equal(t, "stream: unavailable", kind, "a failure other than a refused stream")
	}
	assert.Zero(t, res.LostEvents+res.Unsent, "lost events")
	assert.Zero(t, res.DuplicatedEvents, "duplicated events")
	assert.Zero(t, res.MisroutedEvents, "misrouted events")
	assert.Positive(t, served["old"], "the old process served nothing")
	assert.Positive(t, served["new"], "the new process served nothing")
}

// TestServiceAbruptKillMidTraffic kills the serving side of a service
// (its connection closed, no Stop) under traffic, with a second process
// already up. The calls in flight there fail, with their deadline or a
// transport error, but nothing is lost, duplicated or misrouted, and the
// event of every command whose caller saw it succeed reaches the caller.
func TestServiceAbruptKillMidTraffic(t *testing.T) {
	ns := startServer(t, -1)
	c := forwardWarehouse(t, connect(t, ns.ClientURL()), cqrsnats.EventConfig{})
	victim, survivor := newWarehouse(t, "victim"), newWarehouse(t, "survivor")
	victimConn := connect(t, ns.ClientURL())
	serveWarehouse(t, victimConn, victim)
	serveWarehouse(t, connect(t, ns.ClientURL()), survivor)

	res := serviceLoad(t, c, []*warehouse{victim, survivor}, 8, 1500*time.Millisecond, victimConn.Close)
	served := servedSome(victim, survivor)
	t.Logf("abrupt kill of one of two serving processes: commands %+v, queries %+v, streams %+v; events %d, lost %d, unsent %d, duplicated %d, misrouted %d; served %v; failures %v",
		res.Commands, res.Queries, res.Streams, res.Events, res.LostEvents, res.Unsent, res.DuplicatedEvents, res.MisroutedEvents, served, res.kinds)
	for _, kind := range []faultCounts{res.Commands, res.Queries, res.Streams} {
		assert.Zero(t, kind.Lost, "lost")
		assert.Zero(t, kind.Duplicated, "duplicated")
		assert.Zero(t, kind.Misrouted, "misrouted")
		assert.Positive(t, kind.OK)
	}
	for kind := range res.kinds {
		_, err, _ := strings.Cut(kind, ": ")
		assert.Contains(t, []string{"deadline", "transport", "transport+deadline", "no responders", "unavailable"}, err,
			"an error the docs do not list: %s", kind)
	}
	assert.Zero(t, res.LostEvents, "the event of an answered command was lost")
	assert.Zero(t, res.DuplicatedEvents, "duplicated events")
	assert.Zero(t, res.MisroutedEvents, "misrouted events")
	assert.Positive(t, served["survivor"])
}

// TestServiceStopAnswersEveryStreamRequest: a Stop that starts while a
// burst of stream requests is arriving answers each request the process
// received, with a stream or a refusal, before it returns, so that
// closing the connection right after loses none: each caller gets items,
// ErrUnavailable, or ErrNoResponders, never a wait for its deadline.
func TestServiceStopAnswersEveryStreamRequest(t *testing.T) {
	ns := startServer(t, -1)
	w := newWarehouse(t, "w1")
	serving := connect(t, ns.ClientURL())
	srv, err := cqrsnats.ServeService(serving, w.service())
	require.NoError(t, err)
	c := forwardWarehouse(t, connect(t, ns.ClientURL()), cqrsnats.EventConfig{})

	const callers = 200
	start, first := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	outcomes := map[string]int{}
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			outcome := "ok"
			for _, err := range cqrs.Stream(ctx, c.queries, Picks{ID: i, N: 1}) {
				if err != nil {
					outcome = errorKind(err)
				} else {
					once.Do(func() { close(first) })
				}
			}
			mu.Lock()
			outcomes[outcome]++
			mu.Unlock()
		})
	}
	close(start)
	<-first // the burst is arriving: stop in the middle of it
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, srv.Stop(ctx))
	serving.Close()
	wg.Wait()
	t.Logf("stream requests during Stop: %v", outcomes)
	for outcome := range outcomes {
		assert.Contains(t, []string{"ok", "unavailable", "no responders"}, outcome, "a request the stopping process received went unanswered")
	}
}
