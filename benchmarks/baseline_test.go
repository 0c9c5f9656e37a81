// Package benchmarks measures typed dispatch against the shapes it
// replaces. It has only test files: run it with
//
//	go test ./benchmarks -run '^$' -bench . -benchmem
//
// This file is the baseline: the string-keyed bus of interface{} handlers
// behind a sync.RWMutex that hand-rolled and seed mediators use. It lives
// in a _test.go file, as x/sync keeps its semChan, so that it is not
// library code anyone can import.
package benchmarks

import (
	"context"
	"fmt"
	"sync"
)

// Named is what a message must implement to travel on a [StringBus]: the
// bus keys its handlers by this name.
type Named interface {
	CommandName() string
}

// StringHandler is a handler of the baseline: interface{} in, interface{}
// out.
type StringHandler interface {
	Handle(ctx context.Context, msg interface{}) (interface{}, error)
}

// StringHandlerFunc adapts a function to [StringHandler].
type StringHandlerFunc func(ctx context.Context, msg interface{}) (interface{}, error)

// Handle calls f(ctx, msg).
func (f StringHandlerFunc) Handle(ctx context.Context, msg interface{}) (interface{}, error) {
	return f(ctx, msg)
}

// StringBus is the baseline: a map from message names to handlers, read
// under a sync.RWMutex. It is safe for concurrent use; its zero value is
// empty and ready.
type StringBus struct {
	mu       sync.RWMutex
	handlers map[string]StringHandler
}

// Register adds h under name, replacing any handler already there.
func (b *StringBus) Register(name string, h StringHandler) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.handlers == nil {
		b.handlers = make(map[string]StringHandler)
	}
	b.handlers[name] = h
}

// Execute sends msg to the handler registered under its name.
func (b *StringBus) Execute(ctx context.Context, msg interface{}) (interface{}, error) {
	named, ok := msg.(Named)
	if !ok {
		return nil, fmt.Errorf("baseline: %T has no CommandName method", msg)
	}
	name := named.CommandName()
	b.mu.RLock()
	h, ok := b.handlers[name]
	b.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("baseline: no handler for %q", name)
	}
	return h.Handle(ctx, msg)
}
