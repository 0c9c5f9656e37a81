package nats_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// The faults of a deployment: several processes, each with its own
// connection, serving durable commands from one NATS server. Each test
// counts the commands lost, handled twice and handled by the wrong
// service.

// Cancel and Invoice are durable commands besides Ship.
type (
	Cancel  struct{ Order int }
	Invoice struct{ Number int }
)

// ledger counts how often each command was handled, across processes.
type ledger struct {
	mu      sync.Mutex
	seen    map[string]int
	changed chan struct{}
}

func newLedger() *ledger {
	return &ledger{seen: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (l *ledger) add(key string) {
	l.mu.Lock()
	l.seen[key]++
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// distinct returns how many different commands were handled.
func (l *ledger) distinct() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// await waits, up to timeout, until n different commands were handled.
func (l *ledger) await(n int, timeout time.Duration) {
	deadline := time.After(timeout)
	for l.distinct() < n {
		select {
		case <-l.changed:
		case <-deadline:
			return
		}
	}
}

// count returns how many of keys were never handled and how many extra
// times the others were.
func (l *ledger) count(keys []string) (lost, duplicated int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		switch n := l.seen[k]; {
		case n == 0:
			lost++
		case n > 1:
			duplicated += n - 1
		}
	}
	return lost, duplicated
}

// handling returns a handler that records each command in l under the
// key key gives it.
func handling[C any](l *ledger, key func(C) string) cqrs.HandlerFunc[C, cqrs.NoResult] {
	return func(_ context.Context, c C) (cqrs.NoResult, error) {
		l.add(key(c))
		return cqrs.NoResult{}, nil
	}
}

func parcel(i int) Ship { return Ship{Parcel: i} }

func shipKey(c Ship) string       { return fmt.Sprint("ship ", c.Parcel) }
func cancelKey(c Cancel) string   { return fmt.Sprint("cancel ", c.Order) }
func invoiceKey(c Invoice) string { return fmt.Sprint("invoice ", c.Number) }

// startJetStreamServer is startJetStream that also returns the server,
// for its counters and to cut a client off.
func startJetStreamServer(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// process is one process: a connection of its own.
func process(t testing.TB, s *server.Server, opts ...natsgo.Option) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(connect(t, s.ClientURL(), opts...))
	require.NoError(t, err)
	return js
}

// enqueueAll enqueues n commands made by mk and returns their keys.
func enqueueAll[C any](t testing.TB, js jetstream.JetStream, n int, mk func(int) C, key func(C) string, cfg cqrsnats.DurableConfig) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range n {
		c := mk(i)
		require.NoError(t, cqrsnats.Enqueue(context.Background(), js, c, cfg))
		keys[i] = key(c)
	}
	return keys
}

// assertDrained waits until the work queue holds no command: every one
// has been acknowledged or buried.
func assertDrained(t testing.TB, js jetstream.JetStream, stream string) {
	t.Helper()
	assert.Eventually(t, func() bool {
		s, err := js.Stream(context.Background(), stream)
		if err != nil {
			return false
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	}, 10*time.Second, 20*time.Millisecond, "commands left in stream %s", stream)
}

// serveCommands serves bus durably until the test ends, and returns a
// function that stops it sooner.
func serveCommands(t testing.TB, js jetstream.JetStream, bus cqrs.Bus, cfg cqrsnats.DurableConfig, opts ...cqrsnats.Option) func() {
	t.Helper()
	srv, err := cqrsnats.ServeDurable(context.Background(), js, bus, cfg, opts...)
	require.NoError(t, err)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, srv.Stop(ctx))
	}
	t.Cleanup(stop)
	return stop
}

// assertHandled waits, up to within, for every one of keys to be handled
// and the work queue to drain, then reports the commands lost and
// duplicated, and checks that none was lost and at most maxDuplicated
// handled twice.
func assertHandled(t *testing.T, js jetstream.JetStream, l *ledger, keys []string, fault string, within time.Duration, maxDuplicated int) {
	t.Helper()
	l.await(len(keys), within)
	assertDrained(t, js, "CQRS_COMMANDS")
	lost, duplicated := l.count(keys)
	t.Logf("%s: %d commands, lost %d, duplicated %d", fault, len(keys), lost, duplicated)
	assert.Zero(t, lost, "commands lost")
	assert.LessOrEqual(t, duplicated, maxDuplicated, "commands handled twice")
}

