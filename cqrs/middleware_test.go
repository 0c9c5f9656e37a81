package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// trace records the order in which layers run.
type trace struct{ steps []string }

func (tr *trace) middleware(name string) cqrs.Middleware[GetUser, UserView] {
	return func(next cqrs.Handler[GetUser, UserView]) cqrs.Handler[GetUser, UserView] {
		return cqrs.HandlerFunc[GetUser, UserView](func(ctx context.Context, q GetUser) (UserView, error) {
			tr.steps = append(tr.steps, name+" in")
			v, err := next.Handle(ctx, q)
			tr.steps = append(tr.steps, name+" out")
			return v, err
		})
	}
}

func (tr *trace) interceptor(name string) cqrs.Interceptor {
	return cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			tr.steps = append(tr.steps, name+" in")
			err := next(ctx, c)
			tr.steps = append(tr.steps, name+" out")
			return err
		}
	})
}

func TestMiddlewareOrder(t *testing.T) {
	t.Parallel()
	tr := &trace{}
	queries := cqrs.NewQueryBus(
		cqrs.WithInterceptors(tr.interceptor("bus1"), tr.interceptor("bus2")),
		cqrs.WithInterceptors(tr.interceptor("bus3")),
	)
	handler := cqrs.HandlerFunc[GetUser, UserView](func(ctx context.Context, q GetUser) (UserView, error) {
		tr.steps = append(tr.steps, "handler")
		return getUser(ctx, q)
	})
	require.NoError(t, cqrs.Register(queries, handler, tr.middleware("m1"), tr.middleware("m2")))
	assert.Empty(t, tr.steps, "building the chain runs nothing")

	view, err := cqrs.Dispatch[UserView](context.Background(), queries, GetUser{ID: 5})
	require.NoError(t, err)
	assert.Equal(t, 5, view.ID, "the result travels back through every layer")
	assert.Equal(t, []string{
		"bus1 in", "bus2 in", "bus3 in", "m1 in", "m2 in", "handler",
		"m2 out", "m1 out", "bus3 out", "bus2 out", "bus1 out",
	}, tr.steps)
}

func TestCallDescribesTheDispatch(t *testing.T) {
	t.Parallel()
	var seen []string
	record := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			assert.Zero(t, c.Result(), "no result before the handler ran")
			err := next(ctx, c)
			seen = append(seen, c.Spec().Kind.String(), c.Spec().Name, c.Spec().MessageType.String(), c.Spec().ResultType.String())
			assert.Equal(t, reflect.TypeOf(c.Message()), c.Spec().MessageType)
			if err == nil {
				assert.Equal(t, reflect.TypeOf(c.Result()), c.Spec().ResultType)
			}
			return err
		}
	})
	commands, queries := newBuses(t, cqrs.WithInterceptors(record))
	ctx := context.Background()

	_, err := cqrs.Dispatch[UserCreated](ctx, commands, CreateUser{Name: "ann"})
	require.NoError(t, err)
	view, err := cqrs.ExecuteTyped[UserView](ctx, queries, GetUser{ID: 3})
	require.NoError(t, err)
	assert.Equal(t, 3, view.ID)
	assert.Equal(t, []string{
		"command", "cqrs_test.CreateUser", "cqrs_test.CreateUser", "cqrs_test.UserCreated",
		"query", "cqrs_test.GetUser", "cqrs_test.GetUser", "cqrs_test.UserView",
	}, seen)
}

func TestInterceptorSeesAndReplacesErrors(t *testing.T) {
	t.Parallel()
	errWrapped := errors.New("wrapped")
	var saw error
	wrap := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			saw = next(ctx, c)
			if saw != nil {
				return errors.Join(errWrapped, saw)
			}
			return nil
		}
	})
	commands, _ := newBuses(t, cqrs.WithInterceptors(wrap))
	_, err := cqrs.Dispatch[UserCreated](context.Background(), commands, CreateUser{})
	assert.Same(t, errEmptyName, saw)
	require.ErrorIs(t, err, errWrapped)
	require.ErrorIs(t, err, errEmptyName)
}

