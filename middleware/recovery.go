package middleware

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"

	"github.com/typedcqrs/dispatch/cqrs"
)

// RecoveryConfig configures [Recovery].
type RecoveryConfig struct {
	// Logger, if not nil, receives each panic at [slog.LevelError] with
	// its value and stack.
	Logger *slog.Logger
	// OnPanic turns a panic into the error the dispatch returns. Nil
	// returns a [*cqrs.PanicError], as the bus itself would.
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
func Recovery(cfg RecoveryConfig) cqrs.Interceptor {
	return cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = recovered(ctx, cfg, spec, &cqrs.PanicError{Message: spec.String(), Value: v, Stack: debug.Stack()})
				}
			}()
			err = next(ctx, c)
			var pe *cqrs.PanicError
			if err != nil && errors.As(err, &pe) {
				return recovered(ctx, cfg, spec, pe)
			}
			return err
		}
	})
}

// recovered logs pe and returns the error the dispatch returns for it.
func recovered(ctx context.Context, cfg RecoveryConfig, spec cqrs.Spec, pe *cqrs.PanicError) error {
	if cfg.Logger != nil {
		cfg.Logger.LogAttrs(ctx, slog.LevelError, "cqrs: panic recovered",
			slog.String(keyKind, spec.Kind.String()),
			slog.String(keyMessage, spec.Name),
			slog.Any("panic", pe))
	}
	if cfg.OnPanic != nil {
		return cfg.OnPanic(spec, pe.Value, pe.Stack)
	}
	return pe
}
