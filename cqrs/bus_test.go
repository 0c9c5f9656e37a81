package cqrs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Messages and results used across the tests.
type (
	CreateUser struct {
		Name  string
		Email string
	}
	UserCreated struct{ ID int }

	GetUser  struct{ ID int }
	UserView struct {
		ID   int
		Name string
	}

	// Renamed declares its own names.
	Renamed struct{}
	// PtrRenamed declares its name on the pointer receiver.
	PtrRenamed struct{ n int }
)

func (Renamed) CommandName() string       { return "users.rename" }
func (Renamed) QueryName() string         { return "users.renamed" }
func (p *PtrRenamed) CommandName() string { return fmt.Sprint("ptr.renamed", p.n) }

// String lets UserView stand behind fmt.Stringer in result-conversion tests.
func (v UserView) String() string { return fmt.Sprintf("user %d (%s)", v.ID, v.Name) }

func createUser(_ context.Context, c CreateUser) (UserCreated, error) {
	if c.Name == "" {
		return UserCreated{}, errEmptyName
	}
	return UserCreated{ID: len(c.Name)}, nil
}

var errEmptyName = errors.New("empty name")

func getUser(_ context.Context, q GetUser) (UserView, error) {
	return UserView{ID: q.ID, Name: fmt.Sprint("user-", q.ID)}, nil
}

func newBuses(t *testing.T, opts ...cqrs.Option) (*cqrs.CommandBus, *cqrs.QueryBus) {
	t.Helper()
	commands, queries := cqrs.NewCommandBus(opts...), cqrs.NewQueryBus(opts...)
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](getUser)))
	return commands, queries
}

func TestDispatchRoundTrip(t *testing.T) {
	t.Parallel()
	commands, queries := newBuses(t)
	ctx := context.Background()

	created, err := cqrs.Dispatch[UserCreated](ctx, commands, CreateUser{Name: "ada"})
	require.NoError(t, err)
	assert.Equal(t, UserCreated{ID: 3}, created)

	view, err := cqrs.Dispatch[UserView](ctx, queries, GetUser{ID: 7})
	require.NoError(t, err)
	assert.Equal(t, UserView{ID: 7, Name: "user-7"}, view)

	view, err = cqrs.ExecuteTyped[UserView](ctx, queries, any(GetUser{ID: 8}))
	require.NoError(t, err)
	assert.Equal(t, 8, view.ID)

	res, err := commands.Execute(ctx, CreateUser{Name: "grace"})
	require.NoError(t, err)
	assert.Equal(t, UserCreated{ID: 5}, res)

	// The first name of CommandBus.Execute still works.
	res, err = commands.ExecuteCommand(ctx, CreateUser{Name: "ada"})
	require.NoError(t, err)
	assert.Equal(t, UserCreated{ID: 3}, res)

	// Both buses execute through the Bus interface alike.
	for _, b := range []cqrs.Bus{commands, queries} {
		_, err := b.Execute(ctx, struct{}{})
		require.ErrorIs(t, err, cqrs.ErrHandlerNotFound, b.Kind().String())
	}

	res, err = queries.Execute(ctx, GetUser{ID: 9})
	require.NoError(t, err)
	assert.Equal(t, UserView{ID: 9, Name: "user-9"}, res)
}

func TestHandlerErrorPassesThroughUnchanged(t *testing.T) {
	t.Parallel()
	commands, _ := newBuses(t)
	ctx := context.Background()

	_, err := cqrs.Dispatch[UserCreated](ctx, commands, CreateUser{})
	assert.Same(t, errEmptyName, err)
	_, err = cqrs.ExecuteTyped[UserCreated](ctx, commands, CreateUser{})
	assert.Same(t, errEmptyName, err)
	res, err := commands.Execute(ctx, CreateUser{})
	assert.Same(t, errEmptyName, err)
	assert.Nil(t, res, "the untyped result of a failed dispatch is nil")
}

