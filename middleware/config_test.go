package middleware_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/middleware"
)

const fullYAML = `
validation: true
timeout: 2s
breaker:
  consecutive_failures: 3
  open_timeout: 30s
  half_open_requests: 2
rate_limit:
  rate: 100
  burst: 20
  wait: true
logging:
  level: debug
metrics: true
commands:
  retry:
    max_attempts: 2
queries:
  retry:
    max_attempts: 4
    base_delay: 50ms
    max_delay: 1s
  cache:
    ttl: 1m
    max_entries: 500
`

func TestParseConfigYAML(t *testing.T) {
	t.Parallel()
	cfg, err := middleware.ParseConfig([]byte(fullYAML))
	require.NoError(t, err)
	assert.Equal(t, middleware.Config{
		Validation: true,
		Timeout:    2 * time.Second,
		Breaker:    &middleware.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 30 * time.Second, HalfOpenRequests: 2},
		RateLimit:  &middleware.RateLimitConfig{Rate: 100, Burst: 20, Wait: true},
		Logging:    &middleware.LoggingConfig{Level: slog.LevelDebug},
		Metrics:    true,
		Commands:   middleware.CommandConfig{Retry: &middleware.RetryConfig{MaxAttempts: 2}},
		Queries: middleware.QueryConfig{
			Retry: &middleware.RetryConfig{MaxAttempts: 4, BaseDelay: 50 * time.Millisecond, MaxDelay: time.Second},
			Cache: &middleware.CacheConfig{TTL: time.Minute, MaxEntries: 500},
		},
	}, cfg)
}

func TestParseConfigJSON(t *testing.T) {
	t.Parallel()
	cfg, err := middleware.ParseConfig([]byte(`{"timeout": "250ms", "rate_limit": {"rate": 5}, "metrics": true}`))
	require.NoError(t, err)
	assert.Equal(t, 250*time.Millisecond, cfg.Timeout)
	assert.InDelta(t, 5.0, cfg.RateLimit.Rate, 0)
	assert.True(t, cfg.Metrics)
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown field":    {"timeout: 1s\ntimeuot: 2s\n", "timeuot (line 2): unknown setting; the config has breaker, commands,"},
		"negative timeout": {"timeout: -1s\n", `timeout (line 1): got -1s, want a positive duration, such as "2s"; omit it for no timeout`},
		"zero rate":        {"rate_limit:\n  rate: 0\n", "rate_limit.rate (line 2): got 0, want a positive, finite number of dispatches a second, such as 100; remove rate_limit for no rate limit"},
		"bad duration":     {"timeout: soon\n", `timeout (line 1): got "soon", want a duration such as`},
		"unitless":         {"timeout: 5\n", `timeout (line 1): got "5", want a duration such as "250ms", "2s" or "1m" (a number needs a unit)`},
		"negative retries": {"queries:\n  retry:\n    max_attempts: -2\n", "queries.retry.max_attempts (line 3): got -2, want 1 or more (1: no retries); omit it for the default, 3"},
		"no ttl":           {"queries:\n  cache:\n    max_entries: 3\n", `queries.cache.ttl (line 2): not set, want a positive duration, such as "1m"; remove queries.cache for no cache`},
		"zero ttl":         {"queries:\n  cache:\n    ttl: 0\n", `queries.cache.ttl (line 3): got 0s, want a positive duration, such as "1m"; remove queries.cache for no cache`},
		"bad level":        {"logging:\n  level: loud\n", `logging.level (line 2): got "loud", want a level`},
		"negative breaker": {"breaker:\n  open_timeout: -5s\n", "breaker.open_timeout (line 2): got -5s"},
		"bool":             {"metrics: yes please\n", `metrics (line 1): got "yes please", want true or false`},
		"int overflow":     {"breaker:\n  consecutive_failures: -1\n", "breaker.consecutive_failures (line 2): got \"-1\", want a whole number that fits a uint32"},
		"list":             {"timeout: [1s]\n", "timeout (line 1): got a list"},
		"mapping for bool": {"validation: {a: 1}\n", "validation (line 1): got a mapping, want a bool"},
		"top-level retry":  {"retry: {max_attempts: 3}\n", "retry (line 1): retry is set per kind now"},
		"top-level cache":  {"cache: {ttl: 1m}\n", "cache (line 1): cache is set under queries:"},
		"command cache":    {"commands:\n  cache: {ttl: 1m}\n", "commands.cache (line 2): unknown setting; commands has retry"},
		"duplicate key":    {"timeout: 1s\nmetrics: true\ntimeout: 2s\n", "timeout (line 3): repeated (first at line 1)"},
		"nested duplicate": {"breaker:\n  interval: 1s\n  interval: 2s\n", "breaker.interval (line 3): repeated (first at line 2)"},
		"second document":  {"timeout: 1s\n---\ntimeout: 2s\n", "a second document (line 2): a config is one document"},
		"alias":            {"breaker: &b {open_timeout: 1s}\nrate_limit: *b\n", "anchors and aliases are not supported"},
		"merge key":        {"breaker:\n  <<: {open_timeout: 1s}\n", "breaker (line 2): a key must be a plain name"},
		"nan rate":         {"rate_limit: {rate: .nan}\n", `rate_limit.rate (line 1): got ".nan", want a finite number`},
		"inf rate":         {"rate_limit: {rate: .inf}\n", `rate_limit.rate (line 1): got ".inf", want a finite number`},
		"nan jitter":       {"queries:\n  retry: {jitter: .nan}\n", `queries.retry.jitter (line 2): got ".nan", want a finite number`},
		"-inf jitter":      {"commands:\n  retry: {jitter: -.inf}\n", `commands.retry.jitter (line 2): got "-.inf", want a finite number`},
		"big jitter":       {"commands:\n  retry: {jitter: 2}\n", "commands.retry.jitter (line 2): got 2, want a fraction above 0 and at most 1, such as 0.2, or -1 for none; omit it for the default, 0.5"},
		"not a mapping":    {"- timeout\n", "the config (line 1): got a list, want a mapping of settings"},
		"syntax":           {"timeout: [\n", "middleware: config: yaml:"},
	} {
		_, err := middleware.ParseConfig([]byte(tc.doc))
		require.ErrorIs(t, err, middleware.ErrConfig, name)
		assert.Contains(t, err.Error(), tc.want, name)
	}
}

