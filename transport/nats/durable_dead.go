package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
)

// ReplayDeadLetters moves the dead letters of command type C back to the
// work queue, oldest first, once the cause of their failure is mended,
// and returns how many it moved. It moves those that were there when it
// started, each once: a letter that fails again while it runs is buried
// again as a new letter, for the next replay. The dead letters of other
// types stay. cfg and opts must be those of [Enqueue].
//
// Each letter is stored again with the identity its command was enqueued
// with (the handler sees the same [cqrs.IdentityOf]), none of the dead
// letter's headers, and Cqrs-Replays counting its replays; then it is
// removed from the dead-letter stream. Its Nats-Msg-Id is its ID followed
// by ".replay." and that count, so that two replays that read the same
// letter store it once, within the work queue's duplicate window (two
// minutes on the stream Enqueue makes). So two replays of one type may
// run at once: each letter is handled once, and each is counted by the
// replay that removed it. A replay cut short (an error, a cancelled ctx)
// may be run again: a letter stored but not yet removed when it stopped
// is stored again, which the duplicate window drops if the second run
// comes within it; after it, the command runs twice. A letter with no
// Cqrs-Id (one an older version of this package buried, or that another
// publisher stored) is given an ID made of the dead-letter stream's
// name, the letter's sequence and the time it was stored.
//
// ReplayDeadLetters is safe for concurrent use.
func ReplayDeadLetters[C any](ctx context.Context, js jetstream.JetStream, cfg DurableConfig, opts ...Option) (int, error) {
	c := newConfig(opts)
	if c.err != nil {
		return 0, c.err
	}
	cfg = cfg.withDefaults(c.prefix)
	spec := cqrs.SpecFor[C, cqrs.NoResult]((*cqrs.CommandBus)(nil))
	if js == nil {
		return 0, fmt.Errorf("%w: replay %s: nil JetStream", ErrTransport, spec)
	}
	subject, err := durableSubject(c.prefix, spec)
	if err != nil {
		return 0, err
	}
	dead := deadSubject(c.prefix, cfg, subject)
	stream, err := js.Stream(ctx, cfg.DeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil // nothing ever died
	}
	if err != nil {
		return 0, fmt.Errorf("%w: replay %s: stream %s: %w", ErrTransport, spec, cfg.DeadLetterStream, err)
	}
	last := stream.CachedInfo().State.LastSeq // what was there when the replay started
	n := 0
	for seq := uint64(1); seq <= last; {
		raw, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(dead))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("%w: replay %s: reading %s: %w", ErrTransport, spec, cfg.DeadLetterStream, err)
		}
		if raw.Sequence > last {
			break
		}
		if err := store(ctx, js, c.prefix, cfg, spec, replayMsg(raw, subject, cfg.DeadLetterStream)); err != nil {
			return n, err
		}
		if err := stream.DeleteMsg(ctx, raw.Sequence); err == nil {
			n++
		} else if !letterGone(ctx, stream, raw.Sequence) {
			return n, fmt.Errorf("%w: replay %s: removing dead letter %d: %w", ErrTransport, spec, raw.Sequence, err)
		} // else another replay moved it first; the work queue kept one copy
		seq = raw.Sequence + 1
	}
	return n, nil
}

// letterGone reports whether the message at seq is no longer in stream, as
// when a delete failed because another replay deleted it first (nats.go
// keeps only the text of JetStream's error for a failed delete).
func letterGone(ctx context.Context, stream jetstream.Stream, seq uint64) bool {
	_, err := stream.GetMsg(ctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}

// replayMsg returns dead letter raw, read from the stream named
// deadStream, as the command to store again on subject: its identity,
// its headers other than NATS's and the dead letter's, Cqrs-Replays one
// more than the letter's, and the key of that replay.
func replayMsg(raw *jetstream.RawStreamMsg, subject, deadStream string) *natsgo.Msg {
	h := make(natsgo.Header, len(raw.Header))
	for k, v := range raw.Header {
		if !isNatsHeader(k) && k != headerSubject && k != headerDeliveries {
			h[k] = v
		}
	}
	id, _ := identityOf(raw.Header)
	if raw.Header.Get(HeaderID) == "" {
		id = cqrs.Identity{ID: deadStream + "." + strconv.FormatUint(raw.Sequence, 10) + "." + strconv.FormatInt(raw.Time.UnixNano(), 10)}
	}
	setIdentity(h, id)
	replays := replaysOf(raw.Header) + 1
	h.Set(headerReplays, strconv.FormatUint(replays, 10))
	h.Set(jetstream.MsgIDHeader, storedKey(id.ID, replays))
	return &natsgo.Msg{Subject: subject, Data: raw.Data, Header: h}
}

// isNatsHeader reports whether k is one of the headers NATS and JetStream
// read (Nats-Msg-Id, Nats-Expected-Stream, Nats-TTL, …) or that say why
// a message failed (Nats-Service-Error…), which a message does not carry
// from one stream to another.
func isNatsHeader(k string) bool {
	return len(k) >= 5 && strings.EqualFold(k[:5], "Nats-")
}

// bury stores m, whose headers (with its identity) are headers, in the
// dead-letter stream, then removes it from the work queue. The letter
// keeps the command's bytes and headers, NATS's own excepted, and its
// key is the command's ID with its replays, so that a second copy (this
// process died before the Term below) is dropped by the stream's
// duplicate window, and a command buried again after a replay is kept.
// If the dead-letter stream is missing it is made again; if it does not
// take the letter, m stays in the work queue and comes back later. It
// does not depend on the server's context: a command that reached its
// outcome is buried even while Stop gives up waiting.
func (h *durableHandler) bury(m jetstream.Msg, headers natsgo.Header, meta *jetstream.MsgMetadata, code string, cause error) {
	id, _ := identityOf(headers)
	dead := make(natsgo.Header, len(headers)+6)
	for k, v := range headers {
		if !isNatsHeader(k) {
			dead[k] = v
		}
	}
	setIdentity(dead, id)
	dead.Set(headerErrorCode, cutUTF8(code, maxDeadCode))
	dead.Set(headerError, headerValue(cause.Error()))
	dead.Set(headerSubject, m.Subject())
	dead.Set(headerDeliveries, strconv.FormatUint(meta.NumDelivered, 10))
	dead.Set(jetstream.MsgIDHeader, deadKey(id.ID, replaysOf(headers)))
	letter := &natsgo.Msg{Subject: h.dead, Data: m.Data(), Header: dead}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.AckWait)
	defer cancel()
	_, err := h.js.PublishMsg(ctx, letter, jetstream.WithExpectStream(h.cfg.DeadLetterStream), jetstream.WithRetryAttempts(0))
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		if err = deadStream(ctx, h.js, h.cfg, []string{h.dead}); err == nil {
			_, err = h.js.PublishMsg(ctx, letter, jetstream.WithExpectStream(h.cfg.DeadLetterStream))
		}
	}
	if err != nil {
		_ = m.NakWithDelay(h.cfg.backOff(uint64(len(h.cfg.BackOff))))
		return
	}
	_ = m.TermWithReason("dead letter: " + code)
}

// maxDeadCode bounds the error code of a dead letter.
const maxDeadCode = 128

// cutUTF8 returns s cut to at most n bytes, at a rune boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// maxHeaderValue bounds the error text of a dead letter.
const maxHeaderValue = 1024

// headerValue returns s as a header value: one line, at most
// maxHeaderValue bytes, cut at a rune boundary.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) <= maxHeaderValue {
		return s
	}
	return cutUTF8(s, maxHeaderValue) + "…"
}
