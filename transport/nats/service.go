package nats

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	natsgo "github.com/nats-io/nats.go"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Service is one service's buses, and what both sides of NATS must agree
// on, for [ServeService], in the processes that handle its messages, and
// [ForwardService], in those that call it. Keep its Routes and Errors in
// the package that declares the messages, so that both sides use the
// very same ones:
//
//	// package orders
//	var Routes = []cqrsnats.Route{
//		cqrsnats.RouteFor[PlaceOrder](), cqrsnats.RouteFor[GetOrder](),
//		cqrsnats.RouteFor[ListOrders](), cqrsnats.EventRouteFor[OrderPlaced](),
//	}
//	var Errors = []cqrsnats.ErrorCode{{Code: "orders.not_found", Err: ErrNotFound}}
//
// A Service is a plain value, read by the call it is given to and not
// kept: its buses are used, its slices copied, so one Service may be
// given to several calls, from several goroutines. The zero value has
// nothing to serve or forward, which ServeService refuses.
type Service struct {
	// Commands, Queries and Events are the service's buses. On the
	// serving side, each handler and stream handler registered on
	// Commands and Queries is served, and the events of the event routes
	// published on Events are sent to NATS. On the calling side, each
	// route is forwarded from the bus of its kind, and the events of the
	// event routes received from NATS are published on Events. A nil bus
	// serves, or forwards, nothing of its kind.
	Commands *cqrs.CommandBus
	Queries  *cqrs.QueryBus
	Events   *cqrs.EventBus
	// Routes are the service's message types (see [Route]). The calling
	// side forwards exactly these. The serving side serves every handler
	// its buses have, routed or not, and checks that each command, query
	// and streaming query route has one; it needs the event routes, since
	// an event bus cannot list the events that will be published on it.
	Routes []Route
	// Errors are the service's own sentinel errors, given to both sides
	// as [WithErrors] gives them: the serving side sends their codes, the
	// calling side matches them, so that errors.Is finds them across
	// NATS. They add to those of any WithErrors among the options.
	Errors []ErrorCode
	// EventConfig carries the event routes' events: core NATS, or
	// JetStream when Durable (see [EventConfig]). Both sides must use the
	// same.
	EventConfig EventConfig
	// Subscriber is the name under which the calling side receives the
	// event routes' events (see [Subscribe]): each event reaches one
	// process among those that forward the service with the same
	// Subscriber, which publishes it on its Events bus, to every local
	// subscriber. Give each calling service its own, such as "shipping";
	// [ForwardService] refuses event routes without one. The serving side
	// ignores it.
	Subscriber string
}

// serviceSide is the set-up of one side of a Service.
type serviceSide struct {
	nc   *natsgo.Conn
	svc  Service
	cfg  config
	opts []Option // the caller's, with the Service's Errors

	// The serving side's.
	publisher  *Publisher
	forwarders []*cqrs.Subscription

	// The calling side's.
	client   *Client
	receiver *Receiver // stops every subscription it made
}

