package outbox_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/outbox"
)

// benchBackends returns the two databases of the benchmarks.
func benchBackends(b *testing.B) []*backend {
	return []*backend{openPostgres(b, outbox.Config{}), openSQLite(b, outbox.Config{})}
}

// BenchmarkWrite compares a transaction that writes a business row with
// the same transaction writing one outbox message too: the outbox's cost
// to the user's writes. The third case writes a second business row
// instead, into a table of its own: what any second statement costs, an
// extra round trip to the database, which no outbox in the user's
// transaction avoids.
func BenchmarkWrite(b *testing.B) {
	for _, be := range benchBackends(b) {
		table, other := be.orders(b), be.table(b, "audit")
		insert, insertOther := be.insert(table), be.insert(other)
		id := 0
		for _, second := range []string{"", "outbox", "row"} {
			name := be.name + "/row"
			if second != "" {
				name += "+" + second
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					id++
					tx, err := be.db.BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := tx.ExecContext(ctx, insert, id); err != nil {
						b.Fatal(err)
					}
					switch second {
					case "outbox":
						err = outbox.Publish(ctx, be.box, tx, OrderPlaced{Order: id})
					case "row":
						_, err = tx.ExecContext(ctx, insertOther, id)
					}
					if err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkWriteRatio runs the three transactions of BenchmarkWrite in
// turn, one of each per iteration (starting with a different one each
// time), and reports the median over the iterations of each one's time
// over the business row's: outbox/row and row2/row. On a shared machine
// the load changes from one millisecond to the next; transactions a
// millisecond apart share it, where sub-benchmarks run one after the
// other do not.
func BenchmarkWriteRatio(b *testing.B) {
	for _, be := range benchBackends(b) {
		b.Run(be.name, func(b *testing.B) {
			table, other := be.orders(b), be.table(b, "audit")
			insert, insertOther := be.insert(table), be.insert(other)
			ctx := context.Background()
			id, turn := 0, 0
			var outboxRatios, rowRatios []float64
			for b.Loop() {
				var took [3]time.Duration
				for k := range 3 {
					c := (turn + k) % 3
					id++
					start := time.Now()
					tx, err := be.db.BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := tx.ExecContext(ctx, insert, id); err != nil {
						b.Fatal(err)
					}
					switch c {
					case 1:
						err = outbox.Publish(ctx, be.box, tx, OrderPlaced{Order: id})
					case 2:
						_, err = tx.ExecContext(ctx, insertOther, id)
					}
					if err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
					took[c] = time.Since(start)
				}
				turn++
				outboxRatios = append(outboxRatios, float64(took[1])/float64(took[0]))
				rowRatios = append(rowRatios, float64(took[2])/float64(took[0]))
			}
			b.ReportMetric(median(outboxRatios), "outbox/row")
			b.ReportMetric(median(rowRatios), "row2/row")
		})
	}
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// BenchmarkRelayToJetStream measures the relay's throughput to an
// embedded JetStream server, at batch sizes 1 and 100: b.N messages are
// written first, then forwarded.
func BenchmarkRelayToJetStream(b *testing.B) {
	s := startNATS(b, b.TempDir(), -1)
	defer s.Shutdown()
	_, js := connectNATS(b, s.ClientURL())
	eventsStream(b, js)
	sink, err := outbox.NewJetStreamSink(js, 0)
	require.NoError(b, err)
	for _, be := range benchBackends(b) {
		for _, batch := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/batch=%d", be.name, batch), func(b *testing.B) {
				writeN(b, be, 0, b.N)
				relay, err := outbox.NewRelay(be.box, sink, outbox.RelayConfig{BatchSize: batch})
				require.NoError(b, err)
				b.ResetTimer()
				start := time.Now()
				sent := 0
				for sent < b.N {
					n, err := relay.Forward(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					if n == 0 {
						b.Fatalf("sent %d of %d", sent, b.N)
					}
					sent += n
				}
				b.ReportMetric(float64(sent)/time.Since(start).Seconds(), "msgs/s")
			})
		}
	}
}

// latencySink records when each message reached it.
type latencySink struct {
	mu   sync.Mutex
	at   map[int]time.Time
	seen chan struct{}
}

func (s *latencySink) Send(_ context.Context, msgs []outbox.Message) (int, error) {
	now := time.Now()
	s.mu.Lock()
	for _, m := range msgs {
		s.at[int(m.Seq)] = now
	}
	s.mu.Unlock()
	select {
	case s.seen <- struct{}{}:
	default:
	}
	return len(msgs), nil
}

func (s *latencySink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at)
}

// BenchmarkCommitToSink measures the time from a commit to the relay
// handing its message to the sink, p50 and p99, on PostgreSQL with
// LISTEN/NOTIFY and with polling every 100ms (and on SQLite, polling
// every 10ms).
func BenchmarkCommitToSink(b *testing.B) {
	pg, lite := openPostgres(b, outbox.Config{}), openSQLite(b, outbox.Config{})
	for _, c := range []struct {
		name string
		be   *backend
		cfg  outbox.RelayConfig
	}{
		{"postgres/notify", pg, outbox.RelayConfig{PollInterval: time.Second}},
		{"postgres/poll-100ms", pg, outbox.RelayConfig{NoNotify: true, PollInterval: 100 * time.Millisecond}},
		{"sqlite/poll-10ms", lite, outbox.RelayConfig{PollInterval: 10 * time.Millisecond}},
	} {
		b.Run(c.name, func(b *testing.B) {
			sink := &latencySink{at: map[int]time.Time{}, seen: make(chan struct{}, 1)}
			relay, err := outbox.NewRelay(c.be.box, sink, c.cfg)
			require.NoError(b, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- relay.Run(ctx) }()
			defer func() { cancel(); <-done }()
			time.Sleep(100 * time.Millisecond) // LISTEN in place
			var lat []time.Duration
			for b.Loop() {
				sink.mu.Lock()
				before := len(sink.at)
				sink.mu.Unlock()
				c.be.write(b, true, OrderPlaced{Order: 1})
				committed := time.Now()
				for sink.count() == before {
					select {
					case <-sink.seen:
					case <-time.After(5 * time.Second):
						b.Fatal("the message never reached the sink")
					}
				}
				sink.mu.Lock()
				var last time.Time
				for _, at := range sink.at {
					if at.After(last) {
						last = at
					}
				}
				sink.mu.Unlock()
				lat = append(lat, max(last.Sub(committed), 0))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkBacklog1M forwards batches of 100 from an outbox that holds a
// million messages (PostgreSQL): the next batch is read through the
// (txid, seq) index, so a batch costs what it costs on an empty table
// (MassTransit #5918). It logs the plan of the batch query.
func BenchmarkBacklog1M(b *testing.B) {
	be := openPostgres(b, outbox.Config{})
	ctx := context.Background()
	_, err := be.db.ExecContext(ctx, "INSERT INTO "+be.cfg.Table+` (msg_id, subject, headers, payload)
		SELECT 'm' || g, 'cqrs.stored.event.x', '{}', '\x7b7d'::bytea FROM generate_series(1, 1000000) g`)
	require.NoError(b, err)
	_, err = be.db.ExecContext(ctx, "ANALYZE "+be.cfg.Table)
	require.NoError(b, err)
	rows, err := be.db.QueryContext(ctx, "EXPLAIN SELECT seq FROM "+be.cfg.Table+" ORDER BY txid, seq LIMIT 100")
	require.NoError(b, err)
	var plan []string
	for rows.Next() {
		var line string
		require.NoError(b, rows.Scan(&line))
		plan = append(plan, line)
	}
	require.NoError(b, rows.Close())
	b.Logf("plan at 1M rows:\n%s", strings.Join(plan, "\n"))
	relay, err := outbox.NewRelay(be.box, &memorySink{}, outbox.RelayConfig{BatchSize: 100})
	require.NoError(b, err)
	b.ResetTimer()
	for b.Loop() {
		n, err := relay.Forward(ctx)
		if err != nil || n != 100 {
			b.Fatalf("forwarded %d: %v", n, err)
		}
	}
}
