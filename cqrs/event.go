package cqrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/typedcqrs/dispatch/internal/registry"
	"github.com/typedcqrs/dispatch/internal/stats"
)

// KindEvent is the kind of an [EventBus]: messages that say what happened,
// delivered to every subscriber.
const KindEvent Kind = KindQuery + 1

// Errors of the event bus.
var (
	// ErrNoSubscribers: an event was published that nobody subscribes to,
	// on a bus made with [WithRequireSubscribers]. Without that option
	// such a publish succeeds and does nothing.
	ErrNoSubscribers = errors.New("cqrs: no subscribers")

	// ErrInvalidName: a subscriber's name is empty, too long, or holds a
	// character other than an ASCII letter, digit, '-' or '_'.
	ErrInvalidName = errors.New("cqrs: invalid name")

	// ErrQueueFull: an asynchronous publish found the bus's queue full, on
	// a bus whose [EventQueue] fails fast. The event was not queued.
	ErrQueueFull = errors.New("cqrs: event queue full")

	// ErrClosed: an asynchronous publish came after [EventBus.Close]. The
	// event was not queued.
	ErrClosed = errors.New("cqrs: event bus closed")
)

// Event marks a message type as an event, as [Command] and [Query] mark
// theirs: embed it as the message's first field.
//
//	type OrderPlaced struct {
//		cqrs.Event
//		Order OrderID
//	}
//
// A declared event is published with [Publish], which needs no type
// arguments, and subscribed to with [Subscribe]; anything else is refused
// by the compiler. An event has no result: its type is a
// Message[NoResult, *EventBus].
//
// Event has no state: its zero value is the only value.
type Event struct{}

// The methods are those of every marker: see [Command]'s.
func (Event) mustEmbedCommandQueryOrEvent() {}

//lint:ignore U1000 no constraint that an Event meets asks for it: it is there so that Stream, given an event, reports servedBy
func (Event) mustEmbedStreamQuery() {}

func (Event) servedBy(*EventBus) NoResult { return NoResult{} }

func (Event) declaration() declaration {
	return declaration{kind: KindEvent, result: reflect.TypeFor[NoResult]()}
}

// SubscriberError is the error of one subscriber that failed to handle an
// event. It wraps the subscriber's own error, so [errors.Is] sees through
// it; a publish that runs every subscriber returns the errors of all that
// failed, joined.
type SubscriberError struct {
	// Event names the event, such as "orders.OrderPlaced".
	Event string
	// Subscriber is the name the subscriber was given to [Subscribe].
	Subscriber string
	// Err is the subscriber's error, a [*PanicError] if it panicked.
	Err error
}

// Error names the event and the subscriber, then gives the error.
func (e *SubscriberError) Error() string {
	return "cqrs: event " + e.Event + ": subscriber " + e.Subscriber + ": " + e.Err.Error()
}

// Unwrap returns the subscriber's error.
func (e *SubscriberError) Unwrap() error { return e.Err }

// EventBus delivers events, each to every subscriber of its type, with a
// publish [Strategy] chosen per bus ([WithStrategy]) or per call
// ([PublishWith]).
//
// Subscribers are kept by the event's type, in the registry the other
// buses use, each type's list read without locks and replaced by each
// subscription and cancellation, so
// [Subscribe] and [Subscription.Cancel] are safe while other goroutines
// publish. Each subscriber runs inside the bus's interceptors, its own
// ([WithSubscriberInterceptors]) and its own middleware, with a [Spec] of
// its own (Spec.Subscriber is its name), so a timeout, a breaker, retries
// or metrics apply to it alone.
//
// An EventBus is safe for concurrent use. The zero value is a bus with no
// options, ready to use. A bus that published asynchronously has worker
// goroutines: [EventBus.Close] drains its queue and stops them. An
// EventBus must not be copied after first use.
type EventBus struct {
	cfg    config
	mu     sync.Mutex // serialises subscriptions and cancellations
	routes registry.Registry[*eventEntry]
	queue  eventQueue
}

