package nats

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Errors of durable commands, each wrapped with what was being done and,
// where NATS gave one, NATS's own error.
var (
	// ErrStreamIncompatible: the stream that [DurableConfig] names exists
	// but cannot keep durable commands (or dead letters) correctly, such
	// as one that does not take their subjects or is not a work queue, or
	// another stream already takes their subjects. It is left as it is.
	ErrStreamIncompatible = errors.New("nats: stream unusable for durable commands")
	// ErrConsumerConflict: another consumer of the work-queue stream
	// already takes a served type's commands, such as one of another
	// queue group or one an older version of this package left. A
	// work-queue stream gives each subject to one consumer only.
	ErrConsumerConflict = errors.New("nats: another consumer takes the commands")
	// ErrQueryNotDurable: [ServeDurable] was given a query bus. Durable
	// messages are commands: nobody waits for a result.
	ErrQueryNotDurable = errors.New("nats: queries cannot be served durably")
	// ErrDurableConfig: a [DurableConfig] field has a value that cannot
	// work, such as a dead-letter subject with a wildcard, or two served
	// types would share a subject.
	ErrDurableConfig = errors.New("nats: invalid durable config")
)

// DurableConfig configures durable commands: fire-and-forget commands kept
// in a JetStream work-queue stream until a serving process has handled
// them, so that none is lost while no handler process is up. The zero
// value is the default configuration; each field's zero value means the
// default it documents. Both sides of a command type must use the same
// Stream, and the serving processes the same settings.
type DurableConfig struct {
	// Stream names the work-queue stream of the commands. The default is
	// "CQRS_COMMANDS". If it exists it is used as it is (storage, limits,
	// replicas are the operator's): it must be a work queue
	// (jetstream.WorkQueuePolicy) and take the commands' subjects, or
	// [ErrStreamIncompatible] says why not. If it does not exist it is
	// made with subjects prefix + ".durable.>", work-queue retention,
	// file storage, one replica and no limits.
	Stream string
	// MaxDeliver bounds the deliveries of one command; after the last
	// failed one it goes to the dead-letter stream. A delivery that ended
	// without an outcome (the process died, or stopped before starting
	// it) counts too. If MaxDeliver is less than or equal to 0, it is 5.
	MaxDeliver int
	// AckWait is how long a handler may take over a command: its context
	// ends AckWait after it started. It is also how soon JetStream gives
	// the commands of a process that died, or was cut off, to another.
	// While a process holds a command, waiting for its turn or in a
	// handler whose context has not ended, it tells JetStream so every
	// quarter of AckWait (an in-progress acknowledgement), so a command
	// that waits behind others is never given away for waiting; a handler
	// that outlives its context keeps its command for at most AckWait
	// more. Keep AckWait above the longest a handler takes, with room for
	// its acknowledgement. If AckWait is less than or equal to 0, it is
	// 30s.
	AckWait time.Duration
	// BackOff is how long a failed command waits before its next
	// delivery: BackOff[0] after the first failure, BackOff[1] after the
	// second, the last value for the failures after. If BackOff is empty,
	// it is 1s, 5s, 30s. A negative value is taken as 0.
	BackOff []time.Duration
	// DeadLetter is the first tokens of the subjects of dead letters: a
	// command type's dead letters travel on DeadLetter followed by the
	// kind and name of the type, such as "cqrs.dead.command.orders.Ship".
	// The default is the prefix followed by ".dead", such as "cqrs.dead".
	// It must not be under the prefix followed by ".durable".
	DeadLetter string
	// DeadLetterStream names the stream that keeps dead letters until
	// they are replayed ([ReplayDeadLetters]) or removed. The default is
	// "CQRS_DEAD". If it exists it is used as it is, provided it takes
	// the dead-letter subjects and is not an interest stream (which would
	// drop them while nobody listens). If it does not exist it is made
	// with subjects DeadLetter + ".>", limits retention, file storage,
	// one replica and no limits.
	DeadLetterStream string
}

// defaultBackOff is what an empty DurableConfig.BackOff means.
var defaultBackOff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}

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
	backOff := c.BackOff
	if len(backOff) == 0 {
		backOff = defaultBackOff
	}
	c.BackOff = make([]time.Duration, len(backOff)) // never the caller's array
	for i, d := range backOff {
		c.BackOff[i] = max(d, 0)
	}
	if c.DeadLetter == "" {
		c.DeadLetter = prefix + ".dead"
	}
	if c.DeadLetterStream == "" {
		c.DeadLetterStream = "CQRS_DEAD"
	}
	return c
}

