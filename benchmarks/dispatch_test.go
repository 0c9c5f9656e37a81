package benchmarks

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// GetUser is the benchmark's message: large enough that boxing it into an
// interface allocates, as a real message's would.
type GetUser struct {
	ID     int64
	Tenant string
}

// CommandName names GetUser for the string-keyed baseline.
func (GetUser) CommandName() string { return "GetUser" }

// User is the benchmark's result.
type User struct {
	ID   int64
	Name string
}

// getUser is the handler every implementation calls.
type getUser struct{}

func (getUser) Handle(_ context.Context, q GetUser) (User, error) {
	return User{ID: q.ID, Name: q.Tenant}, nil
}

// dispatcher is the shape every implementation is measured behind, so that
// each pays the same indirection.
type dispatcher interface {
	dispatch(ctx context.Context, q GetUser) (User, error)
}

type direct struct{ h cqrs.Handler[GetUser, User] }

func (d direct) dispatch(ctx context.Context, q GetUser) (User, error) { return d.h.Handle(ctx, q) }

type stringMap struct{ bus *StringBus }

func (s stringMap) dispatch(ctx context.Context, q GetUser) (User, error) {
	res, err := s.bus.Execute(ctx, q)
	if err != nil {
		return User{}, err
	}
	u, ok := res.(User)
	if !ok {
		return User{}, errors.New("baseline: wrong result type")
	}
	return u, nil
}

type typedDispatch struct{ bus cqrs.Bus }

func (d typedDispatch) dispatch(ctx context.Context, q GetUser) (User, error) {
	return cqrs.Dispatch[User](ctx, d.bus, q)
}

type executeTyped struct{ bus cqrs.Bus }

func (d executeTyped) dispatch(ctx context.Context, q GetUser) (User, error) {
	return cqrs.ExecuteTyped[User](ctx, d.bus, q)
}

// executeBoxed is ExecuteTyped for a caller, such as a router or a
// transport, whose message already is an interface value: it measures
// ExecuteTyped's own cost, without the caller's boxing.
type executeBoxed struct {
	bus cqrs.Bus
	msg any
}

func (d executeBoxed) dispatch(ctx context.Context, _ GetUser) (User, error) {
	return cqrs.ExecuteTyped[User](ctx, d.bus, d.msg)
}

func newStringMap() dispatcher {
	bus := &StringBus{}
	bus.Register("GetUser", StringHandlerFunc(func(ctx context.Context, msg interface{}) (interface{}, error) {
		q, ok := msg.(GetUser)
		if !ok {
			return nil, errors.New("baseline: wrong message type")
		}
		return getUser{}.Handle(ctx, q)
	}))
	return stringMap{bus}
}

func newQueryBus(tb testing.TB, opts ...cqrs.Option) *cqrs.QueryBus {
	bus := cqrs.NewQueryBus(opts...)
	require.NoError(tb, cqrs.Register(bus, cqrs.Handler[GetUser, User](getUser{})))
	return bus
}

var passThrough = cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	return func(ctx context.Context, c cqrs.Call) error { return next(ctx, c) }
})

func typedPassThrough(next cqrs.Handler[GetUser, User]) cqrs.Handler[GetUser, User] {
	return cqrs.HandlerFunc[GetUser, User](func(ctx context.Context, q GetUser) (User, error) {
		return next.Handle(ctx, q)
	})
}

// implementations lists what BenchmarkDispatch compares, in order.
func implementations(tb testing.TB) []struct {
	name string
	d    dispatcher
} {
	withMiddleware := cqrs.NewQueryBus()
	require.NoError(tb, cqrs.Register(withMiddleware, cqrs.Handler[GetUser, User](getUser{}),
		typedPassThrough, typedPassThrough, typedPassThrough))
	return []struct {
		name string
		d    dispatcher
	}{
		{"Direct", direct{getUser{}}},
		{"StringMap", newStringMap()},
		{"Dispatch", typedDispatch{newQueryBus(tb)}},
		{"ExecuteTyped", executeTyped{newQueryBus(tb)}},
		{"ExecuteTypedBoxed", executeBoxed{newQueryBus(tb), benchQuery}},
		{"DispatchMetrics", typedDispatch{newQueryBus(tb, cqrs.WithMetrics())}},
		{"DispatchMiddleware3", typedDispatch{withMiddleware}},
		{"DispatchInterceptor1", typedDispatch{newQueryBus(tb, cqrs.WithInterceptors(passThrough))}},
		{"DispatchInterceptor3", typedDispatch{newQueryBus(tb, cqrs.WithInterceptors(passThrough, passThrough, passThrough))}},
	}
}

var sink User

// benchQuery is the message every benchmark sends; its ID is large enough
// that boxing it is not served from the runtime's table of small integers.
var benchQuery = GetUser{ID: 1 << 20, Tenant: "acme"}

func BenchmarkDispatch(b *testing.B) {
	ctx := context.Background()
	q := benchQuery
	for _, impl := range implementations(b) {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				u, err := impl.d.dispatch(ctx, q)
				if err != nil {
					b.Fatal(err)
				}
				sink = u
			}
		})
	}
}

func BenchmarkDispatchParallel(b *testing.B) {
	ctx := context.Background()
	for _, impl := range implementations(b) {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				q := benchQuery
				for pb.Next() {
					u, err := impl.d.dispatch(ctx, q)
					if err != nil || u.ID != q.ID {
						b.Errorf("got %v, %v; want user %d", u, err, q.ID)
						return
					}
				}
			})
		})
	}
}

// TestImplementationsAgree checks that every benchmarked implementation
// returns the same, right answer, so the benchmarks compare equal work.
func TestImplementationsAgree(t *testing.T) {
	for _, impl := range implementations(t) {
		u, err := impl.d.dispatch(context.Background(), benchQuery)
		require.NoError(t, err, impl.name)
		require.Equal(t, User{ID: benchQuery.ID, Name: benchQuery.Tenant}, u, impl.name)
	}
}
