package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Message is one message of the outbox as a [Relay] hands it to a
// [Sink]: what [Publish] or [Enqueue] wrote. A relay makes a new Message
// for each row it reads and does not touch it once it is handed over: a
// sink may keep it. Its zero value is a message with no subject, which
// no sink should be given.
type Message struct {
	// Seq is the row's sequence number in the outbox table.
	Seq int64
	// ID is the message's identity's ID, also in Header as Cqrs-Id and
	// as JetStream's de-duplication key, Nats-Msg-Id.
	ID string
	// Subject, Header and Payload are the NATS message.
	Subject string
	Header  map[string][]string
	Payload []byte
}

// Sink sends the messages a [Relay] reads from the outbox: [JetStreamSink]
// to NATS JetStream, or one of your own.
//
// Send sends msgs in their order and returns how many, from the first,
// were sent: those the relay then removes from the outbox. An error
// after n messages means the rest were not (or may not have been) sent:
// the relay sends them again, so a sink must tolerate, or remove,
// duplicates (JetStream drops a message whose Nats-Msg-Id it has stored
// within its duplicate window). A relay calls Send from one goroutine at
// a time, and never with an empty batch; ctx ends when the relay stops.
// A sink given to several relays (or to one [Relay.Run] called more than
// once) is called concurrently, and must then be safe for concurrent use.
// A panic in Send is taken for an error that sent nothing.
type Sink interface {
	Send(ctx context.Context, msgs []Message) (int, error)
}

// RelayConfig configures a [Relay]. Its zero value is the default
// configuration; each field's zero value means the default it documents.
// [NewRelay] copies it: changing it afterwards has no effect on the relay.
type RelayConfig struct {
	// BatchSize is how many messages a relay reads, sends and removes at
	// once. If BatchSize is less than or equal to 0, it is 100.
	BatchSize int
	// PollInterval is how long a relay with nothing to send waits before
	// it looks again. On PostgreSQL, with the pgx driver, it wakes as soon
	// as a transaction that wrote messages commits (LISTEN/NOTIFY), and
	// polling is the fallback: if PollInterval is less than or equal to 0
	// it is then 1s, else 100ms.
	PollInterval time.Duration
	// NoNotify turns LISTEN/NOTIFY off: the relay polls.
	NoNotify bool
	// OrderWait bounds how long a committed message may wait for the
	// transactions that began before its own (PostgreSQL): the relay
	// sends messages in the order of their transactions, and a message
	// is held while an older transaction is still running, however long.
	// After OrderWait it is sent anyway, ahead of what that transaction
	// may still commit. If OrderWait is less than or equal to 0, it is 5s.
	OrderWait time.Duration
	// MaxBackoff bounds the wait after a failure (the database or the
	// sink down): 50ms after the first, doubling up to MaxBackoff. If
	// MaxBackoff is less than or equal to 0, it is 5s.
	MaxBackoff time.Duration
	// Logger receives the failures, at level Warn. The default, also for
	// nil, discards.
	Logger *slog.Logger
}

