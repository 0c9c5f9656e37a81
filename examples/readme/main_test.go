package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestTour(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, tour(context.Background(), &out, &Users{}))
	assert.Equal(t, "Ada ada@example.com <nil>\n1 <nil>\ntrue\ntrue\n", out.String())
}

func TestEventsAndStreams(t *testing.T) {
	var out bytes.Buffer
	ctx := context.Background()
	users := &Users{users: []User{{ID: 1, Name: "Ada"}, {ID: 2, Name: "Bob"}, {ID: 3, Name: "Alan"}}}
	require.NoError(t, events(ctx, &out))
	require.NoError(t, streams(ctx, &out, users))
	assert.Equal(t, "welcome mail to user 1\n"+
		"cqrs: event main.UserCreated: subscriber audit: audit log full\n"+
		"1 Ada\n3 Alan\n", out.String())
}

func TestProduction(t *testing.T) {
	commands, queries, err := production("../production-demo/config.yaml", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.NotNil(t, commands)
	assert.NotNil(t, queries)
	_, _, err = production("missing.yaml", nil)
	require.Error(t, err)
}

// TestProductionStack tries the README's production stack as a new user
// would: a failing command is not retried though queries are, and a
// rate-limited burst is logged at WARN, not ERROR.
func TestProductionStack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cqrs.yaml")
		require.NoError(t, os.WriteFile(path, []byte(`
rate_limit: {rate: 1, burst: 1}
logging: {level: info}
queries:
  retry: {max_attempts: 3, base_delay: 10ms}
`), 0o600))
		var logs bytes.Buffer
		commands, queries, err := production(path, slog.New(slog.NewJSONHandler(&logs, nil)))
		require.NoError(t, err)

		var creates, gets int
		require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, int](func(context.Context, CreateUser) (int, error) {
			creates++
			return 0, errors.New("database down")
		})))
		require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetUser, User](func(context.Context, GetUser) (User, error) {
			gets++
			return User{}, errors.New("database down")
		})))
		ctx := context.Background()
		_, err = cqrs.Dispatch[int](ctx, commands, CreateUser{Name: "Ada"})
		require.Error(t, err)
		assert.Equal(t, 1, creates, "a command is not retried")
		_, err = cqrs.Dispatch[User](ctx, queries, GetUser{ID: 1})
		require.Error(t, err)
		assert.Equal(t, 3, gets, "a query is")

		logs.Reset()
		for range 10 {
			_, err = cqrs.Dispatch[int](ctx, commands, CreateUser{Name: "Ada"})
			require.ErrorIs(t, err, cqrs.ErrRateLimited)
		}
		assert.Equal(t, 10, strings.Count(logs.String(), `"level":"WARN"`), logs.String())
		assert.NotContains(t, logs.String(), `"level":"ERROR"`)
	})
}

// TestReadmeTesting runs the README's test, TestSignUp, which lives in
// main.go with every other README block.
func TestReadmeTesting(t *testing.T) {
	TestSignUp(t)
}

// regions returns the regions of this package's source marked
// "readme:begin" and "readme:end", each with its indentation removed.
func regions(t *testing.T) []string {
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	re := regexp.MustCompile(`(?s)// readme:begin \w+\n(.*?)\n\s*// readme:end`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		out = append(out, dedent(m[1]))
	}
	require.NotEmpty(t, out)
	return out
}

// dedent removes the indentation every non-blank line shares, and
// trailing blank lines.
func dedent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	prefix := ""
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		indent := l[:len(l)-len(strings.TrimLeft(l, "\t"))]
		if i == 0 || len(indent) < len(prefix) || prefix == "" {
			prefix = indent
		}
	}
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, prefix)
	}
	return strings.Join(lines, "\n")
}

// TestReadmeBlocksAreTested fails when a Go block of the README is not a
// region of main.go, so that no README code can drift from code that
// compiles and runs.
func TestReadmeBlocksAreTested(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	blocks := regexp.MustCompile("(?s)```go\n(.*?)\n```").FindAllStringSubmatch(string(readme), -1)
	require.NotEmpty(t, blocks, "the README has Go blocks")
	tested := regions(t)
	for _, b := range blocks {
		assert.Contains(t, tested, dedent(b[1]), "README block not found in examples/readme/main.go:\n%s", b[1])
	}
}
