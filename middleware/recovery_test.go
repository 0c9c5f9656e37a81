package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// InternalError is a service's own error type for bugs.
type InternalError struct{ Where string }

func (e *InternalError) Error() string { return "internal error in " + e.Where }

func TestRecoveryMapsPanics(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	bus, j := jobBus(t, middleware.Recovery(middleware.RecoveryConfig{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnPanic: func(spec cqrs.Spec, value any, stack []byte) error {
			return &InternalError{Where: fmt.Sprintf("%s (%v, %d-byte stack)", spec.Name, value, len(stack))}
		},
	}))
	_, err := run(bus, Job{Do: "panic"})
	var ie *InternalError
	require.ErrorAs(t, err, &ie)
	assert.Contains(t, ie.Where, "middleware_test.Job (job exploded")
	assert.NotErrorIs(t, err, cqrs.ErrHandlerPanic, "the caller's own error type replaces the bus's")
	assert.Contains(t, logs.String(), "job exploded")
	assert.Contains(t, logs.String(), "recovery_test.go", "the log has the stack")

	done, err := run(bus, Job{ID: 1})
	require.NoError(t, err)
	assert.Equal(t, 1, done.ID)
	assert.Equal(t, int64(2), j.calls.Load())
}

func TestRecoveryDefault(t *testing.T) {
	t.Parallel()
	bus, _ := jobBus(t, middleware.Recovery(middleware.RecoveryConfig{}))
	_, err := run(bus, Job{Do: "panic"})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "job exploded", pe.Value)
	assert.True(t, errors.Is(err, cqrs.ErrHandlerPanic))
}

func TestRecoveryCatchesAPanicInsideIt(t *testing.T) {
	t.Parallel()
	// An interceptor inside Recovery panics: the bus's own recovery sits
	// around the handler only, so Recovery sees the panic itself.
	explode := cqrs.InterceptorFunc(func(cqrs.Spec, cqrs.Invoker) cqrs.Invoker {
		return func(context.Context, cqrs.Call) error { panic("interceptor exploded") }
	})
	var logs bytes.Buffer
	bus, j := jobBus(t, middleware.Recovery(middleware.RecoveryConfig{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnPanic: func(spec cqrs.Spec, value any, stack []byte) error {
			return &InternalError{Where: fmt.Sprintf("%s (%v, %d-byte stack)", spec.Name, value, len(stack))}
		},
	}), explode)
	_, err := run(bus, Job{ID: 1})
	var ie *InternalError
	require.ErrorAs(t, err, &ie)
	assert.Contains(t, ie.Where, "middleware_test.Job (interceptor exploded")
	assert.Contains(t, logs.String(), "interceptor exploded")
	assert.Contains(t, logs.String(), "recovery_test.go", "the log has the panic's stack")
	assert.Zero(t, j.calls.Load(), "the handler was never reached")
}

func TestRecoveryPassesErrorsOn(t *testing.T) {
	t.Parallel()
	bus, _ := jobBus(t, middleware.Recovery(middleware.RecoveryConfig{
		OnPanic: func(cqrs.Spec, any, []byte) error { return &InternalError{} },
	}))
	_, err := run(bus, Job{Do: "fail"})
	assert.Equal(t, errJob, err, "a handler's own error comes back unchanged")
}

func TestRecoveryDoesNotAllocate(t *testing.T) {
	bus, _ := jobBus(t, middleware.Recovery(middleware.RecoveryConfig{}))
	assert.Zero(t, allocsPerJob(t, bus, Job{ID: 1}))
	assert.Zero(t, allocsPerJob(t, bus, Job{Do: "fail"}), "nor when the handler fails")
}

// allocsPerJob returns the allocations of one dispatch of job on bus,
// which must end as job says. A sync.Pool under the race detector drops
// some of what it is given, so the bus then makes its pooled Call again
// now and then: less than one allocation per dispatch, which
// testing.AllocsPerRun rounds down to 0.
func allocsPerJob(t *testing.T, bus cqrs.Bus, job Job) float64 {
	t.Helper()
	ctx := context.Background()
	return testing.AllocsPerRun(100, func() {
		done, err := runCtx(ctx, bus, job)
		if (job.Do == "") != (err == nil) || done.ID != job.ID {
			t.Fatalf("job %+v: got %+v, %v", job, done, err)
		}
	})
}
