package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/outbox"
	"github.com/typedcqrs/dispatch/outbox/internal/pgtest"
)

// decoded returns the event a relay sent: the tail of its envelope is
// the JSON of OrderPlaced.
func decoded(t testing.TB, m outbox.Message) OrderPlaced {
	t.Helper()
	for i := range m.Payload {
		if m.Payload[i] == '{' {
			var e OrderPlaced
			if json.Unmarshal(m.Payload[i:], &e) == nil {
				return e
			}
		}
	}
	t.Fatalf("message %d: no OrderPlaced in %q", m.Seq, m.Payload)
	return OrderPlaced{}
}

// tally counts what a sink got: the messages lost (written, committed
// and never sent), duplicated (sent more than once) and out of order
// (sent before an earlier message of the same writer).
type tally struct{ lost, duplicated, misordered int }

func count(t testing.TB, sent []outbox.Message, committed map[[2]int]bool) tally {
	t.Helper()
	var c tally
	seen := map[[2]int]int{}
	last := map[int]int{}
	for _, m := range sent {
		e := decoded(t, m)
		k := [2]int{e.Writer, e.Order}
		seen[k]++
		if seen[k] > 1 {
			c.duplicated++
			continue
		}
		if prev, ok := last[e.Writer]; ok && e.Order < prev {
			c.misordered++
		}
		last[e.Writer] = e.Order
	}
	for k := range committed {
		if seen[k] == 0 {
			c.lost++
		}
	}
	return c
}

// dedupSink keeps what a relay sends, in order, and drops a message
// whose ID it has kept already, as JetStream drops one whose Nats-Msg-Id
// it has stored; it counts those it dropped.
type dedupSink struct {
	memorySink
	seen   map[string]bool
	resent int
}

func (s *dedupSink) Send(_ context.Context, msgs []outbox.Message) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		if s.seen[m.ID] {
			s.resent++
			continue
		}
		s.seen[m.ID] = true
		s.msgs = append(s.msgs, m)
	}
	return len(msgs), nil
}

func (s *dedupSink) resentCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resent
}

// runRelay runs relay until the test ends.
func runRelay(t testing.TB, relay *outbox.Relay) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

// TestOutOfOrderCommitsLoseNothing writes 10,000 messages from 8 writers
// whose transactions commit out of the order of their sequence numbers
// (each waits a random while between its writes and its commit), with a
// relay forwarding all the while: the case where a relay that reads past
// the highest sequence it has sent skips messages (Watermill #311, #218).
func TestOutOfOrderCommitsLoseNothing(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		const writers, perWriter, perTx = 8, 1250, 25
		sink := &memorySink{}
		relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{PollInterval: 5 * time.Millisecond})
		require.NoError(t, err)
		runRelay(t, relay)

		var mu sync.Mutex
		committed := map[[2]int]bool{}
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := 0; i < perWriter; i += perTx {
					tx, err := b.db.BeginTx(context.Background(), nil)
					require.NoError(t, err)
					for j := i; j < i+perTx; j++ {
						require.NoError(t, outbox.Publish(context.Background(), b.box, tx, OrderPlaced{Writer: w, Order: j}))
					}
					if rand.IntN(4) == 0 {
						time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
					}
					require.NoError(t, tx.Commit())
					mu.Lock()
					for j := i; j < i+perTx; j++ {
						committed[[2]int{w, j}] = true
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		require.Eventually(t, func() bool { return len(sink.sent()) >= writers*perWriter }, 30*time.Second, 10*time.Millisecond)
		time.Sleep(50 * time.Millisecond) // a duplicate sent late would show now
		c := count(t, sink.sent(), committed)
		assert.Equal(t, tally{}, c, "0 lost, 0 duplicated, 0 out of a writer's order of %d", writers*perWriter)
		t.Logf("%s: %d messages, %d batches, %+v", b.name, len(sink.sent()), relay.Stats().Batches, c)
	})
}