// NewEventBus returns an event bus with no subscribers, configured by
// opts: [WithStrategy], [WithEventQueue], [WithRequireSubscribers],
// [WithSubscriberInterceptors] and the options of every bus
// ([WithInterceptors], [WithMetrics], [WithLogger], [WithIdentity]).
func NewEventBus(opts ...Option) *EventBus {
	b := &EventBus{}
	for _, o := range opts {
		if o != nil {
			o.apply(&b.cfg)
		}
	}
	return b
}

// Kind returns KindEvent.
func (b *EventBus) Kind() Kind { return KindEvent }

// Registered returns the names of the event types that have had a
// subscriber, sorted.
func (b *EventBus) Registered() []string {
	if b == nil {
		return nil
	}
	return b.routes.Names()
}

// Specs describes every current subscriber, sorted by event name and then
// by subscriber name. Each Spec's Subscriber field names the subscriber.
func (b *EventBus) Specs() []Spec {
	if b == nil {
		return nil
	}
	var out []Spec
	for _, e := range b.routes.Entries() {
		for _, s := range e.Value.subscribers() {
			out = append(out, *s.spec)
		}
	}
	return out
}

// Metrics returns a snapshot of the metrics of every current subscriber,
// sorted as [EventBus.Specs] is, or nil when the bus was made without
// [WithMetrics]. Each counts the calls of one subscriber.
func (b *EventBus) Metrics() []MessageMetrics {
	if b == nil || !b.cfg.metrics {
		return nil
	}
	var out []MessageMetrics
	for _, e := range b.routes.Entries() {
		for _, s := range e.Value.subscribers() {
			out = append(out, metricsOf(s.spec, s.stats))
		}
	}
	return out
}

// Publish delivers evt, whose dynamic type selects the subscribers, with
// the bus's strategy. It is for callers that only have an any, such as
// transports; [Publish] is the typed entry point. Its errors are those of
// [Publish].
func (b *EventBus) Publish(ctx context.Context, evt any) error {
	return b.PublishWith(ctx, Strategy{}, evt)
}

// PublishWith is [EventBus.Publish] with strategy s; the zero Strategy
// stands for the bus's own.
func (b *EventBus) PublishWith(ctx context.Context, s Strategy, evt any) error {
	if b == nil {
		return fmt.Errorf("%w: publishing an event", ErrNilBus)
	}
	t := reflect.TypeOf(evt)
	if t == nil || isNilValue(evt) {
		return fmt.Errorf("%w: event %v", ErrNilMessage, t)
	}
	e, ok := b.routes.Lookup(registry.KeyOf(t))
	if !ok {
		return b.unrouted(ctx, s, t, evt)
	}
	return e.publish(ctx, s, evt)
}

// unrouted is the outcome of publishing evt, of type t, which never had a
// subscriber on b: the errors a publish to subscribers would have given
// for a nil ctx, a done ctx, a nil event or a closed queue, else nothing
// or ErrNoSubscribers. An event whose value type has subscribers, given
// as a pointer, or the other way round, is always ErrNoSubscribers: the
// compiler cannot refuse it (a pointer's method set includes the value's)
// and nobody would ever see it.
func (b *EventBus) unrouted(ctx context.Context, s Strategy, t reflect.Type, evt any) error {
	switch {
	case ctx == nil:
		return fmt.Errorf("%w: publishing event %s", ErrNilContext, t)
	case isNilValue(evt):
		return fmt.Errorf("%w: event %s", ErrNilMessage, t)
	case ctx.Err() != nil:
		return ctx.Err()
	case b.strategy(s).mode == modeAsync && b.queueClosed():
		return fmt.Errorf("%w: publishing event %s", ErrClosed, t)
	}
	return b.noSubscribers(t, t.String())
}