func TestZeroValueBusesWork(t *testing.T) {
	t.Parallel()
	var commands cqrs.CommandBus
	var queries cqrs.QueryBus
	require.NoError(t, cqrs.Register(&commands, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)))
	require.NoError(t, cqrs.Register(&queries, cqrs.HandlerFunc[GetUser, UserView](getUser)))

	got, err := cqrs.Dispatch[UserCreated](context.Background(), &commands, CreateUser{Name: "x"})
	require.NoError(t, err)
	assert.Equal(t, 1, got.ID)
	assert.Equal(t, []string{"cqrs_test.CreateUser"}, commands.Registered())
	assert.Equal(t, []string{"cqrs_test.GetUser"}, queries.Registered())
	assert.Nil(t, commands.Metrics(), "no metrics unless asked for")
	assert.Equal(t, cqrs.KindCommand, commands.Kind())
	assert.Equal(t, cqrs.KindQuery, queries.Kind())
}

func TestRegisterRejects(t *testing.T) {
	t.Parallel()
	var nilFunc cqrs.HandlerFunc[GetUser, UserView]
	var nilPtr *ptrHandler
	var nilCommands *cqrs.CommandBus
	identity := func(next cqrs.Handler[GetUser, UserView]) cqrs.Handler[GetUser, UserView] { return next }

	tests := []struct {
		name     string
		register func(cqrs.Bus) error
		want     error
		text     string
	}{
		{"nil handler", func(b cqrs.Bus) error {
			return cqrs.Register[GetUser, UserView](b, nil)
		}, cqrs.ErrNilHandler, "query cqrs_test.GetUser"},
		{"nil HandlerFunc", func(b cqrs.Bus) error {
			return cqrs.Register(b, nilFunc)
		}, cqrs.ErrNilHandler, "cqrs_test.GetUser"},
		{"nil pointer handler", func(b cqrs.Bus) error {
			return cqrs.Register[GetUser, UserView](b, nilPtr)
		}, cqrs.ErrNilHandler, "cqrs_test.GetUser"},
		{"nil middleware", func(b cqrs.Bus) error {
			return cqrs.Register(b, cqrs.HandlerFunc[GetUser, UserView](getUser), identity, nil)
		}, cqrs.ErrNilHandler, "middleware 1 is nil"},
		{"middleware returning nil", func(b cqrs.Bus) error {
			return cqrs.Register(b, cqrs.HandlerFunc[GetUser, UserView](getUser),
				func(cqrs.Handler[GetUser, UserView]) cqrs.Handler[GetUser, UserView] { return nilFunc })
		}, cqrs.ErrNilHandler, "middleware 0 returned nil"},
		{"panicking middleware", func(b cqrs.Bus) error {
			return cqrs.Register(b, cqrs.HandlerFunc[GetUser, UserView](getUser),
				func(cqrs.Handler[GetUser, UserView]) cqrs.Handler[GetUser, UserView] { panic("bad wiring") })
		}, cqrs.ErrHandlerPanic, "bad wiring"},
		{"interface message type", func(b cqrs.Bus) error {
			return cqrs.Register(b, cqrs.HandlerFunc[fmt.Stringer, string](func(context.Context, fmt.Stringer) (string, error) { return "", nil }))
		}, cqrs.ErrInvalidMessageType, "fmt.Stringer"},
		{"nil bus", func(cqrs.Bus) error {
			return cqrs.Register(nil, cqrs.HandlerFunc[GetUser, UserView](getUser))
		}, cqrs.ErrNilBus, ""},
		{"typed nil bus", func(cqrs.Bus) error {
			return cqrs.Register(nilCommands, cqrs.HandlerFunc[GetUser, UserView](getUser))
		}, cqrs.ErrNilBus, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bus := cqrs.NewQueryBus()
			err := tc.register(bus)
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.text)
			assert.True(t, strings.HasPrefix(err.Error(), "cqrs: "), err.Error())
			assert.Empty(t, bus.Registered(), "a failed registration registers nothing")
		})
	}
}

type ptrHandler struct{}

func (*ptrHandler) Handle(context.Context, GetUser) (UserView, error) { return UserView{}, nil }

