package nats

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// lazyDeadline is a context with a deadline whose timer is made only when
// someone waits for it. Most handlers of a request finish without ever
// calling Done, and a context.WithDeadline per request (a timer and three
// allocations, about 400ns) would cost a few percent of the round trip.
// Deadline, Err and Value answer without the timer.
type lazyDeadline struct {
	parent   context.Context
	deadline time.Time

	once    sync.Once
	started atomic.Bool
	ctx     context.Context // set by start
	cancel  context.CancelFunc
}

func withLazyDeadline(parent context.Context, d time.Duration) *lazyDeadline {
	return &lazyDeadline{parent: parent, deadline: time.Now().Add(d)}
}

// start makes the real context, once.
func (c *lazyDeadline) start() context.Context {
	c.once.Do(func() {
		c.ctx, c.cancel = context.WithDeadline(c.parent, c.deadline)
		c.started.Store(true)
	})
	return c.ctx
}

func (c *lazyDeadline) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *lazyDeadline) Done() <-chan struct{}       { return c.start().Done() }
func (c *lazyDeadline) Value(key any) any           { return c.parent.Value(key) }

func (c *lazyDeadline) Err() error {
	if !c.started.Load() && time.Now().Before(c.deadline) {
		return c.parent.Err()
	}
	return c.start().Err()
}

// stop releases the timer, if one was made. A Done called after stop
// still works; its timer lasts until the deadline.
func (c *lazyDeadline) stop() {
	if c.started.Load() {
		c.cancel()
	}
}
