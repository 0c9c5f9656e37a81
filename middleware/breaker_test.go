package middleware_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Other is a second command type, to show breakers are per type.
type Other struct{}

func breakerBus(t *testing.T, st gobreaker.Settings) (*cqrs.CommandBus, *jobs, *middleware.Breaker) {
	t.Helper()
	br := middleware.NewBreaker(st)
	bus, j := jobBus(t, br)
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Other, cqrs.NoResult](func(context.Context, Other) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, nil
	})))
	return bus, j, br
}

func tripAfter(n uint32) func(gobreaker.Counts) bool {
	return func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= n }
}

func TestBreakerOpensAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var changes []string
		bus, j, br := breakerBus(t, gobreaker.Settings{
			ReadyToTrip: tripAfter(3),
			Timeout:     10 * time.Second,
			OnStateChange: func(name string, from, to gobreaker.State) {
				changes = append(changes, name+": "+from.String()+" -> "+to.String())
			},
		})
		jobSpec := cqrs.SpecFor[Job, Done](bus)

		for range 3 {
			_, err := run(bus, Job{Do: "fail"})
			require.ErrorIs(t, err, errJob)
		}
		state, ok := br.State(jobSpec)
		require.True(t, ok)
		assert.Equal(t, gobreaker.StateOpen, state)

		// Open: fail fast, the handler is not called.
		_, err := run(bus, Job{})
		require.ErrorIs(t, err, cqrs.ErrCircuitOpen)
		require.ErrorIs(t, err, gobreaker.ErrOpenState)
		assert.Contains(t, err.Error(), "command middleware_test.Job")
		assert.Equal(t, int64(3), j.calls.Load())

		// Another type's breaker is untouched.
		_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, Other{})
		require.NoError(t, err)
		assert.Equal(t, map[string]gobreaker.State{
			"command middleware_test.Job":   gobreaker.StateOpen,
			"command middleware_test.Other": gobreaker.StateClosed,
		}, br.States())

		// After the open timeout, one probe goes through and closes it.
		time.Sleep(10*time.Second + time.Millisecond)
		state, _ = br.State(jobSpec)
		assert.Equal(t, gobreaker.StateHalfOpen, state)
		done, err := run(bus, Job{ID: 5})
		require.NoError(t, err)
		assert.Equal(t, 5, done.ID)
		state, _ = br.State(jobSpec)
		assert.Equal(t, gobreaker.StateClosed, state)
		assert.Equal(t, []string{
			"middleware_test.Job: closed -> open",
			"middleware_test.Job: open -> half-open",
			"middleware_test.Job: half-open -> closed",
		}, changes)
	})
}

func TestBreakerLimitsHalfOpenProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, j, _ := breakerBus(t, gobreaker.Settings{ReadyToTrip: tripAfter(1), Timeout: time.Second, MaxRequests: 1})
		_, err := run(bus, Job{Do: "fail"})
		require.ErrorIs(t, err, errJob)
		time.Sleep(time.Second + time.Millisecond)

		// The one allowed probe blocks in the handler...
		probe := make(chan error)
		go func() {
			_, err := run(bus, Job{Do: "block"})
			probe <- err
		}()
		synctest.Wait()
		// ...so a second call while half-open is refused.
		_, err = run(bus, Job{})
		require.ErrorIs(t, err, cqrs.ErrCircuitOpen)
		require.ErrorIs(t, err, gobreaker.ErrTooManyRequests)

		close(j.release)
		require.NoError(t, <-probe)
		_, err = run(bus, Job{})
		require.NoError(t, err, "the probe succeeded, so the breaker closed")
	})
}

func TestBreakerIgnoresCallerErrors(t *testing.T) {
	t.Parallel()
	bus, _, br := breakerBus(t, gobreaker.Settings{ReadyToTrip: tripAfter(2)})
	for range 5 {
		_, err := run(bus, Job{Do: "validate"})
		require.ErrorIs(t, err, cqrs.ErrValidation)
		_, err = run(bus, Job{Do: "canceled"})
		require.ErrorIs(t, err, context.Canceled)
	}
	state, _ := br.State(cqrs.SpecFor[Job, Done](bus))
	assert.Equal(t, gobreaker.StateClosed, state)

	// Two real failures do trip it.
	for range 2 {
		_, _ = run(bus, Job{Do: "fail"})
	}
	state, _ = br.State(cqrs.SpecFor[Job, Done](bus))
	assert.Equal(t, gobreaker.StateOpen, state)
}

func TestBreakerDoesNotSerialiseCalls(t *testing.T) {
	t.Parallel()
	// Both calls must be inside the handler at once for either to
	// succeed: a breaker that serialised them would make each wait in
	// vain for the other.
	var inside sync.WaitGroup
	inside.Add(2)
	both := make(chan struct{})
	go func() { inside.Wait(); close(both) }()
	bus2 := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.NewBreaker(gobreaker.Settings{})))
	require.NoError(t, cqrs.Register(bus2, cqrs.HandlerFunc[Job, Done](func(_ context.Context, job Job) (Done, error) {
		inside.Done()
		select {
		case <-both:
			return Done{ID: job.ID}, nil
		case <-time.After(5 * time.Second):
			return Done{}, errors.New("the other call never came in: calls are serialised")
		}
	})))
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			done, err := run(bus2, Job{ID: i})
			assert.NoError(t, err)
			assert.Equal(t, i, done.ID)
		})
	}
	wg.Wait()
}

