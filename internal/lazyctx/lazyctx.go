// Package lazyctx has a context with a deadline whose timer is made only
// when someone waits for it, and whose deadline is a time of day only
// when someone asks for it.
package lazyctx

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Context is a context with a deadline whose timer is made only when
// someone waits for it. Most handlers finish without ever calling Done,
// and a context.WithDeadline (a timer and three allocations, about 400ns
// on the CI machine) costs more than many of them.
//
// Making one reads the monotonic clock once and allocates the 32-byte
// Context; it keeps the deadline as a monotonic offset. Err,
// [Context.Expired] and Value (for the context package's own key only)
// compare that offset with one more monotonic reading.
// Deadline turns it into a time.Time, the first time it is asked, from
// one reading of both the wall and the monotonic clock: that is the
// time.Now().Add(d) it would have been at the start, with its monotonic
// reading exactly the start's plus d, and the same value every time.
// Done makes the timer.
//
// A Context is safe for concurrent use; the handler it is given to may
// keep it, so it is never reused.
type Context struct {
	parent context.Context
	end    time.Duration // the deadline: an offset from epoch on the monotonic clock
	late   atomic.Pointer[late]
}

// ErrTimeout is what context.Cause reports for a [Context] whose own
// deadline has passed. It tells the deadlines WithTimeout sets from the
// parent's.
var ErrTimeout = errors.New("middleware: timeout")

// late is the part of a Context made only when someone asks for its
// deadline or waits on it.
type late struct {
	deadline time.Time

	once    sync.Once
	started atomic.Bool
	ctx     context.Context // set by start
	cancel  context.CancelFunc
}

// epoch is the origin of the monotonic offsets: a fixed instant. Inside a
// testing/synctest bubble, where time.Now has no monotonic reading, the
// offsets are taken on the bubble's fake clock instead, which is as
// consistent: epoch.Sub and time.Since(epoch) fall back to the wall clock
// together.
var epoch = time.Now()

// WithTimeout returns a context that is done d from now, or when parent
// is, whichever comes first, and nil if parent's own deadline comes
// before that: parent then has every property the Context would have. When
// d passes first, context.Cause reports [ErrTimeout] and Err
// context.DeadlineExceeded. Call Stop when
// done with a Context.
func WithTimeout(parent context.Context, d time.Duration) *Context {
	end := addSat(time.Since(epoch), d)
	if pd, ok := parent.Deadline(); ok && offset(pd) < end {
		return nil
	}
	return &Context{parent: parent, end: end}
}

// offset returns t as an offset from epoch. A time with a monotonic
// reading (one from time.Now, in the same process) is placed by it alone;
// one without it, such as a deadline built from a date, by the wall clock
// now, as a context.WithDeadline's timer places it.
func offset(t time.Time) time.Duration {
	if t != t.Round(0) { // Round(0) drops the monotonic reading, if there is one
		return t.Sub(epoch)
	}
	now := time.Now()
	return addSat(now.Sub(epoch), t.Sub(now))
}

// addSat returns a+b, held at the largest or smallest Duration rather than
// overflowing.
func addSat(a, b time.Duration) time.Duration {
	s := a + b
	switch {
	case b > 0 && s < a:
		return math.MaxInt64
	case b < 0 && s > a:
		return math.MinInt64
	}
	return s
}

// lateState returns c's late part, making it the first time.
func (c *Context) lateState() *late {
	if l := c.late.Load(); l != nil {
		return l
	}
	now := time.Now()
	l := &late{deadline: now.Add(addSat(c.end, -now.Sub(epoch)))}
	if c.late.CompareAndSwap(nil, l) {
		return l
	}
	return c.late.Load()
}

// start makes the real context, once.
func (c *Context) start() context.Context {
	l := c.lateState()
	l.once.Do(func() {
		l.ctx, l.cancel = context.WithDeadlineCause(c.parent, l.deadline, ErrTimeout)
		l.started.Store(true)
	})
	return l.ctx
}

// started reports whether the real context has been made.
func (c *Context) started() bool {
	l := c.late.Load()
	return l != nil && l.started.Load()
}

// Deadline returns the deadline WithTimeout set: the same time on every
// call.
func (c *Context) Deadline() (time.Time, bool) { return c.lateState().deadline, true }

// Done makes the timer, the first time, and returns its channel.
func (c *Context) Done() <-chan struct{} { return c.start().Done() }

// Value returns the parent's value for key. The one key the timer's
// context answers itself is the context package's own, by which
// context.Cause finds a cause; it is an *int, so a key of any other type
// goes straight to the parent without reading the clock. For an *int key,
// once there is a timer, or the deadline has passed, the timer's context
// answers, so that context.Cause finds [ErrTimeout].
func (c *Context) Value(key any) any {
	if _, maybe := key.(*int); maybe && (c.started() || c.Expired()) {
		return c.start().Value(key)
	}
	return c.parent.Value(key)
}

// Err returns the parent's error before the deadline, and
// context.DeadlineExceeded after it.
func (c *Context) Err() error {
	if !c.started() && !c.Expired() {
		return c.parent.Err()
	}
	return c.start().Err()
}

// Expired reports whether the deadline has passed.
func (c *Context) Expired() bool { return time.Since(epoch) >= c.end }

// Stop releases the timer, if one was made. Done called after Stop still
// works; its timer then lasts until the deadline.
func (c *Context) Stop() {
	if l := c.late.Load(); l != nil && l.started.Load() {
		l.cancel()
	}
}
