// Package lazyctx has a context with a deadline whose timer is made only
// when someone waits for it.
package lazyctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Context is a context with a deadline whose timer is made only when
// someone waits for it. Most handlers finish without ever calling Done,
// and a context.WithDeadline (a timer and three allocations, about 400ns
// on the CI machine) costs more than many of them. Deadline, Err and Value
// answer without the timer.
type Context struct {
	parent   context.Context
	deadline time.Time // the earlier of the parent's and our own
	own      bool      // deadline is our own, not the parent's
	cause    error     // the cause Done reports when our own deadline passes

	once    sync.Once
	started atomic.Bool
	ctx     context.Context // set by start
	cancel  context.CancelFunc
}

// WithTimeout returns a context that is done d from now, or when parent
// is, whichever comes first. When d passes first, context.Cause reports
// cause, once the context has been waited on; Err reports
// context.DeadlineExceeded. Call Stop when done with it.
func WithTimeout(parent context.Context, d time.Duration, cause error) *Context {
	deadline, own := time.Now().Add(d), true
	if pd, ok := parent.Deadline(); ok && pd.Before(deadline) {
		deadline, own = pd, false
	}
	return &Context{parent: parent, deadline: deadline, own: own, cause: cause}
}

// start makes the real context, once.
func (c *Context) start() context.Context {
	c.once.Do(func() {
		cause := c.cause
		if !c.own {
			cause = nil // the parent's deadline: its cause, not ours
		}
		c.ctx, c.cancel = context.WithDeadlineCause(c.parent, c.deadline, cause)
		c.started.Store(true)
	})
	return c.ctx
}

// Deadline returns the earlier of the parent's deadline and our own.
func (c *Context) Deadline() (time.Time, bool) { return c.deadline, true }

// Done makes the timer, the first time, and returns its channel.
func (c *Context) Done() <-chan struct{} { return c.start().Done() }

// Value returns the parent's value for key. Once there is a timer, or the
// deadline has passed, the timer's context answers, so that
// context.Cause finds the cause.
func (c *Context) Value(key any) any {
	if c.started.Load() || c.Expired() {
		return c.start().Value(key)
	}
	return c.parent.Value(key)
}

// Err returns the parent's error before the deadline, and
// context.DeadlineExceeded after it.
func (c *Context) Err() error {
	if !c.started.Load() && time.Now().Before(c.deadline) {
		return c.parent.Err()
	}
	return c.start().Err()
}

// Own reports whether the deadline is the one WithTimeout set, rather
// than the parent's earlier one.
func (c *Context) Own() bool { return c.own }

// Expired reports whether the deadline has passed.
func (c *Context) Expired() bool { return !time.Now().Before(c.deadline) }

// Stop releases the timer, if one was made. Done called after Stop still
// works; its timer then lasts until the deadline.
func (c *Context) Stop() {
	if c.started.Load() {
		c.cancel()
	}
}