// validate checks what the defaults cannot mend.
func (c DurableConfig) validate(prefix string) error {
	if !literalSubject(c.DeadLetter) {
		return fmt.Errorf("%w: dead-letter subject %q: want dot-separated tokens without wildcards or spaces", ErrDurableConfig, c.DeadLetter)
	}
	if work := prefix + ".durable"; c.DeadLetter == work || strings.HasPrefix(c.DeadLetter, work+".") {
		return fmt.Errorf("%w: dead-letter subject %q is under the commands' subjects %s.>", ErrDurableConfig, c.DeadLetter, work)
	}
	return nil
}

// backOff returns the wait after the given failed delivery (1 for the
// first).
func (c DurableConfig) backOff(delivery uint64) time.Duration {
	i := min(max(delivery, 1), uint64(len(c.BackOff)))
	return c.BackOff[i-1]
}

// Headers of a dead letter, besides the error's code and text in
// Nats-Service-Error-Code and Nats-Service-Error.
const (
	headerSubject    = "Cqrs-Subject"    // the command's subject
	headerDeliveries = "Cqrs-Deliveries" // how many times it was delivered
)

// DurableSubject returns the subject a durable command travels on:
// prefix.durable.command.identity, with the type's identity encoded as
// [Subject] encodes it, so that distinct types never share one.
func DurableSubject(prefix string, spec cqrs.Spec) string {
	subject, _ := subjectOf(prefix, "durable.", spec)
	return subject
}

// durableSubject returns DurableSubject(prefix, spec), or an error if
// that is no subject a command can travel on. Every durable path takes
// its subject from here.
func durableSubject(prefix string, spec cqrs.Spec) (string, error) {
	subject, err := subjectOf(prefix, "durable.", spec)
	if err != nil {
		return "", err
	}
	if !literalSubject(subject) {
		return "", fmt.Errorf("%w: %s: %q is not a subject without wildcards, empty tokens or white space", ErrDurableConfig, spec, subject)
	}
	return subject, nil
}

// Enqueue stores command msg in the work-queue stream and returns once
// JetStream has it: it will be handled by a process serving it with
// [ServeDurable], now or when one comes up. No result comes back; a
// command that keeps failing ends in the dead-letter stream.
//
// The command carries its identity ([cqrs.NextIdentity] of ctx: the one
// set with [cqrs.ContextWithIdentity], else a new ID in the conversation
// of the message ctx's handler handles, else a new conversation) in the
// headers Cqrs-Id, Cqrs-Correlation-Id and Cqrs-Causation-Id, and its ID
// as its Nats-Msg-Id: JetStream stores an Enqueue sent again with the
// same identity once, within the stream's duplicate window (two minutes
// on the stream Enqueue makes). Its handler reads the identity with
// [cqrs.IdentityOf], the same on every delivery.
//
// A command whose encoded size is over [WithMaxPayload], or over the
// server's max_payload once its headers and the headers its dead letter
// would need (about 1.5 KiB besides its subject) are counted, fails with
// [ErrPayloadTooLarge] and is not stored.
//
// Enqueue is one round trip: a publish that JetStream acknowledges, with
// the stream's name as a condition so that a command never lands in
// another stream. Only when no stream takes the subject does it look the
// stream up, make it if it is missing ([DurableConfig.Stream] says how),
// and publish again; a stream that exists is never changed. It is safe
// for concurrent use.
func Enqueue[C any](ctx context.Context, js jetstream.JetStream, msg C, cfg DurableConfig, opts ...Option) error {
	c := newConfig(opts)
	if c.err != nil {
		return c.err
	}
	cfg = cfg.withDefaults(c.prefix)
	spec := cqrs.SpecFor[C, cqrs.NoResult]((*cqrs.CommandBus)(nil))
	if js == nil {
		return fmt.Errorf("%w: enqueue %s: nil JetStream", ErrTransport, spec)
	}
	m, err := durableMsg(ctx, &c, spec, msg)
	if err != nil {
		return err
	}
	if err := fitsWithDeadLetter(js.Conn(), spec, m, cfg); err != nil {
		return err
	}
	return store(ctx, js, c.prefix, cfg, spec, m)
}

