package middleware

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.yaml.in/yaml/v3"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Config describes the standard production stack, so that a service can
// load its settings from a file (see [LoadConfig]) and build the stack in
// the recommended order with [Config.Build]. Each part is off when its
// field is zero or nil.
type Config struct {
	// Validation checks struct tags and Validate methods ([Validation]).
	Validation bool `yaml:"validation" json:"validation"`
	// Timeout bounds each dispatch, all retries included ([Timeout]).
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Breaker gives each message type a circuit breaker ([NewBreaker]).
	Breaker *BreakerConfig `yaml:"breaker" json:"breaker"`
	// RateLimit limits each message type's rate ([NewRateLimit]).
	RateLimit *RateLimitConfig `yaml:"rate_limit" json:"rate_limit"`
	// Retry retries retryable failures ([Retry]).
	Retry *RetryConfig `yaml:"retry" json:"retry"`
	// Cache is the setting for query caches; the stack cannot build them,
	// since a cache is typed by its query: give it to [NewCache] or
	// [NewKeyedCache].
	Cache *CacheConfig `yaml:"cache" json:"cache"`
	// Logging logs every dispatch ([Logging]) to the logger given to
	// Build.
	Logging *LoggingConfig `yaml:"logging" json:"logging"`
	// Metrics counts and times every dispatch ([NewMetrics]).
	Metrics bool `yaml:"metrics" json:"metrics"`
}

// BreakerConfig is the part of [gobreaker.Settings] a file can hold. Its
// zero value is the defaults of [NewBreaker]: a breaker opens after 5
// consecutive failures.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker when this many dispatches in
	// a row have failed. Zero means 5.
	ConsecutiveFailures uint32 `yaml:"consecutive_failures" json:"consecutive_failures"`
	// OpenTimeout is how long the breaker stays open before it lets probes
	// through. Zero means 60s.
	OpenTimeout time.Duration `yaml:"open_timeout" json:"open_timeout"`
	// HalfOpenRequests is how many probes may be in flight while half-open;
	// that many successes close the breaker. Zero means 1.
	HalfOpenRequests uint32 `yaml:"half_open_requests" json:"half_open_requests"`
	// Interval, if positive, clears the counts this often while closed.
	Interval time.Duration `yaml:"interval" json:"interval"`
}

// Settings returns the gobreaker settings c describes.
func (c BreakerConfig) Settings() gobreaker.Settings {
	failures := c.ConsecutiveFailures
	if failures == 0 {
		failures = DefaultBreakerFailures
	}
	return gobreaker.Settings{
		MaxRequests: c.HalfOpenRequests,
		Interval:    c.Interval,
		Timeout:     c.OpenTimeout,
		ReadyToTrip: func(counts gobreaker.Counts) bool { return counts.ConsecutiveFailures >= failures },
	}
}

// Validate reports every setting of c that is out of range.
func (c Config) Validate() error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("middleware: timeout must not be negative, not %v", c.Timeout))
	}
	if b := c.Breaker; b != nil && (b.OpenTimeout < 0 || b.Interval < 0) {
		errs = append(errs, fmt.Errorf("middleware: breaker: durations must not be negative, not %v and %v", b.OpenTimeout, b.Interval))
	}
	if c.RateLimit != nil {
		errs = append(errs, c.RateLimit.validate())
	}
	if c.Retry != nil {
		errs = append(errs, c.Retry.validate())
	}
	if c.Cache != nil {
		errs = append(errs, validateCache(*c.Cache))
	}
	return errors.Join(errs...)
}

// ParseConfig reads a Config from YAML or JSON (a JSON document is also a
// YAML one). Durations are strings such as "250ms" or "2s"; log levels are
// names such as "info" or "debug". An unknown field, a value of the wrong
// type or a setting out of range is an error.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("middleware: config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LoadConfig reads a Config from the YAML or JSON file at path; see
// [ParseConfig].
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("middleware: config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return c, nil
}

// Stack is the production stack a [Config] builds: its interceptors in the
// recommended order, and the parts a service may want to read from.
type Stack struct {
	// Interceptors are for [cqrs.WithInterceptors], or for [cqrs.Intercept]
	// to give them to one handler.
	Interceptors []cqrs.Interceptor
	// Metrics reads the stack's metrics; nil unless Config.Metrics.
	Metrics *Metrics
	// Breaker reads the breakers' states; nil unless Config.Breaker.
	Breaker *Breaker
}

// Build returns the stack c describes, logging to logger (nil discards).
// From outermost to innermost:
//
//	metrics, logging, validation, rate limit, timeout, retry, breaker
//
// Metrics and logging come first so that they see every outcome, refusals
// by the inner layers included, and the latency the caller sees.
// Validation comes before anything that spends a resource on the message.
// The rate limit comes before the timeout, so that a wait for a token is
// bounded by the caller's deadline and does not eat into the handler's
// time. The timeout bounds all attempts together, so retrying stops when
// the caller's budget is spent. Retry comes outside the breaker so that the
// breaker sees every attempt, and an open breaker, which is not retryable,
// ends the retries.
func (c Config) Build(logger *slog.Logger) (*Stack, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &Stack{}
	if c.Metrics {
		s.Metrics = NewMetrics()
		s.Interceptors = append(s.Interceptors, s.Metrics)
	}
	if c.Logging != nil {
		lc := *c.Logging
		lc.Logger = logger
		s.Interceptors = append(s.Interceptors, Logging(lc))
	}
	if c.Validation {
		s.Interceptors = append(s.Interceptors, Validation(ValidationConfig{}))
	}
	if c.RateLimit != nil {
		rl, err := NewRateLimit(*c.RateLimit)
		if err != nil {
			return nil, err
		}
		s.Interceptors = append(s.Interceptors, rl)
	}
	if c.Timeout > 0 {
		s.Interceptors = append(s.Interceptors, Timeout(c.Timeout))
	}
	if c.Retry != nil {
		s.Interceptors = append(s.Interceptors, Retry(*c.Retry))
	}
	if c.Breaker != nil {
		s.Breaker = NewBreaker(c.Breaker.Settings())
		s.Interceptors = append(s.Interceptors, s.Breaker)
	}
	return s, nil
}

func validateCache(c CacheConfig) error {
	switch {
	case c.TTL <= 0:
		return fmt.Errorf("middleware: cache: ttl must be positive, not %v", c.TTL)
	case c.MaxEntries < 0:
		return fmt.Errorf("middleware: cache: max_entries must not be negative, not %d", c.MaxEntries)
	}
	return nil
}
