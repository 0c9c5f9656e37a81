package middleware_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
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
retry:
  max_attempts: 4
  base_delay: 50ms
  max_delay: 1s
cache:
  ttl: 1m
  max_entries: 500
logging:
  level: debug
metrics: true
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
		Retry:      &middleware.RetryConfig{MaxAttempts: 4, BaseDelay: 50 * time.Millisecond, MaxDelay: time.Second},
		Cache:      &middleware.CacheConfig{TTL: time.Minute, MaxEntries: 500},
		Logging:    &middleware.LoggingConfig{Level: slog.LevelDebug},
		Metrics:    true,
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
		"unknown field":    {"timeout: 1s\ntimeuot: 2s\n", "field timeuot not found"},
		"negative timeout": {"timeout: -1s\n", "timeout must not be negative"},
		"zero rate":        {"rate_limit:\n  rate: 0\n", "rate must be a positive number"},
		"bad duration":     {"timeout: soon\n", "middleware: config:"},
		"negative retries": {"retry:\n  max_attempts: -2\n", "max_attempts must not be negative"},
		"zero ttl":         {"cache:\n  max_entries: 3\n", "ttl must be positive"},
		"bad level":        {"logging:\n  level: loud\n", "middleware: config:"},
		"negative breaker": {"breaker:\n  open_timeout: -5s\n", "durations must not be negative"},
	} {
		_, err := middleware.ParseConfig([]byte(tc.doc))
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), tc.want, name)
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
	assert.Len(t, stack.Interceptors, 7)
	require.NotNil(t, stack.Metrics)
	require.NotNil(t, stack.Breaker)

	bus, _ := jobBus(t, stack.Interceptors...)
	done, err := run(bus, Job{ID: 3})
	require.NoError(t, err)
	assert.Equal(t, 3, done.ID)
	assert.Equal(t, uint64(1), stack.Metrics.Snapshot()[0].Calls)
	assert.Contains(t, logs.String(), "message=middleware_test.Job")

	empty, err := middleware.Config{}.Build(nil)
	require.NoError(t, err)
	assert.Empty(t, empty.Interceptors)
	assert.Nil(t, empty.Metrics)

	_, err = middleware.Config{Timeout: -time.Second}.Build(nil)
	require.Error(t, err)
}