// TestRelayHoldsALaterTransactionForAnOlderOne: a transaction that
// began first and commits last has its messages sent first; one that
// stays open holds the later ones for OrderWait, no longer.
func TestRelayHoldsALaterTransactionForAnOlderOne(t *testing.T) {
	b := openPostgres(t, outbox.Config{})
	sink := &memorySink{}
	relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{OrderWait: time.Hour})
	require.NoError(t, err)
	ctx := t.Context()

	older, err := b.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = older.Rollback() }()
	require.NoError(t, outbox.Publish(ctx, b.box, older, OrderPlaced{Writer: 1, Order: 1}))
	b.write(t, true, OrderPlaced{Writer: 2, Order: 1}) // later, committed first

	n, err := relay.Forward(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "the later transaction waits for the older")
	require.NoError(t, older.Commit())
	for {
		n, err := relay.Forward(ctx)
		require.NoError(t, err)
		if n == 0 {
			break
		}
	}
	sent := sink.sent()
	require.Len(t, sent, 2)
	assert.Equal(t, 1, decoded(t, sent[0]).Writer, "the transaction that began first is sent first")
	assert.Equal(t, 2, decoded(t, sent[1]).Writer)

	// A transaction left open: the later messages wait OrderWait.
	bounded, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{OrderWait: 300 * time.Millisecond})
	require.NoError(t, err)
	open, err := b.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = open.Rollback() }()
	require.NoError(t, outbox.Publish(ctx, b.box, open, OrderPlaced{Writer: 3, Order: 1}))
	b.write(t, true, OrderPlaced{Writer: 4, Order: 1})
	start := time.Now()
	n, err = bounded.Forward(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Eventually(t, func() bool {
		n, err := bounded.Forward(ctx)
		return err == nil && n == 1
	}, 5*time.Second, 20*time.Millisecond)
	waited := time.Since(start)
	assert.GreaterOrEqual(t, waited, 250*time.Millisecond, "held while the older transaction ran")
	require.NoError(t, open.Commit())
	n, err = bounded.Forward(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the long transaction's message, once committed: 0 lost")
	t.Logf("held behind an open transaction for %v (OrderWait 300ms)", waited)
}

// TestSeveralRelaysTakeTurns runs three relays on one outbox while four
// writers write: each message is sent once, in each writer's order.
func TestSeveralRelaysTakeTurns(t *testing.T) {
	b := openPostgres(t, outbox.Config{})
	sink := &memorySink{}
	relays := make([]*outbox.Relay, 3)
	for i := range relays {
		var err error
		relays[i], err = outbox.NewRelay(b.box, sink, outbox.RelayConfig{BatchSize: 20, PollInterval: 5 * time.Millisecond})
		require.NoError(t, err)
		runRelay(t, relays[i])
	}
	const writers, perWriter = 4, 500
	committed := map[[2]int]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				b.write(t, true, OrderPlaced{Writer: w, Order: i})
				mu.Lock()
				committed[[2]int{w, i}] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool { return len(sink.sent()) >= writers*perWriter }, 30*time.Second, 10*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, tally{}, count(t, sink.sent(), committed))
	worked := 0
	for _, r := range relays {
		if r.Stats().Sent > 0 {
			worked++
		}
	}
	t.Logf("relays that sent: %d of %d", worked, len(relays))
}

// TestPostgresRestartLosesNothing restarts PostgreSQL (an immediate
// stop: every connection cut, no checkpoint) while a writer writes and a
// relay forwards: the relay reconnects by itself, and every message whose
// commit returned is sent, once.
func TestPostgresRestartLosesNothing(t *testing.T) {
	srv, err := pgtest.Start() // a server of its own, so as not to cut the others'
	require.NoError(t, err)
	defer func() { assert.NoError(t, srv.Stop()) }()
	db, err := sql.Open("pgx", srv.DSN)
	require.NoError(t, err)
	defer db.Close()
	b := migrated(t, "postgres", db, uniqueTables(outbox.Config{Dialect: outbox.Postgres}))
	// A batch the sink took whose removal the restart cut is sent again,
	// by design: the sink drops the copies by ID, as JetStream does by
	// Nats-Msg-Id.
	sink := &dedupSink{seen: map[string]bool{}}
	relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{PollInterval: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	require.NoError(t, err)
	runRelay(t, relay)

	committed := map[[2]int]bool{}
	ambiguous := 0
	writeOne := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return
		}
		if err := outbox.Publish(ctx, b.box, tx, OrderPlaced{Order: i}); err != nil {
			_ = tx.Rollback()
			return
		}
		if err := tx.Commit(); err != nil {
			ambiguous++ // it may or may not have committed: not counted either way
			return
		}
		committed[[2]int{0, i}] = true
	}
	for i := range 200 {
		writeOne(i)
	}
	require.NoError(t, srv.Restart())
	for i := 200; i < 400; i++ {
		writeOne(i)
	}
	require.GreaterOrEqual(t, len(committed), 300, "most writes after the restart succeed")
	require.Eventually(t, func() bool {
		return count(t, sink.sent(), committed).lost == 0
	}, 20*time.Second, 20*time.Millisecond)
	c := count(t, sink.sent(), committed)
	assert.Equal(t, tally{}, c, "0 lost, 0 stored twice across the restart")
	assert.Positive(t, relay.Stats().Failures, "the relay saw the restart")
	t.Logf("committed %d, ambiguous %d, resent and dropped by ID %d, relay %+v", len(committed), ambiguous, sink.resentCount(), relay.Stats())
}
