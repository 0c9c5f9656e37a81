package nats

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"strconv"
	"strings"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Headers of a dead letter, besides the error's code and text in
// Nats-Service-Error-Code and Nats-Service-Error, and the event's own
// headers (its trace context).
const (
	headerEventSubject    = "Cqrs-Subject"    // the subject the event was published on
	headerEventSubscriber = "Cqrs-Subscriber" // the subscriber that could not handle it
	headerEventDeliveries = "Cqrs-Deliveries" // how many times it was delivered to it
)

// eventStream returns the info of the events' stream, made if missing,
// after checking that it can keep events.
func eventStream(ctx context.Context, js jetstream.JetStream, prefix string, ev EventConfig) (*jetstream.StreamInfo, error) {
	stream, err := openStream(ctx, js, jetstream.StreamConfig{
		Name:        ev.Stream,
		Description: "Events of github.com/typedcqrs/dispatch, prefix " + prefix,
		Subjects:    []string{prefix + "." + storedToken + ".>"},
		Retention:   jetstream.InterestPolicy,
		Storage:     jetstream.FileStorage,
	}, ErrEventStream)
	if err != nil {
		return nil, err
	}
	info := stream.CachedInfo()
	if info.Config.Retention == jetstream.WorkQueuePolicy {
		return nil, fmt.Errorf("%w: stream %s is a work queue, which gives each event to one subscriber name only", ErrEventStream, ev.Stream)
	}
	return info, nil
}

// deadEventStream returns the info of the dead-letter stream, made if
// missing, after checking that it can keep dead letters.
func deadEventStream(ctx context.Context, js jetstream.JetStream, prefix string, ev EventConfig) (*jetstream.StreamInfo, error) {
	stream, err := openStream(ctx, js, jetstream.StreamConfig{
		Name:        ev.DeadLetterStream,
		Description: "Events of github.com/typedcqrs/dispatch that a subscriber could not handle, prefix " + prefix,
		Subjects:    []string{prefix + "." + unhandledToken + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
	}, ErrEventStream)
	if err != nil {
		return nil, err
	}
	info := stream.CachedInfo()
	if info.Config.Retention == jetstream.InterestPolicy {
		return nil, fmt.Errorf("%w: dead-letter stream %s has interest retention, which drops dead letters while nobody reads them", ErrEventStream, ev.DeadLetterStream)
	}
	return info, nil
}

// eventConsumerName names the durable consumer of the events on subject
// for the subscriber name: the name and the end of the type's identity
// for people, and a hash of both, so that two distinct pairs never share
// a consumer however alike they read.
func eventConsumerName(name, subject string) string {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(subject))
	tail := subject[strings.LastIndexByte(subject, '.')+1:]
	readable := name + "_" + sanitize(tail, false)
	if len(readable) > 96 {
		readable = readable[:96]
	}
	return readable + "_" + strconv.FormatUint(h.Sum64(), 36)
}