// Rolling upgrade: v1 serves Ship; v2 serves Ship and Cancel; v1 stops
// while commands of both types keep coming. No Cancel may be dropped by
// v1, which does not know it.
func TestDurableRollingUpgrade(t *testing.T) {
	s := startJetStreamServer(t)
	client := process(t, s)
	l := newLedger()
	cfg := cqrsnats.DurableConfig{}

	v1 := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(v1, handling(l, shipKey)))
	js1 := process(t, s)
	stop1 := serveCommands(t, js1, v1, cfg)

	mkCancel := func(i int) Cancel { return Cancel{Order: i} }
	ships := enqueueAll(t, client, 100, parcel, shipKey, cfg)
	cancels := enqueueAll(t, client, 100, mkCancel, cancelKey, cfg)

	v2 := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(v2, handling(l, shipKey)))
	require.NoError(t, cqrs.Register(v2, handling(l, cancelKey)))
	js2 := process(t, s)
	serveCommands(t, js2, v2, cfg)

	ships = append(ships, enqueueAll(t, client, 100, func(i int) Ship { return Ship{Parcel: 100 + i} }, shipKey, cfg)...)
	cancels = append(cancels, enqueueAll(t, client, 100, func(i int) Cancel { return Cancel{Order: 100 + i} }, cancelKey, cfg)...)
	stop1() // v1 goes away, as in the last step of the upgrade

	l.await(400, 10*time.Second)
	assertDrained(t, client, "CQRS_COMMANDS")
	lostShip, dupShip := l.count(ships)
	lostCancel, dupCancel := l.count(cancels)
	t.Logf("rolling upgrade: Ship lost %d duplicated %d, Cancel lost %d duplicated %d", lostShip, dupShip, lostCancel, dupCancel)
	assert.Zero(t, lostShip, "Ship commands lost")
	assert.Zero(t, lostCancel, "Cancel commands lost")
	assert.Zero(t, dupShip+dupCancel, "commands handled twice in a graceful upgrade")
}

// Two services on one NATS, each serving its own type, with the default
// stream and queue group: neither takes, stalls or drops the other's
// commands.
func TestDurableTwoServices(t *testing.T) {
	s := startJetStreamServer(t)
	client := process(t, s)
	cfg := cqrsnats.DurableConfig{}

	shipped, invoiced := newLedger(), newLedger()
	misrouted := newLedger()
	a := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(a, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(_ context.Context, c Ship) (cqrs.NoResult, error) {
		if c.Parcel == 0 { // an Invoice decoded as a Ship has no parcel
			misrouted.add(shipKey(c))
		}
		shipped.add(shipKey(c))
		return cqrs.NoResult{}, nil
	})))
	b := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(b, cqrs.HandlerFunc[Invoice, cqrs.NoResult](func(_ context.Context, c Invoice) (cqrs.NoResult, error) {
		if c.Number == 0 {
			misrouted.add(invoiceKey(c))
		}
		invoiced.add(invoiceKey(c))
		return cqrs.NoResult{}, nil
	})))
	jsA := process(t, s)
	serveCommands(t, jsA, a, cfg)
	jsB := process(t, s)
	serveCommands(t, jsB, b, cfg)

	ships := enqueueAll(t, client, 200, func(i int) Ship { return Ship{Parcel: i + 1} }, shipKey, cfg)
	invoices := enqueueAll(t, client, 200, func(i int) Invoice { return Invoice{Number: i + 1} }, invoiceKey, cfg)

	shipped.await(200, 10*time.Second)
	invoiced.await(200, 10*time.Second)
	assertDrained(t, client, "CQRS_COMMANDS")
	lostShip, dupShip := shipped.count(ships)
	lostInvoice, dupInvoice := invoiced.count(invoices)
	t.Logf("two services: Ship lost %d duplicated %d, Invoice lost %d duplicated %d, misrouted %d",
		lostShip, dupShip, lostInvoice, dupInvoice, misrouted.distinct())
	assert.Zero(t, lostShip, "Ship commands lost or stalled")
	assert.Zero(t, lostInvoice, "Invoice commands lost or stalled")
	assert.Zero(t, dupShip+dupInvoice, "commands handled twice")
	assert.Zero(t, misrouted.distinct(), "commands handled by the other service")
}

