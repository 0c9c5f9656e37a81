package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Errors of the transport itself, each wrapped with the message's kind and
// name.
var (
	// ErrNoResponders: no process serves the message type.
	ErrNoResponders = errors.New("cqrs/nats: no responders")
	// ErrBadReply: the reply could not be decoded.
	ErrBadReply = errors.New("cqrs/nats: undecodable reply")
	// ErrBadRequest: the serving side could not decode the request.
	ErrBadRequest = errors.New("cqrs/nats: undecodable request")
	// ErrPayloadTooLarge: an encoded message or result is larger than the
	// limit WithMaxPayload sets, on either side.
	ErrPayloadTooLarge = errors.New("cqrs/nats: payload too large")
	// ErrTransport: NATS failed to carry the request, for example while
	// the connection is down. The error also wraps NATS's own.
	ErrTransport = errors.New("cqrs/nats: transport failed")
)

// transportErrors are the codes of this package's own errors that a
// serving process sends; cqrs.ErrorCode names the rest.
var transportErrors = []struct {
	code   string
	target error
}{
	{"bad_request", ErrBadRequest},
	{"payload_too_large", ErrPayloadTooLarge},
}

// otherCode is the code of an error with no identity to keep.
const otherCode = "error"

// codeOf returns the wire code of err.
func codeOf(err error) string {
	for _, t := range transportErrors {
		if errors.Is(err, t.target) {
			return t.code
		}
	}
	if code := cqrs.ErrorCode(err); code != "" {
		return code
	}
	return otherCode
}

// errorOf returns the sentinel a wire code names, or nil.
func errorOf(code string) error {
	for _, t := range transportErrors {
		if t.code == code {
			return t.target
		}
	}
	return cqrs.ErrorOfCode(code)
}

// fieldJSON is a validation failure's field on the wire.
type fieldJSON struct {
	Field string `json:"field"`
	Tag   string `json:"tag"`
	Param string `json:"param,omitempty"`
	Value any    `json:"value"`
}

// encodeError returns the code of err and, for a validation failure, its
// fields as JSON.
func encodeError(err error) (code string, data []byte) {
	code = codeOf(err)
	var verr *middleware.ValidationError
	if errors.As(err, &verr) && len(verr.Fields) > 0 {
		fields := make([]fieldJSON, len(verr.Fields))
		for i, f := range verr.Fields {
			fields[i] = fieldJSON{Field: f.Field, Tag: f.Tag, Param: f.Param, Value: f.Value}
		}
		data, _ = json.Marshal(fields) // values that do not encode are left out
	}
	return code, data
}

// RemoteError is an error returned by a handler in another process. It
// has the handler's message, and wraps the sentinel its code names (and,
// for a validation failure, a *middleware.ValidationError with the
// fields), so that errors.Is and errors.As work as they would in process.
type RemoteError struct {
	// Code is the error's class on the wire, such as "validation" or
	// "error" for one with no identity to keep.
	Code string
	// Message is the remote error's text.
	Message string

	wrapped []error
}

// Error returns the remote error's text.
func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the sentinel of the error's code, if any, and the
// validation error, if any.
func (e *RemoteError) Unwrap() []error { return e.wrapped }

// decodeError rebuilds the error a serving process sent.
func decodeError(spec cqrs.Spec, code, message string, data []byte) error {
	e := &RemoteError{Code: code, Message: message}
	if target := errorOf(code); target != nil {
		e.wrapped = append(e.wrapped, target)
	}
	if code == "validation" {
		var fields []fieldJSON
		if len(data) > 0 && json.Unmarshal(data, &fields) == nil {
			verr := &middleware.ValidationError{Message: spec.String(), Err: cqrs.ErrCommandValidation}
			for _, f := range fields {
				verr.Fields = append(verr.Fields, middleware.FieldError{Field: f.Field, Tag: f.Tag, Param: f.Param, Value: f.Value})
			}
			e.wrapped = append(e.wrapped, verr)
		}
	}
	if code == "timeout" {
		e.wrapped = append(e.wrapped, context.DeadlineExceeded)
	}
	return e
}

func tooLarge(spec cqrs.Spec, what string, n, limit int) error {
	return fmt.Errorf("%w: %s: %s of %d bytes, over the limit of %d", ErrPayloadTooLarge, spec, what, n, limit)
}
