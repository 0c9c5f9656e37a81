package nats

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

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
	return fmt.Errorf("%w: enqueue %s: %w", ErrTransport, spec, err)
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
// incompatible (ErrStreamIncompatible, ErrEventStream). Durable commands
// and events share it.
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

// consumerError explains why the consumer of spec could not be made,
// naming the consumer that takes its subject already, if that is why.
func consumerError(ctx context.Context, stream jetstream.Stream, spec cqrs.Spec, subject string, err error) error {
	if apiCode(err) != codeConsumerNotUnique {
		return fmt.Errorf("%w: consumer of %s on stream %s: %w", ErrTransport, spec, stream.CachedInfo().Config.Name, err)
	}
	var taken []string
	list := stream.ListConsumers(ctx)
	for info := range list.Info() {
		filters := append([]string{info.Config.FilterSubject}, info.Config.FilterSubjects...)
		for _, f := range filters {
			if f != "" && subjectMatches(f, subject) {
				taken = append(taken, info.Name)
				break
			}
		}
	}
	return fmt.Errorf("%w: %s on stream %s: consumer %v already takes %s; serve it with the same queue group, or from another prefix and stream, "+
		"or remove a consumer left by an older version (nats consumer rm): %w",
		ErrConsumerConflict, spec, stream.CachedInfo().Config.Name, taken, subject, err)
}
