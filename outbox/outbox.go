package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// Errors of this package, each wrapped with what was being done and, where
// the database gave one, its own error.
var (
	// ErrConfig: a [Config] field has a value that cannot work, such as no
	// Dialect or a table name that is not a plain SQL identifier.
	ErrConfig = errors.New("outbox: invalid config")
	// ErrNoTx: a message was written with no transaction, and the context
	// carries none ([Tx]).
	ErrNoTx = errors.New("outbox: no transaction")
	// ErrDatabase: the database refused a statement or could not be
	// reached.
	ErrDatabase = errors.New("outbox: database")
)

// Config configures an [Outbox] and an [Inbox]. Its zero value is not
// usable: Dialect must be set. Every other field's zero value means the
// default it documents. The processes that write an outbox, relay it or
// share an inbox must use the same Table and InboxTable. A Config is a
// plain value: [New] and [NewInbox] copy it, so it may be shared and
// changed afterwards without effect on them.
type Config struct {
	// Dialect is the database's: [Postgres] or [SQLite].
	Dialect Dialect
	// Table names the outbox table. The default is "cqrs_outbox". It must
	// be a lower-case SQL identifier of at most 48 characters ([a-z_] then
	// [a-z0-9_]). [Outbox.Migrate] also makes Table + "_migrations".
	Table string
	// InboxTable names the inbox table ([Inbox]). The default is
	// "cqrs_inbox", with the rules of Table.
	InboxTable string
	// NATS holds the options of the NATS side (prefix, codec, payload
	// limit): those of the processes that receive the messages, which
	// must agree with them.
	NATS []cqrsnats.Option
	// Durable configures the durable commands that [Enqueue] writes: the
	// stream they must land in. It must be that of the serving
	// processes.
	Durable cqrsnats.DurableConfig
}

func (c Config) withDefaults() (Config, error) {
	if c.Dialect != Postgres && c.Dialect != SQLite {
		return c, fmt.Errorf("%w: Dialect is %v: want outbox.Postgres or outbox.SQLite", ErrConfig, c.Dialect)
	}
	if c.Table == "" {
		c.Table = "cqrs_outbox"
	}
	if c.InboxTable == "" {
		c.InboxTable = "cqrs_inbox"
	}
	for _, name := range []string{c.Table, c.InboxTable} {
		if !tableName.MatchString(name) {
			return c, fmt.Errorf("%w: table name %q: want a lower-case SQL identifier of at most 48 characters, [a-z_] then [a-z0-9_]", ErrConfig, name)
		}
	}
	if c.Table == c.InboxTable {
		return c, fmt.Errorf("%w: Table and InboxTable are both %q", ErrConfig, c.Table)
	}
	if c.Durable.Stream == "" {
		c.Durable.Stream = "CQRS_COMMANDS" // DurableConfig's own default
	}
	return c, nil
}

// Outbox writes messages into the user's database transactions, for a
// [Relay] to send once they are committed: the transactional outbox.
// Make one with [New]; the zero value is not usable. An Outbox is safe
// for concurrent use; it holds no connection of its own and needs no
// closing.
type Outbox struct {
	db  *sql.DB
	cfg Config
	sql statements
}

// New returns the outbox of db, configured by cfg. It makes no request:
// call [Outbox.Migrate] once, at start-up, to make the tables (or apply
// [Outbox.Schema] with your own migration tool). It fails with
// [ErrConfig] for a nil db or an invalid cfg.
func New(db *sql.DB, cfg Config) (*Outbox, error) {
	cfg, stmts, err := setUp(db, cfg)
	if err != nil {
		return nil, err
	}
	return &Outbox{db: db, cfg: cfg, sql: stmts}, nil
}

