package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// flaky fails its first n calls with err, then succeeds, recording when
// each call came.
type flaky struct {
	n     int
	err   error
	calls []time.Time
}

func (f *flaky) handle(_ context.Context, j Job) (Done, error) {
	f.calls = append(f.calls, time.Now())
	if len(f.calls) <= f.n {
		return Done{}, f.err
	}
	return Done{ID: j.ID}, nil
}

func flakyBus(t *testing.T, f *flaky, cfg middleware.RetryConfig) *cqrs.CommandBus {
	t.Helper()
	bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Retry(cfg)))
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Job, Done](f.handle)))
	return bus
}

// gaps returns the waits between calls.
func gaps(calls []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(calls); i++ {
		out = append(out, calls[i].Sub(calls[i-1]))
	}
	return out
}

func TestRetryBacksOffExponentially(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{n: 3, err: errJob}
		bus := flakyBus(t, f, middleware.RetryConfig{MaxAttempts: 5, BaseDelay: 100 * time.Millisecond, MaxDelay: 300 * time.Millisecond, Jitter: -1})
		done, err := run(bus, Job{ID: 8})
		require.NoError(t, err)
		assert.Equal(t, 8, done.ID)
		assert.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}, gaps(f.calls),
			"doubling from the base delay, capped at the max")
	})
}

func TestRetryJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{n: 1, err: errJob}
		bus := flakyBus(t, f, middleware.RetryConfig{BaseDelay: time.Second, Jitter: 0.5})
		_, err := run(bus, Job{})
		require.NoError(t, err)
		wait := gaps(f.calls)[0]
		assert.GreaterOrEqual(t, wait, 500*time.Millisecond)
		assert.LessOrEqual(t, wait, 1500*time.Millisecond)
	})
}

func TestRetryGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{n: 10, err: errJob}
		bus := flakyBus(t, f, middleware.RetryConfig{MaxAttempts: 3})
		_, err := run(bus, Job{})
		require.ErrorIs(t, err, errJob)
		assert.Len(t, f.calls, 3)
	})
}

func TestRetryOnlyRetryableErrors(t *testing.T) {
	for _, err := range []error{
		cqrs.ErrValidation, cqrs.ErrHandlerNotFound, cqrs.ErrCircuitOpen, cqrs.ErrRateLimited,
		context.Canceled, &cqrs.PanicError{Value: "boom"},
	} {
		t.Run(err.Error(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &flaky{n: 1, err: err}
				bus := flakyBus(t, f, middleware.RetryConfig{})
				_, got := run(bus, Job{})
				require.ErrorIs(t, got, err)
				assert.Len(t, f.calls, 1, "not retried")
				assert.False(t, middleware.IsRetryable(err))
			})
		})
	}
	assert.True(t, middleware.IsRetryable(errJob))
	assert.True(t, middleware.IsRetryable(cqrs.ErrExecutionTimeout))
	assert.False(t, middleware.IsRetryable(nil))
}

func TestRetryCustomPredicate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errBusy := errors.New("busy")
		f := &flaky{n: 2, err: errJob}
		bus := flakyBus(t, f, middleware.RetryConfig{Retryable: func(err error) bool { return errors.Is(err, errBusy) }})
		_, err := run(bus, Job{})
		require.ErrorIs(t, err, errJob)
		assert.Len(t, f.calls, 1)
	})
}

func TestRetryStopsWhenTheContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{n: 10, err: errJob}
		bus := flakyBus(t, f, middleware.RetryConfig{MaxAttempts: 10, BaseDelay: time.Minute, Jitter: -1})
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(time.Second)
			cancel()
		}()
		start := time.Now()
		_, err := runCtx(ctx, bus, Job{})
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, errJob, "the last attempt's error is kept")
		assert.Equal(t, time.Second, time.Since(start), "the wait ended with the context")
		assert.Len(t, f.calls, 1)
	})
}

func TestRetryOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{n: 1, err: errJob}
		bus := flakyBus(t, f, middleware.RetryConfig{MaxAttempts: 1})
		_, err := run(bus, Job{})
		require.ErrorIs(t, err, errJob)
		assert.Len(t, f.calls, 1)
	})
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errMissing := errors.New("no such order")
		f := &flaky{n: 5, err: middleware.Permanent(errMissing)}
		bus := flakyBus(t, f, middleware.RetryConfig{})
		_, err := run(bus, Job{})
		require.ErrorIs(t, err, errMissing, "the handler's error is still found")
		assert.Equal(t, "no such order", err.Error())
		assert.Len(t, f.calls, 1)
		assert.True(t, middleware.IsCallerError(err))
		assert.NoError(t, middleware.Permanent(nil))
	})
}

// TestRetryNoAttemptOnADoneContext ends the context at the very instant the
// backoff wait ends: both are ready together, and no attempt may start on
// the done context whichever the wait sees first.
func TestRetryNoAttemptOnADoneContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for range 32 {
			f := &flaky{n: 10, err: errJob}
			bus := flakyBus(t, f, middleware.RetryConfig{MaxAttempts: 3, BaseDelay: time.Second, Jitter: -1})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := runCtx(ctx, bus, Job{})
			cancel()
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.ErrorIs(t, err, errJob, "the last attempt's error is kept")
			require.Len(t, f.calls, 1, "the attempt due when the context ended did not start")
		}
	})
}

// TestRetryNormalisesItsConfig pins each field's normalisation: an out of
// range value is replaced by what RetryConfig documents, field by field,
// never by resetting the whole config.
func TestRetryNormalisesItsConfig(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg   middleware.RetryConfig
		fails int
		gaps  []time.Duration // nil: only count the attempts
		calls int
	}{
		"max attempts -2 is 3": {cfg: middleware.RetryConfig{MaxAttempts: -2, BaseDelay: time.Second, Jitter: -1}, fails: 10, calls: 3},
		"base delay -1s is 100ms, the rest kept": {
			cfg: middleware.RetryConfig{MaxAttempts: 3, BaseDelay: -time.Second, Jitter: -1}, fails: 10,
			gaps: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond},
		},
		"max delay below base delay is base delay": {
			cfg: middleware.RetryConfig{MaxAttempts: 4, BaseDelay: time.Second, MaxDelay: time.Millisecond, Jitter: -1}, fails: 10,
			gaps: []time.Duration{time.Second, time.Second, time.Second},
		},
		"max delay -1 is 10s": {
			cfg: middleware.RetryConfig{MaxAttempts: 7, BaseDelay: 4 * time.Second, MaxDelay: -1, Jitter: -1}, fails: 10,
			gaps: []time.Duration{4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second},
		},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &flaky{n: tc.fails, err: errJob}
				_, err := run(flakyBus(t, f, tc.cfg), Job{})
				require.ErrorIs(t, err, errJob)
				if tc.gaps != nil {
					assert.Equal(t, tc.gaps, gaps(f.calls))
				} else {
					assert.Len(t, f.calls, tc.calls)
				}
			})
		})
	}
	for _, jitter := range []float64{math.NaN(), 0, 5, math.Inf(1)} {
		t.Run(fmt.Sprint("jitter ", jitter), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &flaky{n: 1, err: errJob}
				_, err := run(flakyBus(t, f, middleware.RetryConfig{BaseDelay: time.Second, Jitter: jitter}), Job{})
				require.NoError(t, err)
				wait := gaps(f.calls)[0]
				assert.Positive(t, wait, "a NaN or infinite jitter does not turn the backoff off")
				assert.LessOrEqual(t, wait, 2*time.Second)
			})
		})
	}
}
