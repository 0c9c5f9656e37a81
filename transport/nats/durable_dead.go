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
// work queue, oldest first, once the cause of their failure is mended:
// each is enqueued again, with no trace of its past deliveries, then
// removed from the dead-letter stream. It returns how many it moved. The
// dead letters of other types stay; so do those that arrive while it
// runs. cfg and opts must be those of [Enqueue].
//
// A replay cut short (an error, a cancelled ctx) may be run again: a dead
// letter enqueued but not yet removed when it stopped is enqueued again,
// which the work queue's duplicate window (two minutes by default)
// drops. ReplayDeadLetters is safe for concurrent use, but two replays of
// one type at once may handle a command twice.
func ReplayDeadLetters[C any](ctx context.Context, js jetstream.JetStream, cfg DurableConfig, opts ...Option) (int, error) {
	c := newConfig(opts)
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
	last := stream.CachedInfo().State.LastSeq
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
		id := "replay." + cfg.DeadLetterStream + "." + strconv.FormatUint(raw.Sequence, 10)
		m := &natsgo.Msg{Subject: subject, Data: raw.Data, Header: natsgo.Header{jetstream.MsgIDHeader: {id}}}
		if err := store(ctx, js, c.prefix, cfg, spec, m); err != nil {
			return n, err
		}
		if err := stream.DeleteMsg(ctx, raw.Sequence); err != nil {
			return n, fmt.Errorf("%w: replay %s: removing dead letter %d: %w", ErrTransport, spec, raw.Sequence, err)
		}
		n++
		seq = raw.Sequence + 1
	}
	return n, nil
}

// bury stores m in the dead-letter stream, then removes it from the work
// queue. If the dead-letter stream does not take it, m stays in the work
// queue and comes back later.
func (h *durableHandler) bury(m jetstream.Msg, meta *jetstream.MsgMetadata, code string, cause error) {
	dead := &natsgo.Msg{Subject: h.dead, Data: m.Data(), Header: natsgo.Header{
		headerErrorCode:  {code},
		headerError:      {headerValue(cause.Error())},
		headerSubject:    {m.Subject()},
		headerDeliveries: {strconv.FormatUint(meta.NumDelivered, 10)},
		// A second copy, if this process dies before the Term below, is
		// dropped by the stream's duplicate window.
		jetstream.MsgIDHeader: {meta.Stream + "." + strconv.FormatUint(meta.Sequence.Stream, 10)},
	}}
	ctx, cancel := context.WithTimeout(h.srv.ctx, h.cfg.AckWait)
	defer cancel()
	if _, err := h.js.PublishMsg(ctx, dead, jetstream.WithExpectStream(h.cfg.DeadLetterStream)); err != nil {
		_ = m.NakWithDelay(h.cfg.backOff(uint64(len(h.cfg.BackOff))))
		return
	}
	_ = m.TermWithReason("dead letter: " + code)
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
	cut := maxHeaderValue
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
