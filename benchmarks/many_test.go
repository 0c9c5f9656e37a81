//go:build manytypes

// The benchmarks of a bus with thousands of message types, whose
// generated types take minutes to compile: run them with
//
//	go test -tags manytypes ./benchmarks -run '^$' -bench 'Register|ManyTypes' -benchmem

package benchmarks

import (
	"context"
	"errors"
	"reflect"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// manyShape is the underlying type of the generated message types of
// manytypes_test.go (see benchmarks/gentypes).
type manyShape interface {
	~struct {
		ID     int64
		Tenant string
	}
}

func handleMany[C manyShape](ctx context.Context, q C) (User, error) {
	return getUser{}.Handle(ctx, GetUser(q))
}

// manyKind is what the benchmarks need of one generated type.
type manyKind struct {
	// register registers the type's handler on a bus.
	register func(cqrs.Bus) error
	// typ is the type, and plain its handler for a map[reflect.Type]func
	// router: it takes the message boxed, as ExecuteTyped does.
	typ   reflect.Type
	plain func(context.Context, any) (User, error)
}

func kindOf[C manyShape]() manyKind {
	return manyKind{
		register: func(b cqrs.Bus) error { return cqrs.Register(b, cqrs.HandlerFunc[C, User](handleMany[C])) },
		typ:      reflect.TypeFor[C](),
		plain: func(ctx context.Context, msg any) (User, error) {
			q, ok := msg.(C)
			if !ok {
				return User{}, errors.New("baseline: wrong message type")
			}
			return handleMany(ctx, q)
		},
	}
}

// manyBus returns a query bus with the first n generated types registered.
func manyBus(tb testing.TB, n int, opts ...cqrs.Option) *cqrs.QueryBus {
	tb.Helper()
	bus := cqrs.NewQueryBus(opts...)
	for _, k := range manyKinds[:n] {
		require.NoError(tb, k.register(bus))
	}
	return bus
}

// BenchmarkRegister registers n message types one by one on an empty bus
// and reports the cost of one registration (ns/type), which should not
// grow with n: 1,000, 10,000 and, when more types are generated (gentypes
// -n 50000), all of them.
func BenchmarkRegister(b *testing.B) {
	sizes := []int{1_000, 10_000}
	if manyCount > 10_000 {
		sizes = append(sizes, manyCount)
	}
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bus := cqrs.NewQueryBus()
				for _, k := range manyKinds[:n] {
					if err := k.register(bus); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/type")
		})
	}
}

// BenchmarkManyTypes measures dispatch on a bus with many registered
// types: one hot type dispatched again and again on a bus of 1 type and of
// 10,000 (Hot), and a round robin over 10,000 types through ExecuteTyped,
// the router's entry point, against a plain map[reflect.Type]func round
// robin doing the same work (RoundRobinMap).
func BenchmarkManyTypes(b *testing.B) {
	ctx := context.Background()
	one, many := manyBus(b, 1), manyBus(b, manyCount)
	hot := M00000(benchQuery)
	plain := make(map[reflect.Type]func(context.Context, any) (User, error), manyCount)
	for _, k := range manyKinds {
		plain[k.typ] = k.plain
	}
	for _, bench := range []struct {
		name string
		bus  cqrs.Bus
	}{{"Hot/1", one}, {"Hot/10000", many}} {
		b.Run(bench.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				u, err := cqrs.Dispatch[User](ctx, bench.bus, hot)
				if err != nil {
					b.Fatal(err)
				}
				sink = u
			}
		})
	}
	b.Run("RoundRobin/10000", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			u, err := cqrs.ExecuteTyped[User](ctx, many, manyMessages[i])
			if err != nil {
				b.Fatal(err)
			}
			sink = u
			if i++; i == manyCount {
				i = 0
			}
		}
	})
	b.Run("RoundRobinMap/10000", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			msg := manyMessages[i]
			u, err := plain[reflect.TypeOf(msg)](ctx, msg)
			if err != nil {
				b.Fatal(err)
			}
			sink = u
			if i++; i == manyCount {
				i = 0
			}
		}
	})
}

// BenchmarkHeapPerType reports the heap a bus made WithMetrics takes for
// each registered message type (B/type), at each GOMAXPROCS given with
// -cpu: the metrics, the route, the registry's share. It registers all
// the generated types on a fresh bus, with runtime.MemStats around it.
func BenchmarkHeapPerType(b *testing.B) {
	var perType float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		bus := manyBus(b, manyCount, cqrs.WithMetrics())
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(bus)
		perType = float64(after.HeapAlloc-before.HeapAlloc) / manyCount
	}
	b.ReportMetric(perType, "B/type")
}
