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
// Such errors say nothing about the handler's health, so by default they
// neither trip a circuit breaker ([NewBreaker]) nor are retried ([Retry]).
func IsCallerError(err error) bool {
	for _, target := range callerErrors {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

var callerErrors = []error{
	cqrs.ErrCommandValidation, cqrs.ErrHandlerNotFound, cqrs.ErrNilMessage, cqrs.ErrResultType,
	cqrs.ErrInvalidMessageType, cqrs.ErrNilBus, cqrs.ErrNilContext, cqrs.ErrRateLimited,
	context.Canceled,
}
