package cqrs_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// deep recurses n frames of 1 KiB each, so that a goroutine's stack grows,
// and is moved, several times.
func deep(n int) int {
	var pad [1024]byte
	pad[n%1024] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	return deep(n-1) + int(pad[n%1024]) - n%256
}

type growMsg struct {
	N    int
	Name string
}

type growRes struct {
	N    int
	Name string
}

// TestDispatchWhileTheStackMoves dispatches, from fresh goroutines with
// small stacks, to a handler that grows the stack: the message and the
// result live on the dispatching goroutine's stack while the handler runs,
// and must be found where the stack has moved to.
func TestDispatchWhileTheStackMoves(t *testing.T) {
	handle := func(_ context.Context, m growMsg) (growRes, error) {
		deep(256)
		return growRes{N: m.N * 2, Name: m.Name + "!"}, nil
	}
	pass := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error { deep(64); return next(ctx, c) }
	})
	typed := func(next cqrs.Handler[growMsg, growRes]) cqrs.Handler[growMsg, growRes] {
		return cqrs.HandlerFunc[growMsg, growRes](func(ctx context.Context, m growMsg) (growRes, error) {
			deep(64)
			return next.Handle(ctx, m)
		})
	}
	for _, tc := range []struct {
		name string
		opts []cqrs.Option
		mws  []cqrs.Middleware[growMsg, growRes]
	}{
		{"bare", nil, nil},
		{"interceptor", []cqrs.Option{cqrs.WithInterceptors(pass)}, nil},
		{"middleware", nil, []cqrs.Middleware[growMsg, growRes]{typed}},
		{"both", []cqrs.Option{cqrs.WithInterceptors(pass), cqrs.WithMetrics()}, []cqrs.Middleware[growMsg, growRes]{typed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bus := cqrs.NewQueryBus(tc.opts...)
			errs := make(chan error, 1)
			go func() { // registered from a small stack too
				deep(0)
				errs <- cqrs.Register(bus, cqrs.HandlerFunc[growMsg, growRes](handle), tc.mws...)
			}()
			require.NoError(t, <-errs)
			type out struct {
				res   growRes
				err   error
				boxed any
			}
			outs := make(chan out, 3)
			for i := range 3 {
				go func() {
					ctx := context.Background()
					m := growMsg{N: 21 + i, Name: "m"}
					var o out
					switch i {
					case 0:
						o.res, o.err = cqrs.Dispatch[growRes](ctx, bus, m)
					case 1:
						o.res, o.err = cqrs.ExecuteTyped[growRes](ctx, bus, m)
					default:
						o.boxed, o.err = bus.Execute(ctx, m)
						o.res, _ = o.boxed.(growRes)
					}
					outs <- o
				}()
				o := <-outs
				require.NoError(t, o.err)
				assert.Equal(t, growRes{N: 2 * (21 + i), Name: "m!"}, o.res, "entry point %d", i)
			}
		})
	}
}

type keeper struct{ seen []*growMsg }

func (k *keeper) handle(_ context.Context, m *growMsg) (growRes, error) {
	k.seen = append(k.seen, m)
	return growRes{N: m.N}, nil
}

//go:noinline
func registerKeeper(bus cqrs.Bus) (*keeper, error) {
	k := &keeper{}
	// The method value and the HandlerFunc made of it belong to this
	// frame unless the bus tells the compiler that it keeps them.
	return k, cqrs.Register(bus, cqrs.HandlerFunc[*growMsg, growRes](k.handle))
}

//go:noinline
func dispatchKept(bus cqrs.Bus, n int) (growRes, error) {
	// The message is this frame's unless the bus tells the compiler that
	// a handler may keep it.
	return cqrs.Dispatch[growRes](context.Background(), bus, &growMsg{N: n, Name: "kept"})
}

//go:noinline
func executeKept(bus cqrs.Bus, n int) (growRes, error) {
	return cqrs.ExecuteTyped[growRes](context.Background(), bus, &growMsg{N: n, Name: "kept"})
}

// TestWhatTheBusKeepsOutlivesTheCaller checks that the handler a bus
// keeps, and a message a handler keeps, outlive the frames they were
// made in, with and without interceptors: the bus passes pointers to them
// where the compiler cannot follow.
func TestWhatTheBusKeepsOutlivesTheCaller(t *testing.T) {
	pass := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error { return next(ctx, c) }
	})
	for _, opts := range [][]cqrs.Option{nil, {cqrs.WithInterceptors(pass)}} {
		bus := cqrs.NewCommandBus(opts...)
		k, err := registerKeeper(bus)
		require.NoError(t, err)
		deep(64) // overwrite the stack registerKeeper used
		for i := range 4 {
			var res growRes
			if i%2 == 0 {
				res, err = dispatchKept(bus, i)
			} else {
				res, err = executeKept(bus, i)
			}
			require.NoError(t, err)
			assert.Equal(t, i, res.N)
			deep(64) // and the stack the dispatch used
		}
		require.Len(t, k.seen, 4)
		for i, m := range k.seen {
			assert.Equal(t, growMsg{N: i, Name: "kept"}, *m)
		}
	}
}
