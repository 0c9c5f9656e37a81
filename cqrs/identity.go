package cqrs

import (
	"context"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Identity names one message and the conversation it belongs to, as
// Axon's message origin and MassTransit's message and correlation ids do.
// A handler reads the identity of the message it handles with
// [IdentityOf]; a message it sends, asks or publishes from that context
// inherits the conversation with no code from the handler:
//
//	func (s *Service) Place(ctx context.Context, cmd PlaceOrder) (OrderID, error) {
//		id, _ := cqrs.IdentityOf(ctx) // cmd's identity
//		…
//		// OrderPlaced gets a new ID, id's CorrelationID, and id.ID as its cause.
//		return order, cqrs.Publish(ctx, s.events, OrderPlaced{Order: order})
//	}
//
// The transports carry it from process to process, and an idempotent
// consumer keys its record of handled messages by ID. Identity is a plain value, safe to copy and share; its zero
// value is no identity.
type Identity struct {
	// ID names the message, unique for ever: by default a new [NewID] for
	// every message sent, kept as the message travels (through a
	// transport's retries, dead letters and replays) so that a consumer
	// can tell a message seen twice from two messages.
	ID string
	// CorrelationID names the conversation: the ID of the message that
	// started it, inherited by every message sent while handling one of
	// it, or an id the caller chose, such as an HTTP request's.
	CorrelationID string
	// CausationID is the ID of the message whose handler sent this one;
	// empty for the message that started the conversation.
	CausationID string
}

// LogValue logs the identity as a group of its non-empty fields: id,
// correlation_id and causation_id.
func (id Identity) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, 3)
	if id.ID != "" {
		attrs = append(attrs, slog.String("id", id.ID))
	}
	if id.CorrelationID != "" {
		attrs = append(attrs, slog.String("correlation_id", id.CorrelationID))
	}
	if id.CausationID != "" {
		attrs = append(attrs, slog.String("causation_id", id.CausationID))
	}
	return slog.GroupValue(attrs...)
}

// idLen is the length of an ID made by NewID.
const idLen = 36

// NewID returns a new message ID: a UUID of version 7 in its text form,
// such as "019383a4-5e1c-7b3d-9f2a-3c4d5e6f7a8b". Its first 48 bits are
// the Unix time in milliseconds, so IDs made later sort later, which keeps
// an index of them (an idempotent consumer's table) appending; the other
// 74 bits are random, from the runtime's ChaCha8 generator, seeded by the
// operating system. NewID is safe for concurrent use.
func NewID() string {
	var buf [idLen]byte
	formatID(&buf, time.Now())
	return string(buf[:])
}

// formatID writes a new version 7 UUID, made at now, into buf.
func formatID(buf *[idLen]byte, now time.Time) {
	var raw [16]byte
	ms := uint64(now.UnixMilli())
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := range 6 {
		raw[i] = byte(ms >> (40 - 8*i))
	}
	raw[6] = 0x70 | byte(hi>>60&0x0f) // version 7
	raw[7] = byte(hi >> 52)
	raw[8] = 0x80 | byte(lo>>58&0x3f) // variant 10
	for i := 9; i < 16; i++ {
		raw[i] = byte(lo >> (8 * (15 - i)))
	}
	hex.Encode(buf[0:8], raw[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], raw[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], raw[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], raw[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], raw[10:16])
}

// IdentityOf returns the identity of the message whose handler (or
// subscriber, or stream handler) ctx was given to, and true; or false when
// that message has none. Every message dispatched from a context that
// carries an identity has one: one received by a transport, one sent from
// within a handler, one whose caller set one with [ContextWithIdentity].
// So has every message dispatched on a bus made with [WithIdentity]. A
// message dispatched on another bus from a context with none has none:
// giving it one would cost every dispatch an allocation.
//
// Middleware and interceptors see the same identity as the handler.
// IdentityOf is safe for concurrent use.
func IdentityOf(ctx context.Context) (Identity, bool) {
	c := identityIn(ctx)
	if c != nil && c.outgoing {
		c = c.handled
	}
	if c == nil {
		return Identity{}, false
	}
	return c.identity(), true
}

// NextIdentity returns the identity a message sent from ctx gets: the one
// set with [ContextWithIdentity], its empty fields filled in; else a new
// ID with the correlation of the message ctx's handler is handling and
// that message's ID as its cause; else a new ID that starts a
// conversation of its own (its CorrelationID is its ID). It is what a
// dispatch does, for code that sends a message outside a bus: a transport
// publishing an event, an outbox storing one. It is safe for concurrent
// use.
func NextIdentity(ctx context.Context) Identity {
	return next(identityIn(ctx), "")
}

