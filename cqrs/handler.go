package cqrs

import "context"

// Handler handles messages of type C and returns a result of type R.
//
// A handler registered with [Register] is called by every dispatch of a C on
// that bus, possibly from many goroutines at once, so it must be safe for
// concurrent use. It should honour ctx: middleware such as timeouts can only
// stop a handler that returns when ctx is done. A panic in Handle is
// recovered by the bus and returned as a [*PanicError].
//
// A nil Handler is refused by [Register] with [ErrNilHandler].
type Handler[C, R any] interface {
	Handle(ctx context.Context, msg C) (R, error)
}

// HandlerFunc adapts an ordinary function to the [Handler] interface. The
// function must be safe to call concurrently, as a Handler must. A nil
// HandlerFunc is refused by [Register] with [ErrNilHandler].
type HandlerFunc[C, R any] func(ctx context.Context, msg C) (R, error)

// Handle calls f(ctx, msg).
func (f HandlerFunc[C, R]) Handle(ctx context.Context, msg C) (R, error) {
	return f(ctx, msg)
}

// NoResult is the result type of a command that returns nothing but an
// error: register a Handler[C, NoResult]. It has no fields, so returning or
// boxing it costs nothing; its zero value is its only value.
type NoResult struct{}

// Kind says whether a bus carries commands, queries or events. It is a
// plain value. The zero Kind is none of them: it is what [SpecFor] gives
// for a nil bus, and its String is "unknown".
type Kind uint8

const (
	// KindCommand is the kind of a [CommandBus]: messages that change state.
	KindCommand Kind = iota + 1
	// KindQuery is the kind of a [QueryBus]: messages that read state.
	KindQuery
)

// String returns "command", "query" or "event".
func (k Kind) String() string {
	switch k {
	case KindCommand:
		return "command"
	case KindQuery:
		return "query"
	case KindEvent:
		return "event"
	default:
		return "unknown"
	}
}
