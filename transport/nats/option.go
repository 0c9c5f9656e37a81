package nats

import (
	"time"

	otelapi "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// Option configures [Serve] and [NewClient]. The two sides of a message
// type must agree on the prefix, the codec and the error table
// ([WithErrors]). An invalid option makes [Serve] and [Forward] fail with
// its error.
type Option interface {
	apply(*config)
}

type config struct {
	prefix         string
	codec          Codec
	maxPayload     int
	queueGroup     string
	timeout        time.Duration
	propagator     propagation.TextMapPropagator
	concurrency    int
	maxHandlerTime time.Duration
	pendingMsgs    int
	pendingBytes   int
	errors         []ErrorCode
	legacy         bool  // speak v0.1.0's wire too: see WithLegacyWire
	err            error // the first invalid option's error
}

// fail records the first invalid option's error, for Serve and Forward
// to return.
func (c *config) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// Defaults of the options.
const (
	defaultMaxHandlerTime = time.Minute
	defaultPendingMsgs    = 1024
	defaultPendingBytes   = 64 << 20
)

func newConfig(opts []Option) config {
	c := config{
		prefix:      "cqrs",
		codec:       JSON{},
		maxPayload:  1 << 20,
		queueGroup:  "cqrs",
		timeout:     10 * time.Second,
		concurrency: 1,

		maxHandlerTime: defaultMaxHandlerTime,
		pendingMsgs:    defaultPendingMsgs,
		pendingBytes:   defaultPendingBytes,
		legacy:         true,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.propagator == nil {
		c.propagator = otelapi.GetTextMapPropagator()
	}
	if c.codec == nil {
		c.codec = JSON{}
	}
	if c.maxPayload <= 0 {
		c.maxPayload = 1 << 20
	}
	if c.timeout <= 0 {
		c.timeout = 10 * time.Second
	}
	if err := checkPrefix(c.prefix); err != nil {
		c.fail(err)
	}
	if err := checkQueueGroup(c.queueGroup); err != nil {
		c.fail(err)
	}
	return c
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithPrefix sets the first tokens of every subject. The default is
// "cqrs". Give each service that shares a NATS its own prefix, such as
// "orders", so that its subjects, stats subject and permissions stay its
// own: see [Subject]. A prefix must be one or more tokens separated by
// dots, with no wildcard ('*', '>'), white space or control character,
// at most 256 bytes long; another fails with [ErrInvalidSubject]. Two
// services' prefixes must not be one the other followed by more tokens.
func WithPrefix(prefix string) Option { return optionFunc(func(c *config) { c.prefix = prefix }) }

// WithCodec sets the codec. The default, also for nil, is [JSON].
func WithCodec(codec Codec) Option { return optionFunc(func(c *config) { c.codec = codec }) }

// WithMaxPayload bounds the size of an encoded message with its envelope
// (the caller's deadline and the type's identity: about 20 bytes and the
// identity's length), or of an encoded result, in bytes: a larger one
// fails with [ErrPayloadTooLarge] instead of being sent. The NATS
// server's own limit (max_payload) bounds them too, with its headers,
// and gives the same error. The default, also for n <= 0, is 1 MiB,
// NATS's own default.
func WithMaxPayload(n int) Option { return optionFunc(func(c *config) { c.maxPayload = n }) }

// WithQueueGroup sets the queue group serving processes share; each
// request goes to one member. The default is "cqrs". A name with white
// space or a control character, or longer than 256 bytes, fails with
// [ErrInvalidSubject].
func WithQueueGroup(name string) Option { return optionFunc(func(c *config) { c.queueGroup = name }) }

// WithTimeout bounds the wait for each reply: the call ends at the
// earlier of the caller's context's deadline and this timeout, and that
// deadline travels to the serving side, which does not start the handler
// after it and bounds the handler's context by it. The default, also for
// d <= 0, is 10s.
func WithTimeout(d time.Duration) Option { return optionFunc(func(c *config) { c.timeout = d }) }

// WithPropagator sets how trace context travels in the headers. The
// default is OpenTelemetry's global propagator, which carries W3C trace
// context once a service has set one.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.propagator = p })
}

// WithConcurrency bounds how many requests one [Serve] handles at once,
// all message types together, each on a worker goroutine of its own. The
// default, also for n < 1, is 1: one request at a time, the fastest for
// handlers that do not wait. Handlers that wait on I/O want more; a
// request that finds every worker busy waits in the server's queue
// ([WithMaxPending]).
func WithConcurrency(n int) Option {
	return optionFunc(func(c *config) { c.concurrency = max(n, 1) })
}

// WithMaxHandlerTime caps the time a serving process gives one request:
// the handler's context ends at the earlier of the caller's deadline and
// the request's arrival plus d. A request that carries no deadline, such
// as plain JSON from the NATS command line, gets d. The default, also for
// d <= 0, is one minute. Only [Serve] reads it.
func WithMaxHandlerTime(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d <= 0 {
			d = defaultMaxHandlerTime
		}
		c.maxHandlerTime = d
	})
}

