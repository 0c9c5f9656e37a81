package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/typedcqrs/dispatch/cqrs"
)

// ErrEventStream: the JetStream stream that an [EventConfig] names exists
// but cannot keep events (or their dead letters) correctly, such as a
// work-queue stream, which gives each event to one subscriber only, or
// one that does not take their subjects. It is left as it is.
var ErrEventStream = errors.New("nats: stream unusable for events")

// EventConfig configures events over NATS: a [Publisher] and the
// [Receiver]s of the same events must use the same one (and the same
// prefix and codec). The zero value is core NATS with the defaults;
// each field's zero value means the default it documents.
//
// With core NATS (Durable false) an event reaches the subscribers
// connected when it is published, at most once each: one that is down,
// slow beyond NATS's buffers, or fails loses it, and so do all of them
// while the NATS server restarts, with no error for the publisher. The
// losses are not counted, since nobody can tell them; what can be told
// is counted ([Publisher.Stats] Buffered, [EventStats] Interruptions and
// Dropped). With JetStream (Durable true) every event is kept in a
// stream until each subscriber name has handled it, at least once: see
// [Subscribe]. Use JetStream for any event whose loss matters.
type EventConfig struct {
	// Durable carries events through JetStream, at least once, rather
	// than core NATS, at most once and with silent losses when a
	// connection or the server fails. Use it for any event whose loss
	// matters.
	Durable bool
	// Stream names the JetStream stream of the events. The default is the
	// prefix in upper case, each character other than a letter, digit,
	// '-' or '_' made '_', followed by "_EVENTS", such as "CQRS_EVENTS".
	// If it exists it is used as it is (storage, limits, replicas are the
	// operator's), provided it takes the events' subjects and is not a
	// work queue ([ErrEventStream]). If it does not exist it is made with
	// subjects prefix + ".stored.>", interest retention (an event is kept
	// until every subscriber name's consumer of its type has acknowledged
	// it, so one published before any name subscribed to its type is not
	// kept at all), file storage, one replica and no limits. With
	// interest retention, a subscriber name subscribed for the first time
	// gets the events published from then on; with another retention,
	// every event the stream keeps.
	Stream string
	// DeadLetterStream names the stream that keeps the events a
	// subscriber could not handle (see [Subscribe]) until they are
	// replayed ([ReplayUnhandled]) or removed. The default is the prefix
	// made a name as for Stream, followed by "_UNHANDLED", such as
	// "CQRS_UNHANDLED". If it exists it is used as it is, provided it
	// takes their subjects and does not have interest retention (which
	// would drop them while nobody reads them). If it does not exist it is
	// made with subjects prefix + ".unhandled.>", limits retention, file
	// storage, one replica and no limits.
	DeadLetterStream string
	// MaxDeliver bounds the deliveries of one event to one subscriber
	// name; after the last failed one the event goes to the dead-letter
	// stream. A delivery that ended without an outcome (the process died)
	// counts too. If MaxDeliver is less than or equal to 0, it is 5.
	MaxDeliver int
	// AckWait is how long a subscriber may take over an event before
	// JetStream gives it to another instance, as after a crash: keep it
	// above the longest a subscriber takes, and bound subscribers that may
	// take longer with a timeout below it (middleware.Timeout). It counts
	// from when the subscriber starts on the event, however long the
	// event waited its turn behind others the instance took ahead, which
	// are kept alive meanwhile. If AckWait is less than or equal to 0, it
	// is 30s.
	AckWait time.Duration
	// BackOff is how long an event a subscriber failed waits before its
	// next delivery to that subscriber: BackOff[0] after the first
	// failure, BackOff[1] after the second, the last value for the
	// failures after. If BackOff is empty, it is 1s, 5s, 30s. A negative
	// value is taken as 0.
	BackOff []time.Duration
	// Bus holds the options of the event bus each subscriber name of a
	// [Receiver] runs on, such as cqrs.WithInterceptors, cqrs.WithMetrics
	// and cqrs.WithLogger: each subscriber runs inside them as it would on
	// a local [cqrs.EventBus]. A strategy it sets is ignored: a
	// subscriber handles each event before the next, and with JetStream
	// before it is acknowledged. Publishers ignore it.
	Bus []cqrs.Option
	// Logger receives what has no caller to go to: a subscriber's
	// failure in core NATS mode, and refused messages. The default, also
	// for nil, discards.
	Logger *slog.Logger
}

// defaultEventBackOff is what an empty EventConfig.BackOff means.
var defaultEventBackOff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}

