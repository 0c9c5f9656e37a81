package middleware_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

func TestTimeoutExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, j := jobBus(t, middleware.Timeout(2*time.Second))
		start := time.Now()
		_, err := run(bus, Job{Do: "block"})
		require.ErrorIs(t, err, cqrs.ErrExecutionTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "command middleware_test.Job after 2s")
		assert.Equal(t, 2*time.Second, time.Since(start), "the handler was stopped at the deadline")
		assert.Equal(t, int64(1), j.calls.Load())
	})
}

func TestTimeoutInTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, _ := jobBus(t, middleware.Timeout(time.Second))
		done, err := run(bus, Job{ID: 4})
		require.NoError(t, err)
		assert.Equal(t, 4, done.ID)
	})
}

func TestTimeoutLeavesTheCallersDeadlineAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, _ := jobBus(t, middleware.Timeout(time.Hour))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := runCtx(ctx, bus, Job{Do: "block"})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.NotErrorIs(t, err, cqrs.ErrExecutionTimeout, "the caller's deadline is not this middleware's timeout")
	})
}

func TestTimeoutWrapsAHandlersOwnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDriver := errors.New("driver: query interrupted")
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Timeout(time.Second)))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Job, Done](func(ctx context.Context, _ Job) (Done, error) {
			<-ctx.Done()
			return Done{}, errDriver
		})))
		_, err := run(bus, Job{})
		require.ErrorIs(t, err, cqrs.ErrExecutionTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, errDriver)
	})
}

func TestTimeoutIgnoredByHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A handler that ignores ctx runs to the end; if it succeeds, its
		// result stands.
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Timeout(time.Second)))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Job, Done](func(_ context.Context, j Job) (Done, error) {
			time.Sleep(3 * time.Second)
			return Done{ID: j.ID}, nil
		})))
		done, err := run(bus, Job{ID: 9})
		require.NoError(t, err)
		assert.Equal(t, 9, done.ID)
	})
}

func TestTimeoutRecoversPanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, _ := jobBus(t, middleware.Timeout(time.Second))
		_, err := run(bus, Job{Do: "panic"})
		require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
		// synctest.Test fails if a goroutine is left behind.
	})
}

func TestTimeoutOff(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, -time.Second} {
		var hasDeadline bool
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Timeout(d)))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Job, Done](func(ctx context.Context, _ Job) (Done, error) {
			_, hasDeadline = ctx.Deadline()
			return Done{}, nil
		})))
		_, err := run(bus, Job{})
		require.NoError(t, err)
		assert.False(t, hasDeadline, "Timeout(%v) is off", d)
	}
}

func TestTimeoutDeadlineIsFromTheStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var deadline time.Time
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Timeout(time.Second)))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Job, Done](func(ctx context.Context, _ Job) (Done, error) {
			time.Sleep(400 * time.Millisecond) // work before asking
			deadline, _ = ctx.Deadline()
			return Done{}, nil
		})))
		start := time.Now()
		_, err := run(bus, Job{})
		require.NoError(t, err)
		assert.Equal(t, start.Add(time.Second), deadline)
	})
}

func TestTimeoutAllocations(t *testing.T) {
	bus, _ := jobBus(t, middleware.Timeout(time.Minute))
	// The context passed on, which the handler may keep.
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := run(bus, Job{ID: 1}); err != nil {
			t.Fatal(err)
		}
	})
	assert.Equal(t, 1.0, allocs)

	// None when the caller's deadline comes first: its context is passed
	// on as it is.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := runCtx(ctx, bus, Job{ID: 1}); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
}

func TestTimeoutPassesTheCallersEarlierContextOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got context.Context
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Timeout(time.Hour)))
		require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Job, Done](func(ctx context.Context, _ Job) (Done, error) {
			got = ctx
			return Done{}, nil
		})))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := runCtx(ctx, bus, Job{})
		require.NoError(t, err)
		assert.Equal(t, ctx, got)
	})
}
