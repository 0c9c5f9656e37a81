package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
)

// ReplayUnhandled moves the dead letters of the subscriber named
// subscriber (of every event type) back to the events' stream, on the
// subject that its consumers alone take, so that it, and no other
// subscriber name, gets each of them again. It returns how many it
// moved.
//
// A replay moves the letters that were in the dead-letter stream when it
// started, each once: a letter that the subscriber, still failing, buries
// again meanwhile waits for the next replay. Each replayed event keeps its
// identity ([cqrs.IdentityOf] gives the subscriber the same ID) and is
// stored with a de-duplication key of its own (Nats-Msg-Id, see
// [HeaderID]), so that two replays that run at once, or a replay run
// again after one cut short, store it once within the events stream's
// duplicate window (two minutes unless the operator set another): the
// subscriber gets each letter once, and each replay counts only the
// letters it stored. A letter is removed from the dead-letter stream
// only once the events' stream has stored it again, so a replay that
// fails halfway loses nothing and may be run again. Replay after fixing
// what made the subscriber fail; an event replayed to a subscriber name
// that no longer has a consumer is dropped by a stream with interest
// retention.
//
// ev and opts must be those of the receivers: their prefix and streams;
// the timeout ([WithTimeout]) bounds each request, and ctx the whole
// replay. A name that is not a subscriber's is [cqrs.ErrInvalidName].
// ReplayUnhandled is safe for concurrent use.
func ReplayUnhandled(ctx context.Context, nc *natsgo.Conn, ev EventConfig, subscriber string, opts ...Option) (int, error) {
	cfg := newConfig(opts)
	if cfg.err != nil {
		return 0, cfg.err
	}
	if nc == nil {
		return 0, fmt.Errorf("%w: replaying events: no connection", ErrTransport)
	}
	if !validSubscriberName(subscriber) {
		return 0, fmt.Errorf("%w: replaying events: %q is not a subscriber name", cqrs.ErrInvalidName, subscriber)
	}
	ev = ev.withDefaults(cfg.prefix)
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, fmt.Errorf("%w: replaying events: %w", ErrTransport, err)
	}
	dead, err := js.Stream(ctx, ev.DeadLetterStream)
	if err != nil {
		return 0, fmt.Errorf("%w: replaying events: stream %s: %w", ErrTransport, ev.DeadLetterStream, err)
	}
	// What is there now, and nothing buried after: a subscriber that
	// still fails would otherwise keep the replay moving its letters
	// round for ever.
	last := dead.CachedInfo().State.LastSeq
	from := cfg.prefix + "." + unhandledToken + "." + subscriber + "."
	to := cfg.prefix + "." + storedToken + "." + replayToken + "." + subscriber + "."
	moved := 0
	for seq := dead.CachedInfo().State.FirstSeq; seq <= last; {
		rctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		m, err := dead.GetMsg(rctx, seq, jetstream.WithGetMsgSubject(from+">"))
		stored := false
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			err = errReplayed
		case err != nil:
			err = fmt.Errorf("%w: replaying events: reading %s: %w", ErrTransport, ev.DeadLetterStream, err)
		case m.Sequence > last:
			err = errReplayed
		default:
			stored, err = replayOne(rctx, js, dead, ev, m, to+strings.TrimPrefix(m.Subject, from))
		}
		cancel()
		if errors.Is(err, errReplayed) {
			return moved, nil
		}
		if err != nil {
			return moved, err
		}
		if stored {
			moved++
		}
		seq = m.Sequence + 1
	}
	return moved, nil
}

// errReplayed ends a replay: no dead letter is left.
var errReplayed = errors.New("replayed")

// replayOne stores the dead letter m again in the events' stream, on
// subject, then removes it from the dead letters. It reports whether it
// stored it, rather than finding it stored already by another replay.
func replayOne(ctx context.Context, js jetstream.JetStream, dead jetstream.Stream, ev EventConfig, m *jetstream.RawStreamMsg, subject string) (bool, error) {
	h := natsgo.Header{}
	for k, v := range m.Header {
		switch k {
		case headerErrorCode, headerError, headerEventSubject, headerEventSubscriber, headerEventDeliveries,
			jetstream.MsgIDHeader, headerReplays:
		default:
			h[k] = v // the event's own: its identity, its trace context
		}
	}
	id, ok := identityOf(m.Header)
	if !ok {
		// A letter buried before events had identities: one made of
		// where it lies, so that two replays still agree on it.
		id.ID = fmt.Sprintf("%s.%d.%d", ev.DeadLetterStream, m.Sequence, m.Time.UnixNano())
	}
	if m.Header.Get(HeaderID) == "" {
		setIdentity(h, id)
	}
	replays := replaysOf(m.Header) + 1
	h.Set(headerReplays, strconv.FormatUint(replays, 10))
	h.Set(jetstream.MsgIDHeader, storedKey(id.ID, replays))
	ack, err := js.PublishMsg(ctx, &natsgo.Msg{Subject: subject, Data: m.Data, Header: h}, jetstream.WithExpectStream(ev.Stream))
	if err != nil {
		return false, fmt.Errorf("%w: replaying events: storing %s: %w", ErrTransport, subject, err)
	}
	if err := dead.DeleteMsg(ctx, m.Sequence); err != nil && !removed(ctx, dead, m.Sequence) {
		return false, fmt.Errorf("%w: replaying events: removing dead letter %d of %s, already replayed (remove it by hand): %w", ErrTransport, m.Sequence, ev.DeadLetterStream, err)
	}
	return !ack.Duplicate, nil
}

// removed reports whether the message seq of stream is gone, as when
// another replay removed it first: a failed DeleteMsg does not say why.
func removed(ctx context.Context, stream jetstream.Stream, seq uint64) bool {
	_, err := stream.GetMsg(ctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}

// validSubscriberName reports whether name follows cqrs.Subscribe's
// rules, which make it one subject token.
func validSubscriberName(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for _, c := range []byte(name) {
		if !isPlain(c) || c == '/' {
			return false
		}
	}
	return true
}