// withDefaults returns ev with its defaults filled in for prefix.
func (ev EventConfig) withDefaults(prefix string) EventConfig {
	base := strings.ToUpper(sanitize(prefix, false))
	if ev.Stream == "" {
		ev.Stream = base + "_EVENTS"
	}
	if ev.DeadLetterStream == "" {
		ev.DeadLetterStream = base + "_UNHANDLED"
	}
	if ev.MaxDeliver <= 0 {
		ev.MaxDeliver = 5
	}
	if ev.AckWait <= 0 {
		ev.AckWait = 30 * time.Second
	}
	backOff := ev.BackOff
	if len(backOff) == 0 {
		backOff = defaultEventBackOff
	}
	ev.BackOff = make([]time.Duration, len(backOff)) // never the caller's array
	for i, d := range backOff {
		ev.BackOff[i] = max(d, 0)
	}
	if ev.Logger == nil {
		ev.Logger = slog.New(slog.DiscardHandler)
	}
	return ev
}

// backOffAfter returns the wait after the given failed delivery (1 for
// the first).
func (ev EventConfig) backOffAfter(delivery uint64) time.Duration {
	i := max(min(delivery, uint64(len(ev.BackOff))), 1) - 1
	return ev.BackOff[i]
}

// The subjects of events, under the prefix P, for an event type whose
// identity encodes as ID and a subscriber named N:
//
//	P.event.ID                    core NATS (Subject)
//	P.stored.event.ID             JetStream
//	P.stored.replay.N.event.ID    JetStream, replayed to N only
//	P.unhandled.N.event.ID        dead letters of N
const (
	storedToken    = "stored"
	replayToken    = "replay"
	unhandledToken = "unhandled"
)

// EventSubject returns the subject events of the type spec describes
// travel on: prefix.event.identity with core NATS, as [Subject] says, and
// prefix.stored.event.identity with JetStream (durable).
func EventSubject(prefix string, spec cqrs.Spec, durable bool) string {
	infix := ""
	if durable {
		infix = storedToken + "."
	}
	subject, _ := subjectOf(prefix, infix, spec)
	return subject
}

// eventType is what either side knows of one event type.
type eventType struct {
	spec    cqrs.Spec
	subject string
	id      string // the type's identity, which the envelope carries
}

// newEventType checks that spec's type can travel as an event under
// prefix, and returns its subject and identity.
func newEventType(cfg *config, durable bool, spec cqrs.Spec) (*eventType, error) {
	infix := ""
	if durable {
		infix = storedToken + "."
	}
	subject, err := subjectOf(cfg.prefix, infix, spec)
	if err != nil {
		return nil, err
	}
	if err := checkFields(cfg.codec, spec); err != nil {
		return nil, err
	}
	id, _ := identity(spec.MessageType) // subjectOf checked it
	return &eventType{spec: spec, subject: subject, id: id}, nil
}

// eventSpec returns the Spec of event type E on a bus where no other
// type has its name: its declared EventName, or else its Go type.
func eventSpec[E any]() (spec cqrs.Spec) {
	t := reflect.TypeFor[E]()
	spec = cqrs.Spec{Kind: cqrs.KindEvent, Name: t.String(), MessageType: t, ResultType: reflect.TypeFor[cqrs.NoResult]()}
	defer func() { _ = recover() }() // EventName on a nil pointer: keep the Go name
	var zero E
	if n, ok := any(zero).(interface{ EventName() string }); ok {
		spec.Name = n.EventName()
	} else if n, ok := any(&zero).(interface{ EventName() string }); ok {
		spec.Name = n.EventName()
	}
	return spec
}

// Publisher publishes events to NATS for the [Receiver]s of other
// processes. Make one with [NewPublisher]; the zero value is not usable.
// A Publisher is safe for concurrent use. It starts no goroutine and
// needs no closing: closing its connection ends it.
type Publisher struct {
	nc     *natsgo.Conn
	js     jetstream.JetStream // nil with core NATS
	cfg    config
	ev     EventConfig
	traced bool     // the propagator writes some field
	types  sync.Map // reflect.Type → *eventType

	streamMu sync.Mutex // serialises making the stream

	published, failed, buffered atomic.Uint64
}

// NewPublisher returns a publisher of events over nc, with core NATS or,
// when ev.Durable, JetStream. It fails with the error of an invalid
// option, or wrapping [ErrTransport] for a nil nc. It makes no request:
// the stream, if need be, is made by the first [Publish] that finds none.
func NewPublisher(nc *natsgo.Conn, ev EventConfig, opts ...Option) (*Publisher, error) {
	cfg, ev, js, err := eventSide("publishing", nc, ev, opts)
	if err != nil {
		return nil, err
	}
	return &Publisher{nc: nc, js: js, cfg: cfg, ev: ev, traced: len(cfg.propagator.Fields()) > 0}, nil
}

// eventSide reads the options and ev of either side, doing what, and
// returns the JetStream context when ev is durable.
func eventSide(doing string, nc *natsgo.Conn, ev EventConfig, opts []Option) (config, EventConfig, jetstream.JetStream, error) {
	cfg := newConfig(opts)
	if cfg.err != nil {
		return cfg, ev, nil, cfg.err
	}
	if nc == nil {
		return cfg, ev, nil, fmt.Errorf("%w: %s events: no connection", ErrTransport, doing)
	}
	ev = ev.withDefaults(cfg.prefix)
	if !ev.Durable {
		return cfg, ev, nil, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return cfg, ev, nil, fmt.Errorf("%w: %s events: %w", ErrTransport, doing, err)
	}
	return cfg, ev, js, nil
}

