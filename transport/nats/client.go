package nats

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Client sends messages over a NATS connection. Make one with
// [NewClient]; the zero value is not usable. It is safe for concurrent
// use.
type Client struct {
	nc      *natsgo.Conn
	cfg     config
	traced  bool // the propagator writes some field
	replies replies
}

// NewClient returns a client that sends over nc. An invalid option makes
// [Forward] fail with its error.
func NewClient(nc *natsgo.Conn, opts ...Option) *Client {
	cfg := newConfig(opts)
	return &Client{nc: nc, cfg: cfg, traced: len(cfg.propagator.Fields()) > 0}
}

// Forward registers on bus, for message type C, a handler that sends each
// message over NATS to the processes that [Serve] C and returns their
// typed reply. Callers go on dispatching C on bus as before; mws run in
// this process, around the forwarding.
//
// Each call waits until the earlier of its context's deadline and the
// client's timeout ([WithTimeout]); that deadline travels with the
// request, so that the serving side neither starts the handler after it
// nor lets it run past it. A call fails at once, with [ErrNoResponders],
// when no process serves C, and with an error wrapping [ErrTransport]
// when the connection is down as it sends (rather than buffering a
// request that could run after the caller gave up). A deadline that
// passes while the connection is down gives an error wrapping both
// [ErrTransport] and [context.DeadlineExceeded]; one that passes while
// it is up, the context's error alone. Errors from the serving side
// arrive as a [*RemoteError]: see [WithErrors].
//
// While it speaks the wire of v0.1.0 ([WithLegacyWire], the default), a
// call that no process serves on C's subject, or that a v0.1.0 server
// refused, is asked once more in v0.1.0's form, so that callers reach
// v0.1.0 servers during a rolling upgrade; the refused request did not
// run.
//
// A message dispatched with an identity ([cqrs.IdentityOf]: from a
// context that carries one, or on a bus made with [cqrs.WithIdentity])
// carries that identity in the headers [HeaderID], [HeaderCorrelationID]
// and [HeaderCausationID], and its handler on the serving side reads the
// same one. A message without one sends no header for it: a NATS header
// costs each request a MIME parse at both ends.
//
// Forward fails with [ErrInvalidSubject] when C cannot have a subject of
// its own ([Subject]), and, with the [JSON] codec, with
// [ErrUnexportedFields] when C or R has an unexported field, which
// encoding/json would leave out: the value would arrive zeroed with no
// error. Such types are refused rather than documented, because the loss
// is silent and shows only on the other side; give them exported fields,
// or MarshalJSON and UnmarshalJSON. A declared streaming query fails with
// [cqrs.ErrInvalidMessageType] and an error that says to forward it with
// [ForwardDeclaredStream] or [ForwardStream].
//
// For a declared command or query, [ForwardDeclared] infers R.
func Forward[C, R any](bus cqrs.Bus, c *Client, mws ...cqrs.Middleware[C, R]) error {
	if c == nil || c.nc == nil {
		return fmt.Errorf("%w: forwarding over NATS without a client", cqrs.ErrNilHandler)
	}
	if c.cfg.err != nil {
		return c.cfg.err
	}
	spec := cqrs.SpecFor[C, R](bus)
	subject, err := subjectOf(c.cfg.prefix, "", spec)
	if err != nil {
		return err
	}
	if err := checkFields(c.cfg.codec, spec); err != nil {
		return err
	}
	id, _ := identity(spec.MessageType) // subjectOf checked it
	f := &forwarder[C, R]{c: c, spec: spec, subject: subject, id: id}
	if c.cfg.legacy {
		f.legacySubject, _ = legacySubject(c.cfg.prefix, spec)
	}
	return misforwarded[C, R](cqrs.Register(bus, cqrs.Handler[C, R](f), mws...))
}

// forwarder is the handler Forward registers.
type forwarder[C, R any] struct {
	c             *Client
	spec          cqrs.Spec
	subject       string
	legacySubject string // v0.1.0's subject, to fall back to; "" for none
	id            string // the type's identity, which the envelope carries
}

