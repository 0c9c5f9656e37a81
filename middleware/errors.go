package middleware

import (
	"context"
	"errors"

	"github.com/typedcqrs/dispatch/cqrs"
)

// IsCallerError reports whether err is the caller's doing rather than a
// fault of the handler or what it depends on: a message that failed
// validation, has no handler, is nil or asks for the wrong result type, a
// dispatch that was rate limited, or a context the caller cancelled.
//
// A handler marks its own errors of that kind, such as "no such order",
// with [Permanent].
//
// Such errors say nothing about the handler's health, so by default they
// neither trip a circuit breaker ([NewBreaker]) nor are retried ([Retry]).
func IsCallerError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errPermanent) {
		return true
	}
	for _, target := range callerErrors {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

var callerErrors = []error{
	cqrs.ErrValidation, cqrs.ErrHandlerNotFound, cqrs.ErrNilMessage, cqrs.ErrResultType,
	cqrs.ErrInvalidMessageType, cqrs.ErrNilBus, cqrs.ErrNilContext, cqrs.ErrRateLimited,
	context.Canceled,
}

// Permanent marks err, a handler's error, as the request's fault rather
// than a failure of the handler or what it depends on: "no such order",
// "duplicate key". [Retry] does not retry it and a [Breaker] does not count
// it. The error returned wraps err, which [errors.Is] and [errors.As] still
// find, and has its message. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

// errPermanent is what errors.Is finds in a Permanent error: a check that,
// unlike errors.As, allocates nothing.
var errPermanent = errors.New("middleware: permanent")

func (e *permanentError) Error() string        { return e.err.Error() }
func (e *permanentError) Unwrap() error        { return e.err }
func (e *permanentError) Is(target error) bool { return target == errPermanent }

// ValidationError is [cqrs.ValidationError], the error of a message that
// failed [Validation].
//
// Deprecated: use [cqrs.ValidationError], which lives next to its
// sentinel, [cqrs.ErrValidation].
type ValidationError = cqrs.ValidationError

// FieldError is [cqrs.FieldError], one field in a [cqrs.ValidationError].
//
// Deprecated: use [cqrs.FieldError].
type FieldError = cqrs.FieldError
