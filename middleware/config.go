package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Config describes the standard production stack of both buses, so that a
// service can load its settings from a file (see [LoadConfig]) and build
// the stack in the recommended order with [Config.Build]. Each part is off
// when its field is zero or nil, and each setting of a part that is on
// takes its default when it is left zero: the rule of [Config.Validate].
//
// The top-level parts apply to both buses. Retries and the query cache are
// set per kind, in Commands and Queries, and are off unless set there:
// commands change state and are seldom idempotent, so a command is retried
// only when Commands.Retry asks for it.
//
// A Config is a plain value, safe to share once made; its zero value
// builds an empty stack.
type Config struct {
	// Validation checks struct tags and Validate methods ([Validation]).
	Validation bool `yaml:"validation" json:"validation"`
	// Timeout bounds each dispatch, all retries included ([Timeout]). If it
	// is 0, there is no timeout.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Breaker gives each message type a circuit breaker ([CircuitBreaker]).
	Breaker *BreakerConfig `yaml:"breaker" json:"breaker"`
	// RateLimit limits each message type's rate ([RateLimiter]). Its Rate
	// must be set.
	RateLimit *RateLimitConfig `yaml:"rate_limit" json:"rate_limit"`
	// Logging logs every dispatch ([Logging]) to the logger given to
	// Build.
	Logging *LoggingConfig `yaml:"logging" json:"logging"`
	// Metrics counts and times every dispatch ([NewMetrics]).
	Metrics bool `yaml:"metrics" json:"metrics"`
	// Commands holds what applies to commands only.
	Commands CommandConfig `yaml:"commands" json:"commands"`
	// Queries holds what applies to queries only.
	Queries QueryConfig `yaml:"queries" json:"queries"`
}

// CommandConfig is the part of a [Config] for commands only. It is a
// plain value; its zero value retries no command.
type CommandConfig struct {
	// Retry, if set, retries commands that fail with a retryable error
	// ([Retry]). Set it only for handlers that are idempotent.
	Retry *RetryConfig `yaml:"retry" json:"retry"`
}

// QueryConfig is the part of a [Config] for queries only. It is a plain
// value; its zero value retries no query and caches none.
type QueryConfig struct {
	// Retry, if set, retries queries that fail with a retryable error
	// ([Retry]).
	Retry *RetryConfig `yaml:"retry" json:"retry"`
	// Cache is the setting of the query caches made with
	// [NewQueryCache] and [NewKeyedQueryCache] from the built [Stack]. Its
	// TTL must be set.
	Cache *CacheConfig `yaml:"cache" json:"cache"`
}

// ErrConfig is wrapped by every error that reports a setting of a
// [Config] out of range, or a file that is not a valid Config.
var ErrConfig = errors.New("middleware: config")

// Validate reports every setting of c that the stack could not use as it
// is, each by its name in a file (such as "queries.cache.ttl"), with what
// it was, what is accepted, and how to fix it. It applies the one rule of
// every setting of a Config, in Go and in a file:
//
//   - A setting left out takes its default: the documented default of its
//     field (3 attempts, 5 failures, 60s open, no timeout…). In Go, a zero
//     field is left out, since Go cannot tell the two apart.
//   - A setting that is given must work as given: one that would be
//     replaced by a default or ignored, such as a negative duration, is an
//     error that names the setting and says what to write instead. In a
//     file a written 0 is given (ParseConfig refuses "max_attempts: 0",
//     which would mean 3; leave the key out instead).
//   - Two settings have no default, and a part that is on must give them:
//     rate_limit.rate (a rate limit needs a rate) and queries.cache.ttl (a
//     cache needs a lifetime). Leave the part out to turn it off.
//
// The constructors ([Retry], [CircuitBreaker], [RateLimiter], [NewCache]…)
// follow the first rule and never fail on a setting: each field's comment
// says what they make of a value out of range. Build and [ParseConfig]
// call Validate, so that a Config never silently builds something other
// than what it says.
func (c Config) Validate() error {
	return c.validate(nil)
}

