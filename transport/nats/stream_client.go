package nats

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/typedcqrs/dispatch/cqrs"
)

// ForwardStream registers on bus, for the streaming query Q whose items
// are of type R, a stream handler ([cqrs.RegisterStream]) that runs the
// stream in a process that serves it ([ServeStreams]) and yields its
// items as they arrive. Callers go on reading [cqrs.Stream] or
// [cqrs.StreamOf] on bus as before, and bus's interceptors see the
// forwarded stream as they see a local one.
//
// Items travel one NATS message each, in order, to an inbox of the
// stream's own, under flow control: the serving side sends at most the
// window of items ([StreamConfig]) beyond those the caller has read, and
// the caller acknowledges every half window, so neither side buffers
// without bound however slowly the loop reads. Each item carries its
// sequence number and the end of the stream the count sent: an item lost
// on the way ends the stream with an error wrapping [ErrTransport]
// rather than a silent gap. Each message from the serving side also
// carries a key of 16 random bytes that the caller draws for the stream
// and sends with its request; a message on the inbox without it is
// dropped, so that whoever else may publish there can neither end the
// stream early nor slip an item into it. The serving side tells the
// caller alone, in a message to its inbox, the control subject on which
// it acknowledges, pings and cancels, whose last token is 128 random
// bits: nobody else can address the stream (see docs/distributed.md,
// "Permissions", for the NATS permissions under which these hold).
//
// The identity of ctx ([cqrs.IdentityOf]), when it has one, travels with
// the request in the [HeaderID] headers, so that the serving side's
// stream handler reads the same identity.
//
// The stream ends:
//
//   - when the serving side's stream returns nil, after its last item;
//   - with its error, as the last item, keeping its identity as a
//     request-reply error does: a [*RemoteError] that wraps the sentinel
//     of its code (see [WithErrors]) and, for a validation failure, a
//     *middleware.ValidationError with the fields;
//   - when the loop breaks, or ctx ends (the last item is then ctx.Err()):
//     the caller sends a cancel, and the producer's context is cancelled
//     as soon as it arrives;
//   - with an error wrapping [ErrTransport] when the connection drops,
//     when the serving process is gone (NATS answers a ping with no
//     responders) or silent for 4 heartbeats (those it granted: see
//     [StreamConfig.Heartbeat]), or when items were lost;
//   - with [ErrNoResponders] when no process serves Q, and an error
//     wrapping [ErrTransport] and [context.DeadlineExceeded] when none
//     accepts the stream within the client's timeout ([WithTimeout]);
//     [ErrUnavailable] when the serving process runs its most streams or
//     is stopping, [ErrBadRequest] when it cannot decode the query;
//   - with [ErrBadReply] when a frame cannot be read, or the serving side
//     streams items of another type than R (their identity travels with
//     the acceptance), and [ErrPayloadTooLarge] for an item over
//     [WithMaxPayload].
//
// Streams of Q may run from many goroutines at once, each with an inbox,
// a subscription and a timer of its own, all released when it ends.
//
// ctx's deadline travels with the request and bounds the producer's
// context; a stream without one runs until it ends, is cancelled, or a
// side goes silent. [WithTimeout] bounds only the wait for the serving
// side to accept the stream.
//
// Of opts, ForwardStream reads only [WithStreamConfig]; the others are
// the client's ([NewClient]): its prefix, codec, error table, payload
// limit and timeout apply to its streams.
//
// ForwardStream fails with [cqrs.ErrNilBus] for a nil bus,
// [cqrs.ErrNilHandler] without a client, as [Forward] does for a type
// that cannot have a subject or has unexported fields under [JSON], and
// as [cqrs.RegisterStream] does; a declared command or query with one
// result with [cqrs.ErrInvalidMessageType] and an error that says to
// forward it with [ForwardDeclared] or [Forward].
//
// For a declared streaming query, [ForwardDeclaredStream] infers R.
func ForwardStream[Q, R any](bus *cqrs.QueryBus, c *Client, opts ...Option) error {
	if bus == nil {
		return fmt.Errorf("%w: forwarding a stream over NATS", cqrs.ErrNilBus)
	}
	if c == nil || c.nc == nil {
		return fmt.Errorf("%w: forwarding a stream over NATS without a client", cqrs.ErrNilHandler)
	}
	if c.cfg.err != nil {
		return c.cfg.err
	}
	spec := cqrs.SpecFor[Q, R](bus)
	spec.Stream = true
	subject, id, item, err := streamAddress(&c.cfg, spec)
	if err != nil {
		return err
	}
	f := &streamForwarder[Q, R]{
		c: c, spec: spec, subject: subject, id: id, item: item, scfg: streamConfigOf(opts),
		control: c.cfg.prefix + "." + streamInfix + controlToken + ".",
	}
	return misforwardedStream[Q, R](cqrs.RegisterStream(bus, cqrs.StreamHandler[Q, R](f)))
}

