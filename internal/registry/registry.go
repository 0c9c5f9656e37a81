// Package registry holds the copy-on-write map behind every bus: message
// types to handler entries, read without locks and replaced whole on each
// registration.
package registry

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ErrKeyExists is returned by [Registry.Add] when the type already has an entry.
var ErrKeyExists = errors.New("registry: type already registered")

// ErrNameExists is returned by [Registry.Add] when another type already uses the name.
var ErrNameExists = errors.New("registry: name already registered")

// Key is the identity of one Go type, usable as a map key.
//
// It is the pointer to the runtime's type descriptor that every
// [reflect.Type] wraps. Two keys are equal exactly when their types are
// identical, and hashing one costs a single word, where hashing the
// reflect.Type interface itself costs about three times as much.
type Key struct{ p unsafe.Pointer }

// KeyOf returns the key of t. The zero Key stands for a nil t.
func KeyOf(t reflect.Type) Key {
	// A reflect.Type made by the reflect package is always an interface
	// holding a *rtype, which is the runtime's unique descriptor of the
	// type: the data word of the interface is that pointer.
	return Key{(*[2]unsafe.Pointer)(unsafe.Pointer(&t))[1]}
}

// KeyFor returns the key of T without allocating.
func KeyFor[T any]() Key { return KeyOf(reflect.TypeFor[T]()) }

// Entry is one registered value with the type and name it was added under.
type Entry[V any] struct {
	Type  reflect.Type
	Name  string
	Value V
}

// table is one immutable generation of the registry.
type table[V any] struct {
	byKey  map[Key]V
	byName map[string]Key
	sorted []Entry[V] // ordered by Name
}

// Registry maps types to values. Lookups never lock and never allocate;
// additions copy the whole table and publish the copy atomically, so they
// cost O(n) and are meant for start-up, not for every request.
//
// A Registry is safe for concurrent use. The zero value is empty and ready
// to use. A Registry must not be copied after first use.
type Registry[V any] struct {
	mu  sync.Mutex // serialises writers; readers never take it
	cur atomic.Pointer[table[V]]
}

// Lookup returns the value registered for k.
func (r *Registry[V]) Lookup(k Key) (V, bool) {
	t := r.cur.Load()
	if t == nil {
		var zero V
		return zero, false
	}
	v, ok := t.byKey[k]
	return v, ok
}

// Add registers v for type t under name. It fails with [ErrKeyExists] if t
// already has an entry and with [ErrNameExists] if another type uses name;
// in both cases nothing changes.
func (r *Registry[V]) Add(t reflect.Type, name string, v V) error {
	r.mu.Lock()
	defer r.mu.Unlock()

	old := r.cur.Load()
	if old == nil {
		old = &table[V]{}
	}
	k := KeyOf(t)
	if _, ok := old.byKey[k]; ok {
		return ErrKeyExists
	}
	if _, ok := old.byName[name]; ok {
		return ErrNameExists
	}

	next := &table[V]{
		byKey:  make(map[Key]V, len(old.byKey)+1),
		byName: make(map[string]Key, len(old.byName)+1),
	}
	maps.Copy(next.byKey, old.byKey)
	maps.Copy(next.byName, old.byName)
	next.byKey[k] = v
	next.byName[name] = k

	i, _ := slices.BinarySearchFunc(old.sorted, name, func(e Entry[V], n string) int {
		return strings.Compare(e.Name, n)
	})
	next.sorted = slices.Insert(slices.Clone(old.sorted), i, Entry[V]{Type: t, Name: name, Value: v})

	r.cur.Store(next)
	return nil
}

// Check reports the error [Registry.Add] would return for t and name now:
// [ErrKeyExists], [ErrNameExists] or nil. It lets a caller refuse early,
// before work it would otherwise do for nothing; Add checks again.
func (r *Registry[V]) Check(t reflect.Type, name string) error {
	cur := r.cur.Load()
	if cur == nil {
		return nil
	}
	if _, ok := cur.byKey[KeyOf(t)]; ok {
		return ErrKeyExists
	}
	if _, ok := cur.byName[name]; ok {
		return ErrNameExists
	}
	return nil
}

// Entries returns the registered entries ordered by name. The slice is
// shared with the registry and must not be modified.
func (r *Registry[V]) Entries() []Entry[V] {
	if t := r.cur.Load(); t != nil {
		return t.sorted
	}
	return nil
}

// Names returns the registered names in sorted order, in a new slice.
func (r *Registry[V]) Names() []string {
	entries := r.Entries()
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name
	}
	return names
}