// consume makes the subscriber's durable consumer, and the streams if
// need be, and starts taking its events. r.mu is held.
func (r *Receiver) consume(s *EventSubscription) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.timeout)
	defer cancel()
	name, tail := s.spec.Subscriber, strings.TrimPrefix(s.et.subject, r.cfg.prefix+"."+storedToken+".")
	s.replay = r.cfg.prefix + "." + storedToken + "." + replayToken + "." + name + "." + tail
	s.dead = r.cfg.prefix + "." + unhandledToken + "." + name + "." + tail
	s.consumer = eventConsumerName(name, s.et.subject)
	if r.streams[0] == nil {
		events, err := eventStream(ctx, r.js, r.cfg.prefix, r.ev)
		if err != nil {
			return fmt.Errorf("nats: subscribe %s: %w", s.spec, err)
		}
		dead, err := deadEventStream(ctx, r.js, r.cfg.prefix, r.ev)
		if err != nil {
			return fmt.Errorf("nats: subscribe %s: %w", s.spec, err)
		}
		r.streams = [2]*jetstream.StreamInfo{events, dead}
	}
	if err := takes(r.streams[0], []string{s.et.subject, s.replay}, ErrEventStream); err != nil {
		return fmt.Errorf("nats: subscribe %s: %w", s.spec, err)
	}
	if err := takes(r.streams[1], []string{s.dead}, ErrEventStream); err != nil {
		return fmt.Errorf("nats: subscribe %s: %w", s.spec, err)
	}
	want := jetstream.ConsumerConfig{
		Durable:        s.consumer,
		Description:    s.spec.String(),
		FilterSubjects: []string{s.et.subject, s.replay},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        r.ev.AckWait,
		// Unlimited: the handler counts the deliveries itself, so that an
		// event whose last delivery had no outcome still reaches the dead
		// letters instead of staying in the stream, never delivered.
		MaxDeliver: -1,
	}
	if err := r.deliverPolicy(ctx, &want); err != nil {
		return fmt.Errorf("%w: subscribe %s: consumer %s on stream %s: %w", ErrTransport, s.spec, s.consumer, r.ev.Stream, err)
	}
	if _, err := r.js.CreateOrUpdateConsumer(ctx, r.ev.Stream, want); err != nil {
		return fmt.Errorf("%w: subscribe %s: consumer %s on stream %s: %w", ErrTransport, s.spec, s.consumer, r.ev.Stream, err)
	}
	pull, err := startPuller(s, r.nc, r.ev.Stream, s.consumer, r.ev.AckWait)
	if err != nil {
		return fmt.Errorf("%w: subscribe %s: consuming %s: %w", ErrTransport, s.spec, s.consumer, err)
	}
	s.pull = pull
	return nil
}