// TestParseConfigBoundsItsWork: a config of repeated keys is refused at
// the first repeat, and one past MaxConfigSize is not parsed at all.
func TestParseConfigBoundsItsWork(t *testing.T) {
	t.Parallel()
	repeated := strings.Repeat("timeout: 1s\n", 850) // 10 KB
	_, err := middleware.ParseConfig([]byte(repeated))
	require.ErrorContains(t, err, "timeout (line 2): repeated (first at line 1)")

	big := []byte("metrics: true\n" + strings.Repeat("# padding\n", middleware.MaxConfigSize/10))
	_, err = middleware.ParseConfig(big)
	require.ErrorIs(t, err, middleware.ErrConfig)
	assert.Contains(t, err.Error(), "larger than the 65536 a config may have")

	path := filepath.Join(t.TempDir(), "big.yaml")
	require.NoError(t, os.WriteFile(path, big, 0o600))
	_, err = middleware.LoadConfig(path)
	assert.ErrorContains(t, err, "larger than the 65536")
}

func TestParseConfigEmpty(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{"", "# nothing\n", "---\n", "{}", "timeout:\nvalidation:\ncommands:\n"} {
		cfg, err := middleware.ParseConfig([]byte(doc))
		require.NoError(t, err, doc)
		assert.Equal(t, middleware.Config{}, cfg, doc)
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "cqrs.yaml")
	require.NoError(t, os.WriteFile(path, []byte(fullYAML), 0o600))
	cfg, err := middleware.LoadConfig(path)
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, cfg.Timeout)

	require.NoError(t, os.WriteFile(path, []byte("timeout: -1s\n"), 0o600))
	_, err = middleware.LoadConfig(path)
	require.ErrorContains(t, err, "cqrs.yaml")
	_, err = middleware.LoadConfig(filepath.Join(dir, "missing.yaml"))
	require.Error(t, err)
}

func TestBuild(t *testing.T) {
	t.Parallel()
	cfg, err := middleware.ParseConfig([]byte(fullYAML))
	require.NoError(t, err)
	var logs bytes.Buffer
	stack, err := cfg.Build(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NoError(t, err)
	assert.Len(t, stack.Commands, 7)
	assert.Len(t, stack.Queries, 7)
	assert.Equal(t, stack.Commands, stack.Interceptors, "the deprecated field is the command stack")
	require.NotNil(t, stack.Metrics)
	require.NotNil(t, stack.Breaker)

	bus, _ := jobBus(t, stack.Commands...)
	done, err := run(bus, Job{ID: 3})
	require.NoError(t, err)
	assert.Equal(t, 3, done.ID)
	assert.Equal(t, uint64(1), stack.Metrics.Snapshot()[0].Calls)
	assert.Contains(t, logs.String(), "message=middleware_test.Job")

	empty, err := middleware.Config{}.Build(nil)
	require.NoError(t, err)
	assert.Empty(t, empty.Commands)
	assert.Empty(t, empty.Queries)
	assert.Nil(t, empty.Metrics)

	_, err = middleware.Config{Timeout: -time.Second}.Build(nil)
	require.ErrorIs(t, err, middleware.ErrConfig)
}

// BenchmarkParseConfigRepeatedKeys parses 10 KB of one key repeated, the
// input that took seconds when the YAML decoder checked repeats itself.
func BenchmarkParseConfigRepeatedKeys(b *testing.B) {
	doc := []byte(strings.Repeat("timeout: 1s\n", 850))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := middleware.ParseConfig(doc); err == nil {
			b.Fatal("repeated keys accepted")
		}
	}
}

// BenchmarkParseConfigFull parses the full config of these tests.
func BenchmarkParseConfigFull(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := middleware.ParseConfig([]byte(fullYAML)); err != nil {
			b.Fatal(err)
		}
	}
}