func TestRegisterDuplicate(t *testing.T) {
	t.Parallel()
	_, queries := newBuses(t)
	second := cqrs.HandlerFunc[GetUser, UserView](func(context.Context, GetUser) (UserView, error) {
		return UserView{Name: "second"}, nil
	})
	err := cqrs.Register(queries, second)
	require.ErrorIs(t, err, cqrs.ErrHandlerExists)
	assert.Contains(t, err.Error(), "query cqrs_test.GetUser")

	// A different result type does not make a different registration.
	err = cqrs.Register(queries, cqrs.HandlerFunc[GetUser, string](func(context.Context, GetUser) (string, error) { return "", nil }))
	require.ErrorIs(t, err, cqrs.ErrHandlerExists)

	// The first handler stays in place.
	view, err := cqrs.Dispatch[UserView](context.Background(), queries, GetUser{ID: 1})
	require.NoError(t, err)
	assert.Equal(t, "user-1", view.Name)
}

func TestRegisterNameClash(t *testing.T) {
	t.Parallel()
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[Renamed, cqrs.NoResult](noop[Renamed])))
	// Two types that declare the same name cannot share a bus.
	type alsoRenamed struct{ Renamed }
	err := cqrs.Register(commands, cqrs.HandlerFunc[alsoRenamed, cqrs.NoResult](noop[alsoRenamed]))
	require.ErrorIs(t, err, cqrs.ErrHandlerExists)
	assert.EqualError(t, err, "cqrs: handler already registered: command users.rename: another type on the bus has that name "+
		"(this one is github.com/typedcqrs/dispatch/cqrs_test.alsoRenamed); declare another CommandName")
}

func noop[C any](context.Context, C) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil }

func TestMessageNames(t *testing.T) {
	t.Parallel()
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[Renamed, cqrs.NoResult](noop[Renamed])))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[PtrRenamed, cqrs.NoResult](noop[PtrRenamed])))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[*CreateUser, cqrs.NoResult](noop[*CreateUser])))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, cqrs.NoResult](noop[CreateUser])))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Renamed, cqrs.NoResult](noop[Renamed])))

	assert.Equal(t, []string{"*cqrs_test.CreateUser", "cqrs_test.CreateUser", "ptr.renamed0", "users.rename"}, commands.Registered())
	// A query bus reads QueryName, not CommandName.
	assert.Equal(t, []string{"users.renamed"}, queries.Registered())
}

func TestValueAndPointerAreDifferentTypes(t *testing.T) {
	t.Parallel()
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[*CreateUser, string](func(_ context.Context, c *CreateUser) (string, error) {
		return "pointer " + c.Name, nil
	})))
	ctx := context.Background()

	got, err := cqrs.Dispatch[string](ctx, commands, &CreateUser{Name: "a"})
	require.NoError(t, err)
	assert.Equal(t, "pointer a", got)

	_, err = cqrs.Dispatch[string](ctx, commands, CreateUser{Name: "a"})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	assert.Contains(t, err.Error(), "cqrs_test.CreateUser on the command bus")

	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, string](func(_ context.Context, c CreateUser) (string, error) {
		return "value " + c.Name, nil
	})))
	got, err = cqrs.ExecuteTyped[string](ctx, commands, CreateUser{Name: "b"})
	require.NoError(t, err)
	assert.Equal(t, "value b", got)
	got, err = cqrs.ExecuteTyped[string](ctx, commands, &CreateUser{Name: "b"})
	require.NoError(t, err)
	assert.Equal(t, "pointer b", got)
}

// TestNotFoundNamesTheBus: an unregistered message is not known to be a
// command or a query, so the error names the bus it was sent to, never a
// kind for the message.
func TestNotFoundNamesTheBus(t *testing.T) {
	t.Parallel()
	commands, queries := newBuses(t)
	ctx := context.Background()

	_, err := cqrs.Dispatch[UserView](ctx, commands, GetUser{})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	assert.EqualError(t, err, "cqrs: handler not found for cqrs_test.GetUser on the command bus")

	_, err = cqrs.ExecuteTyped[UserView](ctx, queries, &GetUser{})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	assert.EqualError(t, err, "cqrs: handler not found for *cqrs_test.GetUser on the query bus; its handler takes cqrs_test.GetUser: send the value, not a pointer")

	_, err = queries.Execute(ctx, CreateUser{})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	assert.EqualError(t, err, "cqrs: handler not found for cqrs_test.CreateUser on the query bus")

	// So does a nil message of a type with no handler.
	_, err = queries.Execute(ctx, (*CreateUser)(nil))
	require.ErrorIs(t, err, cqrs.ErrNilMessage)
	assert.EqualError(t, err, "cqrs: nil message: *cqrs_test.CreateUser sent to the query bus")
	_, err = commands.Execute(ctx, nil)
	require.ErrorIs(t, err, cqrs.ErrNilMessage)
	assert.EqualError(t, err, "cqrs: nil message: nil interface sent to the command bus")
}

