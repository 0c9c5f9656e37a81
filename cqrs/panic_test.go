package cqrs_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// seen records the error each layer of a chain saw come back from the
// layers inside it.
type seen struct {
	mu   sync.Mutex
	errs map[string]error
}

func (s *seen) record(layer string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errs == nil {
		s.errs = map[string]error{}
	}
	s.errs[layer] = err
}

func (s *seen) interceptor(layer string) cqrs.Interceptor {
	return cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			err := next(ctx, c)
			s.record(layer, err)
			return err
		}
	})
}

func (s *seen) middleware(layer string) cqrs.Middleware[CreateUser, UserCreated] {
	return func(next cqrs.Handler[CreateUser, UserCreated]) cqrs.Handler[CreateUser, UserCreated] {
		return cqrs.HandlerFunc[CreateUser, UserCreated](func(ctx context.Context, c CreateUser) (UserCreated, error) {
			res, err := next.Handle(ctx, c)
			s.record(layer, err)
			return res, err
		})
	}
}

// TestHandlerPanicIsAnErrorToEveryLayer: a handler's panic is recovered
// where the handler is called, so every interceptor and middleware around
// it sees a *PanicError come back, as it would any other error, and the
// panic is logged once.
func TestHandlerPanicIsAnErrorToEveryLayer(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := &seen{}
	commands := cqrs.NewCommandBus(
		cqrs.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		cqrs.WithMetrics(),
		cqrs.WithInterceptors(s.interceptor("bus outer"), s.interceptor("bus inner")),
	)
	boom := errors.New("boom")
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](func(context.Context, CreateUser) (UserCreated, error) {
		panic(boom)
	}), s.middleware("typed"), cqrs.Intercept[CreateUser, UserCreated](commands, s.interceptor("per handler"))))

	_, err := cqrs.Dispatch[UserCreated](context.Background(), commands, CreateUser{Name: "x"})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Same(t, boom, pe.Value, "the original panic value")
	assert.Equal(t, "command cqrs_test.CreateUser", pe.Message)
	assert.Contains(t, string(pe.Stack), "panic_test.go", "the stack is the handler's")

	for _, layer := range []string{"bus outer", "bus inner", "typed", "per handler"} {
		got := s.errs[layer]
		var lpe *cqrs.PanicError
		if assert.ErrorAs(t, got, &lpe, "%s saw no *PanicError", layer) {
			assert.Same(t, pe, lpe, "%s saw the error the caller got", layer)
			assert.Same(t, boom, lpe.Value, layer)
		}
		assert.ErrorIs(t, got, cqrs.ErrHandlerPanic, layer)
		assert.ErrorIs(t, got, boom, layer)
	}

	assert.Equal(t, 1, strings.Count(logs.String(), "cqrs: handler panicked"), "one log record of the panic:\n%s", logs.String())
	m := commands.Metrics()
	require.Len(t, m, 1)
	assert.Equal(t, uint64(1), m[0].Calls)
	assert.Equal(t, uint64(1), m[0].Errors)
}

// TestMiddlewarePanicIsRecoveredOutermost: a panic in middleware, not in
// the handler, is still recovered by the bus and logged once.
func TestMiddlewarePanicIsRecoveredOutermost(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := &seen{}
	commands := cqrs.NewCommandBus(
		cqrs.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		cqrs.WithInterceptors(s.interceptor("bus")),
	)
	explode := func(cqrs.Handler[CreateUser, UserCreated]) cqrs.Handler[CreateUser, UserCreated] {
		return cqrs.HandlerFunc[CreateUser, UserCreated](func(context.Context, CreateUser) (UserCreated, error) {
			panic("middleware exploded")
		})
	}
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](createUser), explode))

	_, err := cqrs.Dispatch[UserCreated](context.Background(), commands, CreateUser{Name: "x"})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "middleware exploded", pe.Value)
	assert.Equal(t, 1, strings.Count(logs.String(), "cqrs: handler panicked"), logs.String())
	_, ok := s.errs["bus"]
	assert.False(t, ok, "a panic outside the handler unwinds through the interceptors")
}

// TestPanicErrorLogValue: a *PanicError logs as a group of the message,
// the panic value and the stack, wherever it is logged.
func TestPanicErrorLogValue(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	pe := &cqrs.PanicError{Message: "command orders.Place", Value: 42, Stack: []byte("goroutine 1")}
	logger.Error("failed", slog.Any("panic", pe))
	assert.Contains(t, logs.String(), `panic.message="command orders.Place" panic.value=42 panic.stack="goroutine 1"`)
}
