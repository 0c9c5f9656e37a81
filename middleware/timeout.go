package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/internal/lazyctx"
)

// Timeout returns an interceptor that gives each dispatch at most d: the
// context passed on carries that deadline (or the caller's, if sooner).
// Its timer is made only when the handler waits on the context's Done, so
// a handler that finishes without waiting costs no timer at all: a
// dispatch reads the monotonic clock once, to start, and once more only
// if the handler fails, and allocates the one context it passes on (32
// bytes; the handler may keep it, so it is never reused). When the
// caller's deadline comes sooner than d from now, the caller's context is
// passed on as it is, and nothing is allocated.
//
// When the deadline passes and the handler returns an error, the dispatch
// fails with an error that wraps both [cqrs.ErrExecutionTimeout] and
// [context.DeadlineExceeded]. A caller's own earlier deadline is not
// reported as a timeout of this middleware.
//
// The handler runs on the caller's goroutine, so no goroutine outlives the
// call and a panic reaches the bus's recovery as any other does. The price
// is the contract: a handler must honour ctx. One that ignores it runs to
// completion, and if it then succeeds its result is returned. If d <= 0,
// there is no timeout: the interceptor passes every dispatch on.
//
// The interceptor is safe for concurrent use and keeps no state between
// dispatches.
func Timeout(d time.Duration) cqrs.Interceptor {
	return cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		if d <= 0 {
			return next
		}
		return func(ctx context.Context, c cqrs.Call) error {
			// The timer is made only if the handler waits on the
			// context, and the deadline's time of day only if it asks:
			// a context.WithTimeout per dispatch would cost about
			// 400ns and 4 allocations whether used or not.
			tctx := lazyctx.WithTimeout(ctx, d)
			if tctx == nil { // the caller's deadline comes first
				return next(ctx, c)
			}
			defer tctx.Stop()
			err := next(tctx, c)
			if err == nil || !tctx.Expired() {
				return err
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%w: %s after %v: %w", cqrs.ErrExecutionTimeout, spec, d, err)
			}
			return fmt.Errorf("%w: %s after %v: %w: %w", cqrs.ErrExecutionTimeout, spec, d, context.DeadlineExceeded, err)
		}
	})
}
