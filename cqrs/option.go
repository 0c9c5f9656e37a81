package cqrs

import "log/slog"

// Option configures a bus made by [NewCommandBus] or [NewQueryBus]. It is
// applied once, when the bus is made, so one Option may be shared by any
// number of buses and goroutines. A nil Option is ignored.
type Option interface {
	apply(*config)
}

// config is what the options set; its zero value is the default bus.
type config struct {
	interceptors []Interceptor
	metrics      bool
	identity     bool
	logger       *slog.Logger
	events       eventConfig
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithInterceptors adds bus-wide middleware: every handler registered on the
// bus afterwards runs inside these interceptors, the first listed outermost,
// and outside the handler's own [Middleware]. A nil interceptor makes
// [Register] fail.
//
// Repeated WithInterceptors options append.
func WithInterceptors(ics ...Interceptor) Option {
	return optionFunc(func(c *config) { c.interceptors = append(c.interceptors, ics...) })
}

// WithMetrics turns on the bus's own metrics: per message type, the count of
// calls and errors and the latency distribution, read with the bus's
// Metrics method. Metrics are off by default and then cost nothing; on, they
// cost two clock readings and a few uncontended atomic additions per
// dispatch, and no allocation.
func WithMetrics() Option {
	return optionFunc(func(c *config) { c.metrics = true })
}

// WithLogger sets the logger the bus reports to: handler panics at
// [slog.LevelError] with their stack, and registrations at
// [slog.LevelDebug]. The default discards everything; a nil logger restores
// that default. A record whose handler panics is lost; the panic does not
// cross [Register] or a dispatch.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = l })
}

// WithIdentity gives every message dispatched on the bus an [Identity],
// even one dispatched from a context that carries none, so that every
// handler finds one with [IdentityOf] and a conversation starts at the
// first message. Without it, a message gets an identity only when the
// context it is dispatched from carries one (inside a handler, from a
// transport, or set by [ContextWithIdentity]), and a dispatch from any
// other context costs nothing more. With it, such a dispatch costs one
// allocation: the context that carries the identity. The ID itself, a
// clock reading and random bits, is made only when something reads it
// (the handler, a middleware, a message the handler sends).
func WithIdentity() Option {
	return optionFunc(func(c *config) { c.identity = true })
}