// validate reports the settings of c out of range. lines, for a Config
// read from a file, holds the line of every setting the file gives, by
// its path; it is nil for a Config made in Go.
func (c Config) validate(lines map[string]int) error {
	ch := &checker{lines: lines}
	ch.check("timeout", c.Timeout == 0, c.Timeout > 0, c.Timeout,
		`a positive duration, such as "2s"`, "omit it for no timeout")
	if b := c.Breaker; b != nil {
		ch.check("breaker.consecutive_failures", b.ConsecutiveFailures == 0, b.ConsecutiveFailures > 0, b.ConsecutiveFailures,
			"1 or more", fmt.Sprintf("omit it for the default, %d", DefaultBreakerFailures))
		ch.check("breaker.open_timeout", b.OpenTimeout == 0, b.OpenTimeout > 0, b.OpenTimeout,
			`a positive duration, such as "30s"`, "omit it for the default, 60s")
		ch.check("breaker.half_open_requests", b.HalfOpenRequests == 0, b.HalfOpenRequests > 0, b.HalfOpenRequests,
			"1 or more", "omit it for the default, 1")
		ch.check("breaker.interval", b.Interval == 0, b.Interval > 0, b.Interval,
			`a positive duration, such as "1m"`, "omit it to clear the counts only when the breaker changes state")
	}
	if r := c.RateLimit; r != nil {
		const want, fix = "a positive, finite number of dispatches a second, such as 100", "remove rate_limit for no rate limit"
		if ch.require("rate_limit.rate", "rate_limit", r.Rate == 0, want, fix) {
			ch.check("rate_limit.rate", false, r.Rate > 0 && !math.IsInf(r.Rate, 0), r.Rate, want, fix)
		}
		ch.check("rate_limit.burst", r.Burst == 0, r.Burst > 0, r.Burst,
			"1 or more", "omit it for the default, the rate rounded up")
		ch.check("rate_limit.max_keys", r.MaxKeys == 0, r.MaxKeys > 0, r.MaxKeys,
			"1 or more", fmt.Sprintf("omit it for the default, %d", defaultMaxKeys))
	}
	c.Commands.Retry.validate(ch, "commands.retry")
	c.Queries.Retry.validate(ch, "queries.retry")
	if q := c.Queries.Cache; q != nil {
		const want, fix = `a positive duration, such as "1m"`, "remove queries.cache for no cache"
		if ch.require("queries.cache.ttl", "queries.cache", q.TTL == 0, want, fix) {
			ch.check("queries.cache.ttl", false, q.TTL > 0, q.TTL, want, fix)
		}
		ch.check("queries.cache.max_entries", q.MaxEntries == 0, q.MaxEntries > 0, q.MaxEntries,
			"1 or more", fmt.Sprintf("omit it for the default, %d", defaultMaxEntries))
	}
	return errors.Join(ch.errs...)
}

// validate reports the settings of r, a retry at path, out of range.
func (r *RetryConfig) validate(ch *checker, path string) {
	if r == nil {
		return
	}
	ch.check(path+".max_attempts", r.MaxAttempts == 0, r.MaxAttempts > 0, r.MaxAttempts,
		"1 or more (1: no retries)", fmt.Sprintf("omit it for the default, %d", defaultAttempts))
	ch.check(path+".base_delay", r.BaseDelay == 0, r.BaseDelay > 0, r.BaseDelay,
		`a positive duration, such as "100ms"`, fmt.Sprintf("omit it for the default, %v", defaultBaseDelay))
	ch.check(path+".max_delay", r.MaxDelay == 0, r.MaxDelay > 0, r.MaxDelay,
		`a positive duration, such as "10s"`, fmt.Sprintf("omit it for the default, %v (or base_delay, if longer)", defaultMaxDelay))
	if ch.given(path+".base_delay", r.BaseDelay == 0) && ch.given(path+".max_delay", r.MaxDelay == 0) &&
		r.BaseDelay > 0 && r.MaxDelay > 0 {
		ch.check(path+".base_delay", false, r.BaseDelay <= r.MaxDelay, r.BaseDelay,
			fmt.Sprintf("at most max_delay (%v)", r.MaxDelay), "lower base_delay or raise max_delay")
	}
	ch.check(path+".jitter", r.Jitter == 0, r.Jitter > 0 && r.Jitter <= 1 || r.Jitter >= -1 && r.Jitter < 0, r.Jitter,
		"a fraction above 0 and at most 1, such as 0.2, or -1 for none", fmt.Sprintf("omit it for the default, %v", defaultJitter))
}