func (f *forwarder[C, R]) Handle(ctx context.Context, msg C) (R, error) {
	var zero R
	cfg := &f.c.cfg
	// The JSON codec encodes into a pooled buffer, after room for the
	// envelope; another codec's encoding is copied into one.
	var data []byte
	var err error
	var enc *encoder
	room := sealedSize(f.id, nil)
	if _, ok := cfg.codec.(JSON); ok {
		enc, data, err = encodeJSON(msg, room)
		if enc != nil {
			defer enc.release() // once the request is sent, and the legacy one made from data
		}
	} else {
		data, err = cfg.codec.Marshal(msg)
	}
	if err != nil {
		return zero, fmt.Errorf("nats: %s: encoding the message: %w", f.spec, err)
	}
	if len(data) > cfg.maxPayload {
		return zero, tooLarge(f.spec, "message", len(data), cfg.maxPayload)
	}
	// The call's deadline: the earlier of the context's and the timeout.
	// When the timeout is the earlier, the wait has a timer of its own
	// (timed), rather than a context.WithDeadline around ctx.
	now := time.Now()
	deadline := now.Add(cfg.timeout)
	timed := true
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, timed = d, false
	}
	if !f.c.nc.IsConnected() {
		return zero, fmt.Errorf("%w: %s: the connection is %s", ErrTransport, f.spec, f.c.nc.Status())
	}
	// The remaining time travels in the envelope, not in a header; a
	// header is sent only if the propagator writes trace context, or the
	// message has an identity.
	timeout := deadline.Sub(now)
	if timeout <= 0 {
		return zero, context.DeadlineExceeded
	}
	var sealed []byte
	if enc != nil {
		sealed = sealInPlace(enc.buf, room, timeout, deadline, f.id)
	} else {
		sealed = seal(make([]byte, 0, sealedSize(f.id, data)), timeout, deadline, f.id, data)
	}
	if len(sealed) > cfg.maxPayload {
		return zero, tooLarge(f.spec, "message with its envelope", len(sealed), cfg.maxPayload)
	}
	req := &natsgo.Msg{Subject: f.subject, Data: sealed}
	if f.c.traced {
		req.Header = natsgo.Header{}
		cfg.propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
		if len(req.Header) == 0 {
			req.Header = nil
		}
	}
	// Only a message dispatched with an identity carries one: a header
	// costs every request a MIME parse at both ends.
	if id, ok := cqrs.IdentityOf(ctx); ok {
		if req.Header == nil {
			req.Header = natsgo.Header{}
		}
		setIdentity(req.Header, id) // what sentIdentity returns when ctx has one
	}
	reply, err := f.c.replies.request(ctx, f.c.nc, req, deadline, timed)
	if f.legacySubject != "" {
		switch {
		case errors.Is(err, natsgo.ErrNoResponders) && f.legacySubject != f.subject,
			err == nil && f.legacySubject == f.subject && refusedByLegacyServer(reply):
			// Nobody took the request (or a v0.1.0 server refused it),
			// so it did not run: ask in v0.1.0's form (WithLegacyWire).
			req = f.legacyRequest(req, deadline, data)
			reply, err = f.c.replies.request(ctx, f.c.nc, req, deadline, timed)
		}
	}
	// The wait ended: by ctx, or at the client's timeout.
	ended := ctx.Err()
	if ended == nil && errors.Is(err, context.DeadlineExceeded) {
		ended = err
	}
	switch {
	case err == nil:
	case errors.Is(err, natsgo.ErrNoResponders) && req.Subject != f.subject:
		return zero, fmt.Errorf("%w: %s on %s, nor on %s, its subject in v0.1.0", ErrNoResponders, f.spec, f.subject, req.Subject)
	case errors.Is(err, natsgo.ErrNoResponders):
		return zero, fmt.Errorf("%w: %s on %s", ErrNoResponders, f.spec, f.subject)
	case errors.Is(err, natsgo.ErrMaxPayload):
		return zero, fmt.Errorf("%w: %s: message of %d bytes with its envelope, and its headers, over the NATS server's limit of %d: %w",
			ErrPayloadTooLarge, f.spec, len(req.Data), f.c.nc.MaxPayload(), err)
	case errors.Is(err, natsgo.ErrBadSubject):
		return zero, fmt.Errorf("%w: %s on %s: %w", ErrInvalidSubject, f.spec, req.Subject, err)
	case ended != nil && !f.c.nc.IsConnected():
		return zero, fmt.Errorf("%w: %s: the connection is %s: %w", ErrTransport, f.spec, f.c.nc.Status(), ended)
	case ended != nil:
		return zero, ended
	default:
		return zero, fmt.Errorf("%w: %s: %w", ErrTransport, f.spec, err)
	}
	if code := reply.Header.Get(headerErrorCode); code != "" {
		return zero, decodeError(cfg.errors, f.spec, code, reply.Header.Get(headerError), reply.Data)
	}
	var res R
	if err := cfg.codec.Unmarshal(reply.Data, &res); err != nil {
		return zero, fmt.Errorf("%w: %s: %w", ErrBadReply, f.spec, err)
	}
	return res, nil
}

// legacyRequest returns req in v0.1.0's form (see legacy.go): on the
// type's v0.1.0 subject, in v0.1.0's envelope, with req's headers and the
// type's identity in one more.
func (f *forwarder[C, R]) legacyRequest(req *natsgo.Msg, deadline time.Time, data []byte) *natsgo.Msg {
	header := maps.Clone(req.Header)
	if header == nil {
		header = natsgo.Header{}
	}
	header.Set(headerMessageType, f.id)
	// v0.1.0 reads a timeout of 0 as none.
	timeout := max(time.Until(deadline), 1)
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(data))
	return &natsgo.Msg{Subject: f.legacySubject, Header: header, Data: sealLegacy(buf, timeout, data)}
}
