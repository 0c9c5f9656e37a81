package cqrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Errors returned by the buses. Each is wrapped with the message's kind and
// name, so compare with [errors.Is], never with ==.
var (
	// ErrHandlerNotFound: no handler is registered for the message's type.
	// The error text names the type and the bus, as in "cqrs: handler not
	// found for orders.PlaceOrder on the query bus".
	ErrHandlerNotFound = errors.New("cqrs: handler not found")

	// ErrHandlerExists: a handler is already registered for the message's
	// type, or another type on the same bus already uses the message's name.
	ErrHandlerExists = errors.New("cqrs: handler already registered")

	// ErrResultType: the handler registered for the message returns a type
	// that cannot be assigned to the result type asked for. The handler is
	// not called. The error text names both types.
	ErrResultType = errors.New("cqrs: wrong result type")

	// ErrNilMessage: the message is a nil interface or a nil pointer (also
	// inside an interface). The handler is not called.
	ErrNilMessage = errors.New("cqrs: nil message")

	// ErrHandlerPanic: a handler or middleware panicked. The bus recovered
	// it; use [errors.As] with a [*PanicError] for the value and the stack.
	ErrHandlerPanic = errors.New("cqrs: handler panicked")

	// ErrNilHandler: a nil handler, middleware or interceptor was given to
	// [Register] or to a bus option, or a middleware returned nil.
	ErrNilHandler = errors.New("cqrs: nil handler")

	// ErrInvalidMessageType: [Register] was asked to register an interface
	// type as a message type. Dispatch looks handlers up by the message's
	// dynamic type, which is never an interface, so such a handler could
	// never be reached.
	ErrInvalidMessageType = errors.New("cqrs: invalid message type")

	// ErrNilBus: a nil [Bus] was given.
	ErrNilBus = errors.New("cqrs: nil bus")

	// ErrNilContext: a nil [context.Context] was given to a dispatch.
	ErrNilContext = errors.New("cqrs: nil context")
)

// Errors returned by the decorators of package middleware. Each is wrapped
// with the message's kind and name, and with the error of the library that
// detected it where there is one, so both match with [errors.Is].
var (
	// ErrValidation: the message, a command or a query, failed validation;
	// the handler was not called. The validation middleware's error is a
	// [*ValidationError], which also carries the failing fields.
	ErrValidation = errors.New("cqrs: validation failed")

	// ErrExecutionTimeout: the dispatch did not finish within the timeout
	// the timeout middleware set. The error also matches
	// [context.DeadlineExceeded].
	ErrExecutionTimeout = errors.New("cqrs: execution timed out")

	// ErrCircuitOpen: the message type's circuit breaker is open, or
	// half-open with all its probes in flight; the handler was not called.
	ErrCircuitOpen = errors.New("cqrs: circuit open")

	// ErrRateLimited: the message type's rate limit allowed no dispatch
	// now, or not before the context's deadline; the handler was not
	// called.
	ErrRateLimited = errors.New("cqrs: rate limited")
)

// ErrCommandValidation is [ErrValidation], the same error value under the
// name it first had, so [errors.Is] matches either against the other.
//
// Deprecated: use [ErrValidation]: validation fails for queries too.
var ErrCommandValidation = ErrValidation

// FieldError is one field of a message that failed validation, in a
// [ValidationError]. It is a plain value.
type FieldError struct {
	// Field is the field's path from the message, such as
	// "CreateUser.Address.City".
	Field string
	// Tag is the failed rule, such as "required" or "email", and Param
	// its parameter, such as "3" for "min=3".
	Tag, Param string
	// Value is the field's value.
	Value any
}

