package nats

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/internal/lazyctx"
	"github.com/typedcqrs/dispatch/internal/stats"
)

// The headers of an error reply, named as NATS micro services name theirs
// so that NATS tooling shows them.
const (
	headerErrorCode = "Nats-Service-Error-Code"
	headerError     = "Nats-Service-Error"
)

// Server serves the handlers of one bus over NATS. Make one with [Serve].
type Server struct {
	nc        *natsgo.Conn
	subs      []*natsgo.Subscription
	endpoints []*endpoint
	inFlight  *sync.WaitGroup
	stopOnce  sync.Once
	stopErr   error
}

// Serve subscribes to the subject of every message type registered on bus
// so far ([Subject]), in a queue group, so that processes serving the same
// types share the load and each request is handled once. It returns once
// the NATS server knows the subscriptions, so that a request sent right
// after finds a responder.
//
// A request is decoded into a new value of its registered type, never of
// a type named by the sender, and dispatched on bus with the caller's
// remaining time as its deadline. Register the handlers before Serve;
// types registered later are not served.
//
// Each served type counts its requests, errors and latency: [Server.Stats]
// returns them, and a request to the subject prefix + "._stats" (such as
// "cqrs._stats") gets them as JSON, from every serving process that
// answers.
func Serve(nc *natsgo.Conn, bus cqrs.Bus, opts ...Option) (*Server, error) {
	cfg := newConfig(opts)
	var exec func(context.Context, any) (any, error)
	switch b := bus.(type) {
	case *cqrs.CommandBus:
		exec = b.ExecuteCommand
	case *cqrs.QueryBus:
		exec = b.Execute
	default:
		return nil, fmt.Errorf("%w: serving over NATS", cqrs.ErrNilBus)
	}
	s := &Server{nc: nc, inFlight: &sync.WaitGroup{}}
	sem := make(chan struct{}, cfg.concurrency)
	for _, spec := range bus.Specs() {
		e := &endpoint{cfg: cfg, spec: spec, subject: Subject(cfg.prefix, spec), exec: exec, sem: sem, inFlight: s.inFlight, stats: stats.New()}
		sub, err := nc.QueueSubscribe(e.subject, cfg.queueGroup, e.handle)
		if err != nil {
			_ = s.Stop()
			return nil, fmt.Errorf("cqrs/nats: serve %s: %w", spec, err)
		}
		s.subs = append(s.subs, sub)
		s.endpoints = append(s.endpoints, e)
	}
	statsSub, err := nc.Subscribe(cfg.prefix+"._stats", s.serveStats)
	if err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("cqrs/nats: serve: %w", err)
	}
	s.subs = append(s.subs, statsSub)
	if err := nc.Flush(); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("cqrs/nats: serve: %w", err)
	}
	return s, nil
}

// Stop drains the subscriptions: the requests already delivered are
// answered, and new ones go to the other members of the queue group. It
// returns when the last request has been answered, or after 30 seconds.
// While the connection is down it cannot drain, and unsubscribes instead.
// Stop may be called more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		if !s.nc.IsConnected() {
			// Draining needs the NATS server: without it, just stop.
			for _, sub := range s.subs {
				_ = sub.Unsubscribe()
			}
			s.inFlight.Wait()
			return
		}
		var closed []<-chan natsgo.SubStatus
		for _, sub := range s.subs {
			ch := sub.StatusChanged(natsgo.SubscriptionClosed)
			if err := sub.Drain(); err != nil && s.stopErr == nil && !s.nc.IsClosed() {
				s.stopErr = fmt.Errorf("cqrs/nats: stop: %w", err)
				continue
			}
			closed = append(closed, ch)
		}
		timeout := time.After(30 * time.Second)
		for _, ch := range closed {
			select {
			case <-ch:
			case <-timeout:
			}
		}
		s.inFlight.Wait()
	})
	return s.stopErr
}

// EndpointStats are the counts of one served message type.
type EndpointStats struct {
	Subject string        `json:"subject"`
	Name    string        `json:"name"`
	Kind    string        `json:"kind"`
	Calls   uint64        `json:"calls"`
	Errors  uint64        `json:"errors"`
	Mean    time.Duration `json:"mean_ns"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
}

// Stats returns the counts of each served message type.
func (s *Server) Stats() []EndpointStats {
	out := make([]EndpointStats, len(s.endpoints))
	for i, e := range s.endpoints {
		snap := e.stats.Snapshot()
		out[i] = EndpointStats{
			Subject: e.subject, Name: e.spec.Name, Kind: e.spec.Kind.String(),
			Calls: snap.Calls, Errors: snap.Errors, Mean: snap.Mean, P50: snap.P50, P99: snap.P99,
		}
	}
	return out
}

func (s *Server) serveStats(m *natsgo.Msg) {
	data, err := json.Marshal(s.Stats())
	if err == nil {
		_ = m.Respond(data)
	}
}

// endpoint serves one message type.
type endpoint struct {
	cfg      config
	spec     cqrs.Spec
	subject  string
	exec     func(context.Context, any) (any, error)
	sem      chan struct{}   // bounds the requests in flight, all endpoints together
	inFlight *sync.WaitGroup // what Stop waits for
	stats    *stats.Stats
}

// handle runs on the subscription's goroutine. With a concurrency above
// 1 it hands the request to a goroutine of its own, blocking while the
// limit is reached, which leaves the rest queued in NATS.
func (e *endpoint) handle(m *natsgo.Msg) {
	e.sem <- struct{}{}
	e.inFlight.Add(1)
	if cap(e.sem) == 1 {
		e.serve(m)
		return
	}
	go e.serve(m)
}

func (e *endpoint) serve(m *natsgo.Msg) {
	start := stats.Now()
	var err error
	defer func() {
		e.stats.Record(stats.Now()-start, err != nil)
		<-e.sem
		e.inFlight.Done()
	}()
	err = e.answer(m)
	if err != nil {
		code, data := encodeError(err)
		reply := &natsgo.Msg{Data: data, Header: natsgo.Header{headerErrorCode: {code}, headerError: {err.Error()}}}
		_ = m.RespondMsg(reply)
	}
}

// answer decodes m, dispatches it and sends the result; it returns the
// error to send instead.
func (e *endpoint) answer(m *natsgo.Msg) error {
	if n := len(m.Data); n > e.cfg.maxPayload {
		return tooLarge(e.spec, "request", n, e.cfg.maxPayload)
	}
	timeout, payload, err := open(m.Data)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadRequest, e.spec, err)
	}
	ctx := context.Background()
	if len(m.Header) > 0 {
		ctx = e.cfg.propagator.Extract(ctx, propagation.HeaderCarrier(m.Header))
	}
	if timeout > 0 {
		lazy := lazyctx.WithTimeout(ctx, timeout, nil)
		defer lazy.Stop()
		ctx = lazy
	}
	msg := reflect.New(e.spec.MessageType)
	if err := e.cfg.codec.Unmarshal(payload, msg.Interface()); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadRequest, e.spec, err)
	}
	res, err := e.exec(ctx, msg.Elem().Interface())
	if err != nil {
		return err
	}
	body, err := e.cfg.codec.Marshal(res)
	if err != nil {
		return fmt.Errorf("cqrs/nats: %s: encoding the result: %w", e.spec, err)
	}
	if len(body) > e.cfg.maxPayload {
		return tooLarge(e.spec, "result", len(body), e.cfg.maxPayload)
	}
	return m.Respond(body)
}
