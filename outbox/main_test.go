package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/outbox"
	"github.com/typedcqrs/dispatch/outbox/internal/pgtest"
)

// pg is the PostgreSQL server of the tests: started by TestMain, or the
// one OUTBOX_POSTGRES_DSN names (then pgServer is nil).
var (
	pgDSN    string
	pgServer *pgtest.Server
)

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(child(role))
	}
	pgDSN = os.Getenv(pgtest.EnvDSN)
	if pgDSN == "" {
		s, err := pgtest.Start(pgtest.Fast...)
		if err != nil {
			// Never skip: a test that needs PostgreSQL fails without one.
			fmt.Fprintf(os.Stderr, "outbox tests need PostgreSQL: %v\nset %s to use a running server\n", err, pgtest.EnvDSN)
			os.Exit(1)
		}
		pgServer, pgDSN = s, s.DSN
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	if pgServer != nil {
		if err := pgServer.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}

// PlaceOrder, ShipOrder and OrderPlaced are the messages of the tests.
type OrderPlaced struct {
	cqrs.Event
	Order  int
	Writer int
}

type ShipOrder struct {
	cqrs.Command[cqrs.NoResult]
	Order int
}

// backend is one database of the tests, with tables of its own.
type backend struct {
	name string
	db   *sql.DB
	cfg  outbox.Config
	box  *outbox.Outbox
}

// tableSeq tells the tables of the tests apart.
var tableSeq = struct {
	sync.Mutex
	n int
}{}

func uniqueTables(cfg outbox.Config) outbox.Config {
	tableSeq.Lock()
	tableSeq.n++
	n := tableSeq.n
	tableSeq.Unlock()
	suffix := fmt.Sprintf("%d_%d_%d", os.Getpid(), n, rand.IntN(1e6))
	cfg.Table, cfg.InboxTable = "ob_"+suffix, "ib_"+suffix
	return cfg
}

// openPostgres returns a backend on the tests' PostgreSQL server, with
// new tables, migrated.
func openPostgres(t testing.TB, cfg outbox.Config) *backend {
	t.Helper()
	db, err := sql.Open("pgx", pgDSN)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	cfg.Dialect = outbox.Postgres
	return migrated(t, "postgres", db, uniqueTables(cfg))
}

// openSQLite returns a backend on a new SQLite file, migrated.
func openSQLite(t testing.TB, cfg outbox.Config) *backend {
	t.Helper()
	db, err := outbox.OpenSQLite(filepath.Join(t.TempDir(), "outbox.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	cfg.Dialect = outbox.SQLite
	return migrated(t, "sqlite", db, uniqueTables(cfg))
}

func migrated(t testing.TB, name string, db *sql.DB, cfg outbox.Config) *backend {
	t.Helper()
	box, err := outbox.New(db, cfg)
	require.NoError(t, err)
	require.NoError(t, box.Migrate(context.Background()))
	return &backend{name: name, db: db, cfg: cfg, box: box}
}

// eachBackend runs fn as a subtest on PostgreSQL and on SQLite.
func eachBackend(t *testing.T, cfg outbox.Config, fn func(t *testing.T, b *backend)) {
	t.Run("postgres", func(t *testing.T) { fn(t, openPostgres(t, cfg)) })
	t.Run("sqlite", func(t *testing.T) { fn(t, openSQLite(t, cfg)) })
}

// memorySink keeps what a relay sends, in order. fail, when set, decides
// how many of a batch it takes before failing.
type memorySink struct {
	mu   sync.Mutex
	msgs []outbox.Message
	fail func(batch []outbox.Message) (int, error)
}

func (s *memorySink) Send(_ context.Context, msgs []outbox.Message) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := len(msgs), error(nil)
	if s.fail != nil {
		n, err = s.fail(msgs)
	}
	s.msgs = append(s.msgs, msgs[:n]...)
	return n, err
}

func (s *memorySink) sent() []outbox.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]outbox.Message(nil), s.msgs...)
}

// write commits one transaction that publishes evts, or rolls it back.
func (b *backend) write(t testing.TB, commit bool, evts ...OrderPlaced) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	for _, e := range evts {
		require.NoError(t, outbox.Publish(ctx, b.box, tx, e))
	}
	if commit {
		require.NoError(t, tx.Commit())
	} else {
		require.NoError(t, tx.Rollback())
	}
}
