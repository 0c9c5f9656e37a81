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

// RateLimitConfig configures [RateLimiter], and the rate limit of a
// [Config]. A field left zero takes the default its comment gives; the
// zero RateLimitConfig limits nothing, since Rate has no default: a
// [Config] with a rate limit must give it. [RateLimiter] never refuses a
// setting: it treats a value out of range as its comment says; a [Config]
// refuses one instead (see [Config.Validate]).
//
// A RateLimitConfig is a plain value; its Key function must be safe to
// call concurrently.
type RateLimitConfig struct {
	// Rate is how many dispatches a second each message type (or each
	// key) may make, on average. If Rate is zero, negative, NaN or +Inf,
	// nothing is limited: the interceptor passes every dispatch on.
	Rate float64 `yaml:"rate" json:"rate"`
	// Burst is how many may be made at once. If Burst <= 0, Rate rounded
	// up is used, and at least 1.
	Burst int `yaml:"burst" json:"burst"`
	// Wait, when true, makes a dispatch with no token wait for one, as
	// long as the context's deadline allows; when false it fails at once.
	Wait bool `yaml:"wait" json:"wait"`
	// Key, if not nil, splits each message type's limit by a key taken
	// from the message, such as its tenant: each key gets its own bucket.
	// It boxes the message, which costs an allocation per dispatch. It
	// must be safe to call concurrently.
	Key func(msg any) string `yaml:"-" json:"-"`
	// MaxKeys bounds the buckets kept per message type when Key is set:
	// the least recently used key's bucket is dropped to make room, and
	// starts full if the key comes back. If MaxKeys <= 0, 10,000 is used.
	MaxKeys int `yaml:"max_keys" json:"max_keys"`
}

const defaultMaxKeys = 10_000

// normalised returns c with every field normalised as its comment says,
// and whether it limits anything.
func (c RateLimitConfig) normalised() (RateLimitConfig, bool) {
	if !(c.Rate > 0) || math.IsInf(c.Rate, 1) {
		return c, false
	}
	if c.Burst <= 0 {
		c.Burst = int(min(math.Ceil(c.Rate), math.MaxInt32))
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = defaultMaxKeys
	}
	return c, true
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
// RateLimit is safe for concurrent use. Make one with [RateLimiter]; the
// zero value limits nothing. Each registration of a message type gets
// buckets of its own, so two types never share one, even when they print
// alike.
type RateLimit struct {
	cfg RateLimitConfig
	on  bool
}

// RateLimiter returns a RateLimit with cfg, each field left zero or out of
// range taken as [RateLimitConfig] says. It cannot fail.
func RateLimiter(cfg RateLimitConfig) *RateLimit {
	cfg, on := cfg.normalised()
	return &RateLimit{cfg: cfg, on: on}
}

// NewRateLimit is [RateLimiter] with an error that is always nil.
//
// Deprecated: use [RateLimiter], which cannot fail and says so.
func NewRateLimit(cfg RateLimitConfig) (*RateLimit, error) {
	return RateLimiter(cfg), nil
}

// Intercept makes the bucket, or the bounded set of keyed buckets, of
// spec's message type.
func (l *RateLimit) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	if !l.on {
		return next
	}
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
	if err != nil { // only for a size below 1, which normalised rules out
		return func(context.Context, cqrs.Call) error { return fmt.Errorf("middleware: rate limit: %s: %w", spec, err) }
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