// ContextWithIdentity returns a copy of ctx from which the next message
// dispatched gets identity id: the handler sees it with [IdentityOf], and
// the messages its handler sends inherit its correlation. It is how a
// caller starts a conversation of its own, such as one per HTTP request,
// and how a transport passes on the identity a message arrived with.
//
// Each empty field is filled in when a message is sent: an empty ID with
// a new one for every message, so that one such context may send many; an
// empty CorrelationID with that of the message ctx's handler is handling,
// else with the message's own ID; an empty CausationID with the ID of the
// message ctx's handler is handling. A context with an ID set should send
// one message: a consumer that runs each message once ([Identity.ID])
// takes a second with the same ID for the first, sent again.
//
//	ctx = cqrs.ContextWithIdentity(r.Context(), cqrs.Identity{CorrelationID: r.Header.Get("X-Request-Id")})
//
// ContextWithIdentity is safe for concurrent use. A nil ctx is returned
// as it is.
func ContextWithIdentity(ctx context.Context, id Identity) context.Context {
	if ctx == nil {
		return nil
	}
	h := identityIn(ctx)
	if h != nil && h.outgoing {
		h = h.handled
	}
	if h != nil {
		// Resolve against the message being handled now: the messages
		// sent from the returned context belong to its conversation.
		if id.CorrelationID == "" {
			id.CorrelationID = h.identity().CorrelationID
		}
		if id.CausationID == "" {
			id.CausationID = h.identity().ID
		}
	}
	identitiesUsed()
	return &identityCtx{Context: ctx, id: id, outgoing: true, handled: h}
}

// identityKey is the context key of an *identityCtx.
type identityKey struct{}

// identityCtx is a context that carries a message's identity: that of
// the message being handled, or, outgoing, that which the next message
// sent gets. It is a context of its own rather than context.WithValue's,
// so that one allocation holds the context, the identity and the bytes of
// a new ID.
//
// The identity a dispatch gives its handler is made lazily, the first time
// it is read: most dispatches from a context that carries an identity are
// never asked for theirs, and making an ID costs a clock reading, random
// bits and formatting, several times a dispatch. Until then from, the
// identity it derives from, is all it holds.
type identityCtx struct {
	context.Context
	outgoing bool         // set by ContextWithIdentity: the identity is for the next message
	lazy     bool         // id is made by mint, once, when first read
	handled  *identityCtx // of an outgoing identity, that of the message being handled, or nil
	from     *identityCtx // of a lazy one, the identity it derives from, or nil for none
	once     sync.Once
	id       Identity
	buf      [idLen]byte
}

// identity returns c's identity, making it first if c is lazy.
func (c *identityCtx) identity() Identity {
	if c.lazy {
		c.once.Do(c.mint)
	}
	return c.id
}

// mint makes a lazy identity: a new ID, whose bytes live in c, which the
// string keeps alive, and the rest from c.from.
func (c *identityCtx) mint() {
	formatID(&c.buf, time.Now())
	c.id = next(c.from, unsafe.String(&c.buf[0], idLen))
}

func (c *identityCtx) Value(key any) any {
	if key == (identityKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// identityIn returns the innermost identity ctx carries, or nil.
func identityIn(ctx context.Context) *identityCtx {
	if ctx == nil || !used.Load() {
		return nil
	}
	c, _ := ctx.Value(identityKey{}).(*identityCtx)
	return c
}

// used is set once any identity has been made in this process. Until then
// no context can carry one, so a dispatch need not look: a program that
// never uses identities pays a load of this flag per dispatch.
var used atomic.Bool

func identitiesUsed() {
	if !used.Load() {
		used.Store(true)
	}
}

// next returns the identity of a message sent from a context whose
// innermost identity is from (nil for none), with a new ID written at
// id if it needs one and id is not empty.
func next(from *identityCtx, id string) Identity {
	var out Identity
	switch {
	case from == nil:
	case from.outgoing:
		out = from.id
	default:
		handled := from.identity()
		out.CorrelationID, out.CausationID = handled.CorrelationID, handled.ID
	}
	if out.ID == "" {
		out.ID = id
		if id == "" {
			out.ID = NewID()
		}
	}
	if out.CorrelationID == "" {
		out.CorrelationID = out.ID
	}
	return out
}

// identify returns the context a handler of a message dispatched from ctx
// is given: one that carries the message's identity, made by next when
// first read, when ctx carries an identity or always is set; else ctx as
// it is.
func identify(ctx context.Context, always bool) context.Context {
	from := identityIn(ctx)
	if from == nil && !always {
		return ctx
	}
	identitiesUsed()
	if from != nil && from.outgoing && from.id.ID != "" {
		return &identityCtx{Context: ctx, id: next(from, "")} // nothing to make
	}
	return &identityCtx{Context: ctx, from: from, lazy: true}
}