// newServiceSide reads svc and opts, refusing what neither side can use.
func newServiceSide(nc *natsgo.Conn, svc Service, opts []Option, doing string) (*serviceSide, error) {
	opts = append(append(make([]Option, 0, len(opts)+1), opts...), WithErrors(svc.Errors...))
	s := &serviceSide{nc: nc, svc: svc, cfg: newConfig(opts), opts: opts}
	if s.cfg.err != nil {
		return nil, s.cfg.err
	}
	if nc == nil {
		return nil, fmt.Errorf("%w: %s: no connection", ErrTransport, doing)
	}
	s.svc.Routes = append([]Route(nil), svc.Routes...)
	s.svc.Errors = append([]ErrorCode(nil), svc.Errors...)
	seen := map[routeInfo]bool{}
	var errs []error
	for _, r := range s.svc.Routes {
		if r == nil {
			errs = append(errs, fmt.Errorf("%w: %w", cqrs.ErrInvalidMessageType, errNilRoute))
			continue
		}
		if ri := r.info(); seen[ri] {
			errs = append(errs, fmt.Errorf("%w: %s is routed twice", cqrs.ErrHandlerExists, ri))
		} else {
			seen[ri] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("nats: %s: %w", doing, err)
	}
	return s, nil
}

// eventPublisher returns the serving side's publisher, made the first
// time.
func (s *serviceSide) eventPublisher() (*Publisher, error) {
	if s.publisher == nil {
		p, err := NewPublisher(s.nc, s.svc.EventConfig, s.opts...)
		if err != nil {
			return nil, err
		}
		s.publisher = p
	}
	return s.publisher, nil
}

// eventReceiver returns the calling side's receiver, made the first time.
func (s *serviceSide) eventReceiver() (*Receiver, error) {
	if s.receiver == nil {
		r, err := NewReceiver(s.nc, s.svc.EventConfig, s.opts...)
		if err != nil {
			return nil, err
		}
		s.receiver = r
	}
	return s.receiver, nil
}

// ServiceServer serves one [Service] over NATS: its requests, its
// streams and its events. Make one with [ServeService]; the zero value
// is not usable. Its methods are safe for concurrent use.
type ServiceServer struct {
	nc         *natsgo.Conn
	servers    []*Server // of Commands, then of Queries
	streams    *StreamServer
	publisher  *Publisher
	forwarders []*cqrs.Subscription
}

// ServeService serves svc over NATS in one call: every handler
// registered so far on svc.Commands and svc.Queries, as [Serve] serves a
// bus; every stream handler of svc.Queries, as [ServeStreams] serves
// them, without listing their types; and, for each event route, the
// events of its type published on svc.Events, sent to NATS as
// [ForwardEvents] sends them. Register the handlers first.
//
//	srv, err := cqrsnats.ServeService(nc, cqrsnats.Service{
//		Commands: commands, Queries: queries, Events: events,
//		Routes: orders.Routes, Errors: orders.Errors,
//	})
//	defer srv.Stop(ctx)
//
// The options are those of Serve and ServeStreams ([WithStreamConfig]
// among them), and of the [Publisher] of the events; svc.Errors adds to
// the error table ([WithErrors]). Each bus is served as Serve serves it:
// [WithConcurrency] and [WithMaxPending] bound each on its own.
//
// Only the events of the routes are sent: an event bus cannot list the
// types that will be published on it, and sending only what the routes
// name keeps a service's internal events in the service. Each event
// route subscribes a subscriber named [ForwarderName] to its type on
// svc.Events, before any request is served, so that the events of the
// first requests go out too; an event that this process received from
// NATS by [ForwardService] on the same bus is not sent back.
//
// ServeService checks, before it serves anything, that each command,
// query and streaming query route has its handler on svc's bus of its
// kind ([cqrs.ErrHandlerNotFound] naming the ones missing, [cqrs.ErrNilBus]
// when the bus is nil), and that each event route has svc.Events. It
// fails as Serve and ServeStreams do for a type that cannot travel; with
// an error wrapping [ErrTransport] at once when nc is not connected to a
// NATS server, naming the connection's state; and with
// [cqrs.ErrHandlerNotFound] when svc has nothing to serve. A failed
// ServeService leaves nothing served or subscribed. Like Serve, it
// returns once the NATS server knows the subscriptions.
func ServeService(nc *natsgo.Conn, svc Service, opts ...Option) (*ServiceServer, error) {
	s, err := newServiceSide(nc, svc, opts, "serve service")
	if err != nil {
		return nil, err
	}
	if err := notConnected(nc, "serve service"); err != nil {
		return nil, err
	}
	var errs []error
	events := false
	for _, r := range s.svc.Routes {
		events = events || r.info().kind == routeEvent
		if r.info().kind != routeEvent || r.info().eventByRouteFor {
			errs = append(errs, r.serve(s))
		} else if s.svc.Events == nil {
			errs = append(errs, fmt.Errorf("%w: %s: the Service has no Events bus to forward its events from", cqrs.ErrNilBus, r.info()))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("nats: serve service: %w", err)
	}
	var commands, queries, streams []cqrs.Spec
	if s.svc.Commands != nil {
		commands = s.svc.Commands.Specs()
	}
	if s.svc.Queries != nil {
		for _, spec := range s.svc.Queries.Specs() {
			if spec.Stream {
				streams = append(streams, spec)
			} else {
				queries = append(queries, spec)
			}
		}
	}
	if len(commands)+len(queries)+len(streams) == 0 && !events {
		return nil, fmt.Errorf("%w: serve service: no handler registered, and no event route", cqrs.ErrHandlerNotFound)
	}

	srv := &ServiceServer{nc: nc}
	fail := func(err error) (*ServiceServer, error) {
		_ = srv.Stop(context.Background()) // nothing ran yet, or little: it returns soon
		return nil, err
	}
	// The events first: a request served next may publish one.
	for _, r := range s.svc.Routes {
		if r.info().kind == routeEvent && !r.info().eventByRouteFor {
			err := r.serve(s)
			srv.publisher, srv.forwarders = s.publisher, s.forwarders
			if err != nil {
				return fail(err)
			}
		}
	}
	for _, b := range []struct {
		bus   cqrs.Bus
		specs []cqrs.Spec
	}{{s.svc.Commands, commands}, {s.svc.Queries, queries}} {
		if len(b.specs) == 0 {
			continue
		}
		server, err := Serve(nc, b.bus, s.opts...)
		if err != nil {
			return fail(err)
		}
		srv.servers = append(srv.servers, server)
	}
	if len(streams) > 0 {
		types := make([]StreamType, len(streams))
		for i, spec := range streams {
			types[i] = anyStream{q: spec.MessageType, r: spec.ResultType}
		}
		ss, err := ServeStreams(nc, s.svc.Queries, types, s.opts...)
		if err != nil {
			return fail(err)
		}
		srv.streams = ss
	}
	return srv, nil
}

// Stop stops serving: the request and stream servers stop together, as
// [Server.Stop] and [StreamServer.Stop] do (what was received is
// answered, and Stop waits for the handlers and streams under way); once
// none runs, the sending of events to NATS ends, after the events the
// last handlers published, and Stop waits, while the connection is up,
// for the NATS server to have them.
//
// ctx bounds it all. When ctx ends first, the handlers and streams still
// running have their contexts cancelled, as each server's Stop does, and
// the events they publish still go to NATS: call Stop again to wait for
// them and end the sending. Stop returns nil once everything stopped,
// else every error, joined ([errors.Join]), each naming what still runs.
// Stop may be called again, and from several goroutines.
func (s *ServiceServer) Stop(ctx context.Context) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	add := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	for _, srv := range s.servers {
		wg.Go(func() { add(srv.Stop(ctx)) })
	}
	if s.streams != nil {
		wg.Go(func() { add(s.streams.Stop(ctx)) })
	}
	wg.Wait()
	if len(errs) > 0 || len(s.forwarders) == 0 {
		// Handlers still run, and may publish: their events are sent
		// on, and a later Stop ends the forwarding once they returned.
		return errors.Join(errs...)
	}
	// Cancel waits for the forwarding publishes under way, each bounded
	// by NATS (with JetStream, by its timeout): not by ctx.
	cancelled := make(chan struct{})
	go func() {
		defer close(cancelled)
		for _, sub := range s.forwarders {
			sub.Cancel()
		}
	}()
	select {
	case <-cancelled:
	case <-ctx.Done():
		select {
		case <-cancelled:
		default:
			return fmt.Errorf("nats: stop: events still being sent to NATS: %w", ctx.Err())
		}
	}
	if s.nc.IsConnected() {
		var err error
		if _, ok := ctx.Deadline(); ok {
			err = s.nc.FlushWithContext(ctx)
		} else {
			err = s.nc.Flush()
		}
		if err != nil && s.nc.IsConnected() {
			add(fmt.Errorf("nats: stop: sending the last events: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ServiceStats are the counts of a [ServiceServer]: a plain value.
type ServiceStats struct {
	// Requests are those of each served command and query type (see
	// [Server.Stats]).
	Requests []EndpointStats `json:"requests"`
	// Streams are those of the streaming queries (see
	// [StreamServer.Stats]).
	Streams StreamServerStats `json:"streams"`
	// Events are those of the events sent to NATS (see
	// [Publisher.Stats]).
	Events PublisherStats `json:"events"`
}

// Stats returns the counts of s.
func (s *ServiceServer) Stats() ServiceStats {
	var out ServiceStats
	for _, srv := range s.servers {
		out.Requests = append(out.Requests, srv.Stats()...)
	}
	if s.streams != nil {
		out.Streams = s.streams.Stats()
	}
	if s.publisher != nil {
		out.Events = s.publisher.Stats()
	}
	return out
}

// ServiceClient is the calling side of one [Service], made by
// [ForwardService]: the forwarders on its buses and the receipt of its
// events. The zero value is not usable. Its methods are safe for
// concurrent use.
type ServiceClient struct {
	receiver *Receiver // nil without event routes
}

// ForwardService forwards svc's routes in one call: on svc's bus of its
// kind, each command and query route gets a forwarder, as [Forward]
// registers it, and each streaming query route one as [ForwardStream]
// registers it, so that callers go on with [cqrs.Send], [cqrs.Ask] and
// [cqrs.Stream] on those buses as before; and the events of each event
// route, published over NATS, are received as svc.Subscriber (see
// [Subscribe]) and published on svc.Events, so that its local
// subscribers see them as local ones:
//
//	remote, err := cqrsnats.ForwardService(nc, cqrsnats.Service{
//		Commands: commands, Queries: queries, Events: events,
//		Routes: orders.Routes, Errors: orders.Errors, Subscriber: "shipping",
//	})
//	defer remote.Stop(ctx)
//
// The options are those of [NewClient] (its prefix, codec, timeout),
// [WithStreamConfig] and the [Receiver]; svc.Errors adds to the error
// table ([WithErrors]), so that a service's own sentinels keep their
// identity without a second table.
//
// Each event reaches one process among those that forward the service
// with the same Subscriber (with core NATS at most once, with JetStream,
// [EventConfig].Durable, at least once), and is published there on
// svc.Events with the [cqrs.Sequential] strategy, whatever the bus's own,
// with the identity its publisher gave it ([cqrs.IdentityOf]). Its local
// subscribers' failure is the NATS subscriber's failure: with JetStream
// the event is delivered again, to every local subscriber, up to
// MaxDeliver times: make them idempotent, keyed by the event's ID. An
// event type whose events this bus already sends to NATS (a subscriber
// named [ForwarderName], from [ServeService] or [ForwardEvents]) is
// refused with [cqrs.ErrHandlerExists]: it would come back.
//
// ForwardService checks every route before it registers anything: a
// route whose bus svc lacks ([cqrs.ErrNilBus]), that the bus already
// handles ([cqrs.ErrHandlerExists]), routed twice, or whose type cannot
// travel ([ErrInvalidSubject], [ErrUnexportedFields]); event routes
// without svc.Subscriber ([cqrs.ErrInvalidName]). A failed ForwardService
// registers nothing and receives nothing. Forwarding needs no connection
// until the first call, but receiving events does: with event routes, it
// fails at once, wrapping [ErrTransport], while nc is not connected.
func ForwardService(nc *natsgo.Conn, svc Service, opts ...Option) (*ServiceClient, error) {
	c, err := newServiceSide(nc, svc, opts, "forward service")
	if err != nil {
		return nil, err
	}
	var errs []error
	events := false
	for _, r := range c.svc.Routes {
		events = events || r.info().kind == routeEvent
		errs = append(errs, r.check(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("nats: forward service: %w", err)
	}
	if events {
		if err := notConnected(nc, "forward service: receiving events"); err != nil {
			return nil, err
		}
	}
	// The events first: their subscriptions can be undone, the
	// forwarders registered on the buses cannot.
	for _, r := range c.svc.Routes {
		if r.info().kind != routeEvent {
			continue
		}
		if err := r.forward(c); err != nil {
			if c.receiver != nil {
				_ = c.receiver.Stop(context.Background()) // no event was handled yet, or few
			}
			return nil, err
		}
	}
	c.client = NewClient(nc, c.opts...)
	for _, r := range c.svc.Routes {
		if r.info().kind == routeEvent {
			continue
		}
		if err := r.forward(c); err != nil {
			// check passed, so only another goroutine registering the
			// same type on the bus meanwhile gets here.
			return nil, fmt.Errorf("nats: forward service: %w", err)
		}
	}
	return &ServiceClient{receiver: c.receiver}, nil
}

// Stop ends the receipt of the service's events, as [Receiver.Stop]
// does: it waits, bounded by ctx, for the events being handled, and
// returns nil once none is, or ctx's error, wrapped. The forwarders stay
// registered on the buses, and keep working while the connection is
// open: they hold nothing to stop. Stop may be called again.
func (c *ServiceClient) Stop(ctx context.Context) error {
	if c.receiver == nil {
		return nil
	}
	return c.receiver.Stop(ctx)
}

// Stats returns the counts of each subscriber that receives the
// service's events (see [Receiver.Stats]), or nil without event routes.
func (c *ServiceClient) Stats() []EventStats {
	if c.receiver == nil {
		return nil
	}
	return c.receiver.Stats()
}

// anyStream is the StreamType of a streaming query whose types are known
// only as reflect.Types, from the bus's Specs: it decodes the query into
// a new value of its type, and reads the stream through
// QueryBus.ExecuteStream, which boxes each item.
type anyStream struct{ q, r reflect.Type }

func (a anyStream) types() (reflect.Type, reflect.Type) { return a.q, a.r }

func (a anyStream) prepare(e *streamEndpoint, payload []byte) (run func(*serverStream) error, err error) {
	defer func() {
		if v := recover(); v != nil {
			run, err = nil, badRequest(e.spec, fmt.Errorf("the codec panicked"))
		}
	}()
	q := reflect.New(a.q)
	if err := e.s.cfg.codec.Unmarshal(payload, q.Interface()); err != nil {
		return nil, badRequest(e.spec, err)
	}
	query := q.Elem().Interface()
	return func(st *serverStream) error { return produce(st, st.e.bus.ExecuteStream(st.ctx, query)) }, nil
}
