package middleware_test

import (
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/middleware"
)

// fileSetting is one setting of a config file and what the one rule
// (Config.Validate) makes of it: a good value is used as written; a
// written zero is refused where it would stand for a default, with the
// fix; an out-of-range value is refused, with the fix.
type fileSetting struct {
	path     string
	good     string                      // a value used as written
	read     func(middleware.Config) any // the setting, from a parsed Config
	goodWant any                         // what read returns for good
	zero     string                      // a written zero; "" if the setting has none
	zeroOK   bool                        // the zero is used as written (a bool)
	bad      string                      // a value out of range
	badWant  string                      // what the error of bad says is accepted
	fix      string                      // what the errors of zero and bad say to do
	needs    string                      // a setting the section must have, such as "rate: 100"
}

func inf() float64 { return math.Inf(1) }
func nan() float64 { return math.NaN() }

// fileSettings is every setting a config file can hold: TestFileRuleCoversEverySetting
// checks that none is missing.
var fileSettings = []fileSetting{
	{path: "validation", good: "true", read: func(c middleware.Config) any { return c.Validation }, goodWant: true,
		zero: "false", zeroOK: true, bad: "maybe", badWant: "want true or false"},
	{path: "timeout", good: "2s", read: func(c middleware.Config) any { return c.Timeout }, goodWant: 2 * time.Second,
		zero: "0", bad: "-1s", badWant: `want a positive duration, such as "2s"`, fix: "omit it for no timeout"},
	{path: "metrics", good: "true", read: func(c middleware.Config) any { return c.Metrics }, goodWant: true,
		zero: "false", zeroOK: true, bad: "1", badWant: "want true or false"},

	{path: "breaker.consecutive_failures", good: "3", read: func(c middleware.Config) any { return c.Breaker.ConsecutiveFailures }, goodWant: uint32(3),
		zero: "0", bad: "-1", badWant: "want a whole number that fits a uint32", fix: "omit it for the default, 5"},
	{path: "breaker.open_timeout", good: "30s", read: func(c middleware.Config) any { return c.Breaker.OpenTimeout }, goodWant: 30 * time.Second,
		zero: "0s", bad: "-5s", badWant: `want a positive duration, such as "30s"`, fix: "omit it for the default, 60s"},
	{path: "breaker.half_open_requests", good: "2", read: func(c middleware.Config) any { return c.Breaker.HalfOpenRequests }, goodWant: uint32(2),
		zero: "0", bad: "1.5", badWant: "want a whole number", fix: "omit it for the default, 1"},
	{path: "breaker.interval", good: "1m", read: func(c middleware.Config) any { return c.Breaker.Interval }, goodWant: time.Minute,
		zero: "0", bad: "-1m", badWant: `want a positive duration, such as "1m"`, fix: "omit it to clear the counts only when the breaker changes state"},

	{path: "rate_limit.rate", good: "2.5", read: func(c middleware.Config) any { return c.RateLimit.Rate }, goodWant: 2.5,
		zero: "0", bad: "-3", badWant: "want a positive, finite number of dispatches a second, such as 100", fix: "remove rate_limit for no rate limit"},
	{path: "rate_limit.burst", needs: "rate: 100", good: "20", read: func(c middleware.Config) any { return c.RateLimit.Burst }, goodWant: 20,
		zero: "0", bad: "-1", badWant: "want 1 or more", fix: "omit it for the default, the rate rounded up"},
	{path: "rate_limit.wait", needs: "rate: 100", good: "true", read: func(c middleware.Config) any { return c.RateLimit.Wait }, goodWant: true,
		zero: "false", zeroOK: true, bad: "soon", badWant: "want true or false"},
	{path: "rate_limit.max_keys", needs: "rate: 100", good: "50", read: func(c middleware.Config) any { return c.RateLimit.MaxKeys }, goodWant: 50,
		zero: "0", bad: "-7", badWant: "want 1 or more", fix: "omit it for the default, 10000"},

	{path: "logging.level", good: "debug", read: func(c middleware.Config) any { return c.Logging.Level }, goodWant: slog.LevelDebug,
		bad: "loud", badWant: `want a level: "debug", "info", "warn" or "error"`},
	{path: "logging.caller_error_level", good: "error", read: func(c middleware.Config) any { return *c.Logging.CallerErrorLevel }, goodWant: slog.LevelError,
		bad: "[warn]", badWant: "want a level"},

	{path: "commands.retry.max_attempts", good: "2", read: func(c middleware.Config) any { return c.Commands.Retry.MaxAttempts }, goodWant: 2,
		zero: "0", bad: "-2", badWant: "want 1 or more (1: no retries)", fix: "omit it for the default, 3"},
	{path: "commands.retry.base_delay", good: "50ms", read: func(c middleware.Config) any { return c.Commands.Retry.BaseDelay }, goodWant: 50 * time.Millisecond,
		zero: "0s", bad: "-50ms", badWant: `want a positive duration, such as "100ms"`, fix: "omit it for the default, 100ms"},
	{path: "commands.retry.max_delay", good: "1s", read: func(c middleware.Config) any { return c.Commands.Retry.MaxDelay }, goodWant: time.Second,
		zero: "0", bad: "-1s", badWant: `want a positive duration, such as "10s"`, fix: "omit it for the default, 10s (or base_delay, if longer)"},
	{path: "commands.retry.jitter", good: "0.2", read: func(c middleware.Config) any { return c.Commands.Retry.Jitter }, goodWant: 0.2,
		zero: "0", bad: "1.5", badWant: "want a fraction above 0 and at most 1, such as 0.2, or -1 for none", fix: "omit it for the default, 0.5"},
	{path: "queries.retry.max_attempts", good: "4", read: func(c middleware.Config) any { return c.Queries.Retry.MaxAttempts }, goodWant: 4,
		zero: "0", bad: "-1", badWant: "want 1 or more (1: no retries)", fix: "omit it for the default, 3"},
	{path: "queries.retry.base_delay", good: "20ms", read: func(c middleware.Config) any { return c.Queries.Retry.BaseDelay }, goodWant: 20 * time.Millisecond,
		zero: "0", bad: "-1ms", badWant: `want a positive duration, such as "100ms"`, fix: "omit it for the default, 100ms"},
	{path: "queries.retry.max_delay", good: "200ms", read: func(c middleware.Config) any { return c.Queries.Retry.MaxDelay }, goodWant: 200 * time.Millisecond,
		zero: "0s", bad: "-200ms", badWant: `want a positive duration, such as "10s"`, fix: "omit it for the default, 10s"},
	{path: "queries.retry.jitter", good: "-1", read: func(c middleware.Config) any { return c.Queries.Retry.Jitter }, goodWant: -1.0,
		zero: "0.0", bad: "-2", badWant: "or -1 for none", fix: "omit it for the default, 0.5"},
	{path: "queries.cache.ttl", good: "1m", read: func(c middleware.Config) any { return c.Queries.Cache.TTL }, goodWant: time.Minute,
		zero: "0s", bad: "-1m", badWant: `want a positive duration, such as "1m"`, fix: "remove queries.cache for no cache"},
	{path: "queries.cache.max_entries", needs: "ttl: 1m", good: "500", read: func(c middleware.Config) any { return c.Queries.Cache.MaxEntries }, goodWant: 500,
		zero: "0", bad: "-500", badWant: "want 1 or more", fix: "omit it for the default, 10000"},
	{path: "queries.cache.count_hits", needs: "ttl: 1m", good: "true", read: func(c middleware.Config) any { return c.Queries.Cache.CountHits }, goodWant: true,
		zero: "false", zeroOK: true, bad: "2", badWant: "want true or false"},
}