// typeOf returns what p knows of event type t, checking it the first
// time.
func (p *Publisher) typeOf(spec func() cqrs.Spec, t reflect.Type) (*eventType, error) {
	if et, ok := p.types.Load(t); ok {
		return et.(*eventType), nil
	}
	et, err := newEventType(&p.cfg, p.ev.Durable, spec())
	if err != nil {
		return nil, err
	}
	p.types.Store(t, et)
	return et, nil
}

// Publish publishes the declared event evt over NATS to every subscriber
// name that receives its type ([Subscribe]), each of which gets it: with
// core NATS at most once, if an instance is connected now; with
// JetStream at least once, now or when an instance comes back. No type argument
// is written:
//
//	err := cqrsnats.Publish(ctx, publisher, OrderPlaced{Order: 7})
//
// The event travels with its type's identity, which the receiving side
// checks, with the trace context of ctx ([WithPropagator]), and with its
// own identity in the headers [HeaderID], [HeaderCorrelationID] and
// [HeaderCausationID]: [cqrs.NextIdentity] of ctx, so that an event
// published by a handler joins the conversation of the message it
// handles, and one published from a context made with
// [cqrs.ContextWithIdentity] has the identity set there. Every subscriber
// reads it with [cqrs.IdentityOf], the same on every delivery. With
// JetStream the ID is also the event's Nats-Msg-Id, so that the stream's
// duplicate window (two minutes by default) keeps one copy of an event
// published twice with one identity, as a retry after a lost
// acknowledgement does.
//
// Publish returns once NATS has the event: with core NATS, once it is
// in the connection's buffer (while the connection is reconnecting, NATS
// keeps it until it is back, within its reconnect buffer, and sends it
// then to the subscribers already back: [Publisher.Stats] counts these
// as Buffered); with JetStream, once the stream has stored it. A
// subscriber's failure never comes back to the publisher. Errors:
// [ErrInvalidSubject] or [ErrUnexportedFields] for a type that cannot
// travel ([Forward] says why); [ErrPayloadTooLarge] for an event whose
// encoding is over [WithMaxPayload], or which with its envelope and
// headers is over the max_payload of the NATS server (less 2 KiB with
// JetStream, kept for the headers of its dead letter); an error wrapping
// [ErrTransport] when NATS does not take the event (with JetStream, ctx
// bounds the wait for the stream); [ErrEventStream] when another stream
// than the configured one took it (it is then in that stream, where no
// subscriber sees it: a misconfiguration the first publish reports). A
// nil p is [cqrs.ErrNilBus], a nil ctx [cqrs.ErrNilContext].
func Publish[E cqrs.Message[cqrs.NoResult, *cqrs.EventBus]](ctx context.Context, p *Publisher, evt E) error {
	if p == nil {
		return fmt.Errorf("%w: publishing an event over NATS without a publisher", cqrs.ErrNilBus)
	}
	if ctx == nil {
		return fmt.Errorf("%w: publishing an event over NATS", cqrs.ErrNilContext)
	}
	return publishAs(ctx, p, evt, cqrs.NextIdentity(ctx))
}

// publishAs publishes evt with identity id, and counts the outcome.
func publishAs[E any](ctx context.Context, p *Publisher, evt E, id cqrs.Identity) error {
	et, err := p.typeOf(eventSpec[E], reflect.TypeFor[E]())
	if err == nil {
		err = p.publish(ctx, et, evt, id)
	}
	if err != nil {
		p.failed.Add(1)
		return err
	}
	p.published.Add(1)
	return nil
}

// publish encodes evt and sends it with identity id.
func (p *Publisher) publish(ctx context.Context, et *eventType, evt any, id cqrs.Identity) error {
	m, err := eventMsg(&p.cfg, et, evt)
	if err != nil {
		return err
	}
	setIdentity(m.Header, id)
	if p.js != nil {
		m.Header.Set(jetstream.MsgIDHeader, storedKey(id.ID, 0))
	}
	if p.traced {
		p.cfg.propagator.Inject(ctx, propagation.HeaderCarrier(m.Header))
	}
	if err := p.fits(et, m); err != nil {
		return err
	}
	if p.js == nil {
		reconnecting := p.nc.IsReconnecting()
		if err := p.nc.PublishMsg(m); err != nil {
			return p.notTaken(et, err)
		}
		if reconnecting {
			p.buffered.Add(1)
		}
		return nil
	}
	return p.store(ctx, et, m)
}

