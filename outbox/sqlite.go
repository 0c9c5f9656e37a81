package outbox

import (
	"database/sql"
	"fmt"
	"net/url"

	_ "modernc.org/sqlite" // the "sqlite" driver: pure Go, no cgo
)

// OpenSQLite opens the SQLite database in the file at path (made if it
// is missing) with modernc.org/sqlite, a pure Go driver, set up as the
// outbox and the inbox need: write-ahead logging, so that the relay reads
// while handlers write; transactions that take the write lock when they
// begin (BEGIN IMMEDIATE), so that two never deadlock upgrading a read
// lock; a busy timeout of 10 s, so that a transaction waits for another
// rather than failing; and full synchronous commits, so that a committed
// message survives a power cut. It keeps one connection open, at most:
// SQLite commits one transaction at a time anyway, and database/sql
// queues the callers of a busy connection in order, where SQLite's own
// busy wait lets a writer starve under contention. So code that holds a
// transaction of this db (such as a handler an [Inbox] runs) must use
// that transaction, not db, until it ends: db would wait for it. Use it
// with [Config] Dialect [SQLite]. The caller closes the returned *sql.DB.
func OpenSQLite(path string) (*sql.DB, error) {
	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("%w: OpenSQLite needs a file: each connection to :memory: is a database of its own", ErrConfig)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrDatabase, path, err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}