// ValidationError is the error of a message that failed validation, as the
// validation middleware (package middleware) reports it. It wraps
// [ErrValidation] and Err, the error that found the fault (the validator's
// ValidationErrors for struct tags, or the error of the message's own
// Validate method), so [errors.Is] finds both.
//
// A ValidationError is a plain value: it is not changed after it is
// returned, so callers may read it from any goroutine.
type ValidationError struct {
	// Message names the message, such as "command users.CreateUser".
	Message string
	// Fields lists the fields that failed their struct tags; it is empty
	// when the message's Validate method failed.
	Fields []FieldError
	// Err is the validator's or the Validate method's error.
	Err error
}

// Error lists the failed fields, or else Err.
func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %s", ErrValidation, e.Message)
	if len(e.Fields) == 0 {
		fmt.Fprintf(&b, ": %v", e.Err)
		return b.String()
	}
	for i, f := range e.Fields {
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%s fails %q", sep, f.Field, f.Tag)
		if f.Param != "" {
			fmt.Fprintf(&b, " (%s)", f.Param)
		}
	}
	return b.String()
}

// Unwrap returns [ErrValidation] and Err.
func (e *ValidationError) Unwrap() []error {
	return []error{ErrValidation, e.Err}
}

// PanicError is the error a dispatch returns when a handler or a middleware
// panicked. It wraps [ErrHandlerPanic] and, when the panic value is itself an
// error, that error too, so both match with [errors.Is].
//
// A PanicError is a plain value that the bus does not change after making
// it, so callers may read it from any goroutine. Its zero value reports a
// panic with a nil value in no message.
type PanicError struct {
	// Message names the message whose handler panicked, such as
	// "command orders.PlaceOrder".
	Message string
	// Value is the value passed to panic.
	Value any
	// Stack is the panicking goroutine's stack, as formatted by
	// [runtime/debug.Stack].
	Stack []byte
}

// Error reports the message and the panic value; the stack is left out.
func (e *PanicError) Error() string {
	return fmt.Sprintf("%v: %s: %v", ErrHandlerPanic, e.Message, e.Value)
}

// Unwrap returns [ErrHandlerPanic] and, when the panic value is an error, that
// error.
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrHandlerPanic, err}
	}
	return []error{ErrHandlerPanic}
}

// LogValue makes e log with [log/slog] as a group of its message, its
// panic value and its stack, so that every record of a panic carries the
// same attributes: log it with slog.Any("panic", e), or as any error.
func (e *PanicError) LogValue() slog.Value {
	if e == nil {
		return slog.AnyValue(nil)
	}
	return slog.GroupValue(
		slog.String("message", e.Message),
		slog.Any("value", e.Value),
		slog.String("stack", string(e.Stack)))
}

// errorCodes are the codes of ErrorCode, in the order they are tested: an
// error that wraps several sentinels gets the first one's code.
var errorCodes = []struct {
	code string
	err  error
}{
	{"validation", ErrValidation},
	{"not_found", ErrHandlerNotFound},
	{"nil_message", ErrNilMessage},
	{"result_type", ErrResultType},
	{"panic", ErrHandlerPanic},
	{"timeout", ErrExecutionTimeout},
	{"circuit_open", ErrCircuitOpen},
	{"rate_limited", ErrRateLimited},
	{"canceled", context.Canceled},
	{"deadline_exceeded", context.DeadlineExceeded},
}

// ErrorCode returns a short, stable name for the kind of failure err is,
// for labels, attributes and wire formats that must stay low-cardinality:
// "validation", "not_found", "nil_message", "result_type", "panic",
// "timeout", "circuit_open", "rate_limited", "canceled" or
// "deadline_exceeded", after the sentinel err wraps, or "" when it wraps
// none of them. [ErrorOfCode] maps a code back.
func ErrorCode(err error) string {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

// ErrorCodes returns every code [ErrorCode] may return but "", in a new
// slice.
func ErrorCodes() []string {
	codes := make([]string, len(errorCodes))
	for i, c := range errorCodes {
		codes[i] = c.code
	}
	return codes
}

// ErrorOfCode returns the sentinel error whose code [ErrorCode] returns, or
// nil for a code it does not know.
func ErrorOfCode(code string) error {
	for _, c := range errorCodes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}