func TestInterceptorCanShortCircuit(t *testing.T) {
	t.Parallel()
	denied := errors.New("denied")
	calls := 0
	deny := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			if c.Message().(CreateUser).Name == "mallory" {
				return denied
			}
			return next(ctx, c)
		}
	})
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(deny))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](func(ctx context.Context, c CreateUser) (UserCreated, error) {
		calls++
		return createUser(ctx, c)
	})))
	ctx := context.Background()

	res, err := cqrs.Dispatch[UserCreated](ctx, commands, CreateUser{Name: "mallory"})
	assert.Same(t, denied, err)
	assert.Zero(t, res)
	res, err = cqrs.Dispatch[UserCreated](ctx, commands, CreateUser{Name: "alice"})
	require.NoError(t, err)
	assert.Equal(t, 5, res.ID)
	assert.Equal(t, 1, calls)
}

func TestInterceptorPanicIsRecovered(t *testing.T) {
	t.Parallel()
	explode := cqrs.InterceptorFunc(func(cqrs.Spec, cqrs.Invoker) cqrs.Invoker {
		return func(context.Context, cqrs.Call) error { panic("interceptor exploded") }
	})
	commands, _ := newBuses(t, cqrs.WithInterceptors(explode))
	_, err := cqrs.Dispatch[UserCreated](context.Background(), commands, CreateUser{Name: "x"})
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	assert.Contains(t, err.Error(), "interceptor exploded")
}

func TestInterceptorMustPassItsOwnCall(t *testing.T) {
	t.Parallel()
	// An interceptor that hands the inner chain a Call from another
	// dispatch gets an error, not a wrong message.
	var stolen cqrs.Call
	steal := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			if c.Spec().MessageType == reflect.TypeFor[GetUser]() {
				stolen = c
				return next(ctx, c)
			}
			return next(ctx, stolen)
		}
	})
	bus := cqrs.NewQueryBus(cqrs.WithInterceptors(steal))
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[GetUser, UserView](getUser)))
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)))
	ctx := context.Background()

	_, err := cqrs.Dispatch[UserView](ctx, bus, GetUser{ID: 1})
	require.NoError(t, err)
	_, err = cqrs.Dispatch[UserCreated](ctx, bus, CreateUser{Name: "x"})
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "cqrs: query cqrs_test.CreateUser: an interceptor passed on a Call"), err.Error())

	dropNil := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, _ cqrs.Call) error { return next(ctx, nil) }
	})
	nils := cqrs.NewQueryBus(cqrs.WithInterceptors(dropNil))
	require.NoError(t, cqrs.Register(nils, cqrs.HandlerFunc[GetUser, UserView](getUser)))
	_, err = cqrs.Dispatch[UserView](ctx, nils, GetUser{ID: 1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "an interceptor passed on a nil Call")
}

func TestNilInterceptor(t *testing.T) {
	t.Parallel()
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(nil))
	err := cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](getUser))
	require.ErrorIs(t, err, cqrs.ErrNilHandler)
	assert.Contains(t, err.Error(), "interceptor 0 is nil")

	returnsNil := cqrs.InterceptorFunc(func(cqrs.Spec, cqrs.Invoker) cqrs.Invoker { return nil })
	queries = cqrs.NewQueryBus(cqrs.WithInterceptors(returnsNil))
	err = cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](getUser))
	require.ErrorIs(t, err, cqrs.ErrNilHandler)
	assert.Contains(t, err.Error(), "interceptor 0 returned a nil Invoker")
	assert.Empty(t, queries.Registered())
}

var passThrough = cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	return func(ctx context.Context, c cqrs.Call) error { return next(ctx, c) }
})

func typedPassThrough(next cqrs.Handler[GetUser, UserView]) cqrs.Handler[GetUser, UserView] {
	return cqrs.HandlerFunc[GetUser, UserView](func(ctx context.Context, q GetUser) (UserView, error) {
		return next.Handle(ctx, q)
	})
}