// eventMsg encodes evt, of type et, into the message that carries it,
// in its envelope, with an empty header for the caller to fill.
func eventMsg(c *config, et *eventType, evt any) (*natsgo.Msg, error) {
	data, err := c.codec.Marshal(evt)
	if err != nil {
		return nil, fmt.Errorf("nats: %s: encoding the event: %w", et.spec, err)
	}
	if len(data) > c.maxPayload {
		return nil, tooLarge(et.spec, "event", len(data), c.maxPayload)
	}
	return &natsgo.Msg{Subject: et.subject, Data: sealEvent(et.id, data), Header: natsgo.Header{}}, nil
}

// fits checks m, with its envelope and headers, against the max_payload
// of the NATS server, which refuses a larger message; with JetStream it
// leaves room for the headers of the event's dead letter. The server's
// limit is known once connected; until then NATS checks it as it sends.
func (p *Publisher) fits(et *eventType, m *natsgo.Msg) error {
	limit := p.nc.MaxPayload()
	if limit <= 0 {
		return nil
	}
	what := "event with its envelope and headers"
	if p.js != nil {
		limit -= deadLetterHeadroom
		what = "event with its envelope and headers (with JetStream 2 KiB under NATS's max_payload are kept for those of its dead letter)"
	}
	if n := m.Size() - len(m.Subject) - len(m.Reply); int64(n) > limit {
		return tooLarge(et.spec, what, n, int(max(limit, 0)))
	}
	return nil
}

// notTaken returns the error of an event NATS did not take: the
// transport's, or [ErrPayloadTooLarge] when the message was too large
// for NATS (or, with JetStream, for the stream's max_msg_size).
func (p *Publisher) notTaken(et *eventType, err error) error {
	if errors.Is(err, natsgo.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) {
		return fmt.Errorf("%w: %s: %w", ErrPayloadTooLarge, et.spec, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrTransport, et.spec, err)
}

// PublisherStats are the counts of a [Publisher], in this process, as
// [Publisher.Stats] returns them: a plain value.
type PublisherStats struct {
	// Published counts the events [Publish] and [ForwardEvents] handed
	// to NATS (they returned nil); Failed those they returned an error
	// for.
	Published uint64 `json:"published"`
	Failed    uint64 `json:"failed"`
	// Buffered counts, with core NATS, the events among Published that
	// were published while the connection was reconnecting: NATS kept
	// them and sent them once it was back, to the subscribers that were
	// back by then; those that were not lost them, with no error. The
	// events published into a connection that had failed but that NATS
	// had not yet seen fail (up to a few seconds of them, depending on
	// the ping interval) are lost too, and counted nowhere. With
	// JetStream it is 0: an event is published once stored, or fails.
	Buffered uint64 `json:"buffered"`
}

// Stats returns the counts of p. It is safe for concurrent use.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{Published: p.published.Load(), Failed: p.failed.Load(), Buffered: p.buffered.Load()}
}

// store publishes m to the events' stream, in one round trip, and checks
// that the configured stream stored it. Only when no stream answers does
// it make the stream, then publish again. The check comes after the
// store, rather than as a Nats-Expected-Stream header: a header on every
// event costs each subscriber name a header to parse, and a stream that
// takes another's subjects is a misconfiguration that the first publish
// reports.
func (p *Publisher) store(ctx context.Context, et *eventType, m *natsgo.Msg) error {
	ack, err := p.js.PublishMsg(ctx, m, jetstream.WithRetryAttempts(0))
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		if err := p.makeStream(ctx, m.Subject); err != nil {
			return fmt.Errorf("nats: publish %s: %w", et.spec, err)
		}
		ack, err = p.js.PublishMsg(ctx, m)
	}
	switch {
	case err != nil:
		return p.notTaken(et, err)
	case ack.Stream != p.ev.Stream:
		return fmt.Errorf("%w: publish %s: subject %s is stored by stream %s, not %s, where no subscriber will see it",
			ErrEventStream, et.spec, m.Subject, ack.Stream, p.ev.Stream)
	default:
		return nil
	}
}

// makeStream makes the events' stream if it is still missing, and checks
// that it stores subject.
func (p *Publisher) makeStream(ctx context.Context, subject string) error {
	p.streamMu.Lock()
	defer p.streamMu.Unlock()
	info, err := eventStream(ctx, p.js, p.cfg.prefix, p.ev)
	if err != nil {
		return err
	}
	return takes(info, []string{subject}, ErrEventStream)
}

// ForwarderName is the name of the subscriber that [ForwardEvents]
// subscribes on a local bus.
const ForwarderName = "nats"

