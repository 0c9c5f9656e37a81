package nats

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Route names one declared message type of a [Service]: a command, a
// query or a streaming query, made with [RouteFor], or an event, made
// with [EventRouteFor]. [ForwardService] forwards each route to the
// processes that serve it; [ServeService] checks that each command, query
// and streaming query route has its handler, and sends each event route's
// events to NATS.
//
// A Route holds no state: it is safe for concurrent use, and one list of
// routes, kept in the package that declares the messages, can serve every
// process of a service and every caller. The zero value (nil) is refused
// with an error wrapping [cqrs.ErrInvalidMessageType].
type Route interface {
	// info describes the route's message type.
	info() routeInfo
	// serve sets up the serving side of the route: checks its handler,
	// or forwards its events to NATS.
	serve(s *serviceSide) error
	// check refuses, before anything is registered, a route that the
	// calling side could not forward.
	check(c *serviceSide) error
	// forward sets up the calling side of the route, once every route
	// passed check.
	forward(c *serviceSide) error
}

// routeKind is what kind of message a route carries.
type routeKind uint8

const (
	routeCommand routeKind = iota + 1
	routeQuery
	routeStream
	routeEvent
)

func (k routeKind) String() string {
	switch k {
	case routeCommand:
		return "command"
	case routeQuery:
		return "query"
	case routeStream:
		return "streaming query"
	default:
		return "event"
	}
}

// routeInfo is what a route says of its message type.
type routeInfo struct {
	kind    routeKind
	message reflect.Type
	// eventByRouteFor marks an event given to RouteFor, which cannot
	// subscribe to it: see RouteFor.
	eventByRouteFor bool
}

func (ri routeInfo) String() string { return ri.kind.String() + " " + ri.message.String() }

// RouteFor returns the [Route] of the declared command, query or
// streaming query M, for [ServeService] and [ForwardService]. Only M is
// written: its result, or its items, and its kind are inferred from the
// marker it embeds ([cqrs.Command], [cqrs.Query], [cqrs.StreamQuery]),
// as [cqrs.Send] infers them:
//
//	routes := []cqrsnats.Route{
//		cqrsnats.RouteFor[PlaceOrder](),  // cqrs.Command[OrderID]
//		cqrsnats.RouteFor[GetOrder](),    // cqrs.Query[Order]
//		cqrsnats.RouteFor[ListOrders](),  // cqrs.StreamQuery[Order]
//		cqrsnats.EventRouteFor[OrderPlaced](),
//	}
//
// A type that embeds no marker does not compile. An event compiles too
// (it is a declared message), but its route must come from
// [EventRouteFor]: the one of RouteFor is refused, by ServeService and
// ForwardService, with an error wrapping [cqrs.ErrInvalidMessageType]
// that says so.
func RouteFor[M cqrs.Message[R, B], R, B any]() Route { return route[M, R, B]{} }

// EventRouteFor returns the [Route] of the declared event E, for
// [ServeService], which sends the events of E that the service publishes
// on its event bus to NATS, and [ForwardService], which receives them
// from NATS and publishes them on the caller's event bus. Only E is
// written; a type that does not embed [cqrs.Event] does not compile.
func EventRouteFor[E cqrs.Message[cqrs.NoResult, *cqrs.EventBus]]() Route { return eventRoute[E]{} }

// route is the Route of a declared command, query or streaming query M
// returning R (or streaming items of type R), served by a bus of type B.
type route[M, R, B any] struct{}

func (route[M, R, B]) info() routeInfo {
	ri := routeInfo{message: reflect.TypeFor[M]()}
	// B is what M's marker says serves it: package cqrs's markers are the
	// only types that satisfy cqrs.Message, so B is one of these, or the
	// unexported type a streaming query's marker names.
	switch any(*new(B)).(type) {
	case *cqrs.CommandBus:
		ri.kind = routeCommand
	case *cqrs.QueryBus:
		ri.kind = routeQuery
	case *cqrs.EventBus:
		ri.kind, ri.eventByRouteFor = routeEvent, true
	default:
		ri.kind = routeStream
	}
	return ri
}

// refused returns why the route of r cannot be used, or nil.
func (r route[M, R, B]) refused() error {
	if ri := r.info(); ri.eventByRouteFor {
		return fmt.Errorf("%w: %s is an event: route it with cqrsnats.EventRouteFor[%s](), not RouteFor",
			cqrs.ErrInvalidMessageType, ri.message, ri.message)
	}
	return nil
}

// bus returns the bus of svc that the route's message is dispatched on,
// or nil.
func (r route[M, R, B]) bus(svc *Service) cqrs.Bus {
	switch r.info().kind {
	case routeCommand:
		if svc.Commands != nil {
			return svc.Commands
		}
	case routeQuery, routeStream:
		if svc.Queries != nil {
			return svc.Queries
		}
	}
	return nil
}

// missingBus returns the error of a route whose kind of bus svc lacks.
func missingBus(ri routeInfo) error {
	field := "Queries"
	if ri.kind == routeCommand {
		field = "Commands"
	}
	return fmt.Errorf("%w: %s: the Service has no %s bus", cqrs.ErrNilBus, ri, field)
}