// fileDoc returns a config that gives the setting at path the value v, on
// its last line, and that line's number.
func fileDoc(s fileSetting, v string) (string, int) {
	parts := strings.Split(s.path, ".")
	var b strings.Builder
	for i, p := range parts[:len(parts)-1] {
		fmt.Fprintf(&b, "%s%s:\n", strings.Repeat("  ", i), p)
	}
	indent := strings.Repeat("  ", len(parts)-1)
	if s.needs != "" {
		fmt.Fprintf(&b, "%s%s\n", indent, s.needs)
	}
	fmt.Fprintf(&b, "%s%s: %s\n", indent, parts[len(parts)-1], v)
	return b.String(), strings.Count(b.String(), "\n")
}

// TestFileRule checks the one rule on every setting of a file: a good
// value is used as written; a written zero is refused wherever it would
// stand for a default, by the setting's name and line, with the fix; an
// out-of-range value likewise.
func TestFileRule(t *testing.T) {
	t.Parallel()
	for _, s := range fileSettings {
		t.Run(s.path, func(t *testing.T) {
			t.Parallel()
			doc, _ := fileDoc(s, s.good)
			cfg, err := middleware.ParseConfig([]byte(doc))
			require.NoError(t, err, doc)
			assert.Equal(t, s.goodWant, s.read(cfg), "used as written")

			if s.zero != "" {
				doc, line := fileDoc(s, s.zero)
				cfg, err := middleware.ParseConfig([]byte(doc))
				if s.zeroOK {
					require.NoError(t, err, doc)
					assert.Zero(t, s.read(cfg))
				} else {
					require.ErrorIs(t, err, middleware.ErrConfig, doc)
					assert.Contains(t, err.Error(), fmt.Sprintf("%s (line %d): got 0", s.path, line))
					assert.Contains(t, err.Error(), "; "+s.fix, "the error names the fix")
				}
			}

			doc, line := fileDoc(s, s.bad)
			_, err = middleware.ParseConfig([]byte(doc))
			require.ErrorIs(t, err, middleware.ErrConfig, doc)
			assert.Contains(t, err.Error(), fmt.Sprintf("%s (line %d): got ", s.path, line))
			assert.Contains(t, err.Error(), s.badWant)
			if s.fix != "" && !strings.Contains(s.badWant, "whole number") {
				assert.Contains(t, err.Error(), "; "+s.fix, "the error names the fix")
			}
		})
	}
}

