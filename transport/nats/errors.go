package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	natsgo "github.com/nats-io/nats.go"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Errors of the transport itself, each wrapped with the message's kind and
// name.
var (
	// ErrNoResponders: no process serves the message type. NATS tells at
	// once, so the call fails without waiting for its deadline.
	ErrNoResponders = errors.New("nats: no responders")
	// ErrBadReply: the reply could not be decoded.
	ErrBadReply = errors.New("nats: undecodable reply")
	// ErrBadRequest: the serving side could not decode the request, or it
	// was sent for another message type. The handler did not run. (A
	// handler's own error that wraps ErrBadRequest, from a call it made,
	// reaches its caller as a [*RemoteError] that does not wrap it.)
	ErrBadRequest = errors.New("nats: undecodable request")
	// ErrPayloadTooLarge: an encoded message with its envelope, or an
	// encoded result, is larger than the limit [WithMaxPayload] sets, or
	// than the NATS server's own (max_payload, which counts headers too).
	// The calling side checks a message before sending it; the serving
	// side checks each request it receives, and each result before
	// replying, in which case the handler ran.
	ErrPayloadTooLarge = errors.New("nats: payload too large")
	// ErrTransport: NATS failed to carry the request, for example while
	// the connection is down. The error also wraps NATS's own, or the
	// context's error when the deadline passed while the connection was
	// down.
	ErrTransport = errors.New("nats: transport failed")
	// ErrInvalidSubject: [Serve] or [Forward] was given a message type, a
	// prefix or a queue group that cannot make a valid, distinct NATS
	// subject: see [Subject].
	ErrInvalidSubject = errors.New("nats: invalid subject")
	// ErrUnexportedFields: with the [JSON] codec, a message or result type
	// has unexported fields, which JSON would silently leave out: see
	// [Forward].
	ErrUnexportedFields = errors.New("nats: type has unexported fields")
	// ErrUnavailable: the serving process refused the request without
	// running its handler, because its queue was full ([WithMaxPending])
	// or it was stopping. Another process may take the request: it is
	// safe to retry. Only that refusal carries it: a handler that ran and
	// returned an error wrapping ErrUnavailable, from a call of its own
	// to another service, gives its caller a [*RemoteError] with its own
	// code ("error" unless [WithErrors] or package cqrs names one), which
	// does not wrap ErrUnavailable.
	ErrUnavailable = errors.New("nats: serving process unavailable")
	// ErrInvalidErrorCode: [WithErrors] was given an empty, malformed,
	// reserved or repeated code, or a nil error.
	ErrInvalidErrorCode = errors.New("nats: invalid error code")
)

// transportErrors are the codes of this package's own errors that a
// serving process sends; cqrs.ErrorCode names the rest.
var transportErrors = []ErrorCode{
	{"bad_request", ErrBadRequest},
	{"payload_too_large", ErrPayloadTooLarge},
	{"unavailable", ErrUnavailable},
}

// otherCode is the code of an error with no identity to keep.
const otherCode = "error"

// ErrorCode names one of a service's own sentinel errors on the wire, so
// that [errors.Is] finds it on the calling side. See [WithErrors].
type ErrorCode struct {
	// Code is the error's name on the wire, such as "orders.not_found":
	// 1 to 64 bytes of lower-case letters, digits, '.', '_' and '-'. The
	// codes of this package and of [cqrs.ErrorCode] are reserved.
	Code string
	// Err is the sentinel, such as orders.ErrNotFound.
	Err error
}

// WithErrors registers a service's own sentinel errors, each with its
// code. A serving process sends the code of the first one a handler's
// error wraps (errors.Is), before the codes of package cqrs; a calling
// process that registered the same table returns an error that wraps the
// same sentinel. Keep the table in the package that declares the messages
// and the errors, so that both sides use the very same one:
//
//	var Errors = []cqrsnats.ErrorCode{{Code: "orders.not_found", Err: ErrNotFound}}
//	cqrsnats.Serve(nc, bus, cqrsnats.WithErrors(orders.Errors...))
//	cqrsnats.NewClient(nc, cqrsnats.WithErrors(orders.Errors...))
//
// A code the calling side does not know still arrives, as a
// [*RemoteError] with the code and the message, whose text says that
// errors.Is cannot find its sentinel without the same table here. A
// [Service] gives both sides one table, in its Errors. [Serve] and [Forward]
// return an error wrapping [ErrInvalidErrorCode] for an empty, malformed,
// reserved or repeated code, or a nil error. Options given later add to
// the table.
func WithErrors(codes ...ErrorCode) Option {
	return optionFunc(func(c *config) {
		for _, ec := range codes {
			if err := checkErrorCode(c.errors, ec); err != nil {
				c.fail(err)
				continue
			}
			c.errors = append(c.errors, ec)
		}
	})
}