// TestAllocations pins the allocation budget of each dispatch path.
func TestAllocations(t *testing.T) {
	ctx := context.Background()
	q := GetUser{ID: 1 << 20}
	var boxed any = q
	// viewOnly allocates nothing itself, so what is counted is the bus's.
	viewOnly := cqrs.HandlerFunc[GetUser, UserView](func(_ context.Context, q GetUser) (UserView, error) {
		return UserView{ID: q.ID}, nil
	})
	plain := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(plain, viewOnly))
	typed := cqrs.NewQueryBus()
	require.NoError(t, cqrs.Register(typed, viewOnly, typedPassThrough, typedPassThrough, typedPassThrough))
	metered := cqrs.NewQueryBus(cqrs.WithMetrics())
	require.NoError(t, cqrs.Register(metered, viewOnly))
	one := cqrs.NewQueryBus(cqrs.WithInterceptors(passThrough))
	require.NoError(t, cqrs.Register(one, viewOnly))
	five := cqrs.NewQueryBus(cqrs.WithInterceptors(passThrough, passThrough, passThrough, passThrough, passThrough))
	require.NoError(t, cqrs.Register(five, viewOnly))

	tests := []struct {
		name string
		want float64
		run  func() (UserView, error)
	}{
		{"Dispatch", 0, func() (UserView, error) { return cqrs.Dispatch[UserView](ctx, plain, q) }},
		{"Dispatch with typed middleware", 0, func() (UserView, error) { return cqrs.Dispatch[UserView](ctx, typed, q) }},
		{"Dispatch with metrics", 0, func() (UserView, error) { return cqrs.Dispatch[UserView](ctx, metered, q) }},
		{"ExecuteTyped of a boxed message", 0, func() (UserView, error) { return cqrs.ExecuteTyped[UserView](ctx, plain, boxed) }},
		{"one interceptor", 0, func() (UserView, error) { return cqrs.Dispatch[UserView](ctx, one, q) }},
		{"five interceptors", 0, func() (UserView, error) { return cqrs.Dispatch[UserView](ctx, five, q) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(200, func() {
				if v, err := tc.run(); err != nil || v.ID != q.ID {
					t.Fatalf("got %v, %v", v, err)
				}
			})
			assertAllocs(t, tc.want, allocs)
		})
	}
}

// assertAllocs checks a count of allocations per dispatch. A goroutine
// that dispatches alone always finds its chain's free Call in its slot,
// so even under the race detector, whose sync.Pool drops some of what it
// is given, it never makes one.
func assertAllocs(t *testing.T, want, got float64) {
	t.Helper()
	assert.Equal(t, want, got)
}

// TestKeptCallHoldsNoMessage checks that a Call an interceptor keeps past
// its dispatch, against the contract, shows neither that dispatch's
// message nor its result: the bus clears a Call before reusing it, so it
// keeps no message alive either.
func TestKeptCallHoldsNoMessage(t *testing.T) {
	var kept cqrs.Call
	keeper := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			kept = c
			return next(ctx, c)
		}
	})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(keeper))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](getUser)))

	v, err := cqrs.Dispatch[UserView](context.Background(), queries, GetUser{ID: 42})
	require.NoError(t, err)
	require.Equal(t, 42, v.ID)
	require.NotNil(t, kept)
	assert.Equal(t, GetUser{}, kept.Message(), "the kept Call still holds the message")
	assert.Equal(t, UserView{}, kept.Result(), "the kept Call still holds the result")
	assert.Equal(t, "query "+reflect.TypeFor[GetUser]().String(), kept.Spec().String(), "the Spec stays")
}

// TestAbandonedCallIsNotReused runs an interceptor that breaks the Call
// contract the way a careless timeout would: it runs the rest of the chain
// on a goroutine and returns while the handler still runs. The bus must
// not give that Call to a later dispatch, whose result the late handler
// would otherwise overwrite.
func TestAbandonedCallIsNotReused(t *testing.T) {
	started, release, finished := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var seen []cqrs.Call
	abandon := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			seen = append(seen, c)
			if c.Message().(GetUser).ID != 1 {
				return next(ctx, c)
			}
			go func() {
				defer close(finished)
				_ = next(ctx, c)
			}()
			<-started // the handler runs; the dispatch gives up on it
			return errors.New("gave up")
		}
	})
	slowFirst := cqrs.HandlerFunc[GetUser, UserView](func(_ context.Context, q GetUser) (UserView, error) {
		if q.ID == 1 {
			close(started)
			<-release
		}
		return UserView{ID: q.ID}, nil
	})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(abandon))
	require.NoError(t, cqrs.Register(queries, slowFirst))
	ctx := context.Background()

	_, err := cqrs.Dispatch[UserView](ctx, queries, GetUser{ID: 1})
	require.Error(t, err)
	for id := 2; id <= 20; id++ {
		v, err := cqrs.Dispatch[UserView](ctx, queries, GetUser{ID: id})
		require.NoError(t, err)
		assert.Equal(t, id, v.ID)
	}
	close(release)
	<-finished

	require.Len(t, seen, 20)
	for i, c := range seen[1:] {
		assert.False(t, c == seen[0], "dispatch %d reused the Call of the abandoned one", i+2)
	}
}

