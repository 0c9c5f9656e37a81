package nats

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
)

// DurableConfig configures durable commands: fire-and-forget commands kept
// in a JetStream work-queue stream until a serving process has handled
// them, so that none is lost while no handler process is up.
type DurableConfig struct {
	// Stream names the stream. The default is "CQRS_COMMANDS".
	Stream string
	// MaxDeliver bounds the attempts at one command; after the last
	// failed one it goes to the dead-letter subject. The default is 5.
	MaxDeliver int
	// AckWait is how long a process may take over a command before
	// JetStream gives it to another, as after a crash. The default is 30s.
	AckWait time.Duration
	// DeadLetter is the subject a command goes to after MaxDeliver failed
	// attempts, with the last error in the Nats-Service-Error and
	// Nats-Service-Error-Code headers and its subject in Cqrs-Subject.
	// The default is the prefix followed by ".dead", such as "cqrs.dead".
	DeadLetter string
}

func (c DurableConfig) withDefaults(prefix string) DurableConfig {
	if c.Stream == "" {
		c.Stream = "CQRS_COMMANDS"
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.DeadLetter == "" {
		c.DeadLetter = prefix + ".dead"
	}
	return c
}

// headerSubject carries a dead command's original subject.
const headerSubject = "Cqrs-Subject"

// DurableSubject returns the subject a durable command travels on:
// prefix.durable.command.identity, with the type's identity encoded as
// [Subject] encodes it, so that distinct types never share one.
func DurableSubject(prefix string, spec cqrs.Spec) string {
	subject, _ := subjectOf(prefix, "durable.", spec)
	return subject
}

// ensureStream creates the work-queue stream, or updates it.
func ensureStream(ctx context.Context, js jetstream.JetStream, prefix string, cfg DurableConfig) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      cfg.Stream,
		Subjects:  []string{prefix + ".durable.>"},
		Retention: jetstream.WorkQueuePolicy,
	})
	if err != nil {
		return fmt.Errorf("cqrs/nats: stream %s: %w", cfg.Stream, err)
	}
	return nil
}

// Enqueue stores command msg in the work-queue stream and returns once
// JetStream has it: it will be handled by a process serving it with
// [ServeDurable], now or when one comes up. It creates the stream if need
// be. No result comes back; a command that keeps failing ends on the
// dead-letter subject.
func Enqueue[C any](ctx context.Context, js jetstream.JetStream, msg C, cfg DurableConfig, opts ...Option) error {
	c := newConfig(opts)
	cfg = cfg.withDefaults(c.prefix)
	spec := cqrs.SpecFor[C, cqrs.NoResult]((*cqrs.CommandBus)(nil))
	data, err := c.codec.Marshal(msg)
	if err != nil {
		return fmt.Errorf("cqrs/nats: %s: encoding the message: %w", spec, err)
	}
	if len(data) > c.maxPayload {
		return tooLarge(spec, "message", len(data), c.maxPayload)
	}
	if err := ensureStream(ctx, js, c.prefix, cfg); err != nil {
		return err
	}
	if _, err := js.Publish(ctx, DurableSubject(c.prefix, spec), data); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrTransport, spec, err)
	}
	return nil
}

// DurableServer handles durable commands. Make one with [ServeDurable].
type DurableServer struct {
	consume jetstream.ConsumeContext
}

// ServeDurable handles the durable commands of every type registered on
// bus, from the work-queue stream, through one durable consumer that
// processes serving the same bus share. A command is acknowledged once its
// handler has succeeded; a failure is retried at once, up to MaxDeliver
// attempts, after which the command goes to the dead-letter subject. A
// process that dies mid-command loses nothing: after AckWait JetStream
// gives the command to another.
func ServeDurable(ctx context.Context, js jetstream.JetStream, nc *natsgo.Conn, bus *cqrs.CommandBus, cfg DurableConfig, opts ...Option) (*DurableServer, error) {
	c := newConfig(opts)
	cfg = cfg.withDefaults(c.prefix)
	if err := ensureStream(ctx, js, c.prefix, cfg); err != nil {
		return nil, err
	}
	specs := map[string]cqrs.Spec{}
	var filters []string
	for _, spec := range bus.Specs() {
		subject := DurableSubject(c.prefix, spec)
		specs[subject] = spec
		filters = append(filters, subject)
	}
	if len(filters) == 0 {
		return nil, fmt.Errorf("%w: no command registered to serve durably", cqrs.ErrHandlerNotFound)
	}
	consumer, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:        "cqrs-" + sanitize(c.queueGroup, false),
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxDeliver:     cfg.MaxDeliver,
	})
	if err != nil {
		return nil, fmt.Errorf("cqrs/nats: consumer on %s: %w", cfg.Stream, err)
	}
	h := &durableHandler{cfg: cfg, codec: c.codec, specs: specs, bus: bus, nc: nc}
	cc, err := consumer.Consume(h.handle)
	if err != nil {
		return nil, fmt.Errorf("cqrs/nats: consuming %s: %w", cfg.Stream, err)
	}
	return &DurableServer{consume: cc}, nil
}

// Stop stops taking commands and waits for the one in progress. Commands
// not yet acknowledged go to another process after AckWait.
func (s *DurableServer) Stop() {
	s.consume.Drain()
	<-s.consume.Closed()
}

type durableHandler struct {
	cfg   DurableConfig
	codec Codec
	specs map[string]cqrs.Spec
	bus   *cqrs.CommandBus
	nc    *natsgo.Conn
	mu    sync.Mutex // serialises dead-letter publishes
}

func (h *durableHandler) handle(m jetstream.Msg) {
	spec, ok := h.specs[m.Subject()]
	if !ok {
		_ = m.Term() // not a type this bus serves: never will be
		return
	}
	err := h.run(spec, m)
	if err == nil {
		_ = m.Ack()
		return
	}
	meta, metaErr := m.Metadata()
	if metaErr != nil || int(meta.NumDelivered) < h.cfg.MaxDeliver {
		_ = m.Nak()
		return
	}
	// The last attempt failed: keep the command on the dead-letter subject.
	code, _ := encodeError(err)
	dead := &natsgo.Msg{Subject: h.cfg.DeadLetter, Data: m.Data(), Header: natsgo.Header{
		headerErrorCode: {code}, headerError: {err.Error()}, headerSubject: {m.Subject()},
		"Cqrs-Attempts": {strconv.FormatUint(meta.NumDelivered, 10)},
	}}
	h.mu.Lock()
	pubErr := h.nc.PublishMsg(dead)
	h.mu.Unlock()
	if pubErr != nil {
		_ = m.Nak() // try again rather than lose it
		return
	}
	_ = m.Term()
}

func (h *durableHandler) run(spec cqrs.Spec, m jetstream.Msg) error {
	msg := reflect.New(spec.MessageType)
	if err := h.codec.Unmarshal(m.Data(), msg.Interface()); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadRequest, spec, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.AckWait)
	defer cancel()
	_, err := h.bus.ExecuteCommand(ctx, msg.Elem().Interface())
	return err
}
