package nats

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
)

// JetStream's error codes this file tells apart.
const (
	codeStreamNotMatch      jetstream.ErrorCode = 10060 // the Nats-Expected-Stream condition failed
	codeConsumerNotUnique   jetstream.ErrorCode = 10100 // filters overlap on a work-queue stream
	codeStreamSubjectsTaken jetstream.ErrorCode = 10065 // another stream takes the subjects
)

// store publishes m, a durable command or a replayed one, to the work
// queue: one round trip, on the condition that cfg.Stream is the stream
// that stores it. Only when no stream answers does it look the stream up
// or make it, then publish again.
func store(ctx context.Context, js jetstream.JetStream, prefix string, cfg DurableConfig, spec cqrs.Spec, m *natsgo.Msg) error {
	// No retry on "no responders": that means no stream, dealt with below.
	_, err := js.PublishMsg(ctx, m, jetstream.WithExpectStream(cfg.Stream), jetstream.WithRetryAttempts(0))
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		if _, err := workStream(ctx, js, prefix, cfg, []string{m.Subject}); err != nil {
			return fmt.Errorf("nats: enqueue %s: %w", spec, err)
		}
		_, err = js.PublishMsg(ctx, m, jetstream.WithExpectStream(cfg.Stream))
	}
	if err == nil {
		return nil
	}
	if apiCode(err) == codeStreamNotMatch {
		return fmt.Errorf("%w: enqueue %s: subject %s is stored by another stream than %s: %w", ErrStreamIncompatible, spec, m.Subject, cfg.Stream, err)
	}
	if errors.Is(err, natsgo.ErrMaxPayload) {
		return fmt.Errorf("%w: enqueue %s: %w", ErrPayloadTooLarge, spec, err)
	}
	return fmt.Errorf("%w: enqueue %s: %w", ErrTransport, spec, err)
}

// deadLetterRoom is the room, in bytes, that a command's dead letter
// needs beyond the command's own headers and subject: the headers that
// say why it died (the error's code and text, each cut to fit, the
// deliveries, the subject's header name), the longer key of a dead or
// replayed message, and Cqrs-Replays.
const deadLetterRoom = maxHeaderValue + maxDeadCode + 256

// fitsWithDeadLetter returns an error wrapping ErrPayloadTooLarge if m,
// with its headers, the stream condition it is published with and the
// room its dead letter will need, is over the max_payload of the server
// nc is connected to. That is checked before a command is stored, so
// that every command stored can also be buried. A connection that does
// not know the server's limit yet checks nothing.
func fitsWithDeadLetter(nc *natsgo.Conn, spec cqrs.Spec, m *natsgo.Msg, cfg DurableConfig) error {
	if nc == nil {
		return nil
	}
	limit := nc.MaxPayload()
	if limit <= 0 {
		return nil
	}
	condition := len(jetstream.ExpectedStreamHeader) + 4 + max(len(cfg.Stream), len(cfg.DeadLetterStream))
	need := len(m.Data) + natsHeaderLen(m.Header) + condition + len(m.Subject) + deadLetterRoom
	if int64(need) > limit {
		return fmt.Errorf("%w: %s: message of %d bytes, which with its headers and the room its dead letter needs is %d bytes, over the server's max_payload of %d",
			ErrPayloadTooLarge, spec, len(m.Data), need, limit)
	}
	return nil
}

// natsHeaderLen returns the bytes h takes in a NATS message: the version
// line, a line per value, and the blank line after them.
func natsHeaderLen(h natsgo.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// apiCode returns the JetStream error code err carries, or 0.
func apiCode(err error) jetstream.ErrorCode {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode
	}
	return 0
}

// workStream returns the commands' stream, made with the documented
// defaults if it is missing, after checking that it can keep subjects.
func workStream(ctx context.Context, js jetstream.JetStream, prefix string, cfg DurableConfig, subjects []string) (jetstream.Stream, error) {
	stream, err := openStream(ctx, js, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Durable commands of github.com/typedcqrs/dispatch, prefix " + prefix,
		Subjects:    []string{prefix + ".durable.>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
	}, ErrStreamIncompatible)
	if err != nil {
		return nil, err
	}
	info := stream.CachedInfo()
	if info.Config.Retention != jetstream.WorkQueuePolicy {
		return nil, fmt.Errorf("%w: stream %s has %s retention; durable commands need a work queue (each handled by one consumer, removed once acknowledged)",
			ErrStreamIncompatible, cfg.Stream, info.Config.Retention)
	}
	if err := takes(info, subjects, ErrStreamIncompatible); err != nil {
		return nil, err
	}
	return stream, nil
}

