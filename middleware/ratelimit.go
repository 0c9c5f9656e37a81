package middleware

import (
	"context"
	"fmt"
	"math"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/internal/stats"
)

// RateLimitConfig configures [NewRateLimit].
type RateLimitConfig struct {
	// Rate is how many dispatches a second each message type (or each
	// key) may make, on average. It must be positive.
	Rate float64 `yaml:"rate" json:"rate"`
	// Burst is how many may be made at once. Zero means Rate rounded up,
	// and at least 1.
	Burst int `yaml:"burst" json:"burst"`
	// Wait, when true, makes a dispatch with no token wait for one, as
	// long as the context's deadline allows; when false it fails at once.
	Wait bool `yaml:"wait" json:"wait"`
	// Key, if not nil, splits each message type's limit by a key taken
	// from the message, such as its tenant: each key gets its own bucket.
	// It boxes the message, which costs an allocation per dispatch.
	Key func(msg any) string `yaml:"-" json:"-"`
	// MaxKeys bounds the buckets kept per message type when Key is set:
	// the least recently used key's bucket is dropped to make room, and
	// starts full if the key comes back. Zero means 10,000.
	MaxKeys int `yaml:"max_keys" json:"max_keys"`
}

const defaultMaxKeys = 10_000

func (c RateLimitConfig) validate() error {
	switch {
	case !(c.Rate > 0) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("middleware: rate limit: rate must be a positive number, not %v", c.Rate)
	case c.Burst < 0:
		return fmt.Errorf("middleware: rate limit: burst must not be negative, not %d", c.Burst)
	case c.MaxKeys < 0:
		return fmt.Errorf("middleware: rate limit: max_keys must not be negative, not %d", c.MaxKeys)
	}
	return nil
}

// RateLimit is an interceptor that limits the rate of dispatches of each
// message type, or of each key within a type, with token buckets from
// golang.org/x/time/rate. A dispatch costs the same whatever the traffic:
// one bucket lookup and one token taken.
//
// A dispatch that gets no token fails with an error wrapping
// [cqrs.ErrRateLimited], at once or, in wait mode, when waiting would
// outlast the context's deadline. A context that ends while waiting
// returns its own error.
//
// RateLimit is safe for concurrent use. Make one with [NewRateLimit].
type RateLimit struct {
	cfg RateLimitConfig
}

// NewRateLimit returns a RateLimit, or an error if cfg is invalid.
func NewRateLimit(cfg RateLimitConfig) (*RateLimit, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Burst == 0 {
		cfg.Burst = max(1, int(math.Ceil(cfg.Rate)))
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = defaultMaxKeys
	}
	return &RateLimit{cfg: cfg}, nil
}

// Intercept makes the bucket, or the bounded set of keyed buckets, of
// spec's message type.
func (l *RateLimit) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	limit := rate.Limit(l.cfg.Rate)
	if l.cfg.Key == nil {
		lim := rate.NewLimiter(limit, l.cfg.Burst)
		return func(ctx context.Context, c cqrs.Call) error {
			if err := l.take(ctx, spec, lim); err != nil {
				return err
			}
			return next(ctx, c)
		}
	}

	keys, err := lru.New[string, *rate.Limiter](l.cfg.MaxKeys)
	if err != nil { // only for a size below 1, which NewRateLimit rules out
		panic(err)
	}
	return func(ctx context.Context, c cqrs.Call) error {
		key := l.cfg.Key(c.Message())
		lim, ok := keys.Get(key)
		if !ok {
			lim = rate.NewLimiter(limit, l.cfg.Burst)
			if prev, found, _ := keys.PeekOrAdd(key, lim); found {
				lim = prev
			}
		}
		if err := l.take(ctx, spec, lim); err != nil {
			return err
		}
		return next(ctx, c)
	}
}

// take takes a token from lim, waiting for one in wait mode.
func (l *RateLimit) take(ctx context.Context, spec cqrs.Spec, lim *rate.Limiter) error {
	if !l.cfg.Wait {
		if lim.AllowN(stats.Time(), 1) {
			return nil
		}
		return fmt.Errorf("%w: %s", cqrs.ErrRateLimited, spec)
	}
	err := lim.Wait(ctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return fmt.Errorf("%w: %s: %w", cqrs.ErrRateLimited, spec, err)
	}
}