// pointerHint says, for an event of type t that has no subscribers on b,
// that its subscribers take the value where t is a pointer, or a pointer
// where t is a value; it returns "" when neither has subscribers.
func (b *EventBus) pointerHint(t reflect.Type) string {
	var other reflect.Type
	if t.Kind() == reflect.Pointer {
		other = t.Elem()
	} else {
		other = reflect.PointerTo(t)
	}
	e, ok := b.routes.Lookup(registry.KeyOf(other))
	if !ok || !e.route.live() {
		return ""
	}
	if t.Kind() == reflect.Pointer {
		return "; its subscribers take " + other.String() + ": publish the value, not a pointer"
	}
	return "; its subscribers take " + other.String() + ": publish a pointer, not the value"
}

func (b *EventBus) logger() *slog.Logger {
	if b.cfg.logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.cfg.logger
}

func (b *EventBus) strategy(s Strategy) Strategy {
	if s.mode == 0 {
		s = b.cfg.events.strategy
	}
	if s.mode == 0 {
		s = Sequential()
	}
	return s
}

// noSubscribers is the outcome of publishing an event of type t, named
// name, that has no subscribers on b: nil, or ErrNoSubscribers on a bus
// made with WithRequireSubscribers, or whatever the bus, when the event's
// pointer (or value) type has subscribers: see unrouted.
func (b *EventBus) noSubscribers(t reflect.Type, name string) error {
	if hint := b.pointerHint(t); hint != "" {
		return fmt.Errorf("%w: event %s%s", ErrNoSubscribers, name, hint)
	}
	if b.cfg.events.requireSubscribers {
		return fmt.Errorf("%w: event %s", ErrNoSubscribers, name)
	}
	return nil
}

// Publish delivers the declared event evt to every subscriber of its type
// on b, with b's [Strategy]:
//
//	err := cqrs.Publish(ctx, events, OrderPlaced{Order: id})
//
// No type argument is written, and a message that is not a declared
// [Event] does not compile. With no subscriber, Publish returns nil, or an
// error wrapping [ErrNoSubscribers] on a bus made with
// [WithRequireSubscribers].
//
// What the error holds depends on the strategy: see [Strategy]. Each
// subscriber's failure is a [*SubscriberError] naming it; a subscriber that
// panicked failed with a [*PanicError]. A nil b is [ErrNilBus], a nil ctx
// [ErrNilContext], a nil pointer evt [ErrNilMessage], and a ctx already
// done is ctx.Err(), before any subscriber runs.
//
// A Sequential or StopOnError publish allocates nothing unless a
// subscriber fails. Once the bus has run a while, neither does a
// Concurrent one (without CancelOnError), nor an Async one from the same
// context as the last asynchronous publish: see [EventQueue].
func Publish[E Message[NoResult, *EventBus]](ctx context.Context, b *EventBus, evt E) error {
	return PublishWith(ctx, b, Strategy{}, evt)
}

// PublishWith is [Publish] with strategy s for this call only; the zero
// Strategy stands for the bus's own.
func PublishWith[E Message[NoResult, *EventBus]](ctx context.Context, b *EventBus, s Strategy, evt E) error {
	if b == nil {
		return fmt.Errorf("%w: publishing an event", ErrNilBus)
	}
	e, ok := b.routes.Lookup(registry.KeyFor[E]())
	if !ok {
		return b.unrouted(ctx, s, reflect.TypeFor[E](), any(evt))
	}
	r, ok := e.typed.(*eventRoute[E])
	if !ok { // never: the entry was found by E
		return fmt.Errorf("cqrs: event %s: internal type mismatch", e.spec.Name)
	}
	return r.publishTyped(ctx, b.strategy(s), evt)
}