// deadStream makes sure the dead-letter stream exists and takes subjects.
func deadStream(ctx context.Context, js jetstream.JetStream, cfg DurableConfig, subjects []string) error {
	stream, err := openStream(ctx, js, jetstream.StreamConfig{
		Name:        cfg.DeadLetterStream,
		Description: "Dead letters of github.com/typedcqrs/dispatch: durable commands that failed",
		Subjects:    []string{cfg.DeadLetter + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
	}, ErrStreamIncompatible)
	if err != nil {
		return err
	}
	info := stream.CachedInfo()
	if info.Config.Retention == jetstream.InterestPolicy {
		return fmt.Errorf("%w: dead-letter stream %s has interest retention, which drops dead letters while nobody consumes them",
			ErrStreamIncompatible, cfg.DeadLetterStream)
	}
	return takes(info, subjects, ErrStreamIncompatible)
}

// openStream returns the stream named in want, or makes it as want says
// if there is none. An existing stream is never changed. A stream that
// cannot be made because another takes its subjects is an error wrapping
// incompatible (ErrStreamIncompatible, ErrEventStream); one that nothing
// answers, because the server has JetStream off, an error that says so
// and wraps jetstream.ErrJetStreamNotEnabled. Durable commands and events
// share it.
func openStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, incompatible error) (jetstream.Stream, error) {
	stream, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			stream, err = js.Stream(ctx, want.Name) // another process made it first
		}
		if apiCode(err) == codeStreamSubjectsTaken {
			return nil, fmt.Errorf("%w: making stream %s: another stream takes %s: %w", incompatible, want.Name, want.Subjects[0], err)
		}
	}
	if errors.Is(err, natsgo.ErrNoResponders) {
		// Nothing answers JetStream's API: NATS's own error does not say
		// why, which is nearly always this.
		return nil, fmt.Errorf("%w: stream %s: nothing answers JetStream's API, so the NATS server runs without it: enable it (nats-server -js, or a jetstream block in its configuration): %w: %w",
			ErrTransport, want.Name, jetstream.ErrJetStreamNotEnabled, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: stream %s: %w", ErrTransport, want.Name, err)
	}
	return stream, nil
}

// takes checks that the stream of info stores every one of subjects; if
// not, the error wraps incompatible.
func takes(info *jetstream.StreamInfo, subjects []string, incompatible error) error {
	for _, subject := range subjects {
		ok := false
		for _, pattern := range info.Config.Subjects {
			if subjectMatches(pattern, subject) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%w: stream %s takes %v, not %s", incompatible, info.Config.Name, info.Config.Subjects, subject)
		}
	}
	return nil
}

// subjectMatches reports whether the subject pattern, with NATS's
// wildcards, matches the literal subject.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

// literalSubject reports whether s is a subject without wildcards, empty
// tokens or white space.
func literalSubject(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	return true
}

// deadSubject returns the dead-letter subject of the commands on
// subject: DeadLetter followed by the subject's kind and name.
func deadSubject(prefix string, cfg DurableConfig, subject string) string {
	return cfg.DeadLetter + "." + strings.TrimPrefix(subject, prefix+".durable.")
}

// consumerConfig is the durable consumer of one command type for one
// queue group.
func consumerConfig(queueGroup string, spec cqrs.Spec, subject string, cfg DurableConfig) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       consumerName(queueGroup, subject),
		Description:   fmt.Sprintf("%s, queue group %s", spec, queueGroup),
		FilterSubject: subject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		// One delivery more than the handler may use, so that a command
		// whose last delivery had no outcome reaches the dead letters
		// instead of staying in the stream, never delivered.
		MaxDeliver: cfg.MaxDeliver + 1,
	}
}

// consumerName names the consumer of subject for queueGroup: readable
// parts for people, and a hash of both, so that distinct pairs never
// share a consumer however the readable parts read.
func consumerName(queueGroup, subject string) string {
	h := fnv.New64a()
	h.Write([]byte(queueGroup))
	h.Write([]byte{0})
	h.Write([]byte(subject))
	readable := nameToken(queueGroup) + "_" + nameToken(subject[strings.LastIndexByte(subject, '.')+1:])
	if len(readable) > 64 {
		readable = readable[:64]
	}
	return readable + "_" + strconv.FormatUint(h.Sum64(), 36)
}

// nameToken keeps the letters, digits, '-' and '_' of s, which any
// JetStream name may hold; anything else becomes '_'.
func nameToken(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		default:
			return '_'
		}
	}, s)
}