// DurableServer handles durable commands. Make one with [ServeDurable];
// the zero value serves nothing, and its Stop returns nil at once.
//
// Each served type has its own consumer, and goroutines of its own that
// take its commands and handle them: a type's commands are handled one
// at a time, in the order JetStream delivers them, and different types
// at the same time. A DurableServer is safe for concurrent use: Stop may
// be called from any goroutine, more than once.
type DurableServer struct {
	types  []*durableHandler
	holds  *durableHolds
	ctx    context.Context // the handlers' context; ends when Stop gives up waiting, or is done
	cancel context.CancelFunc
	quit   chan struct{} // closed by Stop: nothing more is taken

	mu       sync.Mutex
	stopping bool // set by Stop: no handler starts after
	running  int  // handlers running

	stopOnce sync.Once
	stopped  chan struct{} // closed once nothing runs and nothing is held
}

// ServeDurable handles the durable commands of every type registered on
// bus so far, from the work-queue stream ([DurableConfig.Stream]). bus
// must be a *cqrs.CommandBus: a query bus gets [ErrQueryNotDurable].
//
// Each command type has a durable consumer of its own, named after the
// queue group ([WithQueueGroup]) and the type, which the processes
// serving that type share, so that each command is handled by one of
// them; a process never sees, and never drops, the commands of a type it
// does not serve, which wait for a process that does. A work-queue
// stream gives each subject to one consumer only, so one queue group
// serves a type: serving it with another gets [ErrConsumerConflict]. Two
// services that must each handle the same commands use two prefixes
// ([WithPrefix]) and two streams. ServeDurable looks for such a conflict
// before it makes any consumer, so that a refusal leaves none behind;
// if it fails after making some (a conflict that appeared meanwhile, a
// transport error), it removes those it made that no process consumes
// from.
//
// A process takes a type's commands a few at a time, holding 8 at most
// (the one in its handler and those waiting for it), and keeps those it
// holds from being given to another process while they wait
// ([DurableConfig.AckWait] says how). The handler's context carries the
// command's identity ([Enqueue]), the same on every delivery. A command
// another publisher stored without Cqrs-Id (`nats pub`) has its
// Nats-Msg-Id as its ID or, without one, a new ID on each delivery, so
// that its deliveries cannot be told apart from new commands; its dead
// letter keeps the ID of the delivery that buried it.
//
// A command is acknowledged once its handler has succeeded. A failure is
// delivered again after [DurableConfig.BackOff], up to MaxDeliver
// deliveries, after which the command goes to the dead-letter stream
// with the error's code and text in the headers Nats-Service-Error-Code
// and Nats-Service-Error, its subject in Cqrs-Subject and its deliveries
// in Cqrs-Deliveries. A failure that another attempt cannot mend goes
// there at once: a message that does not decode, and an error that
// middleware.IsCallerError reports (a failed validation, an error the
// handler marked middleware.Permanent), except cqrs.ErrRateLimited and
// the context's errors, which are retried. A process that dies
// mid-command loses nothing: after AckWait JetStream gives the command to
// another, which may handle it a second time.
//
// ctx bounds the setup: looking up or making the streams and consumers.
// Stop ends the serving.
func ServeDurable(ctx context.Context, js jetstream.JetStream, bus cqrs.Bus, cfg DurableConfig, opts ...Option) (*DurableServer, error) {
	var commands *cqrs.CommandBus
	switch b := bus.(type) {
	case *cqrs.CommandBus:
		commands = b
	case *cqrs.QueryBus:
		if b != nil {
			return nil, fmt.Errorf("%w: serve a command bus", ErrQueryNotDurable)
		}
	}
	if commands == nil {
		return nil, fmt.Errorf("%w: serving durable commands", cqrs.ErrNilBus)
	}
	if js == nil {
		return nil, fmt.Errorf("%w: serving durable commands: nil JetStream", ErrTransport)
	}
	c := newConfig(opts)
	if c.err != nil {
		return nil, c.err
	}
	cfg = cfg.withDefaults(c.prefix)
	if err := cfg.validate(c.prefix); err != nil {
		return nil, err
	}
	specs := commands.Specs()
	if len(specs) == 0 {
		return nil, fmt.Errorf("%w: no command registered to serve durably", cqrs.ErrHandlerNotFound)
	}
	subjects := make([]string, len(specs))
	deadSubjects := make([]string, len(specs))
	bySubject := make(map[string]cqrs.Spec, len(specs))
	for i, spec := range specs {
		subject, err := durableSubject(c.prefix, spec)
		if err != nil {
			return nil, err
		}
		subjects[i] = subject
		deadSubjects[i] = deadSubject(c.prefix, cfg, subjects[i])
		if other, ok := bySubject[subjects[i]]; ok {
			// One consumer would take both types' commands.
			return nil, fmt.Errorf("%w: %s and %s share the subject %s", ErrDurableConfig, other, spec, subjects[i])
		}
		bySubject[subjects[i]] = spec
	}
	stream, err := workStream(ctx, js, c.prefix, cfg, subjects)
	if err != nil {
		return nil, err
	}
	if err := deadStream(ctx, js, cfg, deadSubjects); err != nil {
		return nil, err
	}

	consumers, err := makeDurableConsumers(ctx, stream, c.queueGroup, specs, subjects, cfg)
	if err != nil {
		return nil, err
	}
	s := &DurableServer{holds: newDurableHolds(cfg.AckWait), quit: make(chan struct{}), stopped: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.holds.keepAlive(s.ctx)
	for i, spec := range specs {
		h := &durableHandler{
			srv: s, spec: spec, bus: commands, codec: c.codec, cfg: cfg, js: js, dead: deadSubjects[i], errors: c.errors,
			consumer: consumers[i],
			queue:    make(chan *durableHold, durableAhead),
			free:     durableAhead,
			freed:    make(chan struct{}, 1),
			pulled:   make(chan struct{}),
			done:     make(chan struct{}),
		}
		s.types = append(s.types, h)
		go h.pull()
		go h.work()
	}
	return s, nil
}

// durableAhead is how many commands of a type a process holds at most:
// the one in its handler and those taken ahead, which wait for it.
// Taking several per pull request keeps the requests few; holding few
// keeps few commands waiting in a process that may die, or stop.
const durableAhead = 8

// pullExpiry is how long one pull request waits for commands.
// pullHeartbeat is how often JetStream tells that it still holds the
// request: two missed, and the request is taken for lost (as when the
// server restarts) and sent again.
const (
	pullExpiry    = 5 * time.Second
	pullHeartbeat = time.Second
)

// pullRetryWait is the pause after a pull request that failed (the
// connection down, the consumer removed) before the next.
const pullRetryWait = 250 * time.Millisecond

// Stop stops taking commands and returns once no handler of s runs. What
// happens to each command s holds:
//
//   - one taken and not started goes back to the stream for another
//     process (a negative acknowledgement, which counts as one of its
//     MaxDeliver deliveries) without waiting for the command in
//     progress, once the request for commands that brought it has
//     ended: at once if it brings nothing more for 50 ms. A command
//     JetStream sends at the moment that request ends cannot be taken
//     back: it comes back after AckWait;
//   - one in its handler is finished: acknowledged if the handler
//     succeeds, else delivered again or buried as any failure is.
//
// If ctx ends first, Stop cancels the running handlers' contexts and
// returns an error that wraps ctx's and says how many handlers still
// run. Each of their commands is then settled when its handler returns:
// acknowledged if it succeeded (the acknowledgement is still sent and
// confirmed, for up to AckWait: keep the connection open until the
// handlers have returned, or the command runs again), else given back to
// the stream at once; a handler that never returns keeps its command
// from JetStream for at most AckWait after its context was cancelled.
//
// Stop may be called more than once and from several goroutines: each
// call waits, within its ctx, for the same end; a call after the
// handlers returned returns nil.
func (s *DurableServer) Stop(ctx context.Context) error {
	if s == nil || s.stopped == nil {
		return nil
	}
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		close(s.quit) // ends the pull requests; what they bring is given back
		go func() {
			for _, h := range s.types {
				<-h.pulled // no more commands come
				h.giveBack()
			}
			for _, h := range s.types {
				<-h.done
				h.giveBack() // the one work took and put back, if any
			}
			s.cancel()
			close(s.stopped)
		}()
	})
	select {
	case <-s.stopped:
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	n := s.running
	s.mu.Unlock()
	if n == 0 {
		return nil
	}
	return fmt.Errorf("nats: stop: %d durable handlers still running, their contexts cancelled: %w", n, ctx.Err())
}

