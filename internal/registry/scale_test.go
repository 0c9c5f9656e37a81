package registry

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// arrayTypes returns n distinct types, [1]byte to [n]byte, made with
// reflect.ArrayOf: what a registry of many message types holds.
func arrayTypes(n int) []reflect.Type {
	types := make([]reflect.Type, n)
	for i := range types {
		types[i] = reflect.ArrayOf(i+1, reflect.TypeFor[byte]())
	}
	return types
}

// manyTypes are shared by the tests and benchmarks: making a type with
// reflect is slow, and the runtime keeps each one anyway.
var manyTypes = sync.OnceValue(func() []reflect.Type { return arrayTypes(50_000) })

func TestManyTypes(t *testing.T) {
	t.Parallel()
	types := manyTypes()[:20_000]
	var r Registry[int]
	for i, typ := range types[:10_000] {
		require.NoError(t, r.Add(typ, typ.String(), i))
	}
	for i, typ := range types {
		v, ok := r.Lookup(KeyOf(typ))
		if i < 10_000 {
			require.True(t, ok, "type %d", i)
			require.Equal(t, i, v)
		} else {
			require.False(t, ok, "type %d was never added", i)
		}
	}
	_, ok := r.Lookup(Key{})
	assert.False(t, ok, "the zero key")
	names := r.Names()
	require.Len(t, names, 10_000)
	assert.True(t, slices.IsSorted(names))
	assert.ErrorIs(t, r.Add(types[5], "new name", 5), ErrKeyExists)
	assert.ErrorIs(t, r.Add(types[10_000], types[5].String(), 5), ErrNameExists)
}

// TestLookupDuringGrowth runs readers while a writer adds thousands of
// types, so that the table grows many times under them: every type whose
// Add has returned must be found, with its value.
func TestLookupDuringGrowth(t *testing.T) {
	t.Parallel()
	types := manyTypes()[:5000]
	var r Registry[int]
	var added atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i, typ := range types {
			assert.NoError(t, r.Add(typ, typ.String(), i))
			added.Store(int64(i + 1))
		}
	})
	for g := range 3 {
		wg.Go(func() {
			for round := 0; ; round++ {
				n := int(added.Load())
				for i := g; i < n; i += 7 {
					if v, ok := r.Lookup(KeyOf(types[i])); !ok || v != i {
						t.Errorf("type %d added, found %v with %d", i, ok, v)
						return
					}
				}
				if n == len(types) {
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkAdd registers n types one by one into an empty registry and
// reports the cost of one registration: flat in n when n additions cost
// O(n) in all.
func BenchmarkAdd(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 50_000} {
		types := manyTypes()[:n]
		names := make([]string, n)
		for i, typ := range types {
			names[i] = typ.String()
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var r Registry[int]
				for i, typ := range types {
					if err := r.Add(typ, names[i], i); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/type")
		})
	}
}

var sinkInt int

// BenchmarkLookup measures one type looked up again and again in a
// registry of 1 and of 10,000 types, and a round robin over 10,000 types
// against a plain map[reflect.Type]func, read in the same way.
func BenchmarkLookup(b *testing.B) {
	types := manyTypes()[:10_000]
	one, many := &Registry[int]{}, &Registry[int]{}
	require.NoError(b, one.Add(types[0], "0", 0))
	plain := make(map[reflect.Type]func() int, len(types))
	for i, typ := range types {
		require.NoError(b, many.Add(typ, typ.String(), i))
		plain[typ] = func() int { return i }
	}
	hot := KeyOf(types[0])
	keys := make([]Key, len(types))
	for i, typ := range types {
		keys[i] = KeyOf(typ)
	}
	b.Run("Hot/1", func(b *testing.B) {
		for b.Loop() {
			v, _ := one.Lookup(hot)
			sinkInt += v
		}
	})
	b.Run("Hot/10000", func(b *testing.B) {
		for b.Loop() {
			v, _ := many.Lookup(hot)
			sinkInt += v
		}
	})
	b.Run("RoundRobin/10000", func(b *testing.B) {
		i := 0
		for b.Loop() {
			v, _ := many.Lookup(keys[i])
			sinkInt += v
			if i++; i == len(keys) {
				i = 0
			}
		}
	})
	b.Run("RoundRobinMap/10000", func(b *testing.B) {
		i := 0
		for b.Loop() {
			sinkInt += plain[types[i]]()
			if i++; i == len(types) {
				i = 0
			}
		}
	})
}
