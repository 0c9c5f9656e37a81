package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/typedcqrs/dispatch/cqrs"
)

// The headers of an error reply, named as NATS micro services name theirs
// so that NATS tooling shows them.
const (
	headerErrorCode = "Nats-Service-Error-Code"
	headerError     = "Nats-Service-Error"
)

// minRemaining is the least time a request must have left for its
// handler to start: with less, the reply could not reach the caller in
// time, and the slack covers the request's trip to this process, which
// the remaining time it carries does not count. Once a caller's requests
// have told how long their way here takes at least (see lags), a request
// needs that much more left, up to a quarter of its time.
const minRemaining = time.Millisecond

// Server serves the handlers of one bus over NATS. Make one with [Serve];
// the zero value is not usable. Its methods are safe for concurrent use.
type Server struct {
	nc        *natsgo.Conn
	cfg       config
	inbox     string // replies go only to subjects that start with it
	subs      []*natsgo.Subscription
	endpoints []*endpoint

	base   context.Context // the parent of every handler's context
	cancel context.CancelFunc

	mu     sync.RWMutex // orders the sends to queue before its closing
	closed bool
	queue  chan request
	queued atomic.Int64 // bytes of the requests in queue

	workers []worker
	live    atomic.Int32  // workers not yet returned
	done    chan struct{} // closed when the last worker returns

	stopping atomic.Bool
	stopErr  error // written before queue is closed, read after done

	lags lags // each caller's least lag, to tell time on the way
}

// request is one received request, waiting for a worker.
type request struct {
	e        *endpoint
	m        *natsgo.Msg
	env      envelope
	deadline time.Time     // arrival + the caller's remaining time, capped
	margin   time.Duration // the least time left for the handler to start
}

// late reports whether r has too little time left at now for its handler
// to start: its caller will have given up before a reply could reach it.
// A worker asks when it takes r, before decoding it, and again when the
// handler is about to run, so that a worker held up in between (a loaded
// machine) does not start work for a caller who gave up.
func (r *request) late(now time.Time) bool { return r.deadline.Sub(now) < r.margin }

// errLate is answer's error for a request that became late while it was
// decoded: it is counted as expired, and gets no reply.
var errLate = errors.New("nats: the request's caller has given up")

// worker runs requests one at a time.
type worker struct {
	running atomic.Pointer[endpoint] // the request's endpoint while its handler runs
}