// A serving process is cut off by the NATS server mid-command, with no
// Stop and no drain, as when it is killed; another comes up after it.
// None is lost; a command whose acknowledgement died with the process is
// handled again, and the test reports how many.
func TestDurableKilledConsumer(t *testing.T) {
	s := startJetStreamServer(t)
	client := process(t, s)
	cfg := cqrsnats.DurableConfig{AckWait: time.Second} // how soon a dead process's commands come back
	const total, killAt = 200, 50
	keys := enqueueAll(t, client, total, parcel, shipKey, cfg)

	l := newLedger()
	var (
		mu     sync.Mutex
		dead   bool
		killed = make(chan struct{})
	)
	js1 := process(t, s, natsgo.NoReconnect())
	first := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(first, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(_ context.Context, c Ship) (cqrs.NoResult, error) {
		mu.Lock()
		defer mu.Unlock()
		if dead {
			return cqrs.NoResult{}, nil // a dead process does nothing; its acks go nowhere
		}
		l.add(shipKey(c))
		if l.distinct() == killAt {
			// The work is done but the process dies before acknowledging it.
			dead = true
			cid, err := js1.Conn().GetClientID()
			if err == nil {
				err = s.DisconnectClientByID(cid)
			}
			assert.NoError(t, err)
			close(killed)
		}
		return cqrs.NoResult{}, nil
	})))
	serveCommands(t, js1, first, cfg)
	select {
	case <-killed:
	case <-time.After(10 * time.Second):
		t.Fatal("the first process never reached the kill")
	}

	second := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(second, handling(l, shipKey)))
	js2 := process(t, s)
	serveCommands(t, js2, second, cfg)

	// The command whose acknowledgement died with the process comes back;
	// earlier ones were confirmed before the next command started.
	assertHandled(t, client, l, keys, "killed consumer", 10*time.Second, 1)
}

// The NATS server restarts (same port, same store) while a process
// serves durable commands: the commands it stored survive, the process
// reconnects and goes on, none is lost; commands taken ahead when the
// server went away may be handled twice, and the test reports how many.
func TestDurableServerRestart(t *testing.T) {
	dir := t.TempDir()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: dir}
	start := func() *server.Server {
		s, err := server.NewServer(opts)
		require.NoError(t, err)
		go s.Start()
		require.True(t, s.ReadyForConnections(10*time.Second))
		return s
	}
	s := start()
	opts.Port = s.Addr().(*net.TCPAddr).Port // the restart takes the same port
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	reconnecting := []natsgo.Option{natsgo.MaxReconnects(-1), natsgo.ReconnectWait(50 * time.Millisecond)}
	client := process(t, s, reconnecting...)
	cfg := cqrsnats.DurableConfig{AckWait: time.Second}
	const total = 200
	keys := enqueueAll(t, client, total, parcel, shipKey, cfg)

	l := newLedger()
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(_ context.Context, c Ship) (cqrs.NoResult, error) {
		time.Sleep(time.Millisecond) // so that the restart finds work in progress
		l.add(shipKey(c))
		return cqrs.NoResult{}, nil
	})))
	serveCommands(t, process(t, s, reconnecting...), bus, cfg)
	l.await(50, 10*time.Second)
	require.GreaterOrEqual(t, l.distinct(), 50)

	s.Shutdown()
	s.WaitForShutdown()
	s = start()

	// The restarted server gives again the commands the process had taken
	// ahead (16 at most) while the process still holds them.
	assertHandled(t, client, l, keys, "server restart", 15*time.Second, 16)
}