func TestInterceptorGetsSpecOncePerType(t *testing.T) {
	t.Parallel()
	var specs []cqrs.Spec
	record := cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		specs = append(specs, spec)
		return next
	})
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(record))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[Renamed, cqrs.NoResult](noop[Renamed])))
	for range 3 {
		_, err := cqrs.Dispatch[UserCreated](context.Background(), commands, CreateUser{Name: "x"})
		require.NoError(t, err)
	}
	assert.Equal(t, []cqrs.Spec{
		{Kind: cqrs.KindCommand, Name: "cqrs_test.CreateUser", MessageType: reflect.TypeFor[CreateUser](), ResultType: reflect.TypeFor[UserCreated]()},
		{Kind: cqrs.KindCommand, Name: "users.rename", MessageType: reflect.TypeFor[Renamed](), ResultType: reflect.TypeFor[cqrs.NoResult]()},
	}, specs, "one call per registration, none per dispatch")
	assert.Equal(t, "command users.rename", specs[1].String())
}

func TestDuplicateRegistrationSetsNothingUp(t *testing.T) {
	t.Parallel()
	setups := 0
	count := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		setups++
		return next
	})
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(count))
	require.NoError(t, cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)))
	err := cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, UserCreated](createUser))
	require.ErrorIs(t, err, cqrs.ErrHandlerExists)
	assert.Equal(t, 1, setups, "the duplicate was refused before its interceptors ran")
}

func TestInterceptPerRegistration(t *testing.T) {
	t.Parallel()
	tr := &trace{}
	var spec cqrs.Spec
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(tr.interceptor("bus")))
	handler := cqrs.HandlerFunc[GetUser, UserView](func(ctx context.Context, q GetUser) (UserView, error) {
		tr.steps = append(tr.steps, "handler")
		return getUser(ctx, q)
	})
	capture := cqrs.InterceptorFunc(func(s cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		spec = s
		return next
	})
	require.NoError(t, cqrs.Register(queries, handler,
		tr.middleware("m1"),
		cqrs.Intercept[GetUser, UserView](queries, tr.interceptor("i1"), tr.interceptor("i2"), capture),
		tr.middleware("m2")))

	// Another type on the same bus has only the bus-wide interceptor.
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[CreateUser, UserCreated](createUser)))

	view, err := cqrs.Dispatch[UserView](context.Background(), queries, GetUser{ID: 2})
	require.NoError(t, err)
	assert.Equal(t, 2, view.ID)
	assert.Equal(t, []string{
		"bus in", "m1 in", "i1 in", "i2 in", "m2 in", "handler",
		"m2 out", "i2 out", "i1 out", "m1 out", "bus out",
	}, tr.steps)
	assert.Equal(t, "query cqrs_test.GetUser", spec.String())

	tr.steps = nil
	_, err = cqrs.Dispatch[UserCreated](context.Background(), queries, CreateUser{Name: "a"})
	require.NoError(t, err)
	assert.Equal(t, []string{"bus in", "bus out"}, tr.steps)
}

func TestInterceptRejectsNil(t *testing.T) {
	t.Parallel()
	queries := cqrs.NewQueryBus()
	err := cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](getUser),
		cqrs.Intercept[GetUser, UserView](queries, passThrough, nil))
	require.ErrorIs(t, err, cqrs.ErrNilHandler)
	assert.NotErrorIs(t, err, cqrs.ErrHandlerPanic, "a wiring mistake is not reported as a panic")
	assert.Contains(t, err.Error(), "interceptor 1 is nil")
	assert.Empty(t, queries.Registered())

	// Outside Register, the middleware can only panic.
	mw := cqrs.Intercept[GetUser, UserView](nil, nil)
	assert.Panics(t, func() { mw(cqrs.HandlerFunc[GetUser, UserView](getUser)) })
}

// switchable is an interceptor with an Enabled method, like a logger whose
// level can be turned off.
type switchable struct {
	on    bool
	calls int
}

func (s *switchable) Enabled(context.Context) bool { return s.on }

func (s *switchable) Intercept(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	return func(ctx context.Context, c cqrs.Call) error {
		if s.on {
			s.calls++
		}
		return next(ctx, c)
	}
}