func TestNilMessages(t *testing.T) {
	t.Parallel()
	called := 0
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[*CreateUser, cqrs.NoResult](func(context.Context, *CreateUser) (cqrs.NoResult, error) {
		called++
		return cqrs.NoResult{}, nil
	})))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[map[string]int, cqrs.NoResult](func(context.Context, map[string]int) (cqrs.NoResult, error) {
		called++
		return cqrs.NoResult{}, nil
	})))
	ctx := context.Background()
	var nilCmd *CreateUser
	var nilMap map[string]int

	for name, dispatch := range map[string]func() error{
		"Dispatch nil pointer":       func() error { _, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, nilCmd); return err },
		"Dispatch nil map":           func() error { _, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, nilMap); return err },
		"ExecuteTyped nil pointer":   func() error { _, err := cqrs.ExecuteTyped[cqrs.NoResult](ctx, commands, nilCmd); return err },
		"ExecuteTyped nil interface": func() error { _, err := cqrs.ExecuteTyped[cqrs.NoResult](ctx, commands, nil); return err },
		"Execute nil pointer":        func() error { _, err := commands.Execute(ctx, nilCmd); return err },
		"Execute nil interface":      func() error { _, err := commands.Execute(ctx, nil); return err },
		"Dispatch nil interface":     func() error { _, err := cqrs.Dispatch[cqrs.NoResult, any](ctx, commands, nil); return err },
		// A nil message is reported as such even when its type has no handler.
		"Dispatch unregistered nil":     func() error { _, err := cqrs.Dispatch[int](ctx, commands, (*GetUser)(nil)); return err },
		"ExecuteTyped unregistered nil": func() error { _, err := cqrs.ExecuteTyped[int](ctx, commands, (*GetUser)(nil)); return err },
	} {
		err := dispatch()
		require.ErrorIs(t, err, cqrs.ErrNilMessage, name)
		assert.NotErrorIs(t, err, cqrs.ErrHandlerNotFound, name)
	}
	assert.Zero(t, called, "no handler ran for a nil message")

	_, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, map[string]int{})
	require.NoError(t, err, "an empty map is not nil")
	assert.Equal(t, 1, called)
}

type ctxKey struct{}

func TestContext(t *testing.T) {
	t.Parallel()
	var seen context.Context
	calls := 0
	queries := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](func(ctx context.Context, q GetUser) (UserView, error) {
		seen = ctx
		calls++
		return UserView{ID: q.ID}, nil
	})))

	ctx := context.WithValue(context.Background(), ctxKey{}, "trace-1")
	_, err := cqrs.Dispatch[UserView](ctx, queries, GetUser{ID: 1})
	require.NoError(t, err)
	assert.Equal(t, ctx, seen, "the handler gets the caller's context unchanged")

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = cqrs.Dispatch[UserView](cancelled, queries, GetUser{ID: 2})
	assert.Same(t, context.Canceled, err)
	_, err = cqrs.ExecuteTyped[UserView](cancelled, queries, GetUser{ID: 2})
	assert.Same(t, context.Canceled, err)
	_, err = queries.Execute(cancelled, GetUser{ID: 2})
	assert.Same(t, context.Canceled, err)
	assert.Equal(t, 1, calls, "a done context does not reach the handler")

	//lint:ignore SA1012 a nil context is what is tested
	_, err = cqrs.Dispatch[UserView](nil, queries, GetUser{ID: 3})
	require.ErrorIs(t, err, cqrs.ErrNilContext)
	assert.Equal(t, 1, calls)
}