// ForwardEvents subscribes, on the local bus events, a subscriber of
// event type E, named [ForwarderName], that publishes each event it is
// given with p, so that the subscribers of other processes look local:
//
//	_, err := cqrsnats.ForwardEvents[OrderPlaced](events, publisher)
//	err = cqrs.Publish(ctx, events, OrderPlaced{Order: 7}) // also over NATS
//
// The forwarding runs as any subscriber of events does, with its
// strategy and interceptors: a NATS failure is that subscriber's error
// (a [*cqrs.SubscriberError] naming "nats"). The event keeps the identity
// its local publish gave it ([cqrs.IdentityOf] of the forwarding
// subscriber's context; a new one if it has none): the remote
// subscribers read the same as the local ones. Forwarding E twice on one
// bus fails with [cqrs.ErrHandlerExists]; a type that cannot travel with
// the error [Publish] would give. Cancel the returned subscription to
// stop forwarding.
func ForwardEvents[E cqrs.Message[cqrs.NoResult, *cqrs.EventBus]](events *cqrs.EventBus, p *Publisher) (*cqrs.Subscription, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: forwarding events over NATS without a publisher", cqrs.ErrNilHandler)
	}
	if _, err := p.typeOf(eventSpec[E], reflect.TypeFor[E]()); err != nil {
		return nil, err
	}
	return cqrs.Subscribe(events, ForwarderName, func(ctx context.Context, evt E) error {
		// The same event, carried on: it keeps the identity its local
		// publish gave it.
		return publishAs(ctx, p, evt, sentIdentity(ctx))
	})
}

// Receiver delivers the events published over NATS ([Publish]) to the
// subscribers of this process, each subscriber name in a delivery group of
// its own: every name gets every event, and the instances of one name
// (the processes of one service) share them, each event going to one.
// Make one with [NewReceiver] and add subscribers with [Subscribe]; the
// zero value is not usable. A Receiver is safe for concurrent use;
// [Receiver.Stop] ends it.
type Receiver struct {
	nc  *natsgo.Conn
	js  jetstream.JetStream // nil with core NATS
	cfg config
	ev  EventConfig

	mu      sync.Mutex
	buses   map[string]*cqrs.EventBus // one per subscriber name
	subs    []*EventSubscription
	ending  []*EventSubscription     // stopped, or being stopped
	streams [2]*jetstream.StreamInfo // the events' and the dead letters', once found or made
	stopped bool
}

// NewReceiver returns a receiver of events over nc, with core NATS or,
// when ev.Durable, JetStream. It fails with the error of an invalid
// option, or wrapping [ErrTransport] for a nil nc.
func NewReceiver(nc *natsgo.Conn, ev EventConfig, opts ...Option) (*Receiver, error) {
	cfg, ev, js, err := eventSide("receiving", nc, ev, opts)
	if err != nil {
		return nil, err
	}
	return &Receiver{nc: nc, js: js, cfg: cfg, ev: ev, buses: map[string]*cqrs.EventBus{}}, nil
}

// EventSubscription is one subscriber of a [Receiver], made by
// [Subscribe]; the zero value is not usable. Its methods are safe for
// concurrent use.
type EventSubscription struct {
	r       *Receiver
	et      *eventType
	spec    cqrs.Spec // with Subscriber set
	local   *cqrs.Subscription
	deliver func(ctx context.Context, payload []byte) error

	core     *natsgo.Subscription // core NATS
	pull     *puller              // JetStream
	consumer string               // the durable consumer's name
	replay   string               // the subject of replays to this subscriber
	dead     string               // the subject of its dead letters
	since    uint64               // the connection's reconnects when it subscribed

	gate     sync.RWMutex // core NATS: handlers read-lock; stop write-locks
	closed   bool
	stopOnce sync.Once
	stopped  chan struct{} // closed once stopped
	ended    atomic.Bool   // stopped is closed, or about to be

	received, handled, failed, malformed, buried atomic.Uint64
}