// enter reports whether a handler may start, and counts it.
func (s *DurableServer) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.running++
	return true
}

func (s *DurableServer) leave() {
	s.mu.Lock()
	s.running--
	s.mu.Unlock()
}

// durableHandler handles the commands of one type.
type durableHandler struct {
	srv    *DurableServer
	spec   cqrs.Spec
	bus    *cqrs.CommandBus
	codec  Codec
	cfg    DurableConfig
	js     jetstream.JetStream
	dead   string      // the dead-letter subject
	errors []ErrorCode // the service's error table, for the dead letters' codes

	consumer jetstream.Consumer
	queue    chan *durableHold // from pull to work; room for every command held
	pulled   chan struct{}     // closed when pull returns
	done     chan struct{}     // closed when work returns

	mu    sync.Mutex
	free  int           // how many more commands may be held
	freed chan struct{} // signalled when free grows
}

// pull takes the type's commands from JetStream until Stop, into the
// queue for work, holding each (see durableHolds). It asks for as many
// as may be held, once at least half of durableAhead may: every command
// it is given has room in the queue, so none waits unseen in a buffer,
// where nothing would keep it alive. A request's commands were
// delivered after it was sent, which is when their hold starts.
//
// Once Stop was called, it lets the request in progress end: at once if
// it brought nothing for stopQuiet, else when it has brought all it
// will. Whatever it brought is queued, and given back by Stop once the
// request has ended, so that JetStream cannot hand a command given back
// to this request again.
func (h *durableHandler) pull() {
	defer close(h.pulled)
	for {
		n := h.reserve()
		if n == 0 {
			return // stopping
		}
		sent := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), pullExpiry)
		batch, err := h.consumer.Fetch(n, jetstream.FetchContext(ctx), jetstream.FetchHeartbeat(pullHeartbeat))
		got := 0
		if err == nil {
			got = h.receive(batch, sent, cancel)
			err = batch.Error()
		}
		cancel()
		h.release(n - got)
		select {
		case <-h.srv.quit:
			return
		default:
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			select { // the connection is down, the consumer was removed, …
			case <-h.srv.quit:
				return
			case <-time.After(pullRetryWait):
			}
		}
	}
}

