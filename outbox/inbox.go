package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Inbox is a middleware.Inbox in the database a handler writes: it
// records each message a consumer has handled in the same transaction as
// the handler's own writes, so that the record and the effects commit
// together or not at all. A message delivered again after its handler's
// transaction committed (the process died before acknowledging it) finds
// its record and is not handled again; one whose transaction rolled back
// (or never committed) runs again. The effect is exactly once, for the
// writes the handler makes in that transaction, and for the messages it
// writes into the same transaction with [Publish] and [Enqueue]:
//
//	inbox, _ := outbox.NewInbox(db, outbox.Config{Dialect: outbox.Postgres})
//	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Idempotent(inbox)))
//
//	func (s *Service) Place(ctx context.Context, cmd PlaceOrder) (cqrs.NoResult, error) {
//		tx, _ := outbox.Tx(ctx) // the inbox's transaction
//		if _, err := tx.ExecContext(ctx, `INSERT INTO orders …`); err != nil {
//			return cqrs.NoResult{}, err
//		}
//		return cqrs.NoResult{}, outbox.Publish(ctx, s.box, nil, OrderPlaced{…})
//	}
//
// On PostgreSQL a duplicate delivered while the first is being handled
// waits, on the record's unique key, for the first's transaction: then it
// skips if that committed, and runs if it rolled back. On SQLite one
// transaction writes at a time, so the duplicate waits for the first
// (within the busy timeout [OpenSQLite] sets).
//
// Effects outside the transaction (an e-mail, a call to another service)
// are not undone by a rollback: they stay at least once.
//
// Make one with [NewInbox]; the zero value is not usable. An Inbox is
// safe for concurrent use. Its records stay until [Inbox.Cleanup]
// removes them.
type Inbox struct {
	db  *sql.DB
	cfg Config
	sql statements
}

// NewInbox returns the inbox of db in cfg.InboxTable, which
// [Outbox.Migrate] makes. It fails with [ErrConfig] for a nil db or an
// invalid cfg.
func NewInbox(db *sql.DB, cfg Config) (*Inbox, error) {
	cfg, stmts, err := setUp(db, cfg)
	if err != nil {
		return nil, err
	}
	return &Inbox{db: db, cfg: cfg, sql: stmts}, nil
}

// txKey is the context key of the transaction of an Inbox's handler.
type txKey struct{}

// Tx returns the transaction that an [Inbox] runs the handler given ctx
// in, and true; or nil and false when ctx has none. The handler writes
// its rows with it, and [Publish] and [Enqueue] write into it when given
// a nil tx. The handler must not commit or roll it back: the inbox does,
// by the handler's error.
func Tx(ctx context.Context) (*sql.Tx, bool) {
	if ctx == nil {
		return nil, false
	}
	tx, ok := ctx.Value(txKey{}).(*sql.Tx)
	return tx, ok && tx != nil
}

// WithTx returns a copy of ctx that carries tx, as [Tx] reads it: for
// code that writes a message from a transaction of its own outside an
// Inbox, and passes ctx rather than tx.
func WithTx(ctx context.Context, tx *sql.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// Once runs fn in a new transaction that also records (consumer, id), as
// middleware.Inbox says, unless that record exists: then it runs nothing
// and returns false and nil. fn gets a ctx that carries the transaction
// ([Tx]). fn's error rolls the transaction back and is returned, with ran
// true; so is a failed commit's, wrapped in [ErrDatabase], and the message
// may run again. A panic of fn rolls back and goes on up.
func (in *Inbox) Once(ctx context.Context, consumer, id string, fn func(ctx context.Context) error) (ran bool, err error) {
	if in == nil || in.db == nil {
		return false, fmt.Errorf("%w: an Inbox not made with NewInbox", ErrConfig)
	}
	if ctx == nil {
		return false, fmt.Errorf("%w: inbox", cqrs.ErrNilContext)
	}
	if fn == nil {
		return false, fmt.Errorf("%w: Once with a nil fn", cqrs.ErrNilHandler)
	}
	tx, err := in.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("%w: inbox: begin: %w", ErrDatabase, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	var res sql.Result
	if in.cfg.Dialect == Postgres {
		res, err = tx.ExecContext(ctx, in.sql.inboxMark, consumer, id)
	} else {
		res, err = tx.ExecContext(ctx, in.sql.inboxMark, consumer, id, time.Now().UnixNano())
	}
	if err != nil {
		return false, fmt.Errorf("%w: inbox: recording %s for %s: %w", ErrDatabase, id, consumer, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("%w: inbox: %w", ErrDatabase, err)
	} else if n == 0 {
		return false, nil // handled before: the record was there
	}
	if err := fn(WithTx(ctx, tx)); err != nil {
		return true, err
	}
	if err := tx.Commit(); err != nil {
		if errors.Is(err, sql.ErrTxDone) {
			return true, fmt.Errorf("%w: inbox: the handler of %s ended the inbox's transaction itself", ErrDatabase, id)
		}
		return true, fmt.Errorf("%w: inbox: commit %s for %s: %w", ErrDatabase, id, consumer, err)
	}
	committed = true
	return true, nil
}

// Cleanup removes the records of messages handled more than olderThan
// ago, and returns how many it removed. A message delivered again after
// its record is gone runs again: keep olderThan above the longest a
// message may take to be delivered again (a transport's deliveries times
// its AckWait, plus back-off, plus the time a relay may be down). Run it
// now and then (every hour, say); on PostgreSQL the handled_at index
// makes it a range delete.
func (in *Inbox) Cleanup(ctx context.Context, olderThan time.Duration) (int64, error) {
	if in == nil || in.db == nil {
		return 0, fmt.Errorf("%w: an Inbox not made with NewInbox", ErrConfig)
	}
	if ctx == nil {
		return 0, fmt.Errorf("%w: inbox cleanup", cqrs.ErrNilContext)
	}
	var res sql.Result
	var err error
	if in.cfg.Dialect == Postgres {
		res, err = in.db.ExecContext(ctx, in.sql.inboxClean, olderThan.Seconds())
	} else {
		res, err = in.db.ExecContext(ctx, in.sql.inboxClean, time.Now().Add(-olderThan).UnixNano())
	}
	if err != nil {
		return 0, fmt.Errorf("%w: inbox cleanup: %w", ErrDatabase, err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
