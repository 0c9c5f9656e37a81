package middleware

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"

	"github.com/typedcqrs/dispatch/cqrs"
)

// RecoveryConfig configures [Recovery]. A field left zero takes the
// default its comment gives, so the zero value logs nothing and returns
// the bus's own error. A RecoveryConfig is a plain value.
type RecoveryConfig struct {
	// Logger, if not nil, receives each panic at [slog.LevelError] with
	// its value and stack, and the message's identity as [Logging] logs
	// it. If it is nil, nothing is logged.
	Logger *slog.Logger
	// OnPanic turns a panic into the error the dispatch returns. If it is
	// nil, a [*cqrs.PanicError] is returned, as the bus itself would. It
	// must be safe to call concurrently.
	OnPanic func(spec cqrs.Spec, value any, stack []byte) error
}

// Recovery returns an interceptor that maps the panics of the layers inside
// it to an error of the caller's choosing, and logs them. The bus already
// recovers every panic into a [*cqrs.PanicError]; Recovery is for mapping
// panics to a service's own error type, or logging them where the bus's
// logger does not reach.
//
// A panic in the handler itself reaches Recovery as a [*cqrs.PanicError]
// returned by the layers inside it, since the bus recovers it where it
// calls the handler; a panic in an interceptor or middleware inside
// Recovery reaches it as a panic. Recovery treats both alike: it logs the
// panic value and stack and returns what OnPanic makes of them.
//
// The interceptor is safe for concurrent use if cfg's logger's handler and
// OnPanic are, and keeps no state between dispatches.
func Recovery(cfg RecoveryConfig) cqrs.Interceptor {
	return cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		r := &recoverer{cfg: cfg, spec: spec}
		return func(ctx context.Context, c cqrs.Call) (err error) {
			// The deferred call is open-coded, and it calls recover
			// only when next did not return: a dispatch that neither
			// fails nor panics pays little more than the call, and
			// allocates nothing.
			returned := false
			defer func() {
				if !returned {
					if v := recover(); v != nil {
						err = r.recovered(ctx, &cqrs.PanicError{Message: r.spec.String(), Value: v, Stack: debug.Stack()})
					}
				}
			}()
			err = next(ctx, c)
			returned = true
			if err != nil {
				return r.returned(ctx, err)
			}
			return nil
		}
	})
}

// recoverer is the Recovery of one message type.
type recoverer struct {
	cfg  RecoveryConfig
	spec cqrs.Spec
}

// returned maps err, the error of the layers inside Recovery, if it is a
// panic the bus recovered; it returns any other error unchanged.
func (r *recoverer) returned(ctx context.Context, err error) error {
	if pe, ok := errors.AsType[*cqrs.PanicError](err); ok {
		return r.recovered(ctx, pe)
	}
	return err
}

// recovered logs pe and returns the error the dispatch returns for it.
func (r *recoverer) recovered(ctx context.Context, pe *cqrs.PanicError) error {
	if r.cfg.Logger != nil {
		attrs := appendIdentity(ctx, []slog.Attr{slog.String(keyKind, r.spec.Kind.String()), slog.String(keyMessage, r.spec.Name)})
		r.cfg.Logger.LogAttrs(ctx, slog.LevelError, "cqrs: panic recovered", append(attrs, slog.Any("panic", pe))...)
	}
	if r.cfg.OnPanic != nil {
		return r.cfg.OnPanic(r.spec, pe.Value, pe.Stack)
	}
	return pe
}
