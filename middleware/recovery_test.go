package middleware_test

import (
	"bytes"
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