// streamForwarder is the stream handler ForwardStream registers.
type streamForwarder[Q, R any] struct {
	c       *Client
	spec    cqrs.Spec
	subject string
	id      string // the query type's identity
	item    string // the item type's identity
	control string // what the control subjects of this prefix start with
	scfg    StreamConfig
}

// Stream runs one remote stream.
func (f *streamForwarder[Q, R]) Stream(ctx context.Context, q Q, yield func(R) bool) error {
	cfg := &f.c.cfg
	nc := f.c.nc
	data, err := cfg.codec.Marshal(q)
	if err != nil {
		return fmt.Errorf("nats: %s: encoding the query: %w", f.spec, err)
	}
	if len(data) > cfg.maxPayload {
		return tooLarge(f.spec, "query", len(data), cfg.maxPayload)
	}
	var timeout time.Duration
	var deadline time.Time
	if d, ok := ctx.Deadline(); ok {
		if timeout = time.Until(d); timeout <= 0 {
			return ctx.Err()
		}
		deadline = d
	}
	call := &streamCall{
		nc: nc, spec: f.spec, inbox: nc.NewInbox(), heartbeat: f.scfg.Heartbeat,
		ch: make(chan *natsgo.Msg, f.scfg.Window+frameSlack),
	}
	_, _ = rand.Read(call.key[:]) // it never fails: crypto/rand crashes the program instead
	sub, err := nc.ChanSubscribe(call.inbox, call.ch)
	if err != nil {
		return fmt.Errorf("%w: %s: subscribing to the stream's inbox: %w", ErrTransport, f.spec, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	call.status = nc.StatusChanged(natsgo.DISCONNECTED, natsgo.RECONNECTING, natsgo.CLOSED)
	defer nc.RemoveStatusListener(call.status)
	if !nc.IsConnected() {
		return fmt.Errorf("%w: %s: the connection is %s", ErrTransport, f.spec, nc.Status())
	}
	req := &natsgo.Msg{Subject: f.subject, Reply: call.inbox}
	req.Data = sealStream(make([]byte, 0, 2*binary.MaxVarintLen64+keySize+sealedSize(f.id, data)),
		f.scfg.Window, f.scfg.Heartbeat, &call.key, timeout, deadline, f.id, data)
	// Headers only when there is something to carry: NATS parses them at
	// both ends.
	var h natsgo.Header
	if f.c.traced {
		h = natsgo.Header{}
		cfg.propagator.Inject(ctx, propagation.HeaderCarrier(h))
	}
	if id, ok := cqrs.IdentityOf(ctx); ok {
		if h == nil {
			h = natsgo.Header{}
		}
		setIdentity(h, id) // what sentIdentity returns when ctx has one
	}
	if len(h) > 0 {
		req.Header = h
	}
	if err := nc.PublishMsg(req); err != nil {
		return fmt.Errorf("%w: %s: sending the request: %w", ErrTransport, f.spec, err)
	}
	window, err := f.accepted(ctx, call)
	if err != nil {
		call.cancel()
		return err
	}
	call.startPings()
	defer call.stopPings()
	return f.read(ctx, call, window, yield)
}

// accepted waits for the serving side to accept the stream, and returns
// the window it grants; the heartbeat it grants becomes call's.
func (f *streamForwarder[Q, R]) accepted(ctx context.Context, call *streamCall) (uint64, error) {
	timeout := f.c.cfg.timeout
	m, err := call.next(ctx, timeout)
	switch {
	case errors.Is(err, errSilent):
		return 0, fmt.Errorf("%w: %s: no process accepted the stream within %v: %w", ErrTransport, f.spec, timeout, context.DeadlineExceeded)
	case err != nil:
		return 0, err
	case noResponders(m):
		return 0, fmt.Errorf("%w: %s on %s", ErrNoResponders, f.spec, f.subject)
	case m.Data[0] == frameEnd: // next returns frames that carry the key
		if _, code, body, ok := readEnd(m.Data); ok && code != "" {
			return 0, decodeError(f.c.cfg.errors, f.spec, code, "", body)
		}
	case m.Data[0] == frameAccept:
		window, rest, ok := readUvarint(m.Data[frameHead:])
		if !ok || window == 0 || window > uint64(f.scfg.Window) || !strings.HasPrefix(m.Reply, f.control) {
			break
		}
		heartbeat, rest, ok := readUvarint(rest)
		if !ok || heartbeat < uint64(minHeartbeat) || heartbeat > uint64(call.heartbeat) {
			break
		}
		call.control, call.heartbeat = m.Reply, time.Duration(heartbeat)
		size, n := binary.Uvarint(rest)
		if n <= 0 || size != uint64(len(rest)-n) {
			break
		}
		if item := string(rest[n:]); item != f.item {
			return 0, fmt.Errorf("%w: %s: the serving side streams items of type %q, not %q", ErrBadReply, f.spec, item, f.item)
		}
		return window, nil
	}
	return 0, fmt.Errorf("%w: %s: a malformed answer to the stream's request", ErrBadReply, f.spec)
}

// read yields the stream's items until its end.
func (f *streamForwarder[Q, R]) read(ctx context.Context, call *streamCall, window uint64, yield func(R) bool) error {
	cfg := &f.c.cfg
	every := ackEvery(window)
	idle := missedBeats * call.heartbeat
	var read, acked uint64
	ack := make([]byte, 0, 1+binary.MaxVarintLen64)
	for {
		m, err := call.next(ctx, idle)
		switch {
		case errors.Is(err, errSilent):
			call.cancel()
			return fmt.Errorf("%w: %s: no word from the serving process for %v", ErrTransport, f.spec, idle)
		case err != nil:
			call.cancel()
			return err
		case noResponders(m):
			return fmt.Errorf("%w: %s: the serving process is gone, after %d items", ErrTransport, f.spec, read)
		}
		switch m.Data[0] { // next returns frames that carry the key
		case frameItem:
			seq, payload, ok := readUvarint(m.Data[frameHead:])
			if !ok {
				call.cancel()
				return fmt.Errorf("%w: %s: a malformed item", ErrBadReply, f.spec)
			}
			if seq != read+1 {
				call.cancel()
				return fmt.Errorf("%w: %s: item %d arrived after item %d: items were lost", ErrTransport, f.spec, seq, read)
			}
			if len(payload) > cfg.maxPayload {
				call.cancel()
				return tooLarge(f.spec, "item", len(payload), cfg.maxPayload)
			}
			var item R
			if err := cfg.codec.Unmarshal(payload, &item); err != nil {
				call.cancel()
				return fmt.Errorf("%w: %s: item %d: %w", ErrBadReply, f.spec, seq, err)
			}
			read++
			call.read.Store(read)
			if read-acked >= every {
				acked = read
				ack = binary.AppendUvarint(append(ack[:0], controlAck), read)
				_ = call.nc.Publish(call.control, ack)
			}
			if !yield(item) {
				call.cancel()
				return nil
			}
		case frameEnd:
			sent, code, body, ok := readEnd(m.Data)
			switch {
			case !ok:
				return fmt.Errorf("%w: %s: a malformed end of stream", ErrBadReply, f.spec)
			case sent != read:
				return fmt.Errorf("%w: %s: the serving side sent %d items, %d arrived", ErrTransport, f.spec, sent, read)
			case code != "":
				return decodeError(cfg.errors, f.spec, code, "", body)
			}
			return nil
		case framePong:
		case frameGone:
			return fmt.Errorf("%w: %s: the serving process no longer runs the stream, after %d items", ErrTransport, f.spec, read)
		default:
			call.cancel()
			return fmt.Errorf("%w: %s: an unknown frame %q", ErrBadReply, f.spec, m.Data[0])
		}
	}
}

// errSilent is what next returns when nothing came in time.
var errSilent = errors.New("nats: silent")

// noResponders reports whether m is NATS's no-responders status.
func noResponders(m *natsgo.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get(statusHeader) == "503"
}

// streamCall is the calling side of one stream.
type streamCall struct {
	nc        *natsgo.Conn
	spec      cqrs.Spec
	inbox     string
	key       streamKey     // drawn for the stream: the serving side's frames carry it
	control   string        // the serving side's, once it accepted
	heartbeat time.Duration // asked for, then granted
	ch        chan *natsgo.Msg
	status    chan natsgo.Status
	idle      *time.Timer

	read    atomic.Uint64 // items read, for the pings
	waiting atomic.Bool   // next is waiting: pings ask for a pong

	mu    sync.Mutex
	pings *time.Timer // nil once stopped
}

// next returns the next frame of the serving side's, waiting at most
// limit for it: one that carries the stream's key, at least frameHead
// bytes long, or NATS's no-responders status. Other messages on the inbox
// are dropped, and do not count as a sign of life.
func (c *streamCall) next(ctx context.Context, limit time.Duration) (*natsgo.Msg, error) {
	for len(c.ch) > 0 { // only this goroutine receives
		if m := <-c.ch; c.authentic(m) {
			return m, nil
		}
	}
	if c.idle == nil {
		c.idle = time.NewTimer(limit)
	} else {
		c.idle.Reset(limit)
	}
	c.waiting.Store(true)
	defer c.waiting.Store(false)
	for {
		select {
		case m := <-c.ch:
			if c.authentic(m) {
				return m, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case s := <-c.status:
			return nil, fmt.Errorf("%w: %s: the connection is %s", ErrTransport, c.spec, s)
		case <-c.idle.C:
			return nil, errSilent
		}
	}
}

// authentic reports whether m is the serving side's: a frame that carries
// the stream's key, or NATS's no-responders status, which cannot.
func (c *streamCall) authentic(m *natsgo.Msg) bool {
	return len(m.Data) >= frameHead && streamKey(m.Data[1:frameHead]) == c.key || noResponders(m)
}

// cancel tells the serving side to stop, if it accepted the stream.
func (c *streamCall) cancel() {
	if c.control != "" {
		_ = c.nc.Publish(c.control, []byte{controlCancel})
	}
}

// startPings starts telling the serving side, every heartbeat, how many
// items have been read; while next waits, the ping asks for a pong.
func (c *streamCall) startPings() {
	c.mu.Lock()
	c.pings = time.AfterFunc(c.heartbeat, c.ping)
	c.mu.Unlock()
}

func (c *streamCall) ping() {
	var flag byte
	if c.waiting.Load() {
		flag = 1
	}
	data := binary.AppendUvarint(append(make([]byte, 0, 2+binary.MaxVarintLen64+keySize), controlPing), c.read.Load())
	data = append(append(data, flag), c.key[:]...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pings == nil {
		return
	}
	_ = c.nc.PublishMsg(&natsgo.Msg{Subject: c.control, Reply: c.inbox, Data: data})
	c.pings.Reset(c.heartbeat)
}

func (c *streamCall) stopPings() {
	c.mu.Lock()
	c.pings.Stop()
	c.pings = nil
	c.mu.Unlock()
	if c.idle != nil {
		c.idle.Stop()
	}
}