// receive queues the commands batch brings, sent at sent, until it ends,
// and returns how many. Once Stop was called, it ends batch with cancel
// when batch has brought nothing for stopQuiet.
func (h *durableHandler) receive(batch jetstream.MessageBatch, sent time.Time, cancel context.CancelFunc) int {
	got := 0
	msgs, quit := batch.Messages(), h.srv.quit
	var quiet *time.Timer
	var quietC <-chan time.Time
	defer func() {
		if quiet != nil {
			quiet.Stop()
		}
	}()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return got
			}
			got++
			h.queue <- h.srv.holds.hold(m, sent) // pull reserved its room
			if quiet != nil {
				quiet.Reset(stopQuiet)
			}
		case <-quit:
			quit = nil
			quiet = time.NewTimer(stopQuiet)
			quietC = quiet.C
		case <-quietC:
			quietC = nil
			cancel()
		}
	}
}

// stopQuiet is how long, once Stop was called, a request for commands
// that brings none is let run before it is ended. Ending it cannot take
// back a command JetStream sent it at that moment, which then comes back
// only after AckWait: the wait makes that rare.
const stopQuiet = 50 * time.Millisecond

// reserve waits until at least half of durableAhead commands more may be
// held, and returns how many may, which are now taken; or 0 once Stop
// was called.
func (h *durableHandler) reserve() int {
	for {
		select {
		case <-h.srv.quit:
			return 0
		default:
		}
		h.mu.Lock()
		n := h.free
		if n > 0 && n >= durableAhead/2 {
			h.free = 0
			h.mu.Unlock()
			return n
		}
		h.mu.Unlock()
		select {
		case <-h.srv.quit:
			return 0
		case <-h.freed:
		}
	}
}

// release gives back room for n commands.
func (h *durableHandler) release(n int) {
	if n == 0 {
		return
	}
	h.mu.Lock()
	h.free += n
	h.mu.Unlock()
	select {
	case h.freed <- struct{}{}:
	default:
	}
}

// giveBack gives back the commands waiting in the queue: Stop was
// called, and pull has returned.
func (h *durableHandler) giveBack() {
	for {
		select {
		case x := <-h.queue:
			h.srv.holds.release(x)
			_ = x.msg.Nak() // another process takes it now
			h.release(1)
		default:
			return
		}
	}
}

