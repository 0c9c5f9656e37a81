package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/typedcqrs/dispatch/cqrs"
)

// RetryConfig configures [Retry]. Its zero value retries up to 3 attempts
// in all, waiting about 100ms and then 200ms.
type RetryConfig struct {
	// MaxAttempts bounds the attempts, the first included. Zero means 3;
	// 1 turns retrying off.
	MaxAttempts int `yaml:"max_attempts" json:"max_attempts"`
	// BaseDelay is the wait before the second attempt; each later wait
	// doubles, up to MaxDelay. Zero means 100ms.
	BaseDelay time.Duration `yaml:"base_delay" json:"base_delay"`
	// MaxDelay caps each wait. Zero means 10s.
	MaxDelay time.Duration `yaml:"max_delay" json:"max_delay"`
	// Jitter spreads each wait at random by up to this fraction either
	// way, so that callers who failed together do not retry together.
	// Zero means 0.5; a negative value turns jitter off.
	Jitter float64 `yaml:"jitter" json:"jitter"`
	// Retryable says which errors are worth another attempt. Nil means
	// [IsRetryable].
	Retryable func(error) bool `yaml:"-" json:"-"`
}

func (c RetryConfig) validate() error {
	switch {
	case c.MaxAttempts < 0:
		return fmt.Errorf("middleware: retry: max_attempts must not be negative, not %d", c.MaxAttempts)
	case c.BaseDelay < 0 || c.MaxDelay < 0:
		return fmt.Errorf("middleware: retry: delays must not be negative, not %v and %v", c.BaseDelay, c.MaxDelay)
	case c.MaxDelay > 0 && c.BaseDelay > c.MaxDelay:
		return fmt.Errorf("middleware: retry: base_delay %v is above max_delay %v", c.BaseDelay, c.MaxDelay)
	case c.Jitter > 1:
		return fmt.Errorf("middleware: retry: jitter must be at most 1, not %v", c.Jitter)
	}
	return nil
}

func (c RetryConfig) withDefaults() RetryConfig {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.BaseDelay == 0 {
		c.BaseDelay = 100 * time.Millisecond
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = max(10*time.Second, c.BaseDelay)
	}
	switch {
	case c.Jitter == 0:
		c.Jitter = 0.5
	case c.Jitter < 0:
		c.Jitter = 0
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
// A successful first attempt costs nothing beyond the call. A config that
// is invalid for [Config] (see [RetryConfig]) is corrected to its defaults.
func Retry(cfg RetryConfig) cqrs.Interceptor {
	if cfg.validate() != nil {
		cfg = RetryConfig{Retryable: cfg.Retryable}
	}
	cfg = cfg.withDefaults()
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