// makeDurableConsumers makes (or updates) the consumer of each of
// specs, whose subjects are subjects, for queueGroup. It first lists the
// stream's consumers and refuses, having made nothing, if another takes
// one of the subjects. If a consumer still cannot be made (a conflict
// that appeared since, a transport error), it removes those it made that
// no process consumes from, and returns the error.
func makeDurableConsumers(ctx context.Context, stream jetstream.Stream, queueGroup string, specs []cqrs.Spec, subjects []string, cfg DurableConfig) ([]jetstream.Consumer, error) {
	var existing []*jetstream.ConsumerInfo
	list := stream.ListConsumers(ctx)
	for info := range list.Info() {
		existing = append(existing, info)
	}
	if err := list.Err(); err != nil {
		return nil, fmt.Errorf("%w: listing the consumers of stream %s: %w", ErrTransport, cfg.Stream, err)
	}
	existed := map[string]bool{}
	for _, info := range existing {
		existed[info.Name] = true
	}
	for i, spec := range specs {
		name := consumerName(queueGroup, subjects[i])
		if taken := takenBy(existing, subjects[i], name); len(taken) > 0 {
			return nil, conflictError(stream, spec, subjects[i], taken, nil)
		}
	}
	consumers := make([]jetstream.Consumer, len(specs))
	var made []string
	for i, spec := range specs {
		consumer, err := stream.CreateOrUpdateConsumer(ctx, consumerConfig(queueGroup, spec, subjects[i], cfg))
		if err != nil {
			err = consumerError(ctx, stream, spec, subjects[i], consumerName(queueGroup, subjects[i]), err)
			removeDurableConsumers(stream, made)
			return nil, err
		}
		consumers[i] = consumer
		if name := consumerName(queueGroup, subjects[i]); !existed[name] {
			made = append(made, name)
		}
	}
	return consumers, nil
}

// consumerCleanupWait bounds the removal of the consumers a failed ServeDurable
// made: it happens whatever became of the setup's context.
const consumerCleanupWait = 5 * time.Second

// removeDurableConsumers removes the consumers named that no process consumes
// from (no pull request waiting, no command delivered and not yet
// acknowledged): another process of the same queue group may have
// started serving from one since it was made. It is best effort: a
// consumer it cannot remove is left, and serving its type with another
// queue group gets ErrConsumerConflict naming it.
func removeDurableConsumers(stream jetstream.Stream, names []string) {
	ctx, cancel := context.WithTimeout(context.Background(), consumerCleanupWait)
	defer cancel()
	for _, name := range names {
		consumer, err := stream.Consumer(ctx, name)
		if err != nil {
			continue
		}
		info, err := consumer.Info(ctx)
		if err != nil || info.NumWaiting > 0 || info.NumAckPending > 0 {
			continue
		}
		_ = stream.DeleteConsumer(ctx, name)
	}
}

// takenBy returns the names of the consumers among infos, other than
// except, that take subject: a work-queue stream gives each subject to
// one consumer. A consumer without a filter takes every subject.
func takenBy(infos []*jetstream.ConsumerInfo, subject, except string) []string {
	var taken []string
	for _, info := range infos {
		if info.Name == except {
			continue
		}
		filters := append([]string{info.Config.FilterSubject}, info.Config.FilterSubjects...)
		all := true
		for _, f := range filters {
			if f == "" {
				continue
			}
			all = false
			if subjectMatches(f, subject) {
				taken = append(taken, info.Name)
				break
			}
		}
		if all {
			taken = append(taken, info.Name)
		}
	}
	return taken
}

// consumerError explains why the consumer of spec, named name, could not
// be made, naming the consumer that takes its subject already, if that
// is why.
func consumerError(ctx context.Context, stream jetstream.Stream, spec cqrs.Spec, subject, name string, err error) error {
	if apiCode(err) != codeConsumerNotUnique {
		return fmt.Errorf("%w: consumer of %s on stream %s: %w", ErrTransport, spec, stream.CachedInfo().Config.Name, err)
	}
	var infos []*jetstream.ConsumerInfo
	list := stream.ListConsumers(ctx)
	for info := range list.Info() {
		infos = append(infos, info)
	}
	return conflictError(stream, spec, subject, takenBy(infos, subject, name), err)
}

// conflictError is the ErrConsumerConflict of spec, whose subject the
// consumers taken take; it wraps err, JetStream's own, if there is one.
func conflictError(stream jetstream.Stream, spec cqrs.Spec, subject string, taken []string, err error) error {
	msg := fmt.Sprintf("%s on stream %s: consumer %v already takes %s; serve it with the same queue group, or from another prefix and stream, "+
		"or remove a consumer left by an older version (nats consumer rm)", spec, stream.CachedInfo().Config.Name, taken, subject)
	if err == nil {
		return fmt.Errorf("%w: %s", ErrConsumerConflict, msg)
	}
	return fmt.Errorf("%w: %s: %w", ErrConsumerConflict, msg, err)
}