// TestFileRuleCoversEverySetting: every setting a file can hold, found by
// walking Config's yaml tags, has its row in fileSettings.
func TestFileRuleCoversEverySetting(t *testing.T) {
	t.Parallel()
	var paths []string
	var walk func(t reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if key == "" || key == "-" {
				continue
			}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, prefix+key+".")
				continue
			}
			paths = append(paths, prefix+key)
		}
	}
	walk(reflect.TypeFor[middleware.Config](), "")
	var covered []string
	for _, s := range fileSettings {
		covered = append(covered, s.path)
	}
	slices.Sort(paths)
	slices.Sort(covered)
	assert.Equal(t, paths, covered)
}

// TestFileRuleRequired: a part that is on must give the settings that
// have no default; the error names the part's line and the fix.
func TestFileRuleRequired(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]string{
		"metrics: true\nrate_limit:\n  burst: 5\n":   "rate_limit.rate (line 2): not set, want a positive, finite number of dispatches a second, such as 100; remove rate_limit for no rate limit",
		"rate_limit: {}\n":                           "rate_limit.rate (line 1): not set",
		"queries:\n  cache:\n    count_hits: true\n": `queries.cache.ttl (line 2): not set, want a positive duration, such as "1m"; remove queries.cache for no cache`,
	} {
		_, err := middleware.ParseConfig([]byte(doc))
		require.ErrorIs(t, err, middleware.ErrConfig, doc)
		assert.Contains(t, err.Error(), want, doc)
	}
	// A key with no value is left out: the part is off, or the setting
	// takes its default.
	cfg, err := middleware.ParseConfig([]byte("rate_limit:\nqueries:\n  retry:\n    max_attempts:\n"))
	require.NoError(t, err)
	assert.Nil(t, cfg.RateLimit)
	assert.Equal(t, &middleware.RetryConfig{}, cfg.Queries.Retry)
}

// TestFileRuleCrossSettings: base_delay above max_delay is refused at
// base_delay's line, with the fix.
func TestFileRuleCrossSettings(t *testing.T) {
	t.Parallel()
	_, err := middleware.ParseConfig([]byte("queries:\n  retry:\n    max_delay: 1s\n    base_delay: 2s\n"))
	require.ErrorIs(t, err, middleware.ErrConfig)
	assert.Contains(t, err.Error(), "queries.retry.base_delay (line 4): got 2s, want at most max_delay (1s); lower base_delay or raise max_delay")
	// With max_delay left out, a long base_delay is used as written, and
	// the default max_delay grows to it.
	cfg, err := middleware.ParseConfig([]byte("queries:\n  retry:\n    base_delay: 20s\n"))
	require.NoError(t, err)
	assert.Equal(t, 20*time.Second, cfg.Queries.Retry.BaseDelay)
}

// TestFileRuleReportsEverySettingWithItsLine: a file with many bad
// settings gets one error for each, each with its line.
func TestFileRuleReportsEverySettingWithItsLine(t *testing.T) {
	t.Parallel()
	doc := `timeout: 0
breaker:
  consecutive_failures: 0
rate_limit:
  rate: 0
  burst: 0
commands:
  retry:
    max_attempts: 0
queries:
  cache:
    ttl: 0s
`
	_, err := middleware.ParseConfig([]byte(doc))
	require.ErrorIs(t, err, middleware.ErrConfig)
	for _, want := range []string{
		"timeout (line 1): got 0s, want a positive duration",
		"breaker.consecutive_failures (line 3): got 0, want 1 or more; omit it for the default, 5",
		"rate_limit.rate (line 5): got 0, want a positive, finite number",
		"rate_limit.burst (line 6): got 0, want 1 or more; omit it for the default, the rate rounded up",
		"commands.retry.max_attempts (line 9): got 0, want 1 or more (1: no retries); omit it for the default, 3",
		"queries.cache.ttl (line 12): got 0s, want a positive duration",
	} {
		assert.Contains(t, err.Error(), want)
	}
	assert.Len(t, strings.Split(err.Error(), "\n"), 6, "one line per setting")
}