func (c RelayConfig) withDefaults(notify bool) RelayConfig {
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 100 * time.Millisecond
		if notify {
			c.PollInterval = time.Second
		}
	}
	if c.OrderWait <= 0 {
		c.OrderWait = 5 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Relay forwards the committed messages of an [Outbox] to a [Sink], in
// batches and in order, and removes each from the outbox once the sink
// has it: nothing committed is lost, and nothing rolled back is ever
// seen. A message is sent at least once: a relay that dies between
// sending and removing a batch sends it again when it (or another)
// comes back, which JetStream's de-duplication by Nats-Msg-Id and an
// [Inbox] make harmless.
//
// The order is that of the transactions, and within one transaction that
// of the writes. On PostgreSQL a transaction's messages are sent once no
// transaction that began before it is still running (its txid is below
// the snapshot's xmin): a transaction that commits after a later one
// cannot slip its messages in ahead of messages already sent, as it can
// with a sequence alone, and no message is ever skipped, since each stays
// in the table until it is sent. A transaction that stays open holds the
// messages of later ones for at most [RelayConfig.OrderWait].
//
// Several relays, in one process or many, may forward one outbox: on
// PostgreSQL they take turns batch by batch, on an advisory lock, so that
// the order holds and no batch is sent twice (one waits while another
// forwards, and takes over if it dies); on SQLite they are not
// coordinated, and may send a batch twice.
//
// Make one with [NewRelay] and run it with [Relay.Run]. A Relay is safe
// for concurrent use; its zero value is not usable.
type Relay struct {
	o      *Outbox
	sink   Sink
	cfg    RelayConfig
	notify bool

	sent, batches, failures atomic.Uint64
}

// NewRelay returns a relay of o's messages to sink. It fails with
// [ErrConfig] for a nil o or sink.
func NewRelay(o *Outbox, sink Sink, cfg RelayConfig) (*Relay, error) {
	if o == nil || o.db == nil {
		return nil, fmt.Errorf("%w: NewRelay needs an Outbox made with New", ErrConfig)
	}
	if sink == nil {
		return nil, fmt.Errorf("%w: NewRelay needs a Sink", ErrConfig)
	}
	notify := o.cfg.Dialect == Postgres && !cfg.NoNotify && isPgx(o.db)
	return &Relay{o: o, sink: sink, cfg: cfg.withDefaults(notify), notify: notify}, nil
}

// RelayStats are the counts of a [Relay] since it was made, as
// [Relay.Stats] returns them: a plain value, a snapshot; its zero value
// counts nothing.
type RelayStats struct {
	// Sent counts the messages the sink took and the relay removed.
	Sent uint64
	// Batches counts the batches that sent at least one message.
	Batches uint64
	// Failures counts the batches that failed, in the database or the
	// sink: each is tried again.
	Failures uint64
}

// Stats returns the counts of r. It is safe to call while r runs; a nil
// r counts nothing.
func (r *Relay) Stats() RelayStats {
	if r == nil {
		return RelayStats{}
	}
	return RelayStats{Sent: r.sent.Load(), Batches: r.batches.Load(), Failures: r.failures.Load()}
}

// check refuses a Relay not made with NewRelay, and a nil ctx: that
// with cqrs.ErrNilContext too, as the rest of the package does.
func (r *Relay) check(ctx context.Context) error {
	if r == nil || r.o == nil || r.sink == nil {
		return fmt.Errorf("%w: a Relay not made with NewRelay", ErrConfig)
	}
	if ctx == nil {
		return fmt.Errorf("%w: outbox relay: %w", ErrConfig, cqrs.ErrNilContext)
	}
	return nil
}

// errBusy: another relay holds the outbox's lock.
var errBusy = errors.New("outbox: another relay is forwarding")

// Forward sends one batch: the next ready messages, at most BatchSize,
// and removes those the sink took. It returns how many it sent. With
// nothing ready, or another relay forwarding now (PostgreSQL), it returns
// 0 and nil. It is what [Relay.Run] does in a loop, for those who run a
// relay from a scheduler of their own.
func (r *Relay) Forward(ctx context.Context) (int, error) {
	if err := r.check(ctx); err != nil {
		return 0, err
	}
	n, err := r.forward(ctx)
	if errors.Is(err, errBusy) {
		return 0, nil
	}
	return n, err
}

func (r *Relay) forward(ctx context.Context) (n int, err error) {
	defer func() {
		if err != nil && !errors.Is(err, errBusy) {
			r.failures.Add(1)
		}
		if n > 0 {
			r.sent.Add(uint64(n))
			r.batches.Add(1)
		}
	}()
	if r.o.cfg.Dialect == Postgres {
		return r.forwardPostgres(ctx)
	}
	return r.forwardSQLite(ctx)
}

func (r *Relay) forwardPostgres(ctx context.Context) (int, error) {
	tx, err := r.o.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("%w: relay: begin: %w", ErrDatabase, err)
	}
	defer func() { _ = tx.Rollback() }()
	var locked bool
	if err := tx.QueryRowContext(ctx, r.o.sql.lock).Scan(&locked); err != nil {
		return 0, fmt.Errorf("%w: relay: lock: %w", ErrDatabase, err)
	}
	if !locked {
		return 0, errBusy
	}
	msgs, err := r.read(ctx, tx, r.cfg.OrderWait.Seconds())
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	n, sendErr := r.send(ctx, msgs)
	if n == 0 {
		return 0, sendErr
	}
	stmt, arg := r.o.sql.deleteSQL(Postgres, seqs(msgs[:n]))
	if _, err := tx.ExecContext(ctx, stmt, arg); err != nil {
		return 0, fmt.Errorf("%w: relay: removing %d sent messages (they will be sent again): %w", ErrDatabase, n, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("%w: relay: removing %d sent messages (they will be sent again): %w", ErrDatabase, n, err)
	}
	return n, sendErr
}

func (r *Relay) forwardSQLite(ctx context.Context) (int, error) {
	msgs, err := r.read(ctx, r.o.db, 0)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	n, sendErr := r.send(ctx, msgs)
	if n == 0 {
		return 0, sendErr
	}
	stmt, _ := r.o.sql.deleteSQL(SQLite, seqs(msgs[:n]))
	if _, err := r.o.db.ExecContext(ctx, stmt); err != nil {
		return 0, fmt.Errorf("%w: relay: removing %d sent messages (they will be sent again): %w", ErrDatabase, n, err)
	}
	return n, sendErr
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// read returns the next ready messages, in order: the longest prefix of
// the table's order whose rows are all ready.
func (r *Relay) read(ctx context.Context, q querier, orderWait float64) ([]Message, error) {
	var rows *sql.Rows
	var err error
	if r.o.cfg.Dialect == Postgres {
		rows, err = q.QueryContext(ctx, r.o.sql.batch, r.cfg.BatchSize, orderWait)
	} else {
		rows, err = q.QueryContext(ctx, r.o.sql.batch, orderWait, r.cfg.BatchSize)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: relay: reading the outbox: %w", ErrDatabase, err)
	}
	defer rows.Close()
	msgs := make([]Message, 0, r.cfg.BatchSize)
	for rows.Next() {
		var m Message
		var headers string
		var ready bool
		if err := rows.Scan(&m.Seq, &m.ID, &m.Subject, &headers, &m.Payload, &ready); err != nil {
			return nil, fmt.Errorf("%w: relay: reading the outbox: %w", ErrDatabase, err)
		}
		if !ready {
			break // held for an older transaction: so is all that follows
		}
		if err := json.Unmarshal([]byte(headers), &m.Header); err != nil {
			// A row this package did not write: send it without headers
			// rather than block the outbox; its receiver refuses it.
			r.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "outbox: a row's headers are not JSON; sending it without",
				slog.Int64("seq", m.Seq), slog.String("subject", m.Subject), slog.Any("error", err))
			m.Header = nil
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: relay: reading the outbox: %w", ErrDatabase, err)
	}
	return msgs, nil
}

// send hands msgs to the sink, and never believes it took more than it
// was given. A panic of the sink is its error.
func (r *Relay) send(ctx context.Context, msgs []Message) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			n, err = 0, fmt.Errorf("outbox: relay: the sink panicked: %v", v)
		}
	}()
	n, err = r.sink.Send(ctx, msgs)
	n = min(max(n, 0), len(msgs))
	if err != nil {
		err = fmt.Errorf("outbox: relay: sent %d of %d: %w", n, len(msgs), err)
	}
	return n, err
}

