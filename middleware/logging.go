package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/internal/stats"
)

// LoggingConfig configures [Logging] and [LoggingFor], and the logging of
// a [Config]. A field left zero takes the default its comment gives, so
// the zero value logs nothing: it has no logger. Every value of Level and
// CallerErrorLevel is used as it is. A LoggingConfig is a plain value.
//
// A dispatch is logged at one of three levels: Level when it succeeds;
// CallerErrorLevel when it failed by the caller's doing ([IsCallerError]:
// validation failed, rate limited, no handler, a cancelled context, a
// handler's error marked [Permanent] such as "no such order"), which says
// nothing about the service's health; and [slog.LevelError] for every
// other failure, a fault of the handler or of what it depends on.
type LoggingConfig struct {
	// Logger receives one record per dispatch. Nil discards everything.
	Logger *slog.Logger `yaml:"-" json:"-"`
	// Level is the level of successful dispatches; the zero value is
	// [slog.LevelInfo].
	Level slog.Level `yaml:"level" json:"level"`
	// CallerErrorLevel is the level of dispatches refused or failed by
	// the caller's doing. If it is nil, [slog.LevelWarn] is used.
	CallerErrorLevel *slog.Level `yaml:"caller_error_level" json:"caller_error_level"`
}

// The record's message and attribute keys.
const (
	logMessage    = "cqrs dispatch"
	keyKind       = "kind"
	keyMessage    = "message"
	keyDuration   = "duration"
	keyOutcome    = "outcome"
	keyError      = "error"
	keySubscriber = "subscriber" // an event's subscriber, given to cqrs.Subscribe
	keyItems      = "items"      // the items a streaming query yielded
	keyIdentity   = "identity"   // the message's cqrs.Identity, a group: id, correlation_id, causation_id
	outcomeOK     = "ok"
	outcomeFailed = "error"
)

// logging is the logic that Logging and LoggingFor share.
type logging struct {
	logger *slog.Logger
	level  slog.Level
	caller slog.Level // of caller errors
	max    slog.Level // the highest of the three levels
}

func newLogging(cfg LoggingConfig) *logging {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	caller := slog.LevelWarn
	if cfg.CallerErrorLevel != nil {
		caller = *cfg.CallerErrorLevel
	}
	return &logging{logger: logger, level: cfg.Level, caller: caller, max: max(cfg.Level, caller, slog.LevelError)}
}

// Enabled reports whether a dispatch with ctx may be logged. It lets the
// bus skip the interceptor chain when nothing would be. Like slog's own
// handlers, it takes a logger's levels to be a threshold: what is enabled
// at one level is enabled at every higher one.
func (l *logging) Enabled(ctx context.Context) bool {
	return l.logger.Enabled(ctx, l.max)
}

// start returns the time a dispatch starts, and false when nothing about
// it can be logged.
func (l *logging) start(ctx context.Context) (time.Duration, bool) {
	if !l.Enabled(ctx) {
		return 0, false
	}
	return stats.Now(), true
}

// finish logs a dispatch that began at start, with what only some
// dispatches have: an event subscriber's name, and the number of items of
// a streaming query, which the interceptor sees as one call (c) from its
// start to its last item. c is nil for LoggingFor's handler.
func (l *logging) finish(ctx context.Context, spec *cqrs.Spec, c cqrs.Call, start time.Duration, err error) {
	took := stats.Now() - start
	var buf [8]slog.Attr // on the stack: LogAttrs copies the attributes
	attrs := append(buf[:0], slog.String(keyKind, spec.Kind.String()), slog.String(keyMessage, spec.Name))
	attrs = appendIdentity(ctx, attrs)
	if spec.Subscriber != "" {
		attrs = append(attrs, slog.String(keySubscriber, spec.Subscriber))
	}
	if spec.Stream && c != nil {
		if sum, ok := c.Result().(cqrs.StreamSummary); ok {
			attrs = append(attrs, slog.Int(keyItems, sum.Items))
		}
	}
	attrs = append(attrs, slog.Duration(keyDuration, took))
	level := l.level
	if err == nil {
		attrs = append(attrs, slog.String(keyOutcome, outcomeOK))
	} else {
		level = l.errorLevel(err)
		attrs = append(attrs, slog.String(keyOutcome, outcomeFailed), slog.Any(keyError, err))
	}
	l.logger.LogAttrs(ctx, level, logMessage, attrs...)
}