// Subscribe adds fn, named name, to the subscribers of the declared event
// type E on b, decorated by mws (the first listed outermost) inside the
// bus's interceptors and those the bus gives name
// ([WithSubscriberInterceptors]). E is inferred from fn, a plain function
// or a method value:
//
//	sub, err := cqrs.Subscribe(events, "email", mailer.OrderPlaced)
//
// name identifies the subscriber in errors, logs, metrics and spans, and
// across processes (as a durable consumer's name): it is 1 to 128 ASCII
// letters, digits, '-' or '_', and unique among E's subscribers on b
// ([ErrInvalidName], [ErrHandlerExists]). A nil fn or middleware is
// [ErrNilHandler]. A failed Subscribe changes nothing.
//
// Subscribe is safe while other goroutines publish: a publish that starts
// after it returns calls fn. Subscribers of one event are called in the
// order they subscribed, where the strategy calls them in order.
func Subscribe[E Message[NoResult, *EventBus]](b *EventBus, name string, fn func(ctx context.Context, evt E) error, mws ...Middleware[E, NoResult]) (*Subscription, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: subscribing to an event", ErrNilBus)
	}
	t := reflect.TypeFor[E]()
	// Check under the lock, build the subscriber's chain outside it (the
	// middleware and interceptors are user code, which may subscribe or
	// cancel on this bus), then check again and add under the lock: a
	// failed Subscribe changes nothing, and a duplicate is refused before
	// the interceptors set anything up for it.
	b.mu.Lock()
	spec := &Spec{Kind: KindEvent, Name: b.nameFor(t), MessageType: t,
		ResultType: reflect.TypeFor[NoResult](), Subscriber: name}
	err := b.checkSubscriber(t, spec, fn == nil)
	b.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s := &subscriber[E]{spec: spec, log: b.logger()}
	ics := b.cfg.interceptors
	if own := b.cfg.events.subscriberInterceptors[name]; len(own) > 0 {
		ics = slices.Concat(ics, own)
	}
	if len(mws) == 0 && len(ics) == 0 {
		s.fn = fn
	} else if s.handler, err = decorate(spec, subscriberHandler(spec, s.log, fn), mws, ics, nil); err != nil {
		return nil, err
	}
	if b.cfg.metrics {
		s.stats = stats.New()
	}
	s.direct = s.fn != nil && s.stats == nil

	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkSubscriber(t, spec, false); err != nil {
		return nil, err // another Subscribe took the name meanwhile
	}
	r, err := lookupRoute[E](b, t)
	if err == nil && r == nil {
		r, err = addRoute[E](b, t, spec.Name)
	}
	if err != nil {
		return nil, err
	}
	sub := &Subscription{spec: spec}
	sub.cancel = func() { r.remove(b, s) }
	r.add(s)
	return sub, nil
}

// WithSubscriberInterceptors gives the subscribers named name interceptors
// of their own: every subscription of that name on the bus, to any event
// type, runs inside ics (the first listed outermost), inside the bus's
// own interceptors ([WithInterceptors]) and outside the middleware given
// to [Subscribe]. Each interceptor is set up per subscription, with the
// subscription's [Spec], whose Subscriber is name, as the bus's are: so
// one subscriber can have retries and another a timeout.
//
//	events := cqrs.NewEventBus(
//		cqrs.WithSubscriberInterceptors("email", middleware.Retry(middleware.RetryConfig{})),
//		cqrs.WithSubscriberInterceptors("stock", middleware.Timeout(time.Second)),
//	)
//
// Repeated options for one name append. A nil interceptor makes the
// Subscribe of that name fail with [ErrNilHandler]; a name that no
// subscription has changes nothing. Buses of other kinds ignore it.
func WithSubscriberInterceptors(name string, ics ...Interceptor) Option {
	return optionFunc(func(c *config) {
		if c.events.subscriberInterceptors == nil {
			c.events.subscriberInterceptors = map[string][]Interceptor{}
		}
		own := c.events.subscriberInterceptors[name]
		c.events.subscriberInterceptors[name] = append(own[:len(own):len(own)], ics...)
	})
}

