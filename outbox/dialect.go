package outbox

import (
	"fmt"
	"hash/fnv"
	"regexp"
	"strconv"
	"strings"
)

// Dialect names the database an [Outbox] and an [Inbox] speak to, through
// database/sql. Its zero value names none, and is refused with
// [ErrConfig]. A Dialect is a plain value, safe for concurrent use.
type Dialect uint8

const (
	// Postgres is PostgreSQL 13 or later, through a database/sql driver
	// such as github.com/jackc/pgx/v5/stdlib ("pgx"). The relay orders
	// messages by transaction (xid8) and wakes on LISTEN/NOTIFY when the
	// driver is pgx.
	Postgres Dialect = iota + 1
	// SQLite is SQLite 3.35 or later, such as modernc.org/sqlite
	// ("sqlite", pure Go): the embedded default, with no server. Open it
	// with [OpenSQLite], which sets the pragmas the outbox needs.
	SQLite
)

// String returns "postgres" or "sqlite", or "Dialect(n)" for a value
// that names neither.
func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	default:
		return "Dialect(" + strconv.Itoa(int(d)) + ")"
	}
}

// tableName is what a table name may be: it is written into SQL, so it
// is checked rather than quoted.
var tableName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// statements are the SQL of one dialect and one pair of tables.
type statements struct {
	insert     string // msg_id, subject, headers, payload[, created_at]
	lock       string // PostgreSQL: one relay at a time; empty for SQLite
	batch      string // the next messages, in order; LIMIT $1, order wait $2
	delete     string // format: the seqs published
	lag        string
	channel    string // NOTIFY channel, PostgreSQL
	inboxMark  string // consumer, msg_id[, handled_at]
	inboxClean string // handled before
	migrations []string
	schema     string // the table of applied migrations
	schemaLock string
}

func newStatements(d Dialect, table, inbox string) statements {
	r := strings.NewReplacer("{t}", table, "{inbox}", inbox)
	switch d {
	case Postgres:
		h := fnv.New64a()
		h.Write([]byte("cqrs outbox " + table))
		lockKey := strconv.FormatInt(int64(h.Sum64()), 10)
		return statements{
			insert: r.Replace(`INSERT INTO {t} (msg_id, subject, headers, payload) VALUES ($1, $2, $3, $4)`),
			lock:   `SELECT pg_try_advisory_xact_lock(` + lockKey + `)`,
			// Ordered by transaction id, then by sequence. A row is ready
			// when every transaction that began before its own has ended
			// (its txid is below the snapshot's xmin): no transaction
			// still running can then commit a row that sorts before it.
			// A row older than the order wait is ready anyway, so that a
			// long transaction delays the others by at most that.
			batch: r.Replace(`SELECT seq, msg_id, subject, headers, payload,
	txid < pg_snapshot_xmin(pg_current_snapshot()) OR created_at < now() - make_interval(secs => $2)
FROM {t} ORDER BY txid, seq LIMIT $1`),
			delete:     r.Replace(`DELETE FROM {t} WHERE seq = ANY($1::bigint[])`),
			lag:        r.Replace(`SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM {t}`),
			channel:    table,
			inboxMark:  r.Replace(`INSERT INTO {inbox} (consumer, msg_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`),
			inboxClean: r.Replace(`DELETE FROM {inbox} WHERE handled_at < now() - make_interval(secs => $1)`),
			schema:     r.Replace(`CREATE TABLE IF NOT EXISTS {t}_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`),
			schemaLock: `SELECT pg_advisory_xact_lock(` + lockKey + `)`,
			migrations: []string{r.Replace(`
CREATE TABLE IF NOT EXISTS {t} (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
	msg_id     text NOT NULL,
	subject    text NOT NULL,
	headers    text NOT NULL,
	payload    bytea NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {t}_order ON {t} (txid, seq);
CREATE OR REPLACE FUNCTION {t}_notify() RETURNS trigger LANGUAGE plpgsql AS
	$$ BEGIN PERFORM pg_notify('{t}', ''); RETURN NULL; END $$;
CREATE OR REPLACE TRIGGER {t}_notify AFTER INSERT ON {t}
	FOR EACH STATEMENT EXECUTE FUNCTION {t}_notify();
CREATE TABLE IF NOT EXISTS {inbox} (
	consumer   text NOT NULL,
	msg_id     text NOT NULL,
	handled_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, msg_id)
);
CREATE INDEX IF NOT EXISTS {inbox}_handled_at ON {inbox} (handled_at);`)},
		}
	default:
		return statements{
			insert: r.Replace(`INSERT INTO {t} (msg_id, subject, headers, payload, created_at) VALUES (?, ?, ?, ?, ?)`),
			// SQLite commits one transaction at a time, and seq is given
			// inside it: seq order is commit order. Every row is ready.
			batch:      r.Replace(`SELECT seq, msg_id, subject, headers, payload, ? >= 0 FROM {t} ORDER BY seq LIMIT ?`),
			delete:     r.Replace(`DELETE FROM {t} WHERE seq IN (%s)`),
			lag:        r.Replace(`SELECT count(*), coalesce(min(created_at), 0) FROM {t}`),
			inboxMark:  r.Replace(`INSERT INTO {inbox} (consumer, msg_id, handled_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`),
			inboxClean: r.Replace(`DELETE FROM {inbox} WHERE handled_at < ?`),
			schema:     r.Replace(`CREATE TABLE IF NOT EXISTS {t}_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`),
			migrations: []string{r.Replace(`
CREATE TABLE IF NOT EXISTS {t} (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	msg_id     TEXT NOT NULL,
	subject    TEXT NOT NULL,
	headers    TEXT NOT NULL,
	payload    BLOB NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {inbox} (
	consumer   TEXT NOT NULL,
	msg_id     TEXT NOT NULL,
	handled_at INTEGER NOT NULL,
	PRIMARY KEY (consumer, msg_id)
);
CREATE INDEX IF NOT EXISTS {inbox}_handled_at ON {inbox} (handled_at);`)},
		}
	}
}

// deleteSQL returns the statement that deletes the rows seqs, and its
// argument.
func (s *statements) deleteSQL(d Dialect, seqs []int64) (string, any) {
	var b strings.Builder
	if d == Postgres {
		b.WriteByte('{')
	}
	for i, seq := range seqs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(seq, 10))
	}
	if d == Postgres {
		b.WriteByte('}')
		return s.delete, b.String()
	}
	return fmt.Sprintf(s.delete, b.String()), nil
}