// errorLevel returns the level of a dispatch that failed with err.
func (l *logging) errorLevel(err error) slog.Level {
	if IsCallerError(err) {
		return l.caller
	}
	return slog.LevelError
}

// appendIdentity appends the identity of the message ctx's dispatch
// carries, if it has one, as the group "identity": its id,
// correlation_id and causation_id. A dispatch with none costs a lookup in
// ctx and adds nothing.
func appendIdentity(ctx context.Context, attrs []slog.Attr) []slog.Attr {
	if id, ok := cqrs.IdentityOf(ctx); ok {
		attrs = append(attrs, slog.Attr{Key: keyIdentity, Value: id.LogValue()})
	}
	return attrs
}

// Intercept makes logging a [cqrs.Interceptor].
func (l *logging) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	return func(ctx context.Context, c cqrs.Call) error {
		start, on := l.start(ctx)
		err := next(ctx, c)
		if on {
			l.finish(ctx, &spec, c, start, err)
		}
		return err
	}
}

// Logging returns an interceptor that logs every dispatch: its kind,
// message name, duration and outcome, and the error of a failed one, at
// the level [LoggingConfig] gives its outcome. An event's subscriber is
// logged with its name ("subscriber"), and a streaming query once, when
// the stream ends, with the number of items it yielded ("items"). It
// logs with the ...Context methods of [slog], so a handler that adds trace
// ids to the context finds them in the record.
//
// A message that has an identity ([cqrs.IdentityOf]: one received by a
// transport, sent from a handler, given one by its caller with
// [cqrs.ContextWithIdentity], or dispatched on a bus made with
// [cqrs.WithIdentity]) is logged with it, after its name, as the group
// "identity" of its non-empty fields: "id", "correlation_id" and
// "causation_id" (in JSON, "identity":{"id":…}; in text,
// identity.id=…). A dispatch with no identity pays one context lookup,
// and only when it is logged.
//
// When the logger's level is above cfg.Level, cfg.CallerErrorLevel and
// [slog.LevelError] for a dispatch, logging costs one level check and builds nothing; if it
// is the bus's only interceptor, or all of them are off likewise, the bus
// skips the chain and its allocation too (see [cqrs.Interceptor]). For a
// single handler with no allocation at all, use [LoggingFor]. The
// interceptor is safe for concurrent use if the logger's handler is, as
// slog's own are.
func Logging(cfg LoggingConfig) cqrs.Interceptor {
	return newLogging(cfg)
}

// LoggingFor is [Logging] as typed middleware for the handler of C on bus
// b, for use with [cqrs.Register]. It never allocates unless it logs.
func LoggingFor[C, R any](b cqrs.Bus, cfg LoggingConfig) cqrs.Middleware[C, R] {
	l := newLogging(cfg)
	spec := cqrs.SpecFor[C, R](b)
	return func(next cqrs.Handler[C, R]) cqrs.Handler[C, R] {
		return &loggedHandler[C, R]{logging: l, spec: spec, next: next}
	}
}

// loggedHandler is LoggingFor's handler: a type of its own rather than a
// HandlerFunc, which would cost a second call per dispatch.
type loggedHandler[C, R any] struct {
	*logging
	spec cqrs.Spec
	next cqrs.Handler[C, R]
}

func (h *loggedHandler[C, R]) Handle(ctx context.Context, msg C) (R, error) {
	if !h.Enabled(ctx) {
		return h.next.Handle(ctx, msg)
	}
	start := stats.Now()
	res, err := h.next.Handle(ctx, msg)
	h.finish(ctx, &h.spec, nil, start, err)
	return res, err
}