// A handler that takes 150 ms, well within AckWait (1 s), works through
// a backlog: the commands the process holds while it handles others
// must not outlive AckWait and come back, so none is handled twice.
// Before, a process took 16 ahead and AckWait ran from their delivery:
// the same run handled 24 commands 40 times.
func TestDurableSlowHandlerBacklog(t *testing.T) {
	s := startJetStreamServer(t)
	client := process(t, s)
	cfg := cqrsnats.DurableConfig{AckWait: time.Second}
	const total = 20
	keys := enqueueAll(t, client, total, parcel, shipKey, cfg)

	l := newLedger()
	var cancelled atomic.Int32
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](func(ctx context.Context, c Ship) (cqrs.NoResult, error) {
		select {
		case <-time.After(150 * time.Millisecond):
		case <-ctx.Done():
			cancelled.Add(1)
			return cqrs.NoResult{}, ctx.Err()
		}
		l.add(shipKey(c))
		return cqrs.NoResult{}, nil
	})))
	stop := serveCommands(t, process(t, s), bus, cfg)

	// How many commands the process holds at once, sampled as it works.
	consumer := func() jetstream.Consumer {
		stream, err := client.Stream(context.Background(), "CQRS_COMMANDS")
		require.NoError(t, err)
		for name := range stream.ConsumerNames(context.Background()).Name() {
			c, err := stream.Consumer(context.Background(), name)
			require.NoError(t, err)
			return c
		}
		t.Fatal("no consumer")
		return nil
	}()
	var held atomic.Int64
	handled, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if info, err := consumer.Info(context.Background()); err == nil {
				held.Store(max(held.Load(), int64(info.NumAckPending)))
			}
			select {
			case <-handled:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	l.await(total, 15*time.Second)
	close(handled)
	<-sampled
	assertDrained(t, client, "CQRS_COMMANDS")
	stop() // a copy given again would be handled before Stop returns
	lost, duplicated := l.count(keys)
	t.Logf("slow handler (150 ms, AckWait 1 s): %d commands, lost %d, duplicated %d; at most %d held at once", total, lost, duplicated, held.Load())
	assert.Zero(t, lost, "commands lost")
	assert.Zero(t, duplicated, "commands handled twice")
	assert.Zero(t, cancelled.Load(), "handlers whose context ended")
	assert.LessOrEqual(t, held.Load(), int64(8), "commands a process holds at once")
}

// A ServeDurable refused because another queue group has one of its
// types leaves no consumer behind: the types it would have served stay
// free, and serving them rightly afterwards succeeds and handles every
// command that waited. Before, the consumers made before the refusal
// stayed and took their types' subjects: serving those types with the
// right queue group was refused, and their commands were stranded.
func TestDurableRefusedServeLeavesNoConsumer(t *testing.T) {
	s := startJetStreamServer(t)
	client := process(t, s)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{}

	// Another service serves Invoice with the default queue group.
	invoicing := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(invoicing, handling(newLedger(), invoiceKey)))
	serveCommands(t, process(t, s), invoicing, cfg)
	keys := enqueueAll(t, client, 100, parcel, shipKey, cfg)
	keys = append(keys, enqueueAll(t, client, 100, func(i int) Cancel { return Cancel{Order: i} }, cancelKey, cfg)...)

	// billing serves Ship, Cancel and Invoice: Invoice is taken.
	l := newLedger()
	billing := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(billing, handling(l, shipKey)))
	require.NoError(t, cqrs.Register(billing, handling(l, cancelKey)))
	require.NoError(t, cqrs.Register(billing, handling(l, invoiceKey)))
	_, err := cqrsnats.ServeDurable(ctx, process(t, s), billing, cfg, cqrsnats.WithQueueGroup("billing"))
	require.ErrorIs(t, err, cqrsnats.ErrConsumerConflict)
	stream, err := client.Stream(ctx, "CQRS_COMMANDS")
	require.NoError(t, err)
	var names []string
	for name := range stream.ConsumerNames(ctx).Name() {
		names = append(names, name)
	}
	assert.Len(t, names, 1, "consumers: %v", names)
	for _, name := range names {
		assert.NotContains(t, name, "billing", "a consumer of the refused ServeDurable")
	}

	shipping := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(shipping, handling(l, shipKey)))
	require.NoError(t, cqrs.Register(shipping, handling(l, cancelKey)))
	serveCommands(t, process(t, s), shipping, cfg)
	assertHandled(t, client, l, keys, "served after a refusal", 10*time.Second, 0)
}
