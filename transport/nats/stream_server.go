package nats

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/typedcqrs/dispatch/cqrs"
)

// StreamType names one streaming query type, with its item type, for
// [ServeStreams]: make it with [StreamTypeFor]. The zero value (nil) is
// refused.
type StreamType interface {
	types() (q, r reflect.Type)
	// prepare decodes a request's query and returns the run of its
	// stream, or the error to refuse it with.
	prepare(e *streamEndpoint, payload []byte) (func(*serverStream) error, error)
}

type streamType[Q, R any] struct{}

// StreamTypeFor returns the [StreamType] of the streaming query Q, whose
// items are of type R, as registered on a bus with [cqrs.HandleStream] or
// [cqrs.RegisterStream].
//
// ServeStreams takes the stream types it serves from these, each run
// through [cqrs.StreamOf] with its item type known at compile time;
// [ServeService] serves every stream of a bus without them, through
// [cqrs.QueryBus.ExecuteStream].
func StreamTypeFor[Q, R any]() StreamType { return streamType[Q, R]{} }

func (streamType[Q, R]) types() (reflect.Type, reflect.Type) {
	return reflect.TypeFor[Q](), reflect.TypeFor[R]()
}

func (streamType[Q, R]) prepare(e *streamEndpoint, payload []byte) (run func(*serverStream) error, err error) {
	defer func() {
		if v := recover(); v != nil {
			run, err = nil, badRequest(e.spec, fmt.Errorf("the codec panicked"))
		}
	}()
	var q Q
	if err := e.s.cfg.codec.Unmarshal(payload, &q); err != nil {
		return nil, badRequest(e.spec, err)
	}
	return func(st *serverStream) error { return produce(st, cqrs.StreamOf[R](st.ctx, st.e.bus, q)) }, nil
}

// produce sends the items of items, the local stream of the caller's
// query, until it ends, fails, or the stream stops.
func produce[R any](st *serverStream, items iter.Seq2[R, error]) error {
	for item, err := range items {
		if err != nil {
			return err
		}
		data, err := marshalItem(st.e.s.cfg.codec, item)
		if err != nil {
			return fmt.Errorf("nats: %s: encoding an item: %w", st.e.spec, err)
		}
		if !st.send(data) {
			break
		}
	}
	if st.err != nil {
		return st.err
	}
	return st.ctx.Err()
}

// marshalItem encodes item, turning the codec's panic into an error: a
// panic in a range loop's body must not reach the bus's iterator.
func marshalItem[R any](codec Codec, item R) (data []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			data, err = nil, fmt.Errorf("the codec panicked: %v", v)
		}
	}()
	return codec.Marshal(item)
}

// The causes with which a served stream's context is cancelled.
var (
	errCallerCancelled = errors.New("nats: the caller cancelled the stream")
	errCallerGone      = errors.New("nats: no word from the caller within its heartbeats")
	errServerStopping  = errors.New("nats: the serving process is stopping")
)

// StreamServer serves the streaming queries of one bus over NATS. Make
// one with [ServeStreams]; the zero value is not usable. Its methods are
// safe for concurrent use.
type StreamServer struct {
	nc        *natsgo.Conn
	cfg       config
	scfg      StreamConfig
	inbox     string // items go only to subjects that start with it
	control   string // the control subjects' prefix, ending with '.'
	endpoints []*streamEndpoint
	subs      []*natsgo.Subscription
	ctlSub    *natsgo.Subscription

	mu       sync.RWMutex
	streams  map[string]*serverStream
	closed   bool
	drained  bool          // the request subscriptions have ended
	done     chan struct{} // closed once drained and no stream runs
	doneOnce sync.Once

	malformed, stray atomic.Uint64
}