func TestPanicIsRecovered(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	commands := cqrs.NewCommandBus(cqrs.WithLogger(logger))
	boom := errors.New("boom")
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](func(_ context.Context, c CreateUser) (UserCreated, error) {
		if c.Name == "error" {
			panic(boom)
		}
		panic("handler exploded")
	})))
	ctx := context.Background()

	res, err := cqrs.Dispatch[UserCreated](ctx, commands, CreateUser{Name: "x"})
	assert.Zero(t, res)
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "handler exploded", pe.Value)
	assert.Equal(t, "command cqrs_test.CreateUser", pe.Message)
	assert.Contains(t, string(pe.Stack), "bus_test.go", "the stack points at the panicking handler")
	assert.EqualError(t, err, "cqrs: handler panicked: command cqrs_test.CreateUser: handler exploded")

	// A panic with an error value matches that error too.
	_, err = cqrs.ExecuteTyped[UserCreated](ctx, commands, CreateUser{Name: "error"})
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	require.ErrorIs(t, err, boom)

	// And the untyped path recovers as well.
	_, err = commands.Execute(ctx, CreateUser{})
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)

	assert.Contains(t, logs.String(), "level=ERROR")
	assert.Contains(t, logs.String(), "handler exploded")
	assert.Contains(t, logs.String(), "stack=")
}

func TestPanicNilIsRecovered(t *testing.T) {
	t.Parallel()
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](func(context.Context, CreateUser) (UserCreated, error) {
		panic(nil)
	})))
	_, err := cqrs.Dispatch[UserCreated](context.Background(), commands, CreateUser{})
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
}

func TestResultType(t *testing.T) {
	t.Parallel()
	_, queries := newBuses(t)
	ctx := context.Background()

	_, err := cqrs.Dispatch[string](ctx, queries, GetUser{ID: 1})
	require.ErrorIs(t, err, cqrs.ErrResultType)
	assert.EqualError(t, err, "cqrs: wrong result type: query cqrs_test.GetUser returns cqrs_test.UserView, not string")

	_, err = cqrs.ExecuteTyped[*UserView](ctx, queries, GetUser{ID: 1})
	require.ErrorIs(t, err, cqrs.ErrResultType)
	assert.Contains(t, err.Error(), "returns cqrs_test.UserView, not *cqrs_test.UserView")

	// An interface the result implements is a fine result type.
	s, err := cqrs.ExecuteTyped[fmt.Stringer](ctx, queries, GetUser{ID: 2})
	require.NoError(t, err)
	assert.Equal(t, "user 2 (user-2)", s.String())
	a, err := cqrs.Dispatch[any](ctx, queries, GetUser{ID: 3})
	require.NoError(t, err)
	assert.Equal(t, UserView{ID: 3, Name: "user-3"}, a)
}

func TestResultTypeMismatchDoesNotCallHandler(t *testing.T) {
	t.Parallel()
	calls := 0
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](func(context.Context, CreateUser) (UserCreated, error) {
		calls++
		return UserCreated{}, nil
	})))
	_, err := cqrs.Dispatch[int](context.Background(), commands, CreateUser{})
	require.ErrorIs(t, err, cqrs.ErrResultType)
	_, err = cqrs.ExecuteTyped[fmt.Stringer](context.Background(), commands, CreateUser{})
	require.ErrorIs(t, err, cqrs.ErrResultType)
	assert.Zero(t, calls)
}

func TestDispatchThroughInterfaceType(t *testing.T) {
	t.Parallel()
	_, queries := newBuses(t)
	var msg any = GetUser{ID: 4}
	view, err := cqrs.Dispatch[UserView](context.Background(), queries, msg)
	require.NoError(t, err)
	assert.Equal(t, 4, view.ID)
}

func TestNilBus(t *testing.T) {
	t.Parallel()
	var commands *cqrs.CommandBus
	var queries *cqrs.QueryBus
	ctx := context.Background()

	_, err := cqrs.Dispatch[UserView](ctx, nil, GetUser{})
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = cqrs.Dispatch[UserView](ctx, queries, GetUser{})
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = cqrs.ExecuteTyped[UserView](ctx, commands, GetUser{})
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = cqrs.ExecuteTyped[UserView](ctx, commands, nil)
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = commands.Execute(ctx, CreateUser{})
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = queries.Execute(ctx, GetUser{})
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	var iface any = GetUser{}
	_, err = cqrs.Dispatch[UserView](ctx, queries, iface)
	require.ErrorIs(t, err, cqrs.ErrNilBus)

	assert.Nil(t, commands.Registered())
	assert.Nil(t, queries.Metrics())
}

