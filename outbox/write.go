package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// Publish writes the declared event evt into tx, to be published over
// NATS JetStream, as cqrsnats.Publish would with a durable publisher,
// once tx commits: nothing leaves if tx rolls back, and a [Relay] sends
// it after the commit, however the process fares in between. No type
// argument is written:
//
//	err := outbox.Publish(ctx, box, tx, OrderPlaced{Order: id})
//
// The event gets the identity a message sent from ctx gets
// ([cqrs.NextIdentity]): written by a handler, it joins the conversation
// of the message being handled. Its ID is its JetStream de-duplication
// key, so that a relay that sends it twice stores it once, and the key
// of an idempotent consumer ([Inbox]).
//
// A nil tx means the transaction ctx carries ([Tx]), as a handler run by
// an [Inbox] has; with neither, Publish fails with [ErrNoTx]. It fails
// as cqrsnats.Publish does for an event type that cannot travel or is too
// large, and with [ErrDatabase] when the insert fails (tx is then
// aborted, on PostgreSQL). It is safe for concurrent use, on distinct
// transactions.
func Publish[E cqrs.Message[cqrs.NoResult, *cqrs.EventBus]](ctx context.Context, o *Outbox, tx *sql.Tx, evt E) error {
	if err := o.check(ctx, "publish"); err != nil {
		return err
	}
	m, err := cqrsnats.OutboundEvent(ctx, evt, o.cfg.NATS...)
	if err != nil {
		return fmt.Errorf("outbox: publish: %w", err)
	}
	return o.write(ctx, tx, m)
}

// Enqueue writes the declared command cmd into tx, to be stored in the
// durable commands' work queue (as cqrsnats.Enqueue would) once tx
// commits, for a process serving its type with cqrsnats.ServeDurable. No
// type argument is written:
//
//	err := outbox.Enqueue(ctx, box, tx, ShipOrder{Order: id})
//
// Its result, if it declares one, is dropped: nobody waits for a durable
// command. Identity, transaction and errors are as for [Publish].
func Enqueue[C cqrs.Message[R, *cqrs.CommandBus], R any](ctx context.Context, o *Outbox, tx *sql.Tx, cmd C) error {
	if err := o.check(ctx, "enqueue"); err != nil {
		return err
	}
	m, err := cqrsnats.OutboundCommand(ctx, cmd, o.cfg.Durable, o.cfg.NATS...)
	if err != nil {
		return fmt.Errorf("outbox: enqueue: %w", err)
	}
	return o.write(ctx, tx, m)
}

func (o *Outbox) check(ctx context.Context, doing string) error {
	if o == nil || o.db == nil {
		return fmt.Errorf("%w: %s: an Outbox not made with New", ErrConfig, doing)
	}
	if ctx == nil {
		return fmt.Errorf("%w: outbox %s", cqrs.ErrNilContext, doing)
	}
	return nil
}

// write inserts m into tx, or the transaction ctx carries.
func (o *Outbox) write(ctx context.Context, tx *sql.Tx, m *natsgo.Msg) error {
	if tx == nil {
		var ok bool
		if tx, ok = Tx(ctx); !ok {
			return fmt.Errorf("%w: pass the *sql.Tx to write %s into, or a context from an Inbox", ErrNoTx, m.Subject)
		}
	}
	headers, err := json.Marshal(m.Header)
	if err != nil {
		return fmt.Errorf("outbox: encoding the headers of %s: %w", m.Subject, err)
	}
	id := m.Header.Get(cqrsnats.HeaderID)
	if o.cfg.Dialect == Postgres {
		_, err = tx.ExecContext(ctx, o.sql.insert, id, m.Subject, string(headers), m.Data)
	} else {
		_, err = tx.ExecContext(ctx, o.sql.insert, id, m.Subject, string(headers), m.Data, time.Now().UnixNano())
	}
	if err != nil {
		return fmt.Errorf("%w: writing %s to %s: %w", ErrDatabase, m.Subject, o.cfg.Table, err)
	}
	return nil
}