// checkSubscriber says why the subscriber spec describes, for event type
// t, cannot be added to b now, or returns nil. b.mu is held.
func (b *EventBus) checkSubscriber(t reflect.Type, spec *Spec, nilFn bool) error {
	if err := checkSubscriberName(spec.Subscriber); err != nil {
		return fmt.Errorf("%w: subscribing to event %s: %q: %s", ErrInvalidName, spec.Name, spec.Subscriber, err)
	}
	if nilFn {
		return fmt.Errorf("%w: subscribing %s", ErrNilHandler, spec)
	}
	if e, ok := b.routes.Lookup(registry.KeyOf(t)); ok && e.route.has(spec.Subscriber) {
		return fmt.Errorf("%w: %s: another subscriber has that name", ErrHandlerExists, spec)
	}
	return nil
}

// checkSubscriberName says what is wrong with a subscriber's name.
func checkSubscriberName(name string) error {
	if name == "" || len(name) > 128 {
		return errors.New("must be 1 to 128 characters")
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("%q is not an ASCII letter, digit, '-' or '_'", c)
		}
	}
	return nil
}

// lookupRoute returns the route of event type E on b, or nil if E has
// never had a subscriber.
func lookupRoute[E any](b *EventBus, t reflect.Type) (*eventRoute[E], error) {
	e, ok := b.routes.Lookup(registry.KeyOf(t))
	if !ok {
		return nil, nil
	}
	r, ok := e.typed.(*eventRoute[E])
	if !ok { // never: the entry was found by E
		return nil, fmt.Errorf("cqrs: event %s: internal type mismatch", e.spec.Name)
	}
	return r, nil
}

// addRoute adds the route of event type E, named name, to b. b.mu is
// held.
func addRoute[E any](b *EventBus, t reflect.Type, name string) (*eventRoute[E], error) {
	spec := &Spec{Kind: KindEvent, Name: name, MessageType: t, ResultType: reflect.TypeFor[NoResult]()}
	r := &eventRoute[E]{bus: b, spec: spec, nils: nilKindOf(t)}
	r.list.Store(newSubscriberList[E](nil))
	e := &eventEntry{spec: spec, typed: r, route: r}
	if err := b.routes.Add(t, name, e); err != nil {
		return nil, fmt.Errorf("%w: %s: another event type on the bus has that name (this one is %s); declare another EventName",
			ErrHandlerExists, spec, typePath(t))
	}
	return r, nil
}

// nameFor names event type t on b as [Register] names message types: its
// declared EventName, else its %T name, unless another event type on b
// already has that name: then its %T name with its full import path.
func (b *EventBus) nameFor(t reflect.Type) string {
	if e, ok := b.routes.Lookup(registry.KeyOf(t)); ok {
		return e.spec.Name
	}
	name := nameOf(t, KindEvent)
	if name != t.String() {
		return name
	}
	if e, ok := b.routes.Named(name); ok && typePath(e.Type) != typePath(t) {
		return typePath(t)
	}
	return name
}

// Subscription is one subscriber's place on an [EventBus], returned by
// [Subscribe]. It is safe for concurrent use. The zero Subscription, like
// a nil *Subscription, is one already cancelled: its methods do nothing.
type Subscription struct {
	spec   *Spec
	once   sync.Once
	cancel func()
}

// Cancel removes the subscriber. When Cancel returns, the subscriber is
// not running for any publish that could still call it, and it is never
// called again: Cancel waits for the publishes that were under way and
// might call it. So a subscriber must not cancel its own subscription, nor
// one of its event type, while it handles an event: it would wait for its
// own publish. (Do it from another goroutine, which returns once this call
// has ended.) The same holds for any Cancel of a subscription of an event
// whose publish is under way further up the same goroutine, including the
// asynchronous strategy's worker. Cancel may be called more than once.
func (s *Subscription) Cancel() {
	if s == nil || s.cancel == nil {
		return
	}
	s.once.Do(s.cancel)
}

// Spec describes the subscriber: its event and, in Subscriber, its name.
func (s *Subscription) Spec() Spec {
	if s == nil || s.spec == nil {
		return Spec{}
	}
	return *s.spec
}