// checker collects the settings of a Config out of range.
type checker struct {
	lines map[string]int // of a Config from a file: the line of each setting given, by path
	errs  []error
}

// given reports whether the setting at path, whose value is zero or not,
// was given: written in the file, or, for a Config made in Go, not zero.
func (ch *checker) given(path string, zero bool) bool {
	if ch.lines == nil {
		return !zero
	}
	_, ok := ch.lines[path]
	return ok
}

// check reports the setting at path if it was given and is not ok: got is
// its value, want what is accepted, and fix what to do instead.
func (ch *checker) check(path string, zero, ok bool, got any, want, fix string) {
	if ok || !ch.given(path, zero) {
		return
	}
	ch.errs = append(ch.errs, fmt.Errorf("%w: %s%s: got %v, want %s; %s", ErrConfig, path, at(ch.lines[path]), got, want, fix))
}

// require reports the setting at path, of the part at section, if it was
// not given, and returns whether it was.
func (ch *checker) require(path, section string, zero bool, want, fix string) bool {
	if ch.given(path, zero) {
		return true
	}
	ch.errs = append(ch.errs, fmt.Errorf("%w: %s%s: not set, want %s; %s", ErrConfig, path, at(ch.lines[section]), want, fix))
	return false
}

// Build returns the stack c describes, logging to logger (nil discards).
// From outermost to innermost, on each bus:
//
//	commands: metrics, logging, validation, rate limit, timeout, retry (if commands.retry), breaker
//	queries:  metrics, logging, validation, cache (if queries.cache), rate limit, timeout, retry (if queries.retry), breaker
//
// Metrics and logging come first so that they see every outcome, refusals
// by the inner layers and cache hits included, and the latency the caller
// sees. Validation comes before anything that spends a resource on the
// message, and before the cache, so that an invalid query is never
// answered from it. A cache hit skips what follows it: it spends no
// rate-limit token, needs no timeout, and is answered even while the
// breaker is open. The rate limit comes before the timeout, so that a
// wait for a token is bounded by the caller's deadline and does not eat
// into the handler's time. The timeout bounds all attempts together, so
// retrying stops when the caller's budget is spent. Retry comes outside
// the breaker so that the breaker sees every attempt, and an open breaker,
// which is not retryable, ends the retries.
//
// The cache is typed by its query, so Build cannot make it for a bus: it
// keeps the settings, and [NewQueryCache] makes each query's cache, in
// its place in the stack. The stack is that of [NewStack] with these
// layers: a stack built by hand places caches the same way.
//
// Build fails, wrapping [ErrConfig], if [Config.Validate] does.
func (c Config) Build(logger *slog.Logger) (*Stack, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var outer []cqrs.Interceptor // both kinds, outside any cache
	var metrics *Metrics
	if c.Metrics {
		metrics = NewMetrics()
		outer = append(outer, metrics)
	}
	if c.Logging != nil {
		lc := *c.Logging
		lc.Logger = logger
		outer = append(outer, Logging(lc))
	}
	if c.Validation {
		outer = append(outer, Validation(ValidationConfig{}))
	}

	var before, after []cqrs.Interceptor // around retry, inside any cache
	if c.RateLimit != nil {
		before = append(before, RateLimiter(*c.RateLimit))
	}
	if c.Timeout > 0 {
		before = append(before, Timeout(c.Timeout))
	}
	var breaker *Breaker
	if c.Breaker != nil {
		breaker = CircuitBreaker(*c.Breaker)
		after = append(after, breaker)
	}
	retry := func(r *RetryConfig) []cqrs.Interceptor {
		if r == nil {
			return nil
		}
		return []cqrs.Interceptor{Retry(*r)}
	}

	s := NewStack(Layers{
		Outer:    outer,
		Commands: slices.Concat(before, retry(c.Commands.Retry), after),
		Queries:  slices.Concat(before, retry(c.Queries.Retry), after),
	})
	s.Metrics, s.Breaker, s.cache = metrics, breaker, c.Queries.Cache
	return s, nil
}