// Subscribe adds fn, named name, to the subscribers of r for the declared
// event type E, decorated by mws (the first listed outermost) inside the
// interceptors of [EventConfig].Bus. E is inferred from fn:
//
//	sub, err := cqrsnats.Subscribe(receiver, "email", mailer.OrderPlaced)
//
// name is the subscriber's delivery group: every name gets each event of
// E, and the processes that subscribe the same name to E share them, each
// event going to one of them. Give the instances of one service the same
// names, and distinct services distinct ones. name follows
// [cqrs.Subscribe]'s rules (1 to 128 ASCII letters, digits, '-' or '_'),
// and is unique among E's subscribers on r ([cqrs.ErrHandlerExists]).
//
// With core NATS, Subscribe joins the queue group name on E's subject:
// events published while no instance of name is connected are lost to
// it, and a failure of fn is logged ([EventConfig].Logger) and counted
// ([Receiver.Stats]) but not retried.
//
// With JetStream, Subscribe makes (or, if its settings changed, updates)
// the durable consumer of E for name, named after both, that the
// instances of name share: never one consumer for two types or two
// names. It makes the stream and the dead-letter stream if they are
// missing. An event is acknowledged once fn has succeeded; a failure is
// delivered again after [EventConfig].BackOff, up to MaxDeliver
// deliveries, then kept in the dead-letter stream; an instance that dies
// mid-event loses nothing (another, or itself restarted, gets the event
// after AckWait). Events published while no instance of name is up wait
// in the stream. Each instance takes up to 32 events ahead, keeping those
// that wait their turn alive, so that AckWait bounds fn's own time on an
// event. fn may see an event more than once (its instance died before
// its acknowledgement reached the server, or fn took longer than
// AckWait): make it idempotent, keyed by the event's ID.
//
// The context fn gets carries the publisher's trace context and has no
// deadline, in either mode: nobody waits for an event, and a timer per
// event costs more than the rest of its delivery (it wakes the runtime's
// network poller). Give a subscriber that may hang a timeout in mws, such
// as middleware.Timeout; with JetStream, below AckWait, after which the
// event goes to another instance anyway. It also carries the event's
// identity ([cqrs.IdentityOf]): the one its publisher gave it, the same
// for every subscriber name and on every delivery, replays included; the
// events fn publishes from it join its conversation. A message another
// program published without a Cqrs-Id header has the identity of its
// Nats-Msg-Id header, or else a new one, made at its receipt (with
// JetStream, made again on each delivery).
//
// Events of one type reach one instance's fn one at a time, in the order
// that instance receives them. An event is decoded into a new E only if
// it carries E's identity; anything else on E's subject (bytes from
// another program, another type's event) is refused, counted (Malformed)
// and, with JetStream, kept as a dead letter: it never reaches fn.
// Subscribe fails with the errors of [cqrs.Subscribe], with
// [ErrInvalidSubject] or [ErrUnexportedFields] for a type that cannot
// travel, with [cqrs.ErrClosed] after [Receiver.Stop], and with errors
// wrapping [ErrTransport] or [ErrEventStream] when NATS refuses; a failed
// Subscribe leaves nothing behind in r. The options' timeout
// ([WithTimeout]) bounds its requests to JetStream.
func Subscribe[E cqrs.Message[cqrs.NoResult, *cqrs.EventBus]](r *Receiver, name string, fn func(ctx context.Context, evt E) error, mws ...cqrs.Middleware[E, cqrs.NoResult]) (*EventSubscription, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: subscribing over NATS without a receiver", cqrs.ErrNilBus)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil, fmt.Errorf("%w: subscribing %q over NATS after Stop", cqrs.ErrClosed, name)
	}
	bus, fresh := r.buses[name], false
	if bus == nil {
		bus, fresh = cqrs.NewEventBus(r.ev.Bus...), true
	}
	local, err := cqrs.Subscribe(bus, name, fn, mws...)
	if err != nil {
		return nil, err
	}
	s, err := r.add(local, func(ctx context.Context, payload []byte) error {
		evt, err := decodeEvent[E](r.cfg.codec, payload)
		if err != nil {
			return err
		}
		// Synchronous whatever strategy Bus sets: an event is acknowledged
		// only once its subscriber has returned.
		return cqrs.PublishWith(ctx, bus, cqrs.Sequential(), evt)
	})
	if err != nil {
		local.Cancel()
		return nil, err
	}
	if fresh {
		r.buses[name] = bus
	}
	return s, nil
}

// decodeEvent decodes payload into a new E. A panic in the codec is an
// error, as the bus makes a subscriber's: it never reaches NATS's
// goroutine.
func decodeEvent[E any](codec Codec, payload []byte) (evt E, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = errUndecodable{fmt.Errorf("the codec panicked: %v", v)}
		}
	}()
	if err := codec.Unmarshal(payload, &evt); err != nil {
		return evt, errUndecodable{err}
	}
	return evt, nil
}

// errUndecodable is a payload the codec refused: the event will never be
// handled, however often it is delivered.
type errUndecodable struct{ err error }

func (e errUndecodable) Error() string { return e.err.Error() }
func (e errUndecodable) Unwrap() error { return e.err }

// add starts receiving for the subscriber local. r.mu is held.
func (r *Receiver) add(local *cqrs.Subscription, deliver func(context.Context, []byte) error) (*EventSubscription, error) {
	spec := local.Spec()
	typeSpec := spec
	typeSpec.Subscriber = ""
	et, err := newEventType(&r.cfg, r.js != nil, typeSpec)
	if err != nil {
		return nil, err
	}
	s := &EventSubscription{r: r, et: et, spec: spec, local: local, deliver: deliver, since: r.nc.Stats().Reconnects}
	if r.js == nil {
		s.core, err = r.nc.QueueSubscribe(et.subject, spec.Subscriber, s.receive)
		if err == nil {
			err = r.nc.Flush() // so that an event published after Subscribe returns reaches it
		}
		if err != nil {
			if s.core != nil {
				_ = s.core.Unsubscribe()
			}
			return nil, fmt.Errorf("%w: subscribe %s: %w", ErrTransport, spec, err)
		}
	} else if err := r.consume(s); err != nil {
		return nil, err
	}
	r.subs = append(r.subs, s)
	return s, nil
}

