package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// A dispatch runs one path whatever the message type: the checks, the
// recovery and the metrics are compiled once, and only the handler's call
// and the moves of the message and the result are the type's own. These
// tests run every entry point over every arrangement of decorators, and
// message types of every kind an interface holds differently: a struct, a
// pointer, a map, a slice, a struct of one pointer (held in the
// interface's data word like a pointer), and a struct of no size.

type pathStruct struct {
	N    int
	Name string
}

type pathOnePointer struct{ P *int }

type pathEmpty struct{}

// decorations are the arrangements of decorators every path runs under.
func decorations() []struct {
	name       string
	opts       []cqrs.Option
	typed, ids bool
} {
	pass := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			if c.Message() == nil {
				return errors.New("the Call has no message")
			}
			return next(ctx, c)
		}
	})
	return []struct {
		name       string
		opts       []cqrs.Option
		typed, ids bool
	}{
		{"bare", nil, false, false},
		{"metrics", []cqrs.Option{cqrs.WithMetrics()}, false, false},
		{"identity", []cqrs.Option{cqrs.WithIdentity()}, false, true},
		{"interceptor", []cqrs.Option{cqrs.WithInterceptors(pass)}, false, false},
		{"middleware", nil, true, false},
		{"all", []cqrs.Option{cqrs.WithInterceptors(pass, pass), cqrs.WithMetrics(), cqrs.WithIdentity()}, true, true},
	}
}

// passMiddleware is typed middleware that passes every call on.
func passMiddleware[C, R any](next cqrs.Handler[C, R]) cqrs.Handler[C, R] {
	return cqrs.HandlerFunc[C, R](func(ctx context.Context, msg C) (R, error) { return next.Handle(ctx, msg) })
}

// entryPoints dispatches msg by each entry point, returning the result.
func entryPoints[C, R any]() map[string]func(context.Context, cqrs.Bus, C) (R, error) {
	return map[string]func(context.Context, cqrs.Bus, C) (R, error){
		"Dispatch": func(ctx context.Context, b cqrs.Bus, msg C) (R, error) { return cqrs.Dispatch[R](ctx, b, msg) },
		"ExecuteTyped": func(ctx context.Context, b cqrs.Bus, msg C) (R, error) {
			return cqrs.ExecuteTyped[R](ctx, b, msg)
		},
		"Execute": func(ctx context.Context, b cqrs.Bus, msg C) (R, error) {
			v, err := b.Execute(ctx, msg)
			if err != nil {
				if v != nil {
					return *new(R), fmt.Errorf("a failed Execute returned %v", v)
				}
				return *new(R), err
			}
			r, ok := v.(R)
			if !ok {
				return r, fmt.Errorf("Execute returned %T", v)
			}
			return r, nil
		},
	}
}

// checkPaths registers a handler of C that returns want(msg), or panics
// for a message panicky says to, and checks every entry point under every
// decoration: the result, the panic as a *PanicError, a nil message
// refused, the identity with WithIdentity, and the metrics' counts.
func checkPaths[C, R any](t *testing.T, msg C, want func(C) R, panicky C, nilMsg *C, panics func(C) bool) {
	t.Helper()
	for _, d := range decorations() {
		t.Run(d.name, func(t *testing.T) {
			bus := cqrs.NewCommandBus(d.opts...)
			identified := 0
			h := cqrs.HandlerFunc[C, R](func(ctx context.Context, m C) (R, error) {
				if _, ok := cqrs.IdentityOf(ctx); ok {
					identified++
				}
				if panics(m) {
					panic("boom")
				}
				return want(m), nil
			})
			var mws []cqrs.Middleware[C, R]
			if d.typed {
				mws = append(mws, passMiddleware[C, R], passMiddleware[C, R])
			}
			require.NoError(t, cqrs.Register(bus, h, mws...))
			calls, fails, handled := 0, 0, 0
			for name, dispatch := range entryPoints[C, R]() {
				got, err := dispatch(context.Background(), bus, msg)
				require.NoError(t, err, name)
				assert.Equal(t, want(msg), got, name)
				calls, handled = calls+1, handled+1

				got, err = dispatch(context.Background(), bus, panicky)
				var pe *cqrs.PanicError
				require.ErrorAs(t, err, &pe, name)
				assert.Equal(t, "boom", pe.Value, name)
				assert.Equal(t, *new(R), got, name)
				calls, fails, handled = calls+1, fails+1, handled+1

				if nilMsg != nil {
					// Refused before the handler, and counted.
					_, err = dispatch(context.Background(), bus, *nilMsg)
					require.ErrorIs(t, err, cqrs.ErrNilMessage, name)
					calls, fails = calls+1, fails+1
				}
			}
			if d.ids {
				assert.Equal(t, handled, identified, "every dispatch the handler saw had an identity")
			} else {
				assert.Zero(t, identified, "no dispatch had an identity")
			}
			if m := bus.Metrics(); m != nil {
				require.Len(t, m, 1)
				assert.Equal(t, uint64(calls), m[0].Calls)
				assert.Equal(t, uint64(fails), m[0].Errors)
			}
		})
	}
}

func TestEveryPathOfEveryKind(t *testing.T) {
	t.Run("struct", func(t *testing.T) {
		checkPaths(t, pathStruct{N: 7, Name: "a"}, func(m pathStruct) string { return fmt.Sprint(m.N, m.Name) },
			pathStruct{N: -1}, nil, func(m pathStruct) bool { return m.N < 0 })
	})
	t.Run("pointer", func(t *testing.T) {
		var nilPtr *pathStruct
		checkPaths(t, &pathStruct{N: 7}, func(m *pathStruct) pathStruct { return *m },
			&pathStruct{N: -1}, &nilPtr, func(m *pathStruct) bool { return m.N < 0 })
	})
	t.Run("map", func(t *testing.T) {
		var nilMap map[string]int
		checkPaths(t, map[string]int{"n": 7}, func(m map[string]int) int { return m["n"] },
			map[string]int{"n": -1}, &nilMap, func(m map[string]int) bool { return m["n"] < 0 })
	})
	t.Run("slice", func(t *testing.T) {
		var nilSlice []int
		checkPaths(t, []int{7, 8}, func(m []int) []int { return append([]int(nil), m...) },
			[]int{-1}, &nilSlice, func(m []int) bool { return m[0] < 0 })
	})
	t.Run("one pointer", func(t *testing.T) {
		seven, minus := 7, -1
		checkPaths(t, pathOnePointer{&seven}, func(m pathOnePointer) *int { return m.P },
			pathOnePointer{&minus}, nil, func(m pathOnePointer) bool { return *m.P < 0 })
	})
	t.Run("empty", func(t *testing.T) {
		calls := 0
		checkPaths(t, pathEmpty{}, func(pathEmpty) cqrs.NoResult { return cqrs.NoResult{} },
			pathEmpty{}, nil, func(pathEmpty) bool { calls++; return calls%2 == 0 })
	})
}