func TestEnabledSkipsTheChain(t *testing.T) {
	off, on := &switchable{}, &switchable{on: true}
	viewOnly := cqrs.HandlerFunc[GetUser, UserView](func(_ context.Context, q GetUser) (UserView, error) {
		return UserView{ID: q.ID}, nil
	})
	ctx := context.Background()
	dispatchAllocs := func(b cqrs.Bus) float64 {
		return testing.AllocsPerRun(100, func() {
			if v, err := cqrs.Dispatch[UserView](ctx, b, GetUser{ID: 3}); err != nil || v.ID != 3 {
				t.Fatalf("got %v, %v", v, err)
			}
		})
	}

	allOff := cqrs.NewQueryBus(cqrs.WithInterceptors(off, off))
	require.NoError(t, cqrs.Register(allOff, viewOnly))
	assert.Zero(t, dispatchAllocs(allOff), "every interceptor is off: no chain, no allocation")

	oneOn := cqrs.NewQueryBus(cqrs.WithInterceptors(off, on))
	require.NoError(t, cqrs.Register(oneOn, viewOnly))
	assertAllocs(t, 0, dispatchAllocs(oneOn))
	assert.Positive(t, on.calls, "one is on: the chain runs")

	var ungatedCalls int
	counting := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			ungatedCalls++
			return next(ctx, c)
		}
	})
	ungated := cqrs.NewQueryBus(cqrs.WithInterceptors(off, counting))
	require.NoError(t, cqrs.Register(ungated, viewOnly))
	assertAllocs(t, 0, dispatchAllocs(ungated))
	assert.Positive(t, ungatedCalls, "an interceptor without Enabled always runs")

	// Turning the switch on takes effect on the next dispatch.
	off.on = true
	_, err := cqrs.Dispatch[UserView](ctx, allOff, GetUser{ID: 1})
	require.NoError(t, err)
	assert.Equal(t, 2, off.calls)
}

// TestReentrantDispatchKeepsItsCall dispatches from inside an interceptor
// a message of the type being dispatched: the inner dispatch must get a
// Call of its own, and the outer one find its message and result intact,
// whichever of them gives its Call back first.
func TestReentrantDispatchKeepsItsCall(t *testing.T) {
	var queries *cqrs.QueryBus
	reenter := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			id := c.Message().(GetUser).ID
			if id < 3 {
				v, err := cqrs.Dispatch[UserView](ctx, queries, GetUser{ID: id + 1})
				if err != nil || v.ID != id+1 {
					return fmt.Errorf("inner dispatch of %d: %v, %w", id+1, v, err)
				}
			}
			if got := c.Message().(GetUser).ID; got != id {
				return fmt.Errorf("the Call of %d now holds %d", id, got)
			}
			if err := next(ctx, c); err != nil {
				return err
			}
			if got := c.Result().(UserView).ID; got != id {
				return fmt.Errorf("the Call of %d has the result of %d", id, got)
			}
			return nil
		}
	})
	queries = cqrs.NewQueryBus(cqrs.WithInterceptors(reenter))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](getUser)))
	for range 3 {
		v, err := cqrs.Dispatch[UserView](context.Background(), queries, GetUser{ID: 1})
		require.NoError(t, err)
		assert.Equal(t, 1, v.ID)
	}
}

// TestConcurrentInterceptedDispatches runs more goroutines than a chain
// has free slots for its Calls, so that goroutines share slots: each
// dispatch must see its own message and return its own result (and the
// race detector must see no Call shared by two dispatches).
func TestConcurrentInterceptedDispatches(t *testing.T) {
	var wrong atomic.Int64
	check := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			id := c.Message().(GetUser).ID
			err := next(ctx, c)
			if c.Result().(UserView).ID != id || c.Message().(GetUser).ID != id {
				wrong.Add(1)
			}
			return err
		}
	})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(check))
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[GetUser, UserView](getUser)))

	const goroutines, each = 32, 300
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				id := g*each + i
				v, err := cqrs.Dispatch[UserView](context.Background(), queries, GetUser{ID: id})
				if err != nil || v.ID != id {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, failed.Load(), "dispatches that returned another's result or an error")
	assert.Zero(t, wrong.Load(), "Calls that showed another dispatch's message or result")
}