func seqs(msgs []Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

// Run forwards messages until ctx ends, then returns nil: a batch after
// another while there are ready messages, else when woken by a commit
// (PostgreSQL with pgx: LISTEN/NOTIFY) or after PollInterval. A failure
// (the database or the sink down) is logged and counted, and the batch
// tried again after a back-off of 50ms doubling up to MaxBackoff; the
// messages wait in the outbox meanwhile. Run reconnects by itself: it
// needs no restart after the database or NATS comes back. It starts a
// goroutine for LISTEN, which it waits for before it returns. Run may be
// called more than once at a time, as several relays would.
func (r *Relay) Run(ctx context.Context) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	if r.notify {
		wg.Go(func() { r.listen(ctx, wake) })
	}
	defer wg.Wait()
	backoff := time.Duration(0)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n, err := r.forward(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		switch {
		case errors.Is(err, errBusy):
			backoff, wait = 0, r.cfg.PollInterval
		case err != nil:
			backoff = nextBackoff(backoff, r.cfg.MaxBackoff)
			wait = backoff
			r.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "outbox: relay failed; trying again",
				slog.String("table", r.o.cfg.Table), slog.Duration("backoff", backoff), slog.Any("error", err))
		case n == r.cfg.BatchSize:
			backoff = 0
			continue // more may be ready
		default:
			backoff, wait = 0, r.cfg.PollInterval
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-wake:
			// Since Go 1.23 a stopped timer's channel holds no stale
			// tick: Reset needs no drain.
			timer.Stop()
			if err != nil && !errors.Is(err, errBusy) {
				// A commit is no sign that the failure is over: keep
				// the back-off.
				timer.Reset(backoff)
				select {
				case <-ctx.Done():
					return nil
				case <-timer.C:
				}
			}
		}
	}
}

// nextBackoff is the wait after one more failure, given the last: 50ms
// after the first, doubling up to most.
func nextBackoff(last, most time.Duration) time.Duration {
	return min(max(2*last, 50*time.Millisecond), most)
}