func (r route[M, R, B]) serve(s *serviceSide) error {
	if err := r.refused(); err != nil {
		return err
	}
	ri := r.info()
	b := r.bus(&s.svc)
	if b == nil {
		return missingBus(ri)
	}
	// The buses are served whole: a route only says that its handler
	// must be among them.
	if err := cqrs.Require(b, ri.message); err != nil {
		return fmt.Errorf("%w: %s has no handler on the serving side, where its callers will forward it: register one before ServeService",
			cqrs.ErrHandlerNotFound, ri)
	}
	return nil
}

func (r route[M, R, B]) check(c *serviceSide) error {
	if err := r.refused(); err != nil {
		return err
	}
	ri := r.info()
	b := r.bus(&c.svc)
	if b == nil {
		return missingBus(ri)
	}
	if cqrs.Require(b, ri.message) == nil {
		return fmt.Errorf("%w: %s already has a handler on the calling side's bus: ForwardService would add a second",
			cqrs.ErrHandlerExists, ri)
	}
	spec := cqrs.SpecFor[M, R](b)
	if ri.kind == routeStream {
		spec.Stream = true
		_, _, _, err := streamAddress(&c.cfg, spec)
		return err
	}
	if _, err := subjectOf(c.cfg.prefix, "", spec); err != nil {
		return err
	}
	return checkFields(c.cfg.codec, spec)
}

func (r route[M, R, B]) forward(c *serviceSide) error {
	switch r.info().kind {
	case routeStream:
		return ForwardStream[M, R](c.svc.Queries, c.client, c.opts...)
	default:
		return Forward[M, R](r.bus(&c.svc), c.client)
	}
}

// eventRoute is the Route of the declared event E.
type eventRoute[E cqrs.Message[cqrs.NoResult, *cqrs.EventBus]] struct{}

func (eventRoute[E]) info() routeInfo {
	return routeInfo{kind: routeEvent, message: reflect.TypeFor[E]()}
}

// serve subscribes, on the service's event bus, the subscriber that
// publishes each event of E to NATS, as [ForwardEvents] does, but for
// the events this process received from NATS itself (see
// receivedFromNATS).
func (r eventRoute[E]) serve(s *serviceSide) error {
	if s.svc.Events == nil {
		return fmt.Errorf("%w: %s: the Service has no Events bus to forward its events from", cqrs.ErrNilBus, r.info())
	}
	p, err := s.eventPublisher()
	if err != nil {
		return err
	}
	if _, err := p.typeOf(eventSpec[E], reflect.TypeFor[E]()); err != nil {
		return err
	}
	sub, err := cqrs.Subscribe(s.svc.Events, ForwarderName, func(ctx context.Context, evt E) error {
		id := sentIdentity(ctx)
		if receivedFromNATS(ctx, id) {
			return nil // it came from NATS: sending it back would loop
		}
		return publishAs(ctx, p, evt, id)
	})
	if err != nil {
		return fmt.Errorf("nats: forwarding %s to NATS: %w", r.info(), err)
	}
	s.forwarders = append(s.forwarders, sub)
	return nil
}

func (r eventRoute[E]) check(c *serviceSide) error {
	ri := r.info()
	if c.svc.Events == nil {
		return fmt.Errorf("%w: %s: the Service has no Events bus to publish the events it receives on", cqrs.ErrNilBus, ri)
	}
	if c.svc.Subscriber == "" {
		return fmt.Errorf("%w: %s: the Service has no Subscriber, the name under which this service receives events", cqrs.ErrInvalidName, ri)
	}
	for _, spec := range c.svc.Events.Specs() {
		if spec.MessageType == ri.message && spec.Subscriber == ForwarderName {
			return fmt.Errorf("%w: %s is sent to NATS from this event bus (by ServeService or ForwardEvents): receiving it on the same bus would deliver each event here twice and send it back; give ForwardService another EventBus",
				cqrs.ErrHandlerExists, ri)
		}
	}
	_, err := newEventType(&c.cfg, c.svc.EventConfig.Durable, eventSpec[E]())
	return err
}

// forward subscribes, as the service's Subscriber, to the events of E
// published over NATS, each of which it publishes on the calling side's
// event bus with the identity its publisher gave it.
func (r eventRoute[E]) forward(c *serviceSide) error {
	rc, err := c.eventReceiver()
	if err != nil {
		return err
	}
	events := c.svc.Events
	_, err = Subscribe(rc, c.svc.Subscriber, func(ctx context.Context, evt E) error {
		id := sentIdentity(ctx)
		ctx = context.WithValue(cqrs.ContextWithIdentity(ctx, id), receivedKey{}, id.ID)
		// Synchronous, whatever the bus's strategy: with JetStream the
		// event is acknowledged once every local subscriber has it.
		return cqrs.PublishWith(ctx, events, cqrs.Sequential(), evt)
	})
	return err
}

// receivedKey marks the context of the local publish of an event that
// [ForwardService] received from NATS, with the event's ID.
type receivedKey struct{}

// receivedFromNATS reports whether the event being handled with ctx, of
// identity id, is one that ForwardService received from NATS: a
// subscriber that sends events to NATS must not send it back. An event
// that a local subscriber publishes in turn has an ID of its own, so it is
// sent on.
func receivedFromNATS(ctx context.Context, id cqrs.Identity) bool {
	got, ok := ctx.Value(receivedKey{}).(string)
	return ok && got == id.ID
}

// errNilRoute is the error of a nil Route in a Service.
var errNilRoute = errors.New("a nil Route: make routes with RouteFor or EventRouteFor")