// deliverPolicy sets where a consumer to be made starts: with interest
// retention at the events published from now on, since the stream keeps
// the older ones only for the names whose consumers existed then (a new
// name would get whichever of them some other name has not acknowledged
// yet, a matter of timing); with any other retention at the oldest event
// the stream keeps. A consumer that exists keeps the policy it was made
// with, which JetStream does not let change. r.mu is held.
func (r *Receiver) deliverPolicy(ctx context.Context, want *jetstream.ConsumerConfig) error {
	c, err := r.js.Consumer(ctx, r.ev.Stream, want.Durable)
	switch {
	case err == nil:
		have := c.CachedInfo().Config
		want.DeliverPolicy, want.OptStartSeq, want.OptStartTime = have.DeliverPolicy, have.OptStartSeq, have.OptStartTime
		return nil
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return err
	case r.streams[0].Config.Retention == jetstream.InterestPolicy:
		want.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	return nil
}

// receiveStored handles one JetStream delivery: it acknowledges the
// event once the subscriber has handled it, delivers it again after the
// back-off when it failed, and moves it to the dead letters after the
// last delivery, or at once when it is not an event of its type. The
// subscriber's context carries the event's identity, the same on every
// delivery.
func (s *EventSubscription) receiveStored(m *natsgo.Msg) {
	s.received.Add(1)
	ev := &s.r.ev
	h := identified(m.Header)
	meta, err := m.Metadata()
	if err != nil {
		s.refuse(err)
		_ = m.Term() // not a JetStream delivery: nothing to keep
		return
	}
	payload, err := s.open(m.Data)
	if err != nil {
		s.refuse(err)
		s.bury(m, h, meta, "bad_request", err)
		return
	}
	if meta.NumDelivered > uint64(ev.MaxDeliver) {
		// Delivered MaxDeliver times already, the last without an
		// outcome (the process died) or whose dead letter failed.
		s.bury(m, h, meta, "max_deliver", fmt.Errorf("nats: %s: delivered %d times", s.spec, meta.NumDelivered-1))
		return
	}
	// No deadline, as with core NATS: see Subscribe.
	err = s.deliver(withIdentity(s.context(h), h), payload)
	switch {
	case err == nil:
		s.handled.Add(1)
		_ = m.Ack() // if it is lost, the event comes again: at least once
	case isUndecodable(err):
		s.refuse(err)
		s.bury(m, h, meta, "bad_request", err)
	case meta.NumDelivered >= uint64(ev.MaxDeliver):
		s.failed.Add(1)
		s.bury(m, h, meta, codeOf(s.r.cfg.errors, err), err)
	default:
		s.failed.Add(1)
		_ = m.NakWithDelay(ev.backOffAfter(meta.NumDelivered))
	}
}

// identified returns h, or, when h carries no identity (a message that
// another program stored), a copy of h with a new one: its subscriber
// and its dead letter then share it.
func identified(h natsgo.Header) natsgo.Header {
	if _, ok := identityOf(h); ok {
		return h
	}
	c := make(natsgo.Header, len(h)+1)
	maps.Copy(c, h)
	setIdentity(c, cqrs.Identity{ID: cqrs.NewID()})
	return c
}

// deadLetterHeadroom is what a JetStream event must leave free under
// NATS's max_payload for the headers its dead letter adds (a longer
// Nats-Msg-Id, Nats-Service-Error-Code of up to 64 bytes and
// Nats-Service-Error of up to 256, Cqrs-Subject of up to 1,160,
// Cqrs-Subscriber of up to 128, Cqrs-Deliveries, and Cqrs-Id for an
// event that came without one: at most about 1,820 bytes with their
// names), so that a dead letter, and its replay, always fits.
const deadLetterHeadroom = 2048

// bury stores m, whose headers with its identity are h, in the
// dead-letter stream, with why it died, then terminates its delivery.
// The letter keeps every header of the event, its identity among them,
// and is stored with the de-duplication key of the event buried after
// its replays so far: a letter stored twice (its termination was lost,
// or two instances buried it) is kept once. If the dead-letter stream
// does not take it, the event is delivered again later rather than
// lost.
func (s *EventSubscription) bury(m *natsgo.Msg, h natsgo.Header, meta *natsgo.MsgMetadata, code string, cause error) {
	letter := make(natsgo.Header, len(h)+6)
	maps.Copy(letter, h)
	id, _ := identityOf(h)
	letter.Set(jetstream.MsgIDHeader, deadKey(id.ID, replaysOf(h)))
	letter.Set(headerErrorCode, code)
	letter.Set(headerError, headerSafe(cause.Error()))
	letter.Set(headerEventSubject, m.Subject)
	letter.Set(headerEventSubscriber, s.spec.Subscriber)
	letter.Set(headerEventDeliveries, strconv.FormatUint(meta.NumDelivered, 10))
	ctx, cancel := context.WithTimeout(context.Background(), s.r.cfg.timeout)
	defer cancel()
	_, err := s.r.js.PublishMsg(ctx, &natsgo.Msg{Subject: s.dead, Data: m.Data, Header: letter},
		jetstream.WithExpectStream(s.r.ev.DeadLetterStream))
	if err != nil {
		s.r.ev.Logger.LogAttrs(ctx, slog.LevelError, "nats: keeping an unhandled event failed; it will be delivered again",
			slog.String("event", s.spec.Name), slog.String("subscriber", s.spec.Subscriber), slog.Any("id", id), slog.Any("error", err))
		_ = m.NakWithDelay(s.r.ev.backOffAfter(meta.NumDelivered))
		return
	}
	s.buried.Add(1)
	s.r.ev.Logger.LogAttrs(ctx, slog.LevelError, "nats: an event went to the dead letters",
		slog.String("event", s.spec.Name), slog.String("subscriber", s.spec.Subscriber), slog.Any("id", id),
		slog.String("stream", s.r.ev.DeadLetterStream), slog.String("code", code), slog.Any("error", cause))
	_ = m.Term()
}
