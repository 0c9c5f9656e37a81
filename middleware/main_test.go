package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Job is the command most tests send: its handler does what Do says.
type Job struct {
	ID int
	Do string // "", "fail", "panic", "block", "validate", "canceled"
}

// Done is Job's result.
type Done struct{ ID int }

var errJob = errors.New("job failed")

// jobs counts the calls of a Job handler and does what each job says.
type jobs struct {
	calls   atomic.Int64
	release chan struct{} // "block" jobs wait for it, or for their context
}

func (j *jobs) handle(ctx context.Context, job Job) (Done, error) {
	j.calls.Add(1)
	switch job.Do {
	case "fail":
		return Done{}, errJob
	case "panic":
		panic("job exploded")
	case "block":
		select {
		case <-j.release:
		case <-ctx.Done():
			return Done{}, ctx.Err()
		}
	case "validate":
		return Done{}, cqrs.ErrValidation
	case "canceled":
		return Done{}, context.Canceled
	}
	return Done{ID: job.ID}, nil
}

// jobBus returns a command bus whose Job handler runs inside ics.
func jobBus(t *testing.T, ics ...cqrs.Interceptor) (*cqrs.CommandBus, *jobs) {
	t.Helper()
	j := &jobs{release: make(chan struct{})}
	bus := cqrs.NewCommandBus(cqrs.WithInterceptors(ics...))
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Job, Done](j.handle)))
	return bus, j
}

func run(bus cqrs.Bus, job Job) (Done, error) {
	return runCtx(context.Background(), bus, job)
}

func runCtx(ctx context.Context, bus cqrs.Bus, job Job) (Done, error) {
	return cqrs.Dispatch[Done](ctx, bus, job)
}

// fail makes n dispatches of a job that does what do says, and requires
// each to return an error wrapping want.
func fail(t *testing.T, bus cqrs.Bus, n int, do string, want error) {
	t.Helper()
	for range n {
		_, err := run(bus, Job{Do: do})
		require.ErrorIs(t, err, want)
	}
}
