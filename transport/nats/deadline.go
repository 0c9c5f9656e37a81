package nats

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineCtx is a context with a deadline whose timer is made only when
// someone waits for it (Done): most handlers finish without ever calling
// Done, and a context.WithDeadline (a timer and three allocations) costs
// more than many of them. Deadline, Err and Value answer without the
// timer. Call stop when the handler has returned.
type deadlineCtx struct {
	parent   context.Context // has no deadline of its own
	deadline time.Time

	once    sync.Once
	started atomic.Bool
	ctx     context.Context // set by start
	cancel  context.CancelFunc
}

func withDeadline(parent context.Context, deadline time.Time) *deadlineCtx {
	return &deadlineCtx{parent: parent, deadline: deadline}
}

// start makes the real context, once.
func (c *deadlineCtx) start() context.Context {
	c.once.Do(func() {
		c.ctx, c.cancel = context.WithDeadline(c.parent, c.deadline)
		c.started.Store(true)
	})
	return c.ctx
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) Done() <-chan struct{} { return c.start().Done() }

func (c *deadlineCtx) Err() error {
	if !c.started.Load() && time.Now().Before(c.deadline) {
		return c.parent.Err()
	}
	return c.start().Err()
}

// Value asks the real context once there is one, or once the deadline
// has passed, so that context.Cause finds the deadline's cause.
func (c *deadlineCtx) Value(key any) any {
	if c.started.Load() || !time.Now().Before(c.deadline) {
		return c.start().Value(key)
	}
	return c.parent.Value(key)
}

// stop releases the timer, if one was made.
func (c *deadlineCtx) stop() {
	if c.started.Load() {
		c.cancel()
	}
}