// eventEntry is what the registry of an EventBus holds for one event type.
type eventEntry struct {
	spec  *Spec
	typed any // *eventRoute[E], for Publish
	route interface {
		publish(ctx context.Context, s Strategy, evt any) error
		subscribers() []subscriberInfo
		has(name string) bool
		live() bool // it has subscribers
	}
}

func (e *eventEntry) publish(ctx context.Context, s Strategy, evt any) error {
	return e.route.publish(ctx, s, evt)
}

func (e *eventEntry) subscribers() []subscriberInfo { return e.route.subscribers() }

// subscriberInfo is what Specs and Metrics read of a subscriber.
type subscriberInfo struct {
	spec  *Spec
	stats *stats.Stats
}

// eventRoute is the publish path of one event type.
type eventRoute[E any] struct {
	bus  *EventBus
	spec *Spec
	nils nilKind
	list atomic.Pointer[subscriberList[E]]
	// draining holds the generations replaced while publishes may still
	// read them; guarded by bus.mu.
	draining []*subscriberList[E]
	// jobs recycles the jobs of asynchronous publishes, runs the states
	// of concurrent ones.
	jobs jobList[E]
	runs runList[E]
}

// subscriberList is one immutable generation of an event's subscribers.
// A publish counts itself in readers while it may call them; a
// cancellation retires the generation and waits for its readers.
type subscriberList[E any] struct {
	subs []*subscriber[E]
	// fns holds the subscribers' functions when every one may be called
	// directly (see subscriber.direct), else nil: the ordered strategies
	// then loop over plain functions.
	fns     []func(context.Context, E) error
	readers atomic.Int64  // publishes under way, plus retired once retired
	done    chan struct{} // closed when retired and no publish reads it
	closed  atomic.Bool   // done is closed
}

func newSubscriberList[E any](subs []*subscriber[E]) *subscriberList[E] {
	l := &subscriberList[E]{subs: subs, done: make(chan struct{})}
	fns := make([]func(context.Context, E) error, 0, len(subs))
	for _, s := range subs {
		if !s.direct {
			return l
		}
		fns = append(fns, s.fn)
	}
	l.fns = fns
	return l
}

// retired is added to readers when a generation is replaced; it is far
// above any count of publishes.
const retired = 1 << 62

// acquire returns the current generation, counted as read until release.
// The count itself says whether the generation was retired before it:
// then the cancellation that retired it may not have seen this reader,
// so the generation is let go and the current one loaded again. Retired
// after it, the generation is waited for by its cancellation, which saw
// this reader in the count. One atomic addition and one load, the fewest
// a reader can do that a cancellation must see.
func (r *eventRoute[E]) acquire() *subscriberList[E] {
	for {
		l := r.list.Load()
		if l.readers.Add(1) < retired {
			return l
		}
		l.release()
	}
}

func (l *subscriberList[E]) release() {
	if l.readers.Add(-1) == retired && l.closed.CompareAndSwap(false, true) {
		close(l.done)
	}
}

// retire marks l replaced. A publish that loads l after it was replaced
// counts itself for a moment, sees the replacement and lets go without
// calling anyone; l.done is closed once no publish reads l.
func (l *subscriberList[E]) retire() {
	if l.readers.Add(retired) == retired && l.closed.CompareAndSwap(false, true) {
		close(l.done)
	}
}

// drained reports whether no publish reads l any more.
func (l *subscriberList[E]) drained() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// has reports whether s is among l's subscribers.
func (l *subscriberList[E]) has(s *subscriber[E]) bool {
	return slices.Contains(l.subs, s)
}

// replace publishes next as r's generation and retires the current one,
// keeping it among those draining until no publish reads it. bus.mu is
// held.
func (r *eventRoute[E]) replace(next *subscriberList[E]) {
	old := r.list.Swap(next)
	old.retire()
	r.draining = slices.DeleteFunc(r.draining, (*subscriberList[E]).drained)
	if !old.drained() {
		r.draining = append(r.draining, old)
	}
}

