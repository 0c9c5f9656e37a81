package nats

import (
	"strings"
	"time"

	otelapi "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Option configures [Serve] and [NewClient]. The two sides of a message
// type must agree on the prefix and the codec.
type Option interface {
	apply(*config)
}

type config struct {
	prefix      string
	codec       Codec
	maxPayload  int
	queueGroup  string
	timeout     time.Duration
	propagator  propagation.TextMapPropagator
	concurrency int
}

func newConfig(opts []Option) config {
	c := config{
		prefix:      "cqrs",
		codec:       JSON{},
		maxPayload:  1 << 20,
		queueGroup:  "cqrs",
		timeout:     10 * time.Second,
		concurrency: 1,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.propagator == nil {
		c.propagator = otelapi.GetTextMapPropagator()
	}
	return c
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithPrefix sets the first token of every subject. The default is "cqrs".
func WithPrefix(prefix string) Option { return optionFunc(func(c *config) { c.prefix = prefix }) }

// WithCodec sets the codec. The default is [JSON].
func WithCodec(codec Codec) Option { return optionFunc(func(c *config) { c.codec = codec }) }

// WithMaxPayload bounds the size of an encoded message or result, in
// bytes: a larger one fails with [ErrPayloadTooLarge] instead of being
// sent. The default is 1 MiB, NATS's own default.
func WithMaxPayload(n int) Option { return optionFunc(func(c *config) { c.maxPayload = n }) }

// WithQueueGroup sets the queue group serving processes share; each
// request goes to one member. The default is "cqrs".
func WithQueueGroup(name string) Option { return optionFunc(func(c *config) { c.queueGroup = name }) }

// WithTimeout bounds the wait for a reply when the caller's context has no
// deadline. The default is 10s.
func WithTimeout(d time.Duration) Option { return optionFunc(func(c *config) { c.timeout = d }) }

// WithPropagator sets how trace context travels in the headers. The
// default is OpenTelemetry's global propagator, which carries W3C trace
// context once a service has set one.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.propagator = p })
}

// WithConcurrency bounds how many requests one [Serve] handles at once,
// each on a goroutine of its own. The default, 1, handles each message
// type's requests one at a time on its subscription's goroutine, as
// nats.go delivers them: the fastest for handlers that do not wait, since
// it hands nothing to another goroutine. Handlers that wait on I/O want
// more; a request that finds the limit reached stays queued in NATS.
func WithConcurrency(n int) Option {
	return optionFunc(func(c *config) { c.concurrency = max(n, 1) })
}

// Subject returns the subject a message type travels on:
// prefix.kind.name, such as "cqrs.command.orders.PlaceOrder". Characters
// a subject cannot hold become underscores.
func Subject(prefix string, spec cqrs.Spec) string {
	return prefix + "." + spec.Kind.String() + "." + sanitize(spec.Name, true)
}

// sanitize keeps letters, digits, '-' and '_', and dots when keepDots;
// anything else becomes '_'.
func sanitize(s string, keepDots bool) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		case r == '.' && keepDots:
			return r
		default:
			return '_'
		}
	}, s)
}
