package middleware

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/typedcqrs/dispatch/cqrs"
)

// RetryConfig configures [Retry], and the retries of a [Config]. A field
// left zero takes the default its comment gives, so the zero RetryConfig
// makes up to 3 attempts in all, waiting about 100ms and then 200ms.
// [Retry] never refuses a setting: it treats a value out of range as its
// comment says; a [Config] refuses one instead (see [Config.Validate]).
//
// A RetryConfig is a plain value; its Retryable function must be safe to
// call concurrently.
type RetryConfig struct {
	// MaxAttempts bounds the attempts, the first included; 1 turns
	// retrying off. If MaxAttempts <= 0, 3 is used.
	MaxAttempts int `yaml:"max_attempts" json:"max_attempts"`
	// BaseDelay is the wait before the second attempt; each later wait
	// doubles, up to MaxDelay. If BaseDelay <= 0, 100ms is used.
	BaseDelay time.Duration `yaml:"base_delay" json:"base_delay"`
	// MaxDelay caps each wait. If MaxDelay <= 0, 10s is used (or
	// BaseDelay, if longer); if it is below BaseDelay, BaseDelay is used.
	MaxDelay time.Duration `yaml:"max_delay" json:"max_delay"`
	// Jitter spreads each wait at random by up to this fraction either
	// way, so that callers who failed together do not retry together.
	// If Jitter is 0 or NaN, 0.5 is used; if it is negative, there is no
	// jitter; if it is above 1, 1 is used.
	Jitter float64 `yaml:"jitter" json:"jitter"`
	// Retryable says which errors are worth another attempt. If it is
	// nil, [IsRetryable] is used. It must be safe to call concurrently.
	Retryable func(error) bool `yaml:"-" json:"-"`
}

const (
	defaultAttempts  = 3
	defaultBaseDelay = 100 * time.Millisecond
	defaultMaxDelay  = 10 * time.Second
	defaultJitter    = 0.5
)

// normalised returns c with every field normalised as its comment says.
func (c RetryConfig) normalised() RetryConfig {
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = defaultAttempts
	}
	if c.BaseDelay <= 0 {
		c.BaseDelay = defaultBaseDelay
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = max(defaultMaxDelay, c.BaseDelay)
	}
	c.MaxDelay = max(c.MaxDelay, c.BaseDelay)
	switch {
	case c.Jitter == 0 || math.IsNaN(c.Jitter):
		c.Jitter = defaultJitter
	case c.Jitter < 0:
		c.Jitter = 0
	case c.Jitter > 1:
		c.Jitter = 1
	}
	if c.Retryable == nil {
		c.Retryable = IsRetryable
	}
	return c
}

// IsRetryable reports whether another attempt could succeed where err
// failed: not when err is the caller's doing ([IsCallerError]), a circuit
// breaker's refusal or a handler's panic.
func IsRetryable(err error) bool {
	return err != nil && !IsCallerError(err) &&
		!errors.Is(err, cqrs.ErrCircuitOpen) && !errors.Is(err, cqrs.ErrHandlerPanic)
}

// Retry returns an interceptor that calls the rest of the chain again when
// it fails with a retryable error, waiting between attempts with
// exponential backoff and jitter (github.com/cenkalti/backoff/v5). It stops
// at the first success, at an error that is not retryable, after
// MaxAttempts, or as soon as the context ends, and returns the last
// attempt's error. No attempt starts on a done context: when the context
// ends during a wait, or as it ends, the error wraps both ctx.Err() and
// the last attempt's error, so [errors.Is] finds either. The handler must
// be safe to call more than once with the same message.
//
// A successful first attempt costs nothing beyond the call. Each field of
// cfg is normalised as [RetryConfig] says. The interceptor is safe for
// concurrent use and keeps no state between dispatches.
func Retry(cfg RetryConfig) cqrs.Interceptor {
	cfg = cfg.normalised()
	return cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		if cfg.MaxAttempts == 1 {
			return next
		}
		return func(ctx context.Context, c cqrs.Call) error {
			err := next(ctx, c)
			if err == nil || !cfg.Retryable(err) || ctx.Err() != nil {
				return err
			}
			return retry(ctx, cfg, next, c, err)
		}
	})
}

// retry makes the attempts after a first that failed with err.
func retry(ctx context.Context, cfg RetryConfig, next cqrs.Invoker, c cqrs.Call, err error) error {
	delays := backoff.NewExponentialBackOff()
	delays.InitialInterval = cfg.BaseDelay
	delays.MaxInterval = cfg.MaxDelay
	delays.Multiplier = 2
	delays.RandomizationFactor = cfg.Jitter
	delays.Reset()

	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for attempt := 2; attempt <= cfg.MaxAttempts; attempt++ {
		timer.Reset(delays.NextBackOff())
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		// The context may end as the wait does, and select picks either
		// (or its timer has yet to run): check it, and its deadline, so
		// that no attempt starts on a done context.
		if done := ended(ctx); done != nil {
			return fmt.Errorf("%w (after %d attempts, the last failed with: %w)", done, attempt-1, err)
		}
		if err = next(ctx, c); err == nil || !cfg.Retryable(err) {
			return err
		}
	}
	return err
}

// ended returns ctx's error, or [context.DeadlineExceeded] if its deadline
// has come though the context has not yet been told.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