// setUp checks db and cfg for [New] and [NewInbox], and returns cfg with
// its defaults and the SQL of its dialect and tables.
func setUp(db *sql.DB, cfg Config) (Config, statements, error) {
	if db == nil {
		return cfg, statements{}, fmt.Errorf("%w: nil *sql.DB", ErrConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return cfg, statements{}, err
	}
	return cfg, newStatements(cfg.Dialect, cfg.Table, cfg.InboxTable), nil
}

// Schema returns the SQL that makes the outbox and inbox tables (and, on
// PostgreSQL, the trigger that notifies relays): what Migrate applies as
// its version 1, for those who run migrations with a tool of their own.
// It returns "" for an Outbox not made with [New].
func (o *Outbox) Schema() string {
	if o == nil || len(o.sql.migrations) == 0 {
		return ""
	}
	return strings.TrimSpace(o.sql.migrations[0]) + "\n"
}

// Migrate makes the outbox and inbox tables if they are missing, and
// applies the migrations of later versions of this package that were not
// applied yet, recording each in Table + "_migrations". It is safe to run
// from several processes at once (on PostgreSQL they take turns on an
// advisory lock; on SQLite the database's write lock does it) and again
// at every start-up: what is there is kept.
func (o *Outbox) Migrate(ctx context.Context) error {
	if err := o.check(ctx, "migrate"); err != nil {
		return err
	}
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: migrate: %w", ErrDatabase, err)
	}
	defer func() { _ = tx.Rollback() }()
	if o.sql.schemaLock != "" {
		if _, err := tx.ExecContext(ctx, o.sql.schemaLock); err != nil {
			return fmt.Errorf("%w: migrate: %w", ErrDatabase, err)
		}
	}
	if _, err := tx.ExecContext(ctx, o.sql.schema); err != nil {
		return fmt.Errorf("%w: migrate: %w", ErrDatabase, err)
	}
	var applied int
	if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM "+o.cfg.Table+"_migrations").Scan(&applied); err != nil {
		return fmt.Errorf("%w: migrate: reading the applied version: %w", ErrDatabase, err)
	}
	for v := applied + 1; v <= len(o.sql.migrations); v++ {
		for _, stmt := range o.split(o.sql.migrations[v-1]) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%w: migrate to version %d: %w", ErrDatabase, v, err)
			}
		}
		var err error
		if o.cfg.Dialect == Postgres {
			_, err = tx.ExecContext(ctx, "INSERT INTO "+o.cfg.Table+"_migrations (version) VALUES ($1)", v)
		} else {
			_, err = tx.ExecContext(ctx, "INSERT INTO "+o.cfg.Table+"_migrations (version, applied_at) VALUES (?, ?)", v, time.Now().UnixNano())
		}
		if err != nil {
			return fmt.Errorf("%w: migrate to version %d: %w", ErrDatabase, v, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: migrate: %w", ErrDatabase, err)
	}
	return nil
}

// split cuts a migration into statements: drivers differ in whether they
// take several at once. The statements of a migration end with ";" at
// the end of a line; a function body's do not.
func (o *Outbox) split(migration string) []string {
	var out []string
	for stmt := range strings.SplitSeq(migration, ";\n") {
		if stmt = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(stmt), ";")); stmt != "" {
			out = append(out, stmt)
		}
	}
	return out
}

// Lag is how far the relays are behind: what [Outbox.Lag] measures. It
// is a plain value, safe to copy and share; its zero value means nothing
// is pending.
type Lag struct {
	// Pending counts the messages written and committed, not yet sent.
	Pending int64
	// Oldest is the age of the oldest of them; 0 when none is pending.
	Oldest time.Duration
}

// Lag returns the messages waiting in the outbox and the age of the
// oldest: the figure to watch and alert on. It counts the whole table,
// which takes a scan: poll it every few seconds, not per request.
func (o *Outbox) Lag(ctx context.Context) (Lag, error) {
	if err := o.check(ctx, "lag"); err != nil {
		return Lag{}, err
	}
	var lag Lag
	if o.cfg.Dialect == Postgres {
		var secs float64
		if err := o.db.QueryRowContext(ctx, o.sql.lag).Scan(&lag.Pending, &secs); err != nil {
			return Lag{}, fmt.Errorf("%w: lag: %w", ErrDatabase, err)
		}
		lag.Oldest = time.Duration(secs * float64(time.Second))
		return lag, nil
	}
	var oldest int64
	if err := o.db.QueryRowContext(ctx, o.sql.lag).Scan(&lag.Pending, &oldest); err != nil {
		return Lag{}, fmt.Errorf("%w: lag: %w", ErrDatabase, err)
	}
	if lag.Pending > 0 {
		lag.Oldest = max(time.Since(time.Unix(0, oldest)), 0)
	}
	return lag, nil
}
