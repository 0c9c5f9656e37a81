package nats

import (
	"context"
	"strconv"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Headers of a message's identity ([cqrs.Identity]). Every command and
// event this package publishes carries its ID, and its correlation and
// cause when it has them. A request or a stream carries them only when
// its caller's context has an identity, so that a plain call pays for no
// header; its handler then gets an identity only if its bus makes one
// (cqrs.WithIdentity). A message stored in JetStream also carries its
// de-duplication key in Nats-Msg-Id ([jetstream.MsgIDHeader]): the ID
// itself when the message is first stored, so that JetStream's duplicate
// window drops a publish sent again; another key when a dead letter is
// stored or replayed, which is the same message moving, not a new one.
const (
	HeaderID            = "Cqrs-Id"
	HeaderCorrelationID = "Cqrs-Correlation-Id"
	HeaderCausationID   = "Cqrs-Causation-Id"
)

// headerReplays counts the replays of a dead letter: absent on a message
// that was never dead, n on the message that the nth replay put back. It
// is what tells the de-duplication keys of one message's moves apart.
const headerReplays = "Cqrs-Replays"

// replaysOf returns the replays a message with headers h has been
// through: 0 when h says none or says it badly.
func replaysOf(h natsgo.Header) uint64 {
	n, _ := strconv.ParseUint(h.Get(headerReplays), 10, 64)
	return n
}

// The de-duplication keys (Nats-Msg-Id) of one message, whose ID is id,
// as it moves: storedKey when it is stored for handling, the first time
// (replays 0) and after each replay; deadKey when it is buried after
// that many replays. Two replays that read the same letter store it with
// one key, so JetStream keeps one; a message buried again after a replay
// has a new key, so JetStream keeps the new letter.
func storedKey(id string, replays uint64) string {
	if replays == 0 {
		return id
	}
	return id + ".replay." + strconv.FormatUint(replays, 10)
}

func deadKey(id string, replays uint64) string {
	return id + ".dead." + strconv.FormatUint(replays, 10)
}

// setIdentity writes id into h. A correlation that is the message's own
// ID, as that of a message that starts a conversation, is left out: the
// receiving side fills it in so ([cqrs.ContextWithIdentity]), and a
// header costs NATS its parsing at both ends.
func setIdentity(h natsgo.Header, id cqrs.Identity) {
	h.Set(HeaderID, id.ID)
	if id.CorrelationID != "" && id.CorrelationID != id.ID {
		h.Set(HeaderCorrelationID, id.CorrelationID)
	}
	if id.CausationID != "" {
		h.Set(HeaderCausationID, id.CausationID)
	}
}

// identityOf reads the identity of a received message from h: its ID from
// Cqrs-Id, or, for a message that another publisher stored, from
// Nats-Msg-Id. It reports false when h has neither.
func identityOf(h natsgo.Header) (cqrs.Identity, bool) {
	id := cqrs.Identity{
		ID:            h.Get(HeaderID),
		CorrelationID: h.Get(HeaderCorrelationID),
		CausationID:   h.Get(HeaderCausationID),
	}
	if id.ID == "" {
		id.ID = h.Get(jetstream.MsgIDHeader)
	}
	if id.CorrelationID == "" {
		id.CorrelationID = id.ID // left out by setIdentity
	}
	return id, id.ID != ""
}

// withIdentity returns ctx carrying the identity of a message received
// with headers h, so that its handler reads it with [cqrs.IdentityOf] and
// the messages the handler sends join its conversation. A message that
// arrived with no identity gets a new one.
func withIdentity(ctx context.Context, h natsgo.Header) context.Context {
	id, _ := identityOf(h)
	return cqrs.ContextWithIdentity(ctx, id)
}

// sentIdentity returns the identity of a message that the handler given
// ctx sends on: the message that handler handles, when ctx has one (a
// forwarded command is the message its local dispatch was given), else
// what a message sent from ctx gets.
func sentIdentity(ctx context.Context) cqrs.Identity {
	if id, ok := cqrs.IdentityOf(ctx); ok {
		return id
	}
	return cqrs.NextIdentity(ctx)
}
