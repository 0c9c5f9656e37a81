// Package outbox sends the events and durable commands of a database
// transaction over NATS JetStream once, and only if, the transaction
// commits (the transactional outbox), and runs a received message's
// handler once per message ID in the handler's own transaction (the
// inbox).
//
// The guarantee, in two lines: a message written with [Publish] or
// [Enqueue] into a transaction that commits is sent at least once, and
// never if it rolls back; a handler run by an [Inbox] whose effects are
// writes in its transaction takes effect exactly once.
//
// # Writing
//
// [Publish] and [Enqueue] write a declared event or command into the
// caller's own *sql.Tx, typed as everywhere else in this library, with no
// type argument:
//
//	tx, _ := db.BeginTx(ctx, nil)
//	_, _ = tx.ExecContext(ctx, "INSERT INTO orders …")
//	_ = outbox.Publish(ctx, box, tx, OrderPlaced{Order: id})
//	_ = tx.Commit() // the order and its event, or neither
//
// A message takes the identity a message sent from ctx gets
// (cqrs.NextIdentity): written by a handler, it joins the handler's
// conversation. Its ID is the JetStream de-duplication key (Nats-Msg-Id)
// and the key of the receiving side's [Inbox].
//
// # Relaying
//
// A [Relay] reads the committed messages in order, hands them to a [Sink]
// in batches ([JetStreamSink] stores them in JetStream, as
// transport/nats's Publish and Enqueue would) and deletes them once the
// sink has them. A relay that dies between the two sends the batch again:
// JetStream drops the copies within its duplicate window, and an [Inbox]
// drops those that get through.
//
// # Receiving once
//
// [Inbox] is a middleware.Inbox: given to middleware.Idempotent on the bus
// a NATS receiver or durable server dispatches to, it runs each
// message's handler in a transaction that also records the message ID, so
// that a redelivered message whose first handling committed is skipped.
// The handler writes with the transaction [Tx] returns.
//
// # Databases
//
// Through database/sql. SQLite is the embedded default, with no server:
// [OpenSQLite] opens a file with modernc.org/sqlite (pure Go, no cgo)
// and [Config] Dialect [SQLite]. PostgreSQL 13 or later is [Postgres],
// through github.com/jackc/pgx/v5/stdlib (sql.Open("pgx", dsn)): there the
// relay orders messages by transaction (xid8), several relays take turns
// on an advisory lock, and a relay wakes on LISTEN/NOTIFY rather than
// polling. [Outbox.Migrate] makes the tables on either.
//
// docs/outbox.md in the repository holds the guarantee table, the faults
// tested, the schema, operations and measured figures.
package outbox