func (r *eventRoute[E]) live() bool { return len(r.list.Load().subs) > 0 }

func (r *eventRoute[E]) has(name string) bool {
	for _, s := range r.list.Load().subs {
		if s.spec.Subscriber == name {
			return true
		}
	}
	return false
}

// add publishes a generation with s last. b.mu is held.
func (r *eventRoute[E]) add(s *subscriber[E]) {
	old := r.list.Load()
	r.replace(newSubscriberList(append(old.subs[:len(old.subs):len(old.subs)], s)))
}

// remove publishes a generation without s, then waits for every
// publish that may still call s: those reading any earlier generation
// that holds s, the one replaced here or one replaced before (by another
// subscription or cancellation) and still read.
func (r *eventRoute[E]) remove(b *EventBus, s *subscriber[E]) {
	b.mu.Lock()
	old := r.list.Load()
	subs := make([]*subscriber[E], 0, len(old.subs))
	for _, x := range old.subs {
		if x != s {
			subs = append(subs, x)
		}
	}
	r.replace(newSubscriberList(subs))
	var wait []*subscriberList[E]
	for _, l := range r.draining {
		if l.has(s) {
			wait = append(wait, l)
		}
	}
	b.mu.Unlock()
	for _, l := range wait {
		<-l.done
	}
}

func (r *eventRoute[E]) subscribers() []subscriberInfo {
	subs := r.list.Load().subs
	out := make([]subscriberInfo, len(subs))
	for i, s := range subs {
		out[i] = subscriberInfo{spec: s.spec, stats: s.stats}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].spec.Subscriber < out[j].spec.Subscriber })
	return out
}

// publish is the untyped entry point's path.
func (r *eventRoute[E]) publish(ctx context.Context, s Strategy, evt any) error {
	e, ok := evt.(E)
	if !ok { // never: the entry was found by evt's type
		return fmt.Errorf("cqrs: %s given a %T", r.spec, evt)
	}
	return r.publishTyped(ctx, r.bus.strategy(s), e)
}

// subscriber is one subscriber of event type E.
type subscriber[E any] struct {
	spec    *Spec
	fn      func(context.Context, E) error // the function, when nothing decorates it
	handler Handler[E, NoResult]           // else decorated by middleware and interceptors
	stats   *stats.Stats                   // nil when metrics are off
	log     *slog.Logger
	direct  bool // fn may be called as it is: no decoration, no metrics
}

// call runs the subscriber on evt: its middleware, interceptors and
// function, recording the outcome when metrics are on. A panic in an
// interceptor is recovered here; one in a decorated function, innermost,
// by subscriberHandler, so that the interceptors see it as an error.
func (s *subscriber[E]) call(ctx context.Context, evt E) (err error) {
	if s.stats != nil {
		start := stats.Now()
		defer func() { s.stats.Record(stats.Now()-start, err != nil) }()
	}
	defer func() {
		if v := recover(); v != nil {
			err = panicked(ctx, s.log, s.spec, v)
		}
	}()
	if s.fn != nil {
		return s.fn(ctx, evt)
	}
	_, err = s.handler.Handle(ctx, evt)
	return err
}

// subscriberHandler adapts fn to a Handler that returns a panic in fn as a
// *PanicError, so that every middleware and interceptor around it sees
// the panic as the subscriber's error.
func subscriberHandler[E any](spec *Spec, log *slog.Logger, fn func(context.Context, E) error) Handler[E, NoResult] {
	return HandlerFunc[E, NoResult](func(ctx context.Context, evt E) (_ NoResult, err error) {
		defer func() {
			if v := recover(); v != nil {
				err = panicked(ctx, log, spec, v)
			}
		}()
		return NoResult{}, fn(ctx, evt)
	})
}

// failed wraps a subscriber's error with its names.
func (s *subscriber[E]) failed(err error) error {
	return &SubscriberError{Event: s.spec.Name, Subscriber: s.spec.Subscriber, Err: err}
}
