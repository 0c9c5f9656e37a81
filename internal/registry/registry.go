// Package registry holds the map behind every bus: message types to
// handler entries, read without locks and written in place, one slot at a
// time, on each registration.
package registry

import (
	"errors"
	"math/bits"
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

// descriptor stands for the runtime's type descriptor a Key points to. It
// is never read: a *descriptor is only compared.
type descriptor struct{}

// slot is one cell of a table. A writer fills an empty slot in place: it
// writes val, then publishes key atomically, so a reader that loads the
// key sees the value written before it. A filled slot never changes.
type slot[V any] struct {
	key atomic.Pointer[descriptor]
	val V
}

// table is an open-addressing hash table of slots with linear probing. It
// is at most half full; a writer that would fill it more copies the
// entries into a table twice the size and publishes that instead.
type table[V any] struct {
	slots []slot[V]
	shift uint // 64 - log2(len(slots)): the hash's top bits index a slot
	used  int  // written under the Registry's mutex only
}

const minSlots = 8

func newTable[V any](size int) *table[V] {
	return &table[V]{slots: make([]slot[V], size), shift: uint(64 - bits.TrailingZeros(uint(size)))}
}

// home returns the slot where the search for p starts: Fibonacci hashing
// of the descriptor's address, whose low bits are alignment and whose
// high bits are the same for every type.
func (t *table[V]) home(p *descriptor) uint {
	return uint(uint64(uintptr(unsafe.Pointer(p))) * 0x9E3779B97F4A7C15 >> t.shift)
}

// find returns the value for p.
func (t *table[V]) find(p *descriptor) (V, bool) {
	mask := uint(len(t.slots) - 1)
	for i := t.home(p); ; i = (i + 1) & mask {
		s := &t.slots[i]
		switch s.key.Load() {
		case p:
			return s.val, true
		case nil:
			var zero V
			return zero, false
		}
	}
}

// insert fills the first empty slot of p's probe sequence. p must not be
// in t, and t must have an empty slot.
func (t *table[V]) insert(p *descriptor, v V) {
	mask := uint(len(t.slots) - 1)
	i := t.home(p)
	for t.slots[i].key.Load() != nil {
		i = (i + 1) & mask
	}
	t.slots[i].val = v
	t.slots[i].key.Store(p)
	t.used++
}

// Registry maps types to values. Lookups never lock and never allocate:
// one atomic load of the table, and a probe of an open-addressing table by
// the type descriptor's address. Additions lock out other writers only,
// fill a slot in place and publish it atomically, and double the table
// when it is half full, so n additions cost O(n) in all.
//
// A Registry is safe for concurrent use. The zero value is empty and ready
// to use. A Registry must not be copied after first use.
type Registry[V any] struct {
	cur atomic.Pointer[table[V]] // read without locks

	mu      sync.Mutex     // serialises writers and guards what follows
	byName  map[string]int // index in entries
	entries []Entry[V]     // in the order added
	sorted  []Entry[V]     // entries ordered by name, made when asked; nil when stale
}

func (k Key) descriptor() *descriptor { return (*descriptor)(k.p) }

// Lookup returns the value registered for k.
func (r *Registry[V]) Lookup(k Key) (V, bool) {
	t := r.cur.Load()
	if t == nil || k.p == nil {
		var zero V
		return zero, false
	}
	return t.find(k.descriptor())
}

// Add registers v for type t under name. It fails with [ErrKeyExists] if t
// already has an entry and with [ErrNameExists] if another type uses name;
// in both cases nothing changes.
func (r *Registry[V]) Add(t reflect.Type, name string, v V) error {
	r.mu.Lock()
	defer r.mu.Unlock()

	k := KeyOf(t)
	if err := r.check(k, name); err != nil {
		return err
	}
	if r.byName == nil {
		r.byName = make(map[string]int)
	}
	r.byName[name] = len(r.entries)
	r.entries = append(r.entries, Entry[V]{Type: t, Name: name, Value: v})
	r.sorted = nil

	cur := r.cur.Load()
	if cur == nil || 2*(cur.used+1) > len(cur.slots) {
		// Grow: readers keep using the old table until the new one,
		// complete, is published.
		size := minSlots
		if cur != nil {
			size = 2 * len(cur.slots)
		}
		next := newTable[V](size)
		for _, e := range r.entries {
			next.insert(KeyOf(e.Type).descriptor(), e.Value)
		}
		r.cur.Store(next)
		return nil
	}
	cur.insert(k.descriptor(), v)
	return nil
}

// Check reports the error [Registry.Add] would return for t and name now:
// [ErrKeyExists], [ErrNameExists] or nil. It lets a caller refuse early,
// before work it would otherwise do for nothing; Add checks again.
func (r *Registry[V]) Check(t reflect.Type, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.check(KeyOf(t), name)
}

func (r *Registry[V]) check(k Key, name string) error {
	if _, ok := r.Lookup(k); ok {
		return ErrKeyExists
	}
	if _, ok := r.byName[name]; ok {
		return ErrNameExists
	}
	return nil
}

// Named returns the entry registered under name, in O(1).
func (r *Registry[V]) Named(name string) (Entry[V], bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.byName[name]
	if !ok {
		return Entry[V]{}, false
	}
	return r.entries[i], true
}

// Entries returns the registered entries ordered by name. The slice is
// shared with the registry and must not be modified. The first call after
// an addition sorts, in O(n log n); later calls return the same slice.
func (r *Registry[V]) Entries() []Entry[V] {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sorted == nil && len(r.entries) > 0 {
		r.sorted = slices.SortedFunc(slices.Values(r.entries), func(a, b Entry[V]) int {
			return strings.Compare(a.Name, b.Name)
		})
	}
	return r.sorted
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