// TestGoRule: in Go, a zero field is left out, and takes its default; a
// value out of range is refused by Validate and Build, by its name in a
// file, with the fix, and no line.
func TestGoRule(t *testing.T) {
	t.Parallel()
	zeros := middleware.Config{
		Breaker:   &middleware.BreakerConfig{},
		RateLimit: &middleware.RateLimitConfig{Rate: 1},
		Logging:   &middleware.LoggingConfig{},
		Commands:  middleware.CommandConfig{Retry: &middleware.RetryConfig{}},
		Queries:   middleware.QueryConfig{Retry: &middleware.RetryConfig{}, Cache: &middleware.CacheConfig{TTL: time.Minute}},
	}
	require.NoError(t, zeros.Validate())
	_, err := zeros.Build(nil)
	require.NoError(t, err)

	for name, tc := range map[string]struct {
		cfg  middleware.Config
		want string
	}{
		"timeout":  {middleware.Config{Timeout: -time.Second}, `timeout: got -1s, want a positive duration, such as "2s"; omit it for no timeout`},
		"open":     {middleware.Config{Breaker: &middleware.BreakerConfig{OpenTimeout: -1}}, "breaker.open_timeout: got -1ns"},
		"interval": {middleware.Config{Breaker: &middleware.BreakerConfig{Interval: -1}}, "breaker.interval: got -1ns"},
		"no rate":  {middleware.Config{RateLimit: &middleware.RateLimitConfig{Burst: 3}}, "rate_limit.rate: not set, want a positive, finite number"},
		"inf rate": {middleware.Config{RateLimit: &middleware.RateLimitConfig{Rate: inf()}}, "rate_limit.rate: got +Inf"},
		"burst":    {middleware.Config{RateLimit: &middleware.RateLimitConfig{Rate: 1, Burst: -1}}, "rate_limit.burst: got -1, want 1 or more; omit it"},
		"max keys": {middleware.Config{RateLimit: &middleware.RateLimitConfig{Rate: 1, MaxKeys: -1}}, "rate_limit.max_keys: got -1"},
		"attempts": {middleware.Config{Commands: middleware.CommandConfig{Retry: &middleware.RetryConfig{MaxAttempts: -1}}}, "commands.retry.max_attempts: got -1"},
		"base":     {middleware.Config{Queries: middleware.QueryConfig{Retry: &middleware.RetryConfig{BaseDelay: -1}}}, "queries.retry.base_delay: got -1ns"},
		"max":      {middleware.Config{Queries: middleware.QueryConfig{Retry: &middleware.RetryConfig{MaxDelay: -1}}}, "queries.retry.max_delay: got -1ns"},
		"base>max": {middleware.Config{Queries: middleware.QueryConfig{Retry: &middleware.RetryConfig{BaseDelay: 2, MaxDelay: 1}}}, "queries.retry.base_delay: got 2ns, want at most max_delay (1ns)"},
		"jitter":   {middleware.Config{Queries: middleware.QueryConfig{Retry: &middleware.RetryConfig{Jitter: nan()}}}, "queries.retry.jitter: got NaN"},
		"no ttl":   {middleware.Config{Queries: middleware.QueryConfig{Cache: &middleware.CacheConfig{MaxEntries: 5}}}, "queries.cache.ttl: not set"},
		"ttl":      {middleware.Config{Queries: middleware.QueryConfig{Cache: &middleware.CacheConfig{TTL: -1}}}, "queries.cache.ttl: got -1ns"},
		"entries":  {middleware.Config{Queries: middleware.QueryConfig{Cache: &middleware.CacheConfig{TTL: 1, MaxEntries: -1}}}, "queries.cache.max_entries: got -1"},
	} {
		err := tc.cfg.Validate()
		require.ErrorIs(t, err, middleware.ErrConfig, name)
		assert.Contains(t, err.Error(), tc.want, name)
		assert.NotContains(t, err.Error(), "(line", name)
		_, err = tc.cfg.Build(nil)
		assert.ErrorIs(t, err, middleware.ErrConfig, name)
	}
}
