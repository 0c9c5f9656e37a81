package nats

import (
	"context"
	"fmt"
	"reflect"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/typedcqrs/dispatch/cqrs"
)

// OutboundEvent returns the NATS message that [Publish] would store in
// JetStream for the declared event evt, sent from ctx, without sending it:
// its subject ([EventSubject], durable), its payload in the envelope a
// [Receiver] opens, and its headers: the identity ([cqrs.NextIdentity] of
// ctx, in Cqrs-Id, Cqrs-Correlation-Id and Cqrs-Causation-Id), the ID
// again as JetStream's de-duplication key (Nats-Msg-Id) and the trace
// context of ctx. It is for code that sends the message later, such as a
// transactional outbox, which stores it with the writes of a database
// transaction and publishes it once they are committed; publishing it to
// JetStream is then what Publish does. The options must be those of the
// Receivers (prefix, codec, payload limit). Errors: those of Publish for
// a type that cannot travel or a payload too large, an invalid option's,
// and [cqrs.ErrNilContext]. It is safe for concurrent use.
func OutboundEvent[E cqrs.Message[cqrs.NoResult, *cqrs.EventBus]](ctx context.Context, evt E, opts ...Option) (*natsgo.Msg, error) {
	if ctx == nil {
		return nil, fmt.Errorf("%w: encoding an event for NATS", cqrs.ErrNilContext)
	}
	c := newConfig(opts)
	if c.err != nil {
		return nil, c.err
	}
	et, err := newEventType(&c, true, eventSpec[E]())
	if err != nil {
		return nil, err
	}
	m, err := eventMsg(&c, et, evt)
	if err != nil {
		return nil, err
	}
	if len(c.propagator.Fields()) > 0 {
		c.propagator.Inject(ctx, propagation.HeaderCarrier(m.Header))
	}
	outboundIdentity(ctx, m.Header)
	return m, nil
}

// OutboundCommand returns the NATS message that [Enqueue] would store in
// the work-queue stream for command cmd, sent from ctx, without sending
// it: its subject ([DurableSubject]), its payload, its identity and
// de-duplication headers as [OutboundEvent] writes them, and the
// condition that only cfg.Stream may store it (Nats-Expected-Stream), as
// Enqueue sets. A process serving C with [ServeDurable] handles it once
// it is published to JetStream. cfg and the options must be those of
// the serving processes. Errors: those of Enqueue for a message that cannot travel,
// an invalid option's, and [cqrs.ErrNilContext]. It is safe for
// concurrent use.
func OutboundCommand[C any](ctx context.Context, cmd C, cfg DurableConfig, opts ...Option) (*natsgo.Msg, error) {
	if ctx == nil {
		return nil, fmt.Errorf("%w: encoding a command for NATS", cqrs.ErrNilContext)
	}
	c := newConfig(opts)
	if c.err != nil {
		return nil, c.err
	}
	spec := cqrs.SpecFor[C, cqrs.NoResult]((*cqrs.CommandBus)(nil))
	if reflect.TypeFor[C]().Kind() == reflect.Interface {
		return nil, fmt.Errorf("%w: %s: a durable command needs a concrete type", cqrs.ErrInvalidMessageType, spec)
	}
	m, err := durableMsg(ctx, &c, spec, cmd)
	if err != nil {
		return nil, err
	}
	m.Header.Set(jetstream.ExpectedStreamHeader, cfg.withDefaults(c.prefix).Stream)
	return m, nil
}

// durableMsg encodes the durable command msg, of spec, into the message
// that Enqueue stores: on its subject, with the identity of a message
// sent from ctx, as outboundIdentity writes it.
func durableMsg(ctx context.Context, c *config, spec cqrs.Spec, msg any) (*natsgo.Msg, error) {
	data, err := c.codec.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("nats: %s: encoding the message: %w", spec, err)
	}
	if len(data) > c.maxPayload {
		return nil, tooLarge(spec, "message", len(data), c.maxPayload)
	}
	subject, err := durableSubject(c.prefix, spec)
	if err != nil {
		return nil, err
	}
	m := &natsgo.Msg{Subject: subject, Data: data, Header: make(natsgo.Header, 5)}
	outboundIdentity(ctx, m.Header)
	return m, nil
}

// outboundIdentity writes into h the identity of a message sent from ctx,
// and its ID as the key JetStream de-duplicates the first store by.
func outboundIdentity(ctx context.Context, h natsgo.Header) {
	id := cqrs.NextIdentity(ctx)
	setIdentity(h, id)
	h.Set(jetstream.MsgIDHeader, storedKey(id.ID, 0))
}