// ServeStreams serves over NATS the streaming queries of bus that types
// names (see [StreamTypeFor]), each on the subject prefix + ".stream." +
// the rest of [Subject], in the queue group, so that processes serving
// the same types share the streams and each stream runs once. types must
// name every streaming query registered on bus, and only those: a type
// that is not registered there as a stream, or a streaming query of bus
// missing from types, fails with an error wrapping
// [cqrs.ErrHandlerNotFound], and a type given with other items than its
// handler yields with [cqrs.ErrResultType]. It returns once the NATS
// server knows the subscriptions.
//
// Each stream runs the local stream ([cqrs.StreamOf]) on a goroutine of
// its own, with a context that carries the caller's deadline (streams are
// not capped by [WithMaxHandlerTime]), its trace context and the
// identity the caller's context had ([cqrs.IdentityOf]; a new one when
// it had none), and sends each item as one NATS message to the caller's
// inbox: see [ForwardStream] for the flow control, the cancellation both
// ways and the errors. A producer is never more than the window of items
// ahead of its caller ([StreamConfig]): its yield blocks until the caller
// has read them, so a slow caller costs this process nothing but the
// producer's own state. Its context is cancelled when the caller cancels,
// when the caller is silent for 4 of the heartbeats this process granted
// it (at most its own [StreamConfig.Heartbeat]), and when
// [StreamServer.Stop] gives up waiting.
//
// Only the caller can steer its stream. Each stream's control subject
// ends with 128 random bits, told only to the caller's inbox, so that
// nobody can cancel another's stream, grant it credit or keep it alive
// by guessing; an acknowledgement of more items than were sent is
// refused and counted as malformed; and every frame sent to the caller
// carries the random key the caller sent with its request, so that the
// caller drops frames that anyone else publishes to its inbox. These
// hold against parties that can neither read the caller's inbox nor
// subscribe to prefix + ".stream.>": the NATS permissions that ensure it
// are in docs/distributed.md, "Permissions".
//
// A request is decoded into a new value of the served type, and only when
// the identity it carries is that type's; items go only to a subject
// under the connection's inbox prefix, as [Serve]'s replies. A request
// that cannot be served is refused with an error frame: [ErrBadRequest],
// [ErrPayloadTooLarge], or [ErrUnavailable] when [StreamConfig.MaxStreams]
// streams run or the server is stopping. Malformed bytes are counted
// ([StreamServer.Stats]), never a crash.
//
// ServeStreams fails as [Serve] does for a type that cannot have a
// subject or that has unexported fields under [JSON], and with
// [cqrs.ErrNilBus] for a nil bus. [Serve] leaves streaming queries to
// it.
func ServeStreams(nc *natsgo.Conn, bus *cqrs.QueryBus, types []StreamType, opts ...Option) (*StreamServer, error) {
	cfg := newConfig(opts)
	if cfg.err != nil {
		return nil, cfg.err
	}
	if bus == nil {
		return nil, fmt.Errorf("%w: serving streams over NATS", cqrs.ErrNilBus)
	}
	if nc == nil {
		return nil, fmt.Errorf("%w: serve streams: no connection", ErrTransport)
	}
	inbox := nc.Opts.InboxPrefix
	if inbox == "" {
		inbox = strings.TrimSuffix(natsgo.InboxPrefix, ".")
	}
	unique := nc.NewInbox()
	unique = unique[strings.LastIndexByte(unique, '.')+1:]
	s := &StreamServer{
		nc: nc, cfg: cfg, scfg: streamConfigOf(opts), inbox: inbox + ".",
		control: cfg.prefix + "." + streamInfix + controlToken + "." + unique + ".",
		streams: map[string]*serverStream{},
		done:    make(chan struct{}),
	}
	if err := s.endpointsOf(bus, types); err != nil {
		return nil, err
	}
	fail := func(err error) (*StreamServer, error) {
		for _, sub := range s.subs {
			_ = sub.Unsubscribe()
		}
		return nil, err
	}
	ctl, err := nc.Subscribe(s.control+"*", s.controlled)
	if err != nil {
		return fail(fmt.Errorf("%w: serve streams: %w", ErrTransport, err))
	}
	s.ctlSub = ctl
	s.subs = append(s.subs, ctl)
	for _, e := range s.endpoints {
		sub, err := nc.QueueSubscribe(e.subject, cfg.queueGroup, e.receive)
		if err != nil {
			return fail(fmt.Errorf("%w: serve %s: %w", ErrTransport, e.spec, err))
		}
		s.subs = append(s.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		return fail(fmt.Errorf("%w: serve streams: %w", ErrTransport, err))
	}
	return s, nil
}

// endpointsOf makes an endpoint of each of types, checking them against
// the streams registered on bus.
func (s *StreamServer) endpointsOf(bus *cqrs.QueryBus, types []StreamType) error {
	registered := map[reflect.Type]cqrs.Spec{}
	for _, spec := range bus.Specs() {
		if spec.Stream {
			registered[spec.MessageType] = spec
		}
	}
	given := map[reflect.Type]bool{}
	for _, typ := range types {
		if typ == nil {
			return fmt.Errorf("%w: serve streams: a nil StreamType", cqrs.ErrHandlerNotFound)
		}
		q, r := typ.types()
		spec, ok := registered[q]
		switch {
		case !ok:
			return fmt.Errorf("%w: serve streams: no stream handler for %s on the query bus", cqrs.ErrHandlerNotFound, q)
		case spec.ResultType != r:
			return fmt.Errorf("%w: serve streams: %s streams %s, not %s", cqrs.ErrResultType, spec, spec.ResultType, r)
		case given[q]:
			continue
		}
		given[q] = true
		subject, id, item, err := streamAddress(&s.cfg, spec)
		if err != nil {
			return err
		}
		s.endpoints = append(s.endpoints, &streamEndpoint{
			s: s, bus: bus, typ: typ, spec: spec, subject: subject, id: id, item: item,
		})
	}
	var missing []string
	for q, spec := range registered {
		if !given[q] {
			missing = append(missing, fmt.Sprintf("cqrsnats.StreamTypeFor[%s, %s]()", q, spec.ResultType))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: serve streams: the bus streams types not given: add %s", cqrs.ErrHandlerNotFound, strings.Join(missing, ", "))
	}
	return nil
}

// Stop stops serving streams: the subscriptions to requests drain (NATS
// gives new streams to the other members of the queue group, and the
// requests already delivered are refused with [ErrUnavailable]), and Stop
// returns nil once they have ended and no stream runs, so that the
// connection may be closed next without leaving a request unanswered.
//
// When ctx ends first, Stop cancels the producers' contexts, so that
// their callers' streams end with an error wrapping [ErrUnavailable], and
// returns an error wrapping ctx's error that names the streams still
// running. Stop may be called again, and from several goroutines: each
// call waits, bounded by its own ctx, for the last stream to end.
func (s *StreamServer) Stop(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	s.mu.Unlock()
	if first {
		// Drain hands the requests already delivered to receive, which
		// refuses them, and ends the subscription after: wait for that,
		// or a Close right after Stop drops them unanswered; within ctx,
		// and while the connection is up, which draining needs.
		down := s.nc.StatusChanged(natsgo.DISCONNECTED, natsgo.RECONNECTING, natsgo.CLOSED)
		var drained []<-chan natsgo.SubStatus
		for _, sub := range s.subs[1:] {
			ch := sub.StatusChanged(natsgo.SubscriptionClosed)
			if !s.nc.IsConnected() || sub.Drain() != nil {
				_ = sub.Unsubscribe()
				continue
			}
			drained = append(drained, ch)
		}
	wait:
		for _, ch := range drained {
			select {
			case <-ch:
			case <-ctx.Done():
				break wait
			case <-down:
				break wait
			}
		}
		s.nc.RemoveStatusListener(down)
		for _, sub := range s.subs[1:] {
			_ = sub.Unsubscribe() // ended already, unless the wait was cut short
		}
		s.mu.Lock()
		s.drained = true
		s.mu.Unlock()
		s.checkDone()
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
	}
	s.mu.RLock()
	var running []string
	for _, st := range s.streams {
		st.cancel(errServerStopping)
		running = append(running, st.e.spec.String())
	}
	s.mu.RUnlock()
	if len(running) == 0 {
		return nil
	}
	return fmt.Errorf("nats: stop streams: %w: %d streams still running: %s", ctx.Err(), len(running), strings.Join(running, ", "))
}

// checkDone closes done once the server is drained and no stream runs.
func (s *StreamServer) checkDone() {
	s.mu.RLock()
	idle := s.drained && len(s.streams) == 0
	s.mu.RUnlock()
	if idle {
		s.doneOnce.Do(func() {
			_ = s.ctlSub.Unsubscribe()
			close(s.done)
		})
	}
}

// StreamStats are the counts of one served streaming query type.
type StreamStats struct {
	Subject string `json:"subject"`
	Name    string `json:"name"`
	// Streams counts the streams that started; Items the items they
	// sent.
	Streams uint64 `json:"streams"`
	Items   uint64 `json:"items"`
	// Errors counts the streams that ended with an error sent to the
	// caller.
	Errors uint64 `json:"errors"`
	// Cancelled counts the streams whose caller cancelled them (it broke
	// out of its loop, or its context ended); Vanished those whose
	// caller went silent for 4 heartbeats.
	Cancelled uint64 `json:"cancelled"`
	Vanished  uint64 `json:"vanished"`
	// Refused counts the requests refused without a stream: malformed,
	// for another type, too large, or unavailable; and those dropped for
	// a reply subject that was not an inbox.
	Refused uint64 `json:"refused"`
	// Running is how many of its streams run now.
	Running int64 `json:"running"`
}

// StreamServerStats are the counts of a [StreamServer].
type StreamServerStats struct {
	// Types are the counts of each served type.
	Types []StreamStats `json:"types"`
	// Malformed counts the control messages that could not be read, or
	// that acknowledged more items than were sent (refused: they would
	// grant credit beyond the window); Stray those for a stream this
	// process does not run (most are a caller's last ping, racing the
	// stream's end; guesses at other streams' control subjects land
	// here too).
	Malformed uint64 `json:"malformed"`
	Stray     uint64 `json:"stray"`
}

// Stats returns the server's counts.
func (s *StreamServer) Stats() StreamServerStats {
	out := StreamServerStats{Malformed: s.malformed.Load(), Stray: s.stray.Load()}
	for _, e := range s.endpoints {
		out.Types = append(out.Types, StreamStats{
			Subject: e.subject, Name: e.spec.Name,
			Streams: e.streams.Load(), Items: e.items.Load(), Errors: e.errors.Load(),
			Cancelled: e.cancelled.Load(), Vanished: e.vanished.Load(), Refused: e.refused.Load(),
			Running: e.running.Load(),
		})
	}
	return out
}

// streamEndpoint serves one streaming query type.
type streamEndpoint struct {
	s       *StreamServer
	bus     *cqrs.QueryBus
	typ     StreamType
	spec    cqrs.Spec
	subject string
	id      string // the query type's identity
	item    string // the item type's identity

	streams, items, errors, cancelled, vanished, refused atomic.Uint64
	running                                              atomic.Int64
}

// refuse answers a request, whose caller's key is key, with an error
// frame.
func (e *streamEndpoint) refuse(m *natsgo.Msg, key *streamKey, err error) {
	e.refused.Add(1)
	_ = e.s.nc.Publish(m.Reply, endFrame(e.s.cfg.errors, e.spec, key, 0, err))
}

// receive runs on the subscription's goroutine for each request: it
// checks and decodes it, and starts its stream, or refuses it.
func (e *streamEndpoint) receive(m *natsgo.Msg) {
	s := e.s
	now := time.Now()
	if !replyableTo(s.inbox, m.Reply) {
		e.refused.Add(1)
		return
	}
	// Opening reads a few numbers and slices the rest, whatever its size:
	// the key it finds answers the refusal of a request too large.
	req, err := openStreamRequest(m.Data)
	if n := len(m.Data); n > s.cfg.maxPayload {
		e.refuse(m, &req.key, tooLarge(e.spec, "request", n, s.cfg.maxPayload))
		return
	}
	if err != nil {
		e.refuse(m, &req.key, badRequest(e.spec, fmt.Errorf("%w: %w", errEnvelope, err)))
		return
	}
	if string(req.env.id) != e.id {
		e.refuse(m, &req.key, badRequest(e.spec, errWrongMessage))
		return
	}
	run, err := e.typ.prepare(e, req.env.payload)
	if err != nil {
		e.refuse(m, &req.key, err)
		return
	}
	ctx := context.Background()
	if len(m.Header) > 0 {
		ctx = s.cfg.propagator.Extract(ctx, propagation.HeaderCarrier(m.Header))
	}
	ctx = withIdentity(ctx, m.Header)
	cancelDeadline := context.CancelFunc(func() {})
	if req.env.timeout > 0 {
		deadline := req.env.deadlineOf(now, math.MaxInt64)
		if deadline.Sub(now) < minRemaining {
			e.refused.Add(1) // the caller has given up: nobody waits
			return
		}
		ctx, cancelDeadline = context.WithDeadline(ctx, deadline)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	// The serving side grants at most its own window and heartbeat: the
	// heartbeat bounds how long a caller that vanished holds the stream.
	window := min(req.window, uint64(s.scfg.Window))
	heartbeat := min(req.heartbeat, s.scfg.Heartbeat)
	st := &serverStream{
		e: e, id: rand.Text(), key: req.key, inbox: m.Reply, window: window, idle: missedBeats * heartbeat,
		ctx: ctx, credit: make(chan struct{}, 1),
		cancel: func(cause error) { cancel(cause); cancelDeadline() },
	}
	st.stop = ctx.Done()

	s.mu.Lock()
	switch {
	case s.closed:
		err = fmt.Errorf("%w: %s: the serving process is stopping", ErrUnavailable, e.spec)
	case len(s.streams) >= s.scfg.MaxStreams:
		err = fmt.Errorf("%w: %s: the serving process runs %d streams", ErrUnavailable, e.spec, s.scfg.MaxStreams)
	default:
		st.timer = time.AfterFunc(st.idle, func() { st.cancel(errCallerGone) })
		s.streams[st.id] = st
	}
	s.mu.Unlock()
	if err != nil {
		st.cancel(nil)
		e.refuse(m, &req.key, err)
		return
	}
	e.streams.Add(1)
	e.running.Add(1)
	accept := binary.AppendUvarint(frame(frameAccept, &st.key, 3*binary.MaxVarintLen64+len(e.item)), window)
	accept = binary.AppendUvarint(accept, uint64(heartbeat))
	accept = binary.AppendUvarint(accept, uint64(len(e.item)))
	accept = append(accept, e.item...)
	if err := s.nc.PublishMsg(&natsgo.Msg{Subject: m.Reply, Reply: s.control + st.id, Data: accept}); err != nil {
		st.cancel(errCallerGone)
	}
	go st.run(run)
}

// controlled runs on the control subscription's goroutine for each
// message a caller sends about its stream.
func (s *StreamServer) controlled(m *natsgo.Msg) {
	id := m.Subject[min(len(s.control), len(m.Subject)):]
	s.mu.RLock()
	st := s.streams[id]
	s.mu.RUnlock()
	if st == nil {
		s.stray.Add(1)
		if _, key, ok := readPing(m.Data); ok && replyableTo(s.inbox, m.Reply) {
			_ = s.nc.Publish(m.Reply, frame(frameGone, key, 0))
		}
		return
	}
	if len(m.Data) == 0 {
		s.malformed.Add(1)
		return
	}
	switch m.Data[0] {
	case controlAck, controlPing:
		read, rest, ok := uvarintFrame(m.Data)
		ping := m.Data[0] == controlPing
		if !ok || ping && len(rest) != 1+keySize || !st.ack(read) {
			s.malformed.Add(1)
			return
		}
		st.timer.Reset(st.idle)
		if ping && rest[0] == 1 {
			_ = s.nc.Publish(st.inbox, frame(framePong, &st.key, 0))
		}
	case controlCancel:
		st.cancel(errCallerCancelled)
	default:
		s.malformed.Add(1)
	}
}

// readPing reads a ping: the items read, and the key it carries.
func readPing(data []byte) (uint64, *streamKey, bool) {
	read, rest, ok := uvarintFrame(data)
	if !ok || data[0] != controlPing || len(rest) != 1+keySize {
		return 0, nil, false
	}
	return read, (*streamKey)(rest[1:]), true
}

// replyableTo reports whether reply is a subject under inbox (which ends
// with a dot), with no wildcard or white space.
func replyableTo(inbox, reply string) bool {
	return len(reply) > len(inbox) && strings.HasPrefix(reply, inbox) && !strings.ContainsAny(reply, "*> \t\r\n")
}

// serverStream is one stream a StreamServer runs.
type serverStream struct {
	e      *streamEndpoint
	id     string    // the last token of its control subject: 128 random bits
	key    streamKey // the caller's, which every frame carries
	inbox  string    // the caller's
	window uint64
	idle   time.Duration
	ctx    context.Context
	stop   <-chan struct{} // ctx.Done()
	cancel context.CancelCauseFunc
	timer  *time.Timer // cancels the stream when the caller is silent for idle

	acked  atomic.Uint64 // the items the caller has read, as it last said
	credit chan struct{} // signalled when acked grows
	// sent counts the items sent, stored before each is: only the
	// producer's goroutine writes it.
	sent atomic.Uint64

	// The producer's goroutine's own.
	buf []byte // the item frame being sent, its kind and key kept
	err error  // why send failed
}

// ack records that the caller has read n items, and reports whether it
// may have: an acknowledgement of more items than were sent is refused,
// so that no message grants more credit than the window. Only the
// control subscription's goroutine calls it.
func (st *serverStream) ack(n uint64) bool {
	if n > st.sent.Load() {
		return false
	}
	if n > st.acked.Load() {
		st.acked.Store(n)
		select {
		case st.credit <- struct{}{}:
		default:
		}
	}
	return true
}

// send sends one encoded item, first waiting, while the window is full,
// for the caller to read some. It returns false when the stream must
// stop: cancelled, or the item could not be sent (st.err says why).
func (st *serverStream) send(data []byte) bool {
	select {
	case <-st.stop:
		return false
	default:
	}
	limit := st.e.s.cfg.maxPayload
	if len(data) > limit {
		st.err = tooLarge(st.e.spec, "item", len(data), limit)
		return false
	}
	sent := st.sent.Load()
	for sent >= st.acked.Load()+st.window {
		select {
		case <-st.credit:
		case <-st.stop:
			return false
		}
	}
	sent++
	st.sent.Store(sent) // before the item leaves: its acknowledgement counts
	if st.buf == nil {
		st.buf = frame(frameItem, &st.key, binary.MaxVarintLen64+len(data))
	}
	st.buf = binary.AppendUvarint(st.buf[:frameHead], sent)
	st.buf = append(st.buf, data...)
	if err := st.e.s.nc.Publish(st.inbox, st.buf); err != nil {
		st.sent.Store(sent - 1)
		if errors.Is(err, natsgo.ErrMaxPayload) {
			st.err = fmt.Errorf("%w: %s: an item of %d bytes: %w", ErrPayloadTooLarge, st.e.spec, len(data), err)
		} else {
			st.err = fmt.Errorf("%w: %s: sending an item: %w", ErrTransport, st.e.spec, err)
		}
		return false
	}
	return true
}

// run runs the stream and sends its end, unless its caller is gone.
func (st *serverStream) run(produce func(*serverStream) error) {
	e, s := st.e, st.e.s
	err := produce(st)
	st.timer.Stop()
	sent := st.sent.Load()
	e.items.Add(sent)
	switch cause := context.Cause(st.ctx); {
	case errors.Is(cause, errCallerCancelled):
		e.cancelled.Add(1)
	case errors.Is(cause, errCallerGone):
		e.vanished.Add(1)
	default:
		if errors.Is(cause, errServerStopping) {
			err = fmt.Errorf("%w: %s: the serving process is stopping", ErrUnavailable, e.spec)
		}
		if err != nil {
			e.errors.Add(1)
		}
		_ = s.nc.Publish(st.inbox, endFrame(s.cfg.errors, e.spec, &st.key, sent, err))
	}
	st.cancel(nil)
	s.mu.Lock()
	delete(s.streams, st.id)
	s.mu.Unlock()
	e.running.Add(-1)
	s.checkDone()
}
