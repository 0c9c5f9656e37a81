package nats

import (
	"context"
	"errors"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Client sends messages over a NATS connection. Make one with
// [NewClient]; it is safe for concurrent use.
type Client struct {
	nc     *natsgo.Conn
	cfg    config
	traced bool // the propagator writes some field
}

// NewClient returns a client that sends over nc.
func NewClient(nc *natsgo.Conn, opts ...Option) *Client {
	cfg := newConfig(opts)
	return &Client{nc: nc, cfg: cfg, traced: len(cfg.propagator.Fields()) > 0}
}

// Forward registers on bus, for message type C, a handler that sends each
// message over NATS to the processes that [Serve] C and returns their
// typed reply. Callers go on dispatching C on bus as before; mws run in
// this process, around the forwarding.
func Forward[C, R any](bus cqrs.Bus, c *Client, mws ...cqrs.Middleware[C, R]) error {
	if c == nil || c.nc == nil {
		return fmt.Errorf("%w: forwarding over NATS without a client", cqrs.ErrNilHandler)
	}
	spec := cqrs.SpecFor[C, R](bus)
	f := &forwarder[C, R]{c: c, spec: spec, subject: Subject(c.cfg.prefix, spec)}
	return cqrs.Register(bus, cqrs.Handler[C, R](f), mws...)
}

// forwarder is the handler Forward registers.
type forwarder[C, R any] struct {
	c       *Client
	spec    cqrs.Spec
	subject string
}

func (f *forwarder[C, R]) Handle(ctx context.Context, msg C) (R, error) {
	var zero R
	cfg := &f.c.cfg
	data, err := cfg.codec.Marshal(msg)
	if err != nil {
		return zero, fmt.Errorf("cqrs/nats: %s: encoding the message: %w", f.spec, err)
	}
	if len(data) > cfg.maxPayload {
		return zero, tooLarge(f.spec, "message", len(data), cfg.maxPayload)
	}
	// The remaining time travels in the envelope, not in a header; a
	// header is sent only if the propagator writes trace context.
	var timeout time.Duration
	if deadline, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(deadline), 1)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
	}
	req := &natsgo.Msg{Subject: f.subject, Data: seal(timeout, data)}
	if f.c.traced {
		req.Header = natsgo.Header{}
		cfg.propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
		if len(req.Header) == 0 {
			req.Header = nil
		}
	}
	reply, err := f.c.nc.RequestMsgWithContext(ctx, req)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return zero, ctx.Err()
	case errors.Is(err, natsgo.ErrNoResponders):
		return zero, fmt.Errorf("%w: %s on %s", ErrNoResponders, f.spec, f.subject)
	default:
		return zero, fmt.Errorf("%w: %s: %w", ErrTransport, f.spec, err)
	}
	if code := reply.Header.Get(headerErrorCode); code != "" {
		return zero, decodeError(f.spec, code, reply.Header.Get(headerError), reply.Data)
	}
	var res R
	if err := cfg.codec.Unmarshal(reply.Data, &res); err != nil {
		return zero, fmt.Errorf("%w: %s: %w", ErrBadReply, f.spec, err)
	}
	return res, nil
}