// checkErrorCode returns why ec cannot join table, or nil.
func checkErrorCode(table []ErrorCode, ec ErrorCode) error {
	if ec.Err == nil {
		return fmt.Errorf("%w: %q has a nil error", ErrInvalidErrorCode, ec.Code)
	}
	if ec.Code == "" || len(ec.Code) > 64 || strings.TrimLeft(ec.Code, "abcdefghijklmnopqrstuvwxyz0123456789._-") != "" {
		return fmt.Errorf("%w: %q must be 1 to 64 lower-case letters, digits, '.', '_' or '-'", ErrInvalidErrorCode, ec.Code)
	}
	if ec.Code == otherCode || errorOf(nil, ec.Code) != nil {
		return fmt.Errorf("%w: %q is reserved", ErrInvalidErrorCode, ec.Code)
	}
	for _, t := range table {
		if t.Code == ec.Code {
			return fmt.Errorf("%w: %q is registered twice", ErrInvalidErrorCode, ec.Code)
		}
	}
	return nil
}

// codeOf returns the wire code of err, an error of this package's own:
// the code of the first transport error it wraps, else handlerCode's.
func codeOf(table []ErrorCode, err error) string {
	for _, t := range transportErrors {
		if errors.Is(err, t.Err) {
			return t.Code
		}
	}
	return handlerCode(table, err)
}

// handlerCode returns the wire code of an error that a handler (or the
// serving bus around it) returned: the code of the first sentinel of
// table it wraps, else cqrs's code, else "error"; never a transport
// error's code. Those codes say what the serving side itself did with
// the request (bad_request and unavailable: the handler did not run), so
// a handler's error that wraps one, from a call of its own to another
// service, must not carry it: its caller's request did run.
func handlerCode(table []ErrorCode, err error) string {
	for _, t := range table {
		if errors.Is(err, t.Err) {
			return t.Code
		}
	}
	if code := cqrs.ErrorCode(err); code != "" {
		return code
	}
	return otherCode
}

// errorOf returns the sentinel a wire code names, or nil.
func errorOf(table []ErrorCode, code string) error {
	for _, t := range transportErrors {
		if t.Code == code {
			return t.Err
		}
	}
	for _, t := range table {
		if t.Code == code {
			return t.Err
		}
	}
	return cqrs.ErrorOfCode(code)
}

// The bounds of an error reply, so that it always fits in one NATS
// message and always reaches the caller: the message is cut to
// maxErrorMessage bytes (maxHeaderMessage in the header NATS tooling
// shows), and at most maxFields validation failures travel, each value
// cut to maxFieldValue bytes once encoded.
const (
	maxErrorMessage  = 1024
	maxHeaderMessage = 256
	maxFields        = 32
	maxFieldText     = 128
	maxFieldValue    = 256
)

// errorReply is the body of an error reply.
type errorReply struct {
	// Message is the error's text, cut to maxErrorMessage.
	Message string `json:"message"`
	// Caller is true when the error is the caller's doing:
	// middleware.IsCallerError on the serving side.
	Caller bool `json:"caller,omitempty"`
	// Fields are a validation failure's fields.
	Fields []fieldJSON `json:"fields,omitempty"`
}