// work handles the commands in the queue until Stop. A command it takes
// once Stop was called goes back to the queue, for giveBack.
func (h *durableHandler) work() {
	defer close(h.done)
	for {
		select {
		case x := <-h.queue:
			if !h.srv.enter() {
				h.queue <- x // it came out: there is room
				return
			}
			h.handle(x)
			h.srv.leave()
			h.release(1)
		case <-h.srv.quit:
			return
		}
	}
}

// handle handles the command x holds and settles it: acknowledged,
// given back for a later delivery, or buried.
func (h *durableHandler) handle(x *durableHold) {
	m := x.msg
	meta, err := m.Metadata()
	if err != nil {
		h.srv.holds.release(x)
		_ = m.Nak() // a consumer only delivers JetStream messages
		return
	}
	headers := headersWithID(m.Headers())
	if meta.NumDelivered > uint64(h.cfg.MaxDeliver) {
		// The deliveries are spent and the last had no outcome, as when a
		// command crashes its process: do not start it again.
		h.srv.holds.release(x)
		h.bury(m, headers, meta, "no_outcome", fmt.Errorf("nats: %s: %d deliveries, the last without an outcome", h.spec, meta.NumDelivered))
		return
	}
	err = h.run(x, headers)
	switch {
	case err == nil:
		h.ack(m)
	case h.srv.ctx.Err() != nil:
		_ = m.Nak() // Stop gave up waiting: not the command's fault
	case permanent(err) || meta.NumDelivered >= uint64(h.cfg.MaxDeliver):
		h.bury(m, headers, meta, codeOf(h.errors, err), err)
	default:
		_ = m.NakWithDelay(h.cfg.backOff(meta.NumDelivered))
	}
}

// headersWithID returns h if it names the message's identity, else a copy
// of h with a new ID in Cqrs-Id: a message another publisher stored
// without one gets a new ID on each delivery, which its dead letter
// keeps.
func headersWithID(h natsgo.Header) natsgo.Header {
	if _, ok := identityOf(h); ok {
		return h
	}
	out := make(natsgo.Header, len(h)+1)
	for k, v := range h {
		out[k] = v
	}
	out.Set(HeaderID, cqrs.NewID())
	return out
}

// ackConfirmWait bounds the wait for JetStream to confirm an
// acknowledgement, during which the type's next command waits.
const ackConfirmWait = 2 * time.Second

// ackRetryWait is the pause before sending again an acknowledgement that
// NATS could not deliver, as while the server restarts.
const ackRetryWait = 100 * time.Millisecond

// ack acknowledges m and waits for JetStream to confirm it, so that a
// process killed later does not leave behind acknowledgements still in
// its buffers, each a command handled again. An acknowledgement NATS
// could not deliver (the server restarting, JetStream not yet back) is
// sent again until AckWait has passed, after which the command comes
// back anyway. A confirmation that does not come within ackConfirmWait
// is not waited for longer: the acknowledgement most likely arrived.
//
// It does not depend on the server's context: a handler that succeeds
// after Stop gave up waiting for it has its command acknowledged too.
func (h *durableHandler) ack(m jetstream.Msg) {
	deadline := time.Now().Add(h.cfg.AckWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(ackConfirmWait, time.Until(deadline)))
		err := m.DoubleAck(ctx)
		cancel()
		if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrMsgAlreadyAckd) ||
			errors.Is(err, natsgo.ErrConnectionClosed) {
			return
		}
		if time.Until(deadline) <= ackRetryWait {
			return
		}
		time.Sleep(ackRetryWait)
	}
}

// run decodes and handles the command x holds, and releases x once the
// handler returned. The handler's context ends AckWait after it starts,
// or when Stop gives up waiting, and carries the command's identity.
func (h *durableHandler) run(x *durableHold, headers natsgo.Header) error {
	defer h.srv.holds.release(x)
	msg := reflect.New(h.spec.MessageType)
	if err := h.codec.Unmarshal(x.msg.Data(), msg.Interface()); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadRequest, h.spec, err)
	}
	ctx, cancel := context.WithTimeout(h.srv.ctx, h.cfg.AckWait)
	defer cancel()
	h.srv.holds.run(x, ctx.Done())
	_, err := h.bus.Execute(withIdentity(ctx, headers), msg.Elem().Interface())
	return err
}

// permanent reports whether another attempt cannot mend err.
func permanent(err error) bool {
	switch {
	case errors.Is(err, ErrBadRequest):
		return true
	case errors.Is(err, cqrs.ErrRateLimited), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false // later, it may pass
	default:
		return middleware.IsCallerError(err)
	}
}