// Serve subscribes to the subject of every message type registered on bus
// so far ([Subject]), in a queue group, so that processes serving the same
// types share the load and each request is handled once. It returns once
// the NATS server knows the subscriptions, so that a request sent right
// after finds a responder. Register the handlers before Serve; types
// registered later are not served.
//
// A request is decoded into a new value of its registered type, never of
// a type named by the sender, and only when the type's identity it
// carries is the served one's (a request without one, such as plain JSON
// from the NATS command line, has only its subject). The reply goes only
// to a subject under the connection's inbox prefix ("_INBOX." unless
// [natsgo.CustomInboxPrefix] sets another; callers must use the same):
// a request with any other reply subject, or none, is dropped and counted
// (Refused in [Server.Stats]), so that nobody can aim one type's reply at
// another type's subject. As a second layer, let NATS enforce it: give
// the serving processes' users publish permission on "_INBOX.>" only
// through allow_responses, and the callers' users none on the reply
// subjects of others.
//
// The handler's context ends at the caller's deadline, which travels with
// the request, measured from the request's arrival in this process (and
// corrected for its time on the way: by the caller's wall clock, by up to
// a quarter of the remaining time whatever the clocks' difference, and
// wholly for the time beyond the least that the same caller's recent
// requests took, since the clocks' difference is the same in each) and
// capped by [WithMaxHandlerTime]. A request whose deadline passes before
// its handler would start (looked at when a worker takes it, and again
// once it is decoded), or that has less than a millisecond left then, plus
// the least time its caller's requests took on their way, as its reply
// needs about as long, is dropped without running, and counted (Expired).
// Requests wait in a bounded queue ([WithMaxPending], [WithConcurrency]);
// one that finds it full is refused with [ErrUnavailable].
//
// A request that carries an identity (see [Forward]) gives its handler a
// context with it, so that the handler reads it with [cqrs.IdentityOf]
// and the messages it sends join the conversation; a request without one
// gives it none, unless the bus gives every message one
// ([cqrs.WithIdentity]).
//
// A failing request always gets a reply, of a bounded size: the error's
// code, its message cut to 1 KiB, and for a validation failure at most 32
// fields. A panic's value and stack never leave the process.
//
// While it speaks the wire of v0.1.0 ([WithLegacyWire], the default),
// Serve also subscribes each type's v0.1.0 subject and takes v0.1.0's
// envelope, so that callers of v0.1.0 are served during a rolling
// upgrade; Legacy in [Server.Stats] counts their requests.
//
// Serve fails with [ErrInvalidSubject] for a type that cannot have a
// subject of its own ([Subject]), and, with the [JSON] codec, with
// [ErrUnexportedFields] for a message or result type that has unexported
// fields ([Forward] says why). When NATS refuses a subscription, or no
// server confirms them within 10 seconds, it fails with an error wrapping
// [ErrTransport] and NATS's own, which says, when the connection is not
// connected to a server, so and in what state it is.
//
// Each served type counts its requests, errors and latency: [Server.Stats]
// returns them, and a request to the subject prefix + "._stats" (such as
// "cqrs._stats") gets them as JSON, from every serving process that
// answers.
func Serve(nc *natsgo.Conn, bus cqrs.Bus, opts ...Option) (*Server, error) {
	cfg := newConfig(opts)
	if cfg.err != nil {
		return nil, cfg.err
	}
	if nc == nil {
		return nil, fmt.Errorf("%w: serve: no connection", ErrTransport)
	}
	var exec func(context.Context, any) (any, error)
	switch b := bus.(type) {
	case *cqrs.CommandBus:
		if b != nil {
			exec = b.Execute
		}
	case *cqrs.QueryBus:
		if b != nil {
			exec = b.Execute
		}
	}
	if exec == nil {
		return nil, fmt.Errorf("%w: serving over NATS", cqrs.ErrNilBus)
	}
	inbox := nc.Opts.InboxPrefix
	if inbox == "" {
		inbox = strings.TrimSuffix(natsgo.InboxPrefix, ".")
	}
	s := &Server{
		nc: nc, cfg: cfg, inbox: inbox + ".",
		queue:   make(chan request, cfg.pendingMsgs),
		workers: make([]worker, cfg.concurrency),
		done:    make(chan struct{}),
	}
	for _, spec := range bus.Specs() {
		if spec.Stream {
			continue // ServeStreams serves them
		}
		subject, err := subjectOf(cfg.prefix, "", spec)
		if err != nil {
			return nil, err
		}
		if err := checkFields(cfg.codec, spec); err != nil {
			return nil, err
		}
		id, _ := identity(spec.MessageType) // subjectOf checked it
		s.endpoints = append(s.endpoints, &endpoint{s: s, spec: spec, subject: subject, id: id, exec: exec})
	}
	if cfg.legacy {
		s.setLegacySubjects()
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.live.Store(int32(len(s.workers)))
	for i := range s.workers {
		go s.work(&s.workers[i])
	}
	fail := func(err error) (*Server, error) {
		_ = s.Stop(context.Background()) // nothing is queued yet: it returns at once
		return nil, err
	}
	for _, e := range s.endpoints {
		for _, subject := range []string{e.subject, e.legacySubject} {
			if subject == "" {
				continue
			}
			sub, err := nc.QueueSubscribe(subject, cfg.queueGroup, e.receive)
			if err != nil {
				return fail(setupError(nc, "serve "+e.spec.String(), err))
			}
			s.subs = append(s.subs, sub)
			e.subs = append(e.subs, sub)
			// receive hands each request on at once; NATS's own buffer
			// only holds the requests that arrive faster than that.
			if err := sub.SetPendingLimits(4*cfg.pendingMsgs, 4*cfg.pendingBytes); err != nil {
				return fail(setupError(nc, "serve "+e.spec.String(), err))
			}
		}
	}
	statsSub, err := nc.Subscribe(cfg.prefix+"._stats", s.serveStats)
	if err != nil {
		return fail(setupError(nc, "serve", err))
	}
	s.subs = append(s.subs, statsSub)
	if err := nc.Flush(); err != nil {
		return fail(setupError(nc, "serve", err))
	}
	return s, nil
}

// setLegacySubjects gives each endpoint its type's v0.1.0 subject, to
// serve as well, where that differs from its subject and no other
// endpoint has it as either: a request there in v0.1.0's envelope could
// be for any type that has it.
func (s *Server) setLegacySubjects() {
	holders := map[string]int{}
	for _, e := range s.endpoints {
		holders[e.subject]++
		if subject, ok := legacySubject(s.cfg.prefix, e.spec); ok && subject != e.subject {
			e.legacySubject = subject
			holders[subject]++
		}
	}
	for _, e := range s.endpoints {
		if holders[e.legacySubject] > 1 {
			e.legacySubject = ""
		}
	}
}

// Stop stops serving: the subscriptions drain (NATS gives new requests to
// the other members of the queue group, and those already delivered are
// queued), the queued requests are answered, and Stop returns nil once no
// handler runs. While the connection is down it cannot drain, and
// unsubscribes instead.
//
// When ctx ends first, Stop cancels the contexts of the handlers still
// running, refuses the requests still queued with [ErrUnavailable], and
// returns an error that wraps ctx's error and names the message types
// whose handlers still run. Stop may be called again, and from several
// goroutines: each call waits, bounded by its own ctx, for the last
// handler to return, and returns nil once none runs.
func (s *Server) Stop(ctx context.Context) error {
	if s.stopping.CompareAndSwap(false, true) {
		s.stopErr = s.drain(ctx)
		s.mu.Lock()
		s.closed = true
		close(s.queue)
		s.mu.Unlock()
	}
	select {
	case <-s.done:
		return s.stopErr
	case <-ctx.Done():
	}
	s.cancel()
	select {
	case <-s.done: // the last handlers heeded their context at once
		return s.stopErr
	default:
	}
	var running []string
	for i := range s.workers {
		if e := s.workers[i].running.Load(); e != nil {
			running = append(running, e.spec.String())
		}
	}
	return fmt.Errorf("nats: stop: %w: %d handlers still running: %s", ctx.Err(), len(running), strings.Join(running, ", "))
}

// drain ends the subscriptions, waiting, bounded by ctx, for the requests
// NATS had delivered to reach the queue.
func (s *Server) drain(ctx context.Context) error {
	if !s.nc.IsConnected() {
		for _, sub := range s.subs {
			_ = sub.Unsubscribe()
		}
		return nil
	}
	var err error
	var closed []<-chan natsgo.SubStatus
	for _, sub := range s.subs {
		ch := sub.StatusChanged(natsgo.SubscriptionClosed)
		if derr := sub.Drain(); derr != nil {
			if err == nil && !s.nc.IsClosed() {
				err = fmt.Errorf("nats: stop: %w", derr)
			}
			_ = sub.Unsubscribe()
			continue
		}
		closed = append(closed, ch)
	}
	for _, ch := range closed {
		select {
		case <-ch:
		case <-ctx.Done():
			for _, sub := range s.subs {
				_ = sub.Unsubscribe()
			}
			return err
		}
	}
	return err
}

// work runs the queued requests until the queue is closed and empty.
func (s *Server) work(w *worker) {
	defer func() {
		if s.live.Add(-1) == 0 {
			close(s.done)
		}
	}()
	for r := range s.queue {
		s.queued.Add(-int64(len(r.m.Data)))
		switch {
		case s.base.Err() != nil:
			r.e.unavailable.Add(1)
			s.replyError(r.e, r.m, fmt.Errorf("%w: %s: the serving process is stopping", ErrUnavailable, r.e.spec), false, r.env.fromLegacyCaller())
		default:
			now := time.Now()
			if r.late(now) {
				r.e.expired.Add(1) // its caller has given up: nobody waits for a reply
				continue
			}
			w.running.Store(r.e)
			r.e.serve(r, now)
			w.running.Store(nil)
		}
	}
}

// replyable reports whether reply is a subject this server may answer
// on: one under the inbox prefix, with no wildcard or white space.
func (s *Server) replyable(reply string) bool {
	return len(reply) > len(s.inbox) && strings.HasPrefix(reply, s.inbox) && !strings.ContainsAny(reply, "*> \t\r\n")
}

// replyError answers m with err, within the bounds of an error reply; if
// even that does not go out, with the code alone. byHandler tells an
// error that the handler (or the bus around it) returned from the
// serving side's own refusal: only the latter may carry a transport
// error's code (see handlerCode). legacyCaller gives the reply the form a
// v0.1.0 caller reads.
func (s *Server) replyError(e *endpoint, m *natsgo.Msg, err error, byHandler, legacyCaller bool) {
	code := codeOf(s.cfg.errors, err)
	if byHandler {
		code = handlerCode(s.cfg.errors, err)
	}
	er := replyOf(code, e.spec, err)
	var header string
	var body []byte
	if legacyCaller {
		header, body = legacyErrorReply(er)
	} else {
		header = headerSafe(er.Message)
		body, _ = json.Marshal(er) // strings and raw JSON from json.Marshal: it cannot fail
	}
	reply := &natsgo.Msg{Data: body, Header: natsgo.Header{headerErrorCode: {code}, headerError: {header}}}
	if m.RespondMsg(reply) != nil {
		_ = m.RespondMsg(&natsgo.Msg{Header: natsgo.Header{headerErrorCode: {code}}})
	}
}

// EndpointStats are the counts of one served message type.
type EndpointStats struct {
	Subject string `json:"subject"`
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	// Calls counts the requests whose handler ran; Errors those of them
	// that failed.
	Calls  uint64 `json:"calls"`
	Errors uint64 `json:"errors"`
	// Expired counts the requests dropped without running because their
	// caller's deadline had passed before a worker took them.
	Expired uint64 `json:"expired"`
	// Unavailable counts the requests refused with ErrUnavailable: the
	// queue was full, or the server stopping.
	Unavailable uint64 `json:"unavailable"`
	// Refused counts the requests dropped because their reply subject was
	// not an inbox.
	Refused uint64 `json:"refused"`
	// Legacy counts the requests from callers of v0.1.0, in its envelope
	// ([WithLegacyWire]), answered or not: while it grows, some remain.
	Legacy uint64 `json:"legacy"`
	// Dropped counts the requests NATS dropped because the
	// subscription's own buffer was full.
	Dropped uint64 `json:"dropped"`
	// Mean, P50 and P99 are the latency of the requests that ran.
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
}

// Stats returns the counts of each served message type.
func (s *Server) Stats() []EndpointStats {
	out := make([]EndpointStats, len(s.endpoints))
	for i, e := range s.endpoints {
		calls := e.stats.calls.Load()
		st := EndpointStats{
			Subject: e.subject, Name: e.spec.Name, Kind: e.spec.Kind.String(),
			Calls: calls, Errors: e.stats.errors.Load(),
			Expired: e.expired.Load(), Unavailable: e.unavailable.Load(), Refused: e.refused.Load(), Legacy: e.legacy.Load(),
			P50: e.stats.percentile(0.50), P99: e.stats.percentile(0.99),
		}
		if calls > 0 {
			st.Mean = time.Duration(e.stats.sum.Load() / calls)
		}
		for _, sub := range e.subs {
			if dropped, err := sub.Dropped(); err == nil {
				st.Dropped += uint64(max(dropped, 0))
			}
		}
		out[i] = st
	}
	return out
}

func (s *Server) serveStats(m *natsgo.Msg) {
	if !s.replyable(m.Reply) {
		return
	}
	data, err := json.Marshal(s.Stats())
	if err == nil {
		_ = m.Respond(data)
	}
}

// endpoint serves one message type.
type endpoint struct {
	s             *Server
	spec          cqrs.Spec
	subject       string
	legacySubject string // v0.1.0's subject, also served; "" for none
	id            string // the type's identity, which the envelope carries
	exec          func(context.Context, any) (any, error)
	subs          []*natsgo.Subscription

	stats                                 latency
	expired, unavailable, refused, legacy atomic.Uint64
}

// receive runs on the subscription's goroutine, for each request as it
// arrives: it stamps the request's deadline from now and queues it, or
// answers at once when it cannot be queued. It never blocks, so that
// requests do not wait, unstamped, in NATS's buffer.
func (e *endpoint) receive(m *natsgo.Msg) {
	s := e.s
	now := time.Now()
	if !s.replyable(m.Reply) {
		e.refused.Add(1)
		return
	}
	// Refused before it is opened, a request gets this version's form of
	// reply: for these errors, the same code and text for a v0.1.0 caller.
	if n := len(m.Data); n > s.cfg.maxPayload {
		s.replyError(e, m, tooLarge(e.spec, "request", n, s.cfg.maxPayload), false, false)
		return
	}
	env, err := openRequest(m, s.cfg.legacy)
	if err != nil {
		s.replyError(e, m, badRequest(e.spec, err), false, false)
		return
	}
	if env.fromLegacyCaller() {
		e.legacy.Add(1)
	}
	deadline := env.deadlineOf(now, s.cfg.maxHandlerTime)
	margin := minRemaining
	// A lag below minus the whole remaining time (a wall-clock deadline
	// more than twice as far as the remaining time) tells a caller's clock
	// set far ahead, or set again, rather than time on the way: it gets
	// the quarter alone, and does not count as its caller's least.
	if lag, ok := env.lag(now); ok && lag > -env.timeout {
		least, known := s.lags.least(m.Reply, lag, now)
		deadline = env.deadlineAfter(now, s.cfg.maxHandlerTime, least, known)
		if known {
			// The reply's way back takes about as long as the request's
			// least: with less left, it would reach the caller too late.
			// A quarter of the time at most, as the lag holds the
			// clocks' difference too.
			margin += min(max(least, 0), env.timeout/4)
		}
	}
	if deadline.Sub(now) < margin {
		e.expired.Add(1)
		return
	}
	size := int64(len(m.Data))
	s.mu.RLock()
	switch {
	case s.closed:
		err = fmt.Errorf("%w: %s: the serving process is stopping", ErrUnavailable, e.spec)
	case s.queued.Add(size) > int64(s.cfg.pendingBytes):
		s.queued.Add(-size)
		err = fmt.Errorf("%w: %s: the serving process has %d bytes of requests queued", ErrUnavailable, e.spec, s.cfg.pendingBytes)
	default:
		select {
		case s.queue <- request{e: e, m: m, env: env, deadline: deadline, margin: margin}:
		default:
			s.queued.Add(-size)
			err = fmt.Errorf("%w: %s: the serving process has %d requests queued", ErrUnavailable, e.spec, s.cfg.pendingMsgs)
		}
	}
	s.mu.RUnlock()
	if err != nil {
		e.unavailable.Add(1)
		s.replyError(e, m, err, false, env.fromLegacyCaller())
	}
}

// serve runs one request's handler and answers it.
func (e *endpoint) serve(r request, start time.Time) {
	byHandler, err := e.answer(r)
	if err == errLate {
		e.expired.Add(1)
		return
	}
	if err != nil {
		e.s.replyError(e, r.m, err, byHandler, r.env.fromLegacyCaller())
	}
	e.stats.record(time.Since(start), err != nil)
}

// answer decodes the request, dispatches it and sends the result; it
// returns the error to send instead, and whether the handler (or the bus
// around it) returned it. A panic in the codec becomes an error, as the
// bus makes a handler's.
func (e *endpoint) answer(r request) (byHandler bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &cqrs.PanicError{Message: e.spec.String(), Value: v}
		}
	}()
	if r.env.id != nil && string(r.env.id) != e.id {
		return false, badRequest(e.spec, errWrongMessage)
	}
	ctx := e.s.base
	if len(r.m.Header) > 0 {
		ctx = e.s.cfg.propagator.Extract(ctx, propagation.HeaderCarrier(r.m.Header))
		if _, ok := identityOf(r.m.Header); ok {
			ctx = withIdentity(ctx, r.m.Header) // else none: the bus may still give one
		}
	}
	dctx := withDeadline(ctx, r.deadline)
	defer dctx.stop()
	msg := reflect.New(e.spec.MessageType)
	if err := e.s.cfg.codec.Unmarshal(r.env.payload, msg.Interface()); err != nil {
		return false, badRequest(e.spec, err)
	}
	if r.late(time.Now()) {
		return false, errLate
	}
	res, err := e.exec(dctx, msg.Elem().Interface())
	if err != nil {
		return true, err
	}
	var body []byte
	if _, ok := e.s.cfg.codec.(JSON); ok {
		var enc *encoder
		enc, body, err = encodeJSON(res, 0)
		if enc != nil {
			defer enc.release() // Respond copies body before it returns
		}
	} else {
		body, err = e.s.cfg.codec.Marshal(res)
	}
	if err != nil {
		return false, fmt.Errorf("nats: %s: encoding the result: %w", e.spec, err)
	}
	if len(body) > e.s.cfg.maxPayload {
		return false, tooLarge(e.spec, "result", len(body), e.s.cfg.maxPayload)
	}
	switch err := r.m.Respond(body); {
	case err == nil, errors.Is(err, natsgo.ErrConnectionClosed):
	case errors.Is(err, natsgo.ErrMaxPayload):
		// The NATS server's own limit is below WithMaxPayload's.
		return false, fmt.Errorf("%w: %s: result of %d bytes, over the NATS server's limit of %d: %w",
			ErrPayloadTooLarge, e.spec, len(body), e.s.nc.MaxPayload(), err)
	default:
		return false, fmt.Errorf("%w: %s: sending the result: %w", ErrTransport, e.spec, err)
	}
	return false, nil
}