// fieldJSON is a validation failure's field on the wire.
type fieldJSON struct {
	Field string          `json:"field"`
	Tag   string          `json:"tag"`
	Param string          `json:"param,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
}

// encodeReply returns the code of err, an error of this package's own
// (codeOf), the text for the error header and the body of the reply.
func encodeReply(table []ErrorCode, spec cqrs.Spec, err error) (code, header string, body []byte) {
	code = codeOf(table, err)
	reply := replyOf(code, spec, err)
	body, _ = json.Marshal(reply) // strings and raw JSON from json.Marshal: it cannot fail
	return code, headerSafe(reply.Message), body
}

// replyOf returns the body of the error reply to err, whose code is
// code. A panic's value and stack never leave the process: its message
// is the panic's code and the message's name alone.
func replyOf(code string, spec cqrs.Spec, err error) errorReply {
	msg := err.Error()
	if code == "panic" {
		msg = fmt.Sprintf("%v: %s", cqrs.ErrHandlerPanic, spec)
	}
	reply := errorReply{
		Message: truncate(msg, maxErrorMessage),
		// A remote cancellation is the serving process's doing (it was
		// stopping): the caller's own cancellation ends its wait locally.
		Caller: middleware.IsCallerError(err) && !errors.Is(err, context.Canceled),
	}
	var verr *cqrs.ValidationError
	if errors.As(err, &verr) {
		for _, f := range verr.Fields[:min(len(verr.Fields), maxFields)] {
			value, _ := json.Marshal(f.Value)
			if s, ok := f.Value.(string); ok && len(value) > maxFieldValue {
				value, _ = json.Marshal(truncate(s, maxFieldValue-16))
			}
			if len(value) > maxFieldValue {
				value = nil // too large to echo, and not text to cut
			}
			reply.Fields = append(reply.Fields, fieldJSON{
				Field: truncate(f.Field, maxFieldText), Tag: truncate(f.Tag, maxFieldText),
				Param: truncate(f.Param, maxFieldText), Value: value,
			})
		}
	}
	return reply
}

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut
// with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// headerSafe returns msg fit for a NATS header value: one line, cut to
// maxHeaderMessage bytes.
func headerSafe(msg string) string { return oneLine(msg, maxHeaderMessage) }

// oneLine returns msg on one line, its control characters made spaces,
// cut to n bytes.
func oneLine(msg string, n int) string {
	msg = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
	return truncate(msg, n)
}

// RemoteError is an error returned by a handler in another process. It
// has the error's code and text, and wraps the sentinel its code names
// (and, for a validation failure, a *cqrs.ValidationError with the
// fields), so that errors.Is and errors.As work as they would in process.
// When the serving side judged the error the caller's doing
// (middleware.IsCallerError, which [middleware.Permanent] errors satisfy),
// it is one on the calling side too, so that retries and circuit breakers
// there leave it alone.
type RemoteError struct {
	// Code is the error's class on the wire, such as "validation", a code
	// registered with [WithErrors], or "error" for one with no identity
	// to keep.
	Code string
	// Name is the message the error is about, such as
	// "command orders.PlaceOrder".
	Name string
	// Message is the remote error's text, at most 1 KiB. For a panic it is
	// the code and the message's name alone: the panic's value and stack
	// stay in the serving process.
	Message string
	// Caller reports whether the serving side judged the error the
	// caller's doing.
	Caller bool

	wrapped []error
	// unknown: the code names a sentinel on the serving side, such as
	// one of its WithErrors table, that this side does not know.
	unknown bool
}

// Error returns the remote error's text. When its code is one the
// serving side gave a sentinel of its own and this side does not know,
// so that errors.Is cannot find that sentinel here, the text says so and
// how to mend it: register the same code on this side ([WithErrors], or
// the Errors of a [Service]).
func (e *RemoteError) Error() string {
	if e.unknown {
		return e.Message + " (error code " + strconv.Quote(e.Code) + " of the serving side is unknown here, so errors.Is cannot match its sentinel: give this side the same codes, with WithErrors or a Service's Errors)"
	}
	return e.Message
}

// Unwrap returns the sentinel of the error's code, if any, the validation
// error, if any, and, for a caller's error, a [middleware.Permanent] mark.
func (e *RemoteError) Unwrap() []error { return e.wrapped }

// errRemoteCaller is what a RemoteError of the caller's doing wraps, as a
// middleware.Permanent error, so that middleware.IsCallerError holds.
var errRemoteCaller = errors.New("nats: the serving side judged this error the caller's doing")

// decodeError rebuilds the error a serving process sent: one of this
// version, or of v0.1.0, whose text is the header's alone and whose body
// is a validation failure's fields, if any, as a JSON array.
func decodeError(table []ErrorCode, spec cqrs.Spec, code, header string, body []byte) error {
	e := &RemoteError{Code: code, Name: spec.String(), Message: truncate(header, maxErrorMessage)}
	var reply errorReply
	switch {
	case len(body) > 0 && body[0] == '[':
		_ = json.Unmarshal(body, &reply.Fields) // v0.1.0's; fields that do not decode are left out
	case len(body) > 0 && json.Unmarshal(body, &reply) == nil:
		e.Message, e.Caller = truncate(reply.Message, maxErrorMessage), reply.Caller
	}
	// A remote cancellation was the serving process's (it was stopping),
	// never this caller's, whose own ends its wait locally: it wraps no
	// context.Canceled, which would make it a caller's error here.
	target := errorOf(table, code)
	if target != nil && !errors.Is(target, context.Canceled) {
		e.wrapped = append(e.wrapped, target)
	}
	e.unknown = target == nil && code != otherCode
	if e.Caller {
		e.wrapped = append(e.wrapped, middleware.Permanent(errRemoteCaller))
	}
	if code == "validation" {
		verr := &cqrs.ValidationError{Message: spec.String(), Err: cqrs.ErrValidation}
		for _, f := range reply.Fields[:min(len(reply.Fields), maxFields)] {
			var value any
			if len(f.Value) > 0 {
				_ = json.Unmarshal(f.Value, &value)
			}
			verr.Fields = append(verr.Fields, cqrs.FieldError{Field: f.Field, Tag: f.Tag, Param: f.Param, Value: value})
		}
		e.wrapped = append(e.wrapped, verr)
	}
	if code == "timeout" {
		e.wrapped = append(e.wrapped, context.DeadlineExceeded)
	}
	return e
}

// notConnected returns an error wrapping ErrTransport that says nc is
// not connected to a NATS server, doing what needs one, or nil when it
// is.
func notConnected(nc *natsgo.Conn, doing string) error {
	if nc.IsConnected() {
		return nil
	}
	return fmt.Errorf("%w: %s: %s", ErrTransport, doing, unconnected(nc))
}

// setupError returns the error of setting up over nc, doing what, which
// NATS refused with err. When nc is not connected it says so, and in
// what state: NATS's own error ("nats: timeout", from a flush that no
// server answered) does not.
func setupError(nc *natsgo.Conn, doing string, err error) error {
	if nc.IsConnected() {
		return fmt.Errorf("%w: %s: %w", ErrTransport, doing, err)
	}
	return fmt.Errorf("%w: %s: %s: %w", ErrTransport, doing, unconnected(nc), err)
}

// unconnected says that nc is not connected, and what to do.
func unconnected(nc *natsgo.Conn) string {
	return fmt.Sprintf("not connected to a NATS server (the connection is %s): check the server's URL and that it runs, and set up once connected", nc.Status())
}

func tooLarge(spec cqrs.Spec, what string, n, limit int) error {
	return fmt.Errorf("%w: %s: %s of %d bytes, over the limit of %d", ErrPayloadTooLarge, spec, what, n, limit)
}

// badRequest returns the error for a request the serving side could not
// decode. It tells what JSON says, by the JSON names of the fields, and
// never the Go names of the types or fields, which the caller need not
// know; another codec's error is not echoed at all.
func badRequest(spec cqrs.Spec, err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var why string
	switch {
	case errors.As(err, &syntax):
		why = fmt.Sprintf("invalid JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		why = fmt.Sprintf("field %q cannot hold a JSON %s", truncate(typ.Field, maxFieldText), typ.Value)
	case errors.As(err, &typ):
		why = fmt.Sprintf("the message cannot be a JSON %s", typ.Value)
	case errors.Is(err, errEnvelope), errors.Is(err, errWrongMessage):
		why = err.Error()
	default:
		why = "the payload does not decode as this message"
	}
	return fmt.Errorf("%w: %s: %s", ErrBadRequest, spec, why)
}