// Spec describes the subscriber: its event type and, in Subscriber, its
// name.
func (s *EventSubscription) Spec() cqrs.Spec { return s.spec }

// Stop stops s receiving events, then waits, bounded by ctx, for the
// event it is handling, if any. With core NATS the events already
// received are handled first, if the server is there to drain the
// subscription. With JetStream the events taken ahead and not started go
// back to the stream at once, for another instance (each counts as a
// delivery towards MaxDeliver), and the consumer stays: the events
// published after Stop wait in the stream for another instance, or for a
// later Subscribe of the same name. Stop may be called more than once;
// when ctx ends first it returns ctx's error, wrapped.
func (s *EventSubscription) Stop(ctx context.Context) error {
	s.r.mu.Lock()
	for i, x := range s.r.subs {
		if x == s {
			s.r.subs = append(s.r.subs[:i:i], s.r.subs[i+1:]...)
			s.r.ending = append(slices.DeleteFunc(s.r.ending, (*EventSubscription).finished), s)
			break
		}
	}
	s.r.mu.Unlock()
	return s.stop(ctx)
}

// finished reports whether s has stopped.
func (s *EventSubscription) finished() bool { return s.ended.Load() }

// stop ends the subscription; it does not touch r.subs.
func (s *EventSubscription) stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.stopped = make(chan struct{})
		if s.core == nil {
			s.pull.stop() // what was taken ahead goes back at once
			go func() {
				defer close(s.stopped)
				defer s.ended.Store(true)
				s.pull.wait()
				s.local.Cancel()
			}()
			return
		}
		// Draining hands the events already received to the subscriber,
		// and new ones to the other members; it needs the server, so
		// without one, or if it goes away meanwhile, the subscription
		// just ends (with core NATS, what the server has not sent is
		// lost to this instance anyway).
		down := s.r.nc.StatusChanged(natsgo.DISCONNECTED, natsgo.RECONNECTING, natsgo.CLOSED)
		drained := s.core.StatusChanged(natsgo.SubscriptionClosed) // before Drain, which may end at once
		if !s.r.nc.IsConnected() || s.core.Drain() != nil {
			_ = s.core.Unsubscribe()
			drained = nil
		}
		go func() {
			defer close(s.stopped)
			defer s.ended.Store(true)
			if drained != nil {
				select {
				case <-drained:
				case <-down:
					_ = s.core.Unsubscribe()
				}
			}
			s.r.nc.RemoveStatusListener(down)
			s.gate.Lock() // waits for the handler under way
			s.closed = true
			s.gate.Unlock()
			s.local.Cancel()
		}()
	})
	select {
	case <-s.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("nats: stop %s: %w", s.spec, ctx.Err())
	}
}

// Stop stops every subscription of r, as [EventSubscription.Stop] does,
// and closes r: a later [Subscribe] fails. It waits, bounded by ctx, for
// the events being handled; it returns nil once none is, or ctx's error,
// wrapped, naming the subscribers still busy.
func (r *Receiver) Stop(ctx context.Context) error {
	r.mu.Lock()
	r.stopped = true
	r.ending = append(r.ending, r.subs...)
	r.subs = nil
	// Every subscription stopped so far: a Stop whose ctx ended left
	// some still stopping, and a later Stop waits for them too.
	subs := r.ending
	r.mu.Unlock()
	var errs []error
	for _, s := range subs {
		if err := s.stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// receive handles one core NATS message, on the subscription's
// goroutine.
func (s *EventSubscription) receive(m *natsgo.Msg) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closed {
		return
	}
	s.received.Add(1)
	payload, err := s.open(m.Data)
	if err != nil {
		s.refuse(err)
		return
	}
	// No deadline: nobody waits for an event, and a timer per event
	// would cost more than the rest of its delivery. A subscriber that
	// may hang gets a timeout from its middleware (middleware.Timeout).
	ctx := withIdentity(s.context(m.Header), m.Header)
	err = s.deliver(ctx, payload)
	switch {
	case err == nil:
		s.handled.Add(1)
	case isUndecodable(err):
		s.refuse(err)
	default:
		s.failed.Add(1)
		s.r.ev.Logger.LogAttrs(ctx, slog.LevelError, "nats: subscriber failed; with core NATS the event is not delivered again",
			slog.String("event", s.spec.Name), slog.String("subscriber", s.spec.Subscriber), slog.Any("error", err))
	}
}

// refuse counts and logs a message that is not an event of s's type.
func (s *EventSubscription) refuse(err error) {
	s.malformed.Add(1)
	s.r.ev.Logger.LogAttrs(context.Background(), slog.LevelWarn, "nats: refused a message that is not an event of its subject's type",
		slog.String("event", s.spec.Name), slog.String("subscriber", s.spec.Subscriber), slog.String("subject", s.et.subject),
		slog.String("why", err.Error()))
}

// isUndecodable reports whether err says the codec refused the payload.
func isUndecodable(err error) bool {
	var u errUndecodable
	return errors.As(err, &u)
}

// errNotAnEvent is the error of a message that does not carry the
// identity of its subject's event type.
var errNotAnEvent = errors.New("the message does not carry its subject's event type")

// sealEvent returns the envelope of an event: the request envelope
// (envelope.go) with no deadline, carrying the type's identity.
func sealEvent(id string, payload []byte) []byte {
	return seal(make([]byte, 0, sealedSize(id, payload)), 0, time.Unix(0, 0), id, payload)
}

// open returns the payload of data, an event of s's type, or why it is
// not one. Unlike a request, an event must carry its identity: plain
// bytes are refused.
func (s *EventSubscription) open(data []byte) ([]byte, error) {
	if len(data) > s.r.cfg.maxPayload+len(s.et.id)+32 {
		return nil, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(data))
	}
	env, err := open(data)
	switch {
	case err != nil:
		return nil, err
	case env.id == nil, string(env.id) != s.et.id:
		return nil, errNotAnEvent
	}
	return env.payload, nil
}

