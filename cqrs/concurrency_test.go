package cqrs_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Num[K] gives the concurrency test as many distinct message types as it
// has markers K.
type Num[K any] struct{ N int }

type (
	k0 [0]int
	k1 [1]int
	k2 [2]int
	k3 [3]int
	k4 [4]int
	k5 [5]int
	k6 [6]int
	k7 [7]int
)

// registerNum registers the handler of Num[K], which answers N*10+id.
func registerNum[K any](b cqrs.Bus, id int) error {
	return cqrs.Register(b, cqrs.HandlerFunc[Num[K], int](func(_ context.Context, m Num[K]) (int, error) {
		return m.N*10 + id, nil
	}))
}

// dispatchNum sends Num[K]{n} through the entry point that n selects.
func dispatchNum[K any](b *cqrs.QueryBus, n int) (int, error) {
	ctx := context.Background()
	switch n % 3 {
	case 0:
		return cqrs.Dispatch[int](ctx, b, Num[K]{N: n})
	case 1:
		return cqrs.ExecuteTyped[int](ctx, b, Num[K]{N: n})
	default:
		res, err := b.Execute(ctx, Num[K]{N: n})
		v, _ := res.(int)
		return v, err
	}
}

// TestConcurrentRegisterAndDispatch has goroutines dispatching every type
// while others register them: a dispatch either finds no handler yet or
// gets its own right answer, and once a type is found it stays found.
func TestConcurrentRegisterAndDispatch(t *testing.T) {
	t.Parallel()
	bus := cqrs.NewQueryBus(cqrs.WithMetrics(), cqrs.WithInterceptors(passThrough))
	registers := []func() error{
		func() error { return registerNum[k0](bus, 0) },
		func() error { return registerNum[k1](bus, 1) },
		func() error { return registerNum[k2](bus, 2) },
		func() error { return registerNum[k3](bus, 3) },
		func() error { return registerNum[k4](bus, 4) },
		func() error { return registerNum[k5](bus, 5) },
		func() error { return registerNum[k6](bus, 6) },
		func() error { return registerNum[k7](bus, 7) },
	}
	dispatches := []func(b *cqrs.QueryBus, n int) (int, error){
		dispatchNum[k0], dispatchNum[k1], dispatchNum[k2], dispatchNum[k3],
		dispatchNum[k4], dispatchNum[k5], dispatchNum[k6], dispatchNum[k7],
	}

	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range 2 {
		wg.Go(func() {
			<-start
			for i := w; i < len(registers); i += 2 {
				assert.NoError(t, registers[i]())
			}
		})
	}
	const rounds = 300
	for g := range 8 {
		wg.Go(func() {
			<-start
			found := make([]bool, len(dispatches))
			for r := range rounds {
				for id, dispatch := range dispatches {
					n := g*rounds + r
					got, err := dispatch(bus, n)
					switch {
					case err == nil:
						found[id] = true
						if got != n*10+id {
							t.Errorf("Num[k%d]{%d} answered %d", id, n, got)
							return
						}
					case errors.Is(err, cqrs.ErrHandlerNotFound) && !found[id]:
					default:
						t.Errorf("Num[k%d]{%d}: %v (found before: %t)", id, n, err, found[id])
						return
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()

	require.Len(t, bus.Registered(), len(registers))
	for id, dispatch := range dispatches {
		got, err := dispatch(bus, 1)
		require.NoError(t, err)
		assert.Equal(t, 10+id, got)
	}
	var calls uint64
	for _, m := range bus.Metrics() {
		calls += m.Calls
	}
	assert.LessOrEqual(t, calls, uint64(8*rounds*len(dispatches)+len(dispatches)))
	assert.Positive(t, calls)
}