// WithMaxPending bounds the requests a serving process has received and
// not yet started, all message types together: at most msgs requests of
// at most bytes bytes in all. A request that finds the queue full is
// refused at once, without running its handler: the caller gets an error
// wrapping [ErrUnavailable] (which is safe to retry, on another process
// of the queue group) instead of waiting for its deadline. NATS's own
// buffer for each subscription is bounded too, at 4 times msgs and
// bytes; beyond that, NATS drops requests (counted as Dropped in
// [Server.Stats]) and their callers wait for their deadline. The
// defaults, also for values <= 0, are 1024 requests and 64 MiB. Only
// [Serve] reads it.
func WithMaxPending(msgs, bytes int) Option {
	return optionFunc(func(c *config) {
		if msgs <= 0 {
			msgs = defaultPendingMsgs
		}
		if bytes <= 0 {
			bytes = defaultPendingBytes
		}
		c.pendingMsgs, c.pendingBytes = msgs, bytes
	})
}

// WithLegacyWire sets whether [Serve] and [Forward] also speak the wire of
// v0.1.0, this module's first release, so that the processes of a rolling
// upgrade from it keep calling each other. The default is true. v0.1.0
// put a type on another subject (its short name, not its full path) and
// sent another envelope (with no type identity), so that without this
// every call between the two versions fails: with [ErrNoResponders], or,
// for a type whose subject did not change (one of package main), with
// [ErrBadRequest].
//
// With it, Serve also subscribes each type's v0.1.0 subject, in the same
// queue group, and takes v0.1.0's envelope on either subject, answering a
// v0.1.0 caller in the form it reads. A type whose v0.1.0 subject another
// served type shares, by its old or its new subject, is not served on it:
// such a request could be for either. Forward, when no process serves a
// type's subject, asks once more on its v0.1.0 subject, in v0.1.0's
// envelope; and when a v0.1.0 server refuses this version's envelope on a
// subject that did not change, asks it again in its own. Neither refused
// request ran, so each request still runs at most once. The type's
// identity travels with such a request in a header, which v0.1.0 servers
// ignore and this version's check.
//
// A request in v0.1.0's form has v0.1.0's guarantees. A v0.1.0 server
// does not check the type: when another service's v0.1.0 server, under
// the same prefix, serves a type of the same short name, a request that
// falls back to that subject may run there, as v0.1.0's own callers'
// did; give each service its own prefix ([WithPrefix]), as v0.1.0
// already needed. And a v0.1.0 server measures the caller's deadline from
// when it takes the request up, not corrected for its time on the way.
//
// Once no process of v0.1.0 is left (Legacy in [Server.Stats] stops
// growing on every serving process), turn it off on both sides: see
// docs/releasing.md. Turn it off from the start where NATS permissions
// allow this version's subjects only: NATS refuses a fallback publish
// there without a reply, so a call that nobody serves would wait for its
// deadline instead of failing at once with [ErrNoResponders].
func WithLegacyWire(on bool) Option { return optionFunc(func(c *config) { c.legacy = on }) }