// context returns the context of a handler, with the trace context the
// headers carry.
func (s *EventSubscription) context(h natsgo.Header) context.Context {
	ctx := context.Background()
	if len(h) > 0 {
		ctx = s.r.cfg.propagator.Extract(ctx, propagation.HeaderCarrier(h))
	}
	return ctx
}

// EventStats are the counts of one subscriber of a [Receiver], in this
// process.
type EventStats struct {
	// Event names the event type, Subscriber the subscriber.
	Event      string `json:"event"`
	Subscriber string `json:"subscriber"`
	// Subject is the subject its events travel on.
	Subject string `json:"subject"`
	// Consumer names its durable consumer, with JetStream.
	Consumer string `json:"consumer,omitempty"`
	// Received counts the messages that reached this process.
	Received uint64 `json:"received"`
	// Handled counts the events the subscriber handled without error;
	// Failed the deliveries it failed.
	Handled uint64 `json:"handled"`
	Failed  uint64 `json:"failed"`
	// Malformed counts the messages refused because they were not an
	// event of the subject's type: they never reached the subscriber.
	Malformed uint64 `json:"malformed"`
	// DeadLettered counts the events this process moved to the
	// dead-letter stream (JetStream).
	DeadLettered uint64 `json:"dead_lettered"`
	// Dropped counts the events NATS dropped because the subscription's
	// buffer was full (core NATS).
	Dropped uint64 `json:"dropped"`
	// Interruptions counts the times the connection was lost since the
	// subscriber subscribed, the present one included if it is down now.
	// With core NATS, each may have lost events, with no count of them:
	// those published until the subscriber was back, and those the server
	// had not yet sent it; with JetStream they wait in the stream.
	Interruptions uint64 `json:"interruptions"`
}

// Stats returns the counts of each current subscriber of r, in the order
// they subscribed: a stopped subscription is no longer listed.
func (r *Receiver) Stats() []EventStats {
	r.mu.Lock()
	subs := append([]*EventSubscription(nil), r.subs...)
	r.mu.Unlock()
	out := make([]EventStats, len(subs))
	for i, s := range subs {
		out[i] = s.Stats()
	}
	return out
}

// Metrics returns the metrics of the subscribers of r, as
// [cqrs.EventBus.Metrics] gives them, sorted by subscriber name, then by
// event: nil unless [EventConfig].Bus holds cqrs.WithMetrics.
func (r *Receiver) Metrics() []cqrs.MessageMetrics {
	r.mu.Lock()
	names := make([]string, 0, len(r.buses))
	for name := range r.buses {
		names = append(names, name)
	}
	slices.Sort(names)
	buses := make([]*cqrs.EventBus, len(names))
	for i, name := range names {
		buses[i] = r.buses[name]
	}
	r.mu.Unlock()
	var out []cqrs.MessageMetrics
	for _, b := range buses {
		out = append(out, b.Metrics()...)
	}
	return out
}

// Stats returns the counts of s.
func (s *EventSubscription) Stats() EventStats {
	st := EventStats{
		Event: s.spec.Name, Subscriber: s.spec.Subscriber, Subject: s.et.subject, Consumer: s.consumer,
		Received: s.received.Load(), Handled: s.handled.Load(), Failed: s.failed.Load(),
		Malformed: s.malformed.Load(), DeadLettered: s.buried.Load(),
	}
	if s.core != nil {
		if n, err := s.core.Dropped(); err == nil {
			st.Dropped = uint64(max(n, 0))
		}
	}
	st.Interruptions = s.r.nc.Stats().Reconnects - s.since
	if !s.r.nc.IsConnected() {
		st.Interruptions++
	}
	return st
}
