package registry

import (
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type (
	alpha struct{ A int }
	beta  struct{ B string }
	gamma [3]int
)

func TestKeyIdentifiesTypes(t *testing.T) {
	t.Parallel()
	types := []reflect.Type{
		reflect.TypeFor[alpha](), reflect.TypeFor[*alpha](), reflect.TypeFor[beta](),
		reflect.TypeFor[gamma](), reflect.TypeFor[[3]int](), reflect.TypeFor[int](),
		reflect.TypeFor[string](), reflect.TypeFor[any](), reflect.TypeFor[error](),
	}
	seen := map[Key]reflect.Type{}
	for _, typ := range types {
		k := KeyOf(typ)
		require.NotEqual(t, Key{}, k, typ)
		if prev, dup := seen[k]; dup {
			t.Fatalf("%v and %v share a key", prev, typ)
		}
		seen[k] = typ
	}

	// The key of a type does not depend on how the reflect.Type was made.
	assert.Equal(t, KeyFor[alpha](), KeyOf(reflect.TypeOf(alpha{A: 1})))
	assert.Equal(t, KeyFor[*alpha](), KeyOf(reflect.TypeOf(&alpha{})))
	assert.Equal(t, KeyFor[alpha](), KeyOf(reflect.TypeFor[*alpha]().Elem()))
	var v any = beta{}
	assert.Equal(t, KeyFor[beta](), KeyOf(reflect.ValueOf(v).Type()))
	assert.Equal(t, Key{}, KeyOf(nil))
}

func TestAddLookup(t *testing.T) {
	t.Parallel()
	var r Registry[int] // the zero value is ready

	_, ok := r.Lookup(KeyFor[alpha]())
	assert.False(t, ok, "empty registry")
	assert.Empty(t, r.Names())
	assert.Empty(t, r.Entries())

	require.NoError(t, r.Add(reflect.TypeFor[beta](), "b", 2))
	require.NoError(t, r.Add(reflect.TypeFor[alpha](), "a", 1))
	require.NoError(t, r.Add(reflect.TypeFor[*alpha](), "c", 3))

	for _, tc := range []struct {
		key  Key
		want int
	}{{KeyFor[alpha](), 1}, {KeyFor[beta](), 2}, {KeyFor[*alpha](), 3}} {
		got, ok := r.Lookup(tc.key)
		require.True(t, ok)
		assert.Equal(t, tc.want, got)
	}
	_, ok = r.Lookup(KeyFor[gamma]())
	assert.False(t, ok)

	assert.Equal(t, []string{"a", "b", "c"}, r.Names())
	entries := r.Entries()
	require.Len(t, entries, 3)
	assert.Equal(t, reflect.TypeFor[alpha](), entries[0].Type)
	assert.Equal(t, 3, entries[2].Value)

	e, ok := r.Named("c")
	require.True(t, ok)
	assert.Equal(t, Entry[int]{Type: reflect.TypeFor[*alpha](), Name: "c", Value: 3}, e)
	_, ok = r.Named("z")
	assert.False(t, ok)
}

func TestAddConflicts(t *testing.T) {
	t.Parallel()
	var r Registry[string]
	require.NoError(t, r.Add(reflect.TypeFor[alpha](), "alpha", "first"))

	err := r.Add(reflect.TypeFor[alpha](), "other", "second")
	require.ErrorIs(t, err, ErrKeyExists)
	err = r.Add(reflect.TypeFor[beta](), "alpha", "third")
	require.ErrorIs(t, err, ErrNameExists)

	assert.ErrorIs(t, r.Check(reflect.TypeFor[alpha](), "new"), ErrKeyExists)
	assert.ErrorIs(t, r.Check(reflect.TypeFor[beta](), "alpha"), ErrNameExists)
	assert.NoError(t, r.Check(reflect.TypeFor[beta](), "beta"))
	var empty Registry[string]
	assert.NoError(t, empty.Check(reflect.TypeFor[alpha](), "alpha"))

	// A failed Add changes nothing.
	got, _ := r.Lookup(KeyFor[alpha]())
	assert.Equal(t, "first", got)
	_, ok := r.Lookup(KeyFor[beta]())
	assert.False(t, ok)
	assert.Equal(t, []string{"alpha"}, r.Names())
}

func TestNamesReturnsACopy(t *testing.T) {
	t.Parallel()
	var r Registry[int]
	require.NoError(t, r.Add(reflect.TypeFor[alpha](), "a", 1))
	names := r.Names()
	names[0] = "changed"
	assert.Equal(t, []string{"a"}, r.Names())
}

func TestLookupDoesNotAllocate(t *testing.T) {
	var r Registry[int]
	require.NoError(t, r.Add(reflect.TypeFor[alpha](), "a", 1))
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := r.Lookup(KeyFor[alpha]()); !ok {
			t.Fatal("not found")
		}
	})
	assert.Zero(t, allocs)
}

// TestConcurrentAddAndLookup runs readers against writers: a reader that
// has seen a type once must keep seeing it with the same value, and every
// type added is there at the end.
func TestConcurrentAddAndLookup(t *testing.T) {
	t.Parallel()
	types := []reflect.Type{
		reflect.TypeFor[[1]int](), reflect.TypeFor[[2]int](), reflect.TypeFor[[3]int](),
		reflect.TypeFor[[4]int](), reflect.TypeFor[[5]int](), reflect.TypeFor[[6]int](),
		reflect.TypeFor[[7]int](), reflect.TypeFor[[8]int](), reflect.TypeFor[[9]int](),
		reflect.TypeFor[[10]int](), reflect.TypeFor[[11]int](), reflect.TypeFor[[12]int](),
	}
	var r Registry[int]
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := w; i < len(types); i += 3 {
				assert.NoError(t, r.Add(types[i], fmt.Sprint(i), i))
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			seen := make([]bool, len(types))
			for range 2000 {
				for i, typ := range types {
					v, ok := r.Lookup(KeyOf(typ))
					if seen[i] && !ok {
						t.Errorf("type %d vanished", i)
						return
					}
					if ok && v != i {
						t.Errorf("type %d has value %d", i, v)
						return
					}
					seen[i] = seen[i] || ok
				}
			}
		})
	}
	wg.Wait()
	assert.Len(t, r.Entries(), len(types))
}