func gobreakerTripAfter(n uint32) gobreaker.Settings {
	return gobreaker.Settings{ReadyToTrip: tripAfter(n)}
}

// TestBreakerDefaultOpensAtFive pins the one default: a breaker opens
// after 5 consecutive failures, made by NewBreaker, by a zero Breaker or
// by a Config.
func TestBreakerDefaultOpensAtFive(t *testing.T) {
	cfgStack, err := middleware.Config{Breaker: &middleware.BreakerConfig{}}.Build(nil)
	require.NoError(t, err)
	for name, br := range map[string]*middleware.Breaker{
		"CircuitBreaker": middleware.CircuitBreaker(middleware.BreakerConfig{}),
		"NewBreaker":     middleware.NewBreaker(gobreaker.Settings{}),
		"zero":           new(middleware.Breaker),
		"Config":         cfgStack.Breaker,
	} {
		t.Run(name, func(t *testing.T) {
			bus, j := jobBus(t, br)
			for range 4 {
				_, err := run(bus, Job{Do: "fail"})
				require.ErrorIs(t, err, errJob)
			}
			_, err := run(bus, Job{Do: "fail"})
			require.ErrorIs(t, err, errJob, "the fifth failure reaches the handler")
			_, err = run(bus, Job{})
			require.ErrorIs(t, err, cqrs.ErrCircuitOpen, "and opens the breaker")
			assert.Equal(t, int64(5), j.calls.Load())
		})
	}
}

func TestBreakerDoesNotAllocate(t *testing.T) {
	bus, _, _ := breakerBus(t, gobreaker.Settings{})
	assert.Zero(t, allocsPerJob(t, bus, Job{ID: 1}))
}

// TestCircuitBreakerSettings: every setting of a BreakerConfig reaches
// each type's breaker, with no gobreaker type in sight, and OnStateChange
// names the message type by its Spec.
func TestCircuitBreakerSettings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type change struct {
			spec     cqrs.Spec
			from, to middleware.BreakerState
		}
		var changes []change
		br := middleware.CircuitBreaker(middleware.BreakerConfig{
			ConsecutiveFailures: 3,
			OpenTimeout:         10 * time.Second,
			HalfOpenRequests:    2,
			OnStateChange: func(spec cqrs.Spec, from, to middleware.BreakerState) {
				changes = append(changes, change{spec, from, to})
			},
		})
		bus, j := jobBus(t, br)
		jobSpec := cqrs.SpecFor[Job, Done](bus)

		fail(t, bus, 2, "fail", errJob)
		state, _ := br.State(jobSpec)
		assert.Equal(t, middleware.BreakerClosed, state, "2 failures of 3")
		fail(t, bus, 1, "fail", errJob)
		fail(t, bus, 1, "", cqrs.ErrCircuitOpen)

		time.Sleep(10*time.Second + time.Nanosecond)
		// Two probes may be in flight; a third is refused.
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				_, err := run(bus, Job{Do: "block"})
				assert.NoError(t, err)
			})
		}
		synctest.Wait()
		fail(t, bus, 1, "", gobreaker.ErrTooManyRequests)
		close(j.release)
		wg.Wait()

		state, _ = br.State(jobSpec)
		assert.Equal(t, middleware.BreakerClosed, state, "two successful probes close it")
		assert.Equal(t, []change{
			{jobSpec, middleware.BreakerClosed, middleware.BreakerOpen},
			{jobSpec, middleware.BreakerOpen, middleware.BreakerHalfOpen},
			{jobSpec, middleware.BreakerHalfOpen, middleware.BreakerClosed},
		}, changes)
	})
}

// TestCircuitBreakerIsExcluded: errors IsExcluded reports count neither
// way, and with it set, a caller error counts as a failure.
func TestCircuitBreakerIsExcluded(t *testing.T) {
	t.Parallel()
	br := middleware.CircuitBreaker(middleware.BreakerConfig{
		ConsecutiveFailures: 2,
		IsExcluded:          func(err error) bool { return errors.Is(err, errJob) },
	})
	bus, j := jobBus(t, br)
	fail(t, bus, 5, "fail", errJob)
	assert.Equal(t, int64(5), j.calls.Load(), "excluded errors never open it")
	fail(t, bus, 2, "validate", cqrs.ErrValidation)
	fail(t, bus, 1, "", cqrs.ErrCircuitOpen)
}

// TestBreakerDeprecatedSettings: code written against gobreaker still
// compiles and works: BreakerConfig.Settings feeds NewBreaker, and a
// BreakerState is a gobreaker.State.
func TestBreakerDeprecatedSettings(t *testing.T) {
	t.Parallel()
	br := middleware.NewBreaker(middleware.BreakerConfig{ConsecutiveFailures: 2}.Settings()) // deprecated, on purpose
	bus, _ := jobBus(t, br)
	fail(t, bus, 2, "fail", errJob)
	fail(t, bus, 1, "", gobreaker.ErrOpenState)
	var state gobreaker.State = br.States()["command middleware_test.Job"]
	assert.Equal(t, gobreaker.StateOpen, state)
	assert.Equal(t, middleware.BreakerOpen, state)

	dflt := middleware.NewBreaker(middleware.BreakerConfig{}.Settings()) // deprecated, on purpose
	bus, j := jobBus(t, dflt)
	fail(t, bus, middleware.DefaultBreakerFailures, "fail", errJob)
	fail(t, bus, 1, "", cqrs.ErrCircuitOpen)
	assert.Equal(t, int64(middleware.DefaultBreakerFailures), j.calls.Load())
}