func TestRegisterLogsAtDebug(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	queries := cqrs.NewQueryBus(cqrs.WithLogger(logger), nil)
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](getUser)))
	assert.Contains(t, logs.String(), "level=DEBUG")
	assert.Contains(t, logs.String(), "message=cqrs_test.GetUser")
	assert.Contains(t, logs.String(), "result=cqrs_test.UserView")

	// A nil logger means the default, which discards.
	quiet := cqrs.NewQueryBus(cqrs.WithLogger(nil))
	require.NoError(t, cqrs.Register(quiet, cqrs.HandlerFunc[GetUser, UserView](getUser)))
	assert.Equal(t, []string{"cqrs_test.GetUser"}, quiet.Registered())
}

func TestSpecs(t *testing.T) {
	t.Parallel()
	commands, queries := newBuses(t)
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[Renamed, cqrs.NoResult](noop[Renamed])))
	assert.Equal(t, []cqrs.Spec{
		{Kind: cqrs.KindCommand, Name: "cqrs_test.CreateUser", MessageType: reflect.TypeFor[CreateUser](), ResultType: reflect.TypeFor[UserCreated]()},
		{Kind: cqrs.KindCommand, Name: "users.rename", MessageType: reflect.TypeFor[Renamed](), ResultType: reflect.TypeFor[cqrs.NoResult]()},
	}, commands.Specs())
	assert.Len(t, queries.Specs(), 1)
	var nilBus *cqrs.QueryBus
	assert.Nil(t, nilBus.Specs())
}

func TestKindString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "command", cqrs.KindCommand.String())
	assert.Equal(t, "query", cqrs.KindQuery.String())
	assert.Equal(t, "unknown", cqrs.Kind(0).String())
}

func TestErrorCodes(t *testing.T) {
	t.Parallel()
	for _, target := range []error{
		cqrs.ErrValidation, cqrs.ErrHandlerNotFound, cqrs.ErrNilMessage, cqrs.ErrResultType,
		cqrs.ErrHandlerPanic, cqrs.ErrExecutionTimeout, cqrs.ErrCircuitOpen, cqrs.ErrRateLimited,
		context.Canceled, context.DeadlineExceeded,
	} {
		code := cqrs.ErrorCode(fmt.Errorf("wrapped: %w", target))
		require.NotEmpty(t, code, target.Error())
		assert.Equal(t, target, cqrs.ErrorOfCode(code), "the code maps back")
	}
	// A timeout wraps DeadlineExceeded too; its own code wins.
	assert.Equal(t, "timeout", cqrs.ErrorCode(fmt.Errorf("%w: %w", cqrs.ErrExecutionTimeout, context.DeadlineExceeded)))
	assert.Empty(t, cqrs.ErrorCode(errors.New("other")))
	assert.Empty(t, cqrs.ErrorCode(nil))
	assert.Nil(t, cqrs.ErrorOfCode(""))
	assert.Len(t, cqrs.ErrorCodes(), 10)
	assert.Contains(t, cqrs.ErrorCodes(), "circuit_open")
}

// userStore is a handler that is not a HandlerFunc: the route calls it
// through the Handler interface rather than as a function.
type userStore struct{ panicOn int }

func (s userStore) Handle(_ context.Context, q GetUser) (UserView, error) {
	if q.ID == s.panicOn {
		panic("store down")
	}
	return UserView{ID: q.ID, Name: "stored"}, nil
}

func TestHandlerOfItsOwnType(t *testing.T) {
	ctx := context.Background()
	passOn := func(next cqrs.Handler[GetUser, UserView]) cqrs.Handler[GetUser, UserView] { return next }
	noop := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker { return next })
	for _, tc := range []struct {
		name string
		opts []cqrs.Option
		mws  []cqrs.Middleware[GetUser, UserView]
	}{
		{name: "bare"},
		{name: "metrics", opts: []cqrs.Option{cqrs.WithMetrics()}},
		{name: "typed middleware", mws: []cqrs.Middleware[GetUser, UserView]{passOn}},
		{name: "interceptor", opts: []cqrs.Option{cqrs.WithInterceptors(noop)}},
	} {
		queries := cqrs.NewQueryBus(tc.opts...)
		require.NoError(t, cqrs.Register[GetUser, UserView](queries, userStore{panicOn: 13}, tc.mws...), tc.name)

		v, err := cqrs.Dispatch[UserView](ctx, queries, GetUser{ID: 7})
		require.NoError(t, err, tc.name)
		assert.Equal(t, UserView{ID: 7, Name: "stored"}, v, tc.name)

		v, err = cqrs.Dispatch[UserView](ctx, queries, GetUser{ID: 13})
		var pe *cqrs.PanicError
		require.ErrorAs(t, err, &pe, tc.name)
		assert.Equal(t, "store down", pe.Value, tc.name)
		assert.Zero(t, v, tc.name)
	}
}

