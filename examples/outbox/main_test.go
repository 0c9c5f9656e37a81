package main

import (
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The demo's child process is this test binary, run as the subscriber.
	if os.Getenv("OUTBOX_EXAMPLE_CHILD") == "1" {
		os.Args = append([]string{os.Args[0]}, childArgs()...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// childArgs returns the demo's flags given to the test binary.
func childArgs() []string {
	var out []string
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-test.") {
			out = append(out, a)
		}
	}
	return out
}

// TestDemoOnSQLite places two orders, the second twice: the subscriber
// process gets each OrderPlaced once.
func TestDemoOnSQLite(t *testing.T) {
	var out strings.Builder
	require.NoError(t, demo("", &out))
	assert.Equal(t, "email: order 1 placed for ada\nemail: order 2 placed for grace\n", out.String())
}

// TestDemoOnPostgres runs the demo with -dsn: on a new database of the
// server OUTBOX_POSTGRES_DSN names, or else on a server of its own that
// scripts/postgres.sh starts from Debian's postgresql package. It fails,
// never skips, when it can have neither.
func TestDemoOnPostgres(t *testing.T) {
	dsn := postgres(t)
	var out strings.Builder
	require.NoError(t, demo(dsn, &out))
	assert.Equal(t, "email: order 1 placed for ada\nemail: order 2 placed for grace\n", out.String())
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	defer db.Close()
	var orders, pending int
	require.NoError(t, db.QueryRow("SELECT count(*) FROM orders").Scan(&orders))
	require.NoError(t, db.QueryRow("SELECT count(*) FROM cqrs_outbox").Scan(&pending))
	assert.Equal(t, 2, orders, "the retried order placed once, in PostgreSQL")
	assert.Zero(t, pending, "the relay sent and removed both events")
}

// postgres returns the DSN of an empty database for the test.
func postgres(t *testing.T) string {
	t.Helper()
	if dsn := os.Getenv("OUTBOX_POSTGRES_DSN"); dsn != "" {
		admin, err := sql.Open("pgx", dsn)
		require.NoError(t, err)
		t.Cleanup(func() { _ = admin.Close() })
		name := fmt.Sprintf("outbox_example_%d", os.Getpid())
		_, err = admin.Exec("CREATE DATABASE " + name)
		require.NoError(t, err)
		t.Cleanup(func() { _, _ = admin.Exec("DROP DATABASE " + name + " WITH (FORCE)") })
		cfg, err := pgxConfig(dsn, name)
		require.NoError(t, err)
		return cfg
	}
	dir, err := os.MkdirTemp("", "outbox-example-pg-") // not t.TempDir: the postgres user must reach it
	require.NoError(t, err)
	script := "../../scripts/postgres.sh"
	out, err := exec.Command("bash", script, "start", dir).CombinedOutput()
	require.NoError(t, err, "starting PostgreSQL (bash scripts/postgres.sh install, or set OUTBOX_POSTGRES_DSN): %s", out)
	t.Cleanup(func() { _ = exec.Command("bash", script, "stop", dir).Run() })
	return strings.TrimSpace(string(out))
}

// pgxConfig returns dsn with its database replaced by name.
func pgxConfig(dsn, name string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}