// TestPanicOnRetryLeavesNoEarlierResult runs an interceptor that calls
// next a second time after a failure, as a retry does, and a handler whose
// first attempt fails with a result and whose second panics. The panic
// must leave the Call's result, and the dispatch's, the zero value, not
// the failed attempt's.
func TestPanicOnRetryLeavesNoEarlierResult(t *testing.T) {
	var afterPanic any
	twice := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			if err := next(ctx, c); err == nil {
				return nil
			}
			err := next(ctx, c)
			afterPanic = c.Result()
			return err
		}
	})
	attempts := 0
	flaky := cqrs.HandlerFunc[GetUser, UserView](func(_ context.Context, q GetUser) (UserView, error) {
		attempts++
		if attempts == 1 {
			return UserView{ID: q.ID}, errors.New("transient")
		}
		panic("boom")
	})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(twice))
	require.NoError(t, cqrs.Register(queries, flaky))

	v, err := cqrs.Dispatch[UserView](context.Background(), queries, GetUser{ID: 7})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, 2, attempts)
	assert.Equal(t, UserView{}, v, "the dispatch returned the failed attempt's result with the panic")
	assert.Equal(t, UserView{}, afterPanic, "the Call shows the failed attempt's result after the panic")
}

// TestReentrantInvokerStillRecovers lets a handler run the rest of the
// chain again, on its own Call, while it runs (an interceptor hands it
// next and the Call through the context, inside its own Invoker, as the
// Call contract allows). When the outer run of the handler then panics,
// the innermost Invoker must still turn the panic into a *PanicError that
// the interceptors see returned, not a panic unwinding through them.
func TestReentrantInvokerStillRecovers(t *testing.T) {
	type again struct{}
	type rerun struct {
		next cqrs.Invoker
		call cqrs.Call
	}
	var seen error
	var returned bool
	keep := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			err := next(context.WithValue(ctx, again{}, rerun{next, c}), c)
			seen, returned = err, true
			return err
		}
	})
	depth := 0
	h := cqrs.HandlerFunc[GetUser, UserView](func(ctx context.Context, q GetUser) (UserView, error) {
		depth++
		defer func() { depth-- }()
		if depth == 1 {
			r := ctx.Value(again{}).(rerun)
			if err := r.next(ctx, r.call); err != nil {
				return UserView{}, err
			}
			panic("boom")
		}
		return UserView{ID: q.ID}, nil
	})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(keep))
	require.NoError(t, cqrs.Register(queries, h))

	_, err := cqrs.Dispatch[UserView](context.Background(), queries, GetUser{ID: 7})
	var pe *cqrs.PanicError
	require.ErrorAs(t, err, &pe)
	require.True(t, returned, "the panic unwound through the interceptor instead of reaching it as an error")
	assert.ErrorAs(t, seen, &pe)
}

// TestRecoveredMiddlewarePanicLeavesNoEarlierResult is
// TestPanicOnRetryLeavesNoEarlierResult with the panic in a typed
// middleware, under the handler's own recovery, recovered instead by an
// outer interceptor: the dispatch must not return the failed attempt's
// result either.
func TestRecoveredMiddlewarePanicLeavesNoEarlierResult(t *testing.T) {
	errRecovered := errors.New("recovered")
	catch := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) (err error) {
			defer func() {
				if recover() != nil {
					err = errRecovered
				}
			}()
			return next(ctx, c)
		}
	})
	twice := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			if err := next(ctx, c); err == nil {
				return nil
			}
			return next(ctx, c)
		}
	})
	attempts := 0
	panicOnSecond := func(next cqrs.Handler[GetUser, UserView]) cqrs.Handler[GetUser, UserView] {
		return cqrs.HandlerFunc[GetUser, UserView](func(ctx context.Context, q GetUser) (UserView, error) {
			if attempts++; attempts == 2 {
				panic("middleware boom")
			}
			return next.Handle(ctx, q)
		})
	}
	failing := cqrs.HandlerFunc[GetUser, UserView](func(_ context.Context, q GetUser) (UserView, error) {
		return UserView{ID: q.ID}, errors.New("transient")
	})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(catch, twice))
	require.NoError(t, cqrs.Register(queries, failing, panicOnSecond))

	v, err := cqrs.Dispatch[UserView](context.Background(), queries, GetUser{ID: 7})
	require.ErrorIs(t, err, errRecovered)
	require.Equal(t, 2, attempts)
	assert.Equal(t, UserView{}, v, "the dispatch returned the failed attempt's result")
}