type (
	emptyThing   struct{}
	sliceCmd     []emptyThing
	funcCmd      func()
	chanCmd      chan int
	unsafeCmd    unsafe.Pointer
	emptyPtrCmd  *emptyThing
	zeroArrayCmd *[0]int
)

// nilRefusal registers a handler for C on a fresh bus and reports whether
// dispatching msg reached it and what the dispatch returned.
func nilRefusal[C any](t *testing.T, msg C) (called bool, err error) {
	t.Helper()
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[C, cqrs.NoResult](func(context.Context, C) (cqrs.NoResult, error) {
		called = true
		return cqrs.NoResult{}, nil
	})))
	_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, msg)
	return called, err
}

// TestNilMessageOfEveryKind checks the refusal of nil messages, which
// reads the first word of the message, against msg == nil for every kind
// that can be nil, including values whose pointer is to zero-size memory.
func TestNilMessageOfEveryKind(t *testing.T) {
	t.Parallel()
	x := 1
	for _, tc := range []struct {
		name  string
		isNil bool
		run   func(*testing.T) (bool, error)
	}{
		{"nil slice", true, func(t *testing.T) (bool, error) { return nilRefusal(t, sliceCmd(nil)) }},
		{"empty slice", false, func(t *testing.T) (bool, error) { return nilRefusal(t, sliceCmd{}) }},
		{"slice of zero-size elements", false, func(t *testing.T) (bool, error) { return nilRefusal(t, make(sliceCmd, 3)) }},
		{"resliced nil slice", true, func(t *testing.T) (bool, error) { var s sliceCmd; return nilRefusal(t, s[0:0:0]) }},
		{"nil func", true, func(t *testing.T) (bool, error) { return nilRefusal(t, funcCmd(nil)) }},
		{"func", false, func(t *testing.T) (bool, error) { return nilRefusal(t, funcCmd(func() {})) }},
		{"nil chan", true, func(t *testing.T) (bool, error) { return nilRefusal(t, chanCmd(nil)) }},
		{"unbuffered chan", false, func(t *testing.T) (bool, error) { return nilRefusal(t, make(chanCmd)) }},
		{"nil unsafe.Pointer", true, func(t *testing.T) (bool, error) { return nilRefusal(t, unsafeCmd(nil)) }},
		{"unsafe.Pointer", false, func(t *testing.T) (bool, error) { return nilRefusal(t, unsafeCmd(unsafe.Pointer(&x))) }},
		{"nil pointer to zero-size", true, func(t *testing.T) (bool, error) { return nilRefusal(t, emptyPtrCmd(nil)) }},
		{"pointer to zero-size", false, func(t *testing.T) (bool, error) { return nilRefusal(t, emptyPtrCmd(&emptyThing{})) }},
		{"pointer to zero-length array", false, func(t *testing.T) (bool, error) { return nilRefusal(t, zeroArrayCmd(new([0]int))) }},
		{"nil map", true, func(t *testing.T) (bool, error) { return nilRefusal(t, map[int]int(nil)) }},
		{"empty map", false, func(t *testing.T) (bool, error) { return nilRefusal(t, map[int]int{}) }},
		{"zero-size struct", false, func(t *testing.T) (bool, error) { return nilRefusal(t, emptyThing{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			called, err := tc.run(t)
			if tc.isNil {
				require.ErrorIs(t, err, cqrs.ErrNilMessage)
				assert.False(t, called)
				return
			}
			require.NoError(t, err)
			assert.True(t, called)
		})
	}
}
