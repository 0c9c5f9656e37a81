package benchmarks

import (
	"context"
	"fmt"
	"iter"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// listUsers streams N users.
type listUsers struct {
	cqrs.StreamQuery[User]
	N int
}

func produceUsers(_ context.Context, q listUsers, yield func(User) bool) error {
	for i := range q.N {
		if !yield(User{ID: int64(i), Name: "acme"}) {
			return nil
		}
	}
	return nil
}

// bareUsers is the same producer as a bare iter.Seq2, the baseline.
func bareUsers(n int) iter.Seq2[User, error] {
	return func(yield func(User, error) bool) {
		for i := range n {
			if !yield(User{ID: int64(i), Name: "acme"}, nil) {
				return
			}
		}
	}
}

// BenchmarkStream reads streams of 1, 100 and 10,000 items, through
// cqrs.Stream and as a bare iter.Seq2 of the same items, and reports the
// cost per item beside the cost per stream, and the CPU time per stream
// (cpu-ns/op: see reportCPU).
func BenchmarkStream(b *testing.B) {
	ctx := context.Background()
	queries := cqrs.NewQueryBus()
	require.NoError(b, cqrs.HandleStream(queries, produceUsers))
	for _, n := range []int{1, 100, 10_000} {
		rows := []struct {
			name string
			seq  func() iter.Seq2[User, error]
		}{
			{"Bare", func() iter.Seq2[User, error] { return bareUsers(n) }},
			{"Stream", func() iter.Seq2[User, error] { return cqrs.Stream(ctx, queries, listUsers{N: n}) }},
		}
		for _, row := range rows {
			b.Run(fmt.Sprintf("items=%d/%s", n, row.name), func(b *testing.B) {
				b.ReportAllocs()
				var sum int64
				cpu := cpuTime()
				for b.Loop() {
					for u, err := range row.seq() {
						if err != nil {
							b.Fatal(err)
						}
						sum += u.ID
					}
				}
				if want := int64(n) * int64(n-1) / 2 * int64(b.N); sum != want {
					b.Fatalf("sum %d, want %d", sum, want)
				}
				cpu = cpuTime() - cpu
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/item")
				reportCPU(b, cpu)
			})
		}
	}
}
