package middleware

import (
	"context"
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

// Recovery returns an interceptor that recovers a panic in the layers
// inside it and returns it as an error of the caller's choosing. The bus
// already recovers every panic into a [*cqrs.PanicError]; Recovery is for
// mapping panics to a service's own error type, or logging them where the
// bus's logger does not reach.
func Recovery(cfg RecoveryConfig) cqrs.Interceptor {
	return cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = recovered(ctx, cfg, spec, v)
				}
			}()
			return next(ctx, c)
		}
	})
}

func recovered(ctx context.Context, cfg RecoveryConfig, spec cqrs.Spec, v any) error {
	stack := debug.Stack()
	if cfg.Logger != nil {
		cfg.Logger.LogAttrs(ctx, slog.LevelError, "cqrs: panic recovered",
			slog.String(keyKind, spec.Kind.String()),
			slog.String(keyMessage, spec.Name),
			slog.Any("panic", v),
			slog.String("stack", string(stack)))
	}
	if cfg.OnPanic != nil {
		return cfg.OnPanic(spec, v, stack)
	}
	return &cqrs.PanicError{Message: spec.String(), Value: v, Stack: stack}
}
