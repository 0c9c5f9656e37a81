package cqrs_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// panickingHandler is a slog.Handler that panics on every record.
type panickingHandler struct{}

func (panickingHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (panickingHandler) Handle(context.Context, slog.Record) error { panic("logger exploded") }
func (h panickingHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h panickingHandler) WithGroup(string) slog.Handler           { return h }

// TestPanickingLoggerCrossesNothing: a logger is user code too; its panic
// while the bus logs a registration or a recovered panic loses the record
// but never crosses Register or a dispatch.
func TestPanickingLoggerCrossesNothing(t *testing.T) {
	t.Parallel()
	explode := cqrs.HandlerFunc[CreateUser, UserCreated](func(context.Context, CreateUser) (UserCreated, error) {
		panic("handler exploded")
	})
	for name, opts := range map[string][]cqrs.Option{
		"bare":      nil,
		"decorated": {cqrs.WithInterceptors(passThrough)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			commands := cqrs.NewCommandBus(append(opts, cqrs.WithLogger(slog.New(panickingHandler{})))...)
			var err error
			require.NotPanics(t, func() { err = cqrs.Register(commands, explode) })
			require.NoError(t, err, "the handler is registered though its record is lost")
			require.NotPanics(t, func() { _, err = cqrs.Dispatch[UserCreated](context.Background(), commands, CreateUser{}) })
			var pe *cqrs.PanicError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "handler exploded", pe.Value)
		})
	}
}

// Touchy declares a CommandName that panics on the zero value.
type Touchy struct{ name *string }

func (t Touchy) CommandName() string { return *t.name }

// TestRegisterNeverPanics: whatever Register is given, it returns an
// error or registers, and SpecFor returns a Spec.
func TestRegisterNeverPanics(t *testing.T) {
	t.Parallel()
	var nilInterceptor cqrs.InterceptorFunc
	tests := []struct {
		name string
		bus  func() cqrs.Bus
		reg  func(cqrs.Bus) error
		want error // nil: registered
	}{
		{"nil interceptor on the bus", func() cqrs.Bus { return cqrs.NewCommandBus(cqrs.WithInterceptors(nil)) },
			func(b cqrs.Bus) error { return cqrs.Register(b, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)) }, cqrs.ErrNilHandler},
		{"nil InterceptorFunc", func() cqrs.Bus { return cqrs.NewCommandBus(cqrs.WithInterceptors(nilInterceptor)) },
			func(b cqrs.Bus) error { return cqrs.Register(b, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)) }, cqrs.ErrNilHandler},
		{"interceptor returning nil", func() cqrs.Bus {
			return cqrs.NewCommandBus(cqrs.WithInterceptors(cqrs.InterceptorFunc(func(cqrs.Spec, cqrs.Invoker) cqrs.Invoker { return nil })))
		}, func(b cqrs.Bus) error { return cqrs.Register(b, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)) }, cqrs.ErrNilHandler},
		{"interceptor panicking when set up", func() cqrs.Bus {
			return cqrs.NewCommandBus(cqrs.WithInterceptors(cqrs.InterceptorFunc(func(cqrs.Spec, cqrs.Invoker) cqrs.Invoker { panic("set-up") })))
		}, func(b cqrs.Bus) error { return cqrs.Register(b, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)) }, cqrs.ErrHandlerPanic},
		{"Intercept with a nil interceptor", func() cqrs.Bus { return cqrs.NewCommandBus() }, func(b cqrs.Bus) error {
			return cqrs.Register(b, cqrs.HandlerFunc[CreateUser, UserCreated](createUser), cqrs.Intercept[CreateUser, UserCreated](b, nil))
		}, cqrs.ErrNilHandler},
		{"a name method that panics on the zero value", func() cqrs.Bus { return cqrs.NewCommandBus() },
			func(b cqrs.Bus) error { return cqrs.Register(b, cqrs.HandlerFunc[Touchy, cqrs.NoResult](noop[Touchy])) }, nil},
		{"nil Option", func() cqrs.Bus { return cqrs.NewQueryBus(nil, cqrs.WithLogger(nil)) },
			func(b cqrs.Bus) error { return cqrs.Register(b, cqrs.HandlerFunc[GetUser, UserView](getUser)) }, nil},
		{"func message type", func() cqrs.Bus { return cqrs.NewQueryBus() },
			func(b cqrs.Bus) error { return cqrs.Register(b, cqrs.HandlerFunc[func(), int](noopInt[func()])) }, nil},
		{"channel message type", func() cqrs.Bus { return cqrs.NewQueryBus() },
			func(b cqrs.Bus) error {
				return cqrs.Register(b, cqrs.HandlerFunc[<-chan int, int](noopInt[<-chan int]))
			}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var err error
			b := tc.bus()
			require.NotPanics(t, func() { err = tc.reg(b) })
			if tc.want == nil {
				require.NoError(t, err)
				assert.Len(t, b.Registered(), 1)
				return
			}
			require.ErrorIs(t, err, tc.want)
			assert.Empty(t, b.Registered(), "a refused registration changes nothing")
		})
	}

	var nilCommands *cqrs.CommandBus
	for name, spec := range map[string]func() cqrs.Spec{
		"nil bus":       func() cqrs.Spec { return cqrs.SpecFor[CreateUser, UserCreated](nil) },
		"typed nil bus": func() cqrs.Spec { return cqrs.SpecFor[CreateUser, UserCreated](nilCommands) },
		"interface":     func() cqrs.Spec { return cqrs.SpecFor[any, any](cqrs.NewQueryBus()) },
		"touchy":        func() cqrs.Spec { return cqrs.SpecFor[Touchy, cqrs.NoResult](cqrs.NewCommandBus()) },
	} {
		var got cqrs.Spec
		require.NotPanics(t, func() { got = spec() }, name)
		assert.NotEmpty(t, got.Key(), name)
	}
}

func noopInt[C any](context.Context, C) (int, error) { return 1, nil }
