package middleware

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Inbox records which messages each consumer has handled, so that a
// message delivered again (a transport's redelivery after a crash, a
// publisher's retry) runs its handler once: the inbox pattern, which
// [Idempotent] puts around handlers.
//
// Once calls fn unless consumer has already handled the message whose
// [cqrs.Identity] ID is id, and records id as handled for consumer when
// fn returns nil; it reports whether it called fn, and returns fn's error.
// An error of fn records nothing: the message may run again. While fn
// runs for (consumer, id), a second Once for the same pair waits for it,
// then runs fn only if the first failed. An inbox that can, such as one
// in the database the handler writes, makes the record and fn's effects
// one transaction, and gives fn a ctx that carries it; one that cannot
// (such as [MemoryInbox]) records after fn has returned, so a crash
// between the two runs the message again.
//
// Implementations must be safe for concurrent use.
type Inbox interface {
	Once(ctx context.Context, consumer, id string, fn func(ctx context.Context) error) (ran bool, err error)
}

// Idempotent returns an interceptor that runs each command and each
// event's subscriber at most once per message: a dispatch whose message
// carries an identity ([cqrs.IdentityOf]) runs its handler through
// in.Once, keyed by the registration's [cqrs.Spec.Key] (per subscriber,
// for events: each subscriber handles an event once) and the identity's
// ID. Give it to the bus the transport serves, such as the command bus of
// a durable server or [cqrs.WithInterceptors] in an events receiver's bus
// options, so that a message the transport delivers twice takes effect
// once:
//
//	inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
//	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Idempotent(inbox)))
//
// A duplicate (a message that consumer has handled) does not reach the
// handler: the dispatch returns the zero result and a nil error, so that a
// transport acknowledges it. A message with no identity, or an empty ID,
// runs normally: it cannot be known for a duplicate of anything. Queries,
// which change nothing, are passed on untouched. An error of in itself
// (a database that is down) is returned as the dispatch's error, and the
// handler does not run.
//
// Put Idempotent inside the layers that should see every delivery
// (logging, metrics) and outside those that should run once per message
// (retries, the handler's own middleware). The interceptor keeps no state
// of its own and is safe for concurrent use if in is. A nil in is refused
// when a handler is registered, with [cqrs.ErrNilHandler].
func Idempotent(in Inbox) cqrs.Interceptor {
	return cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		if in == nil || isNilInbox(in) {
			return nil // Register refuses it with ErrNilHandler
		}
		if spec.Kind == cqrs.KindQuery {
			return next
		}
		consumer := spec.Key()
		return func(ctx context.Context, c cqrs.Call) error {
			id, ok := cqrs.IdentityOf(ctx)
			if !ok || id.ID == "" {
				return next(ctx, c)
			}
			_, err := in.Once(ctx, consumer, id.ID, func(ctx context.Context) error {
				return next(ctx, c)
			})
			return err
		}
	})
}

// isNilInbox reports whether in holds a nil *MemoryInbox, the one
// implementation this package can see through.
func isNilInbox(in Inbox) bool {
	m, ok := in.(*MemoryInbox)
	return ok && m == nil
}

// MemoryInboxConfig configures a [MemoryInbox]. Its zero value is the
// default configuration; each field's zero value means the default it
// documents.
type MemoryInboxConfig struct {
	// TTL is how long a handled message is remembered: a duplicate that
	// arrives later runs again. Keep it above the longest a transport may
	// take to deliver a message again (its AckWait times its deliveries,
	// plus its back-off). If TTL is less than or equal to 0, it is 24h.
	TTL time.Duration
	// MaxEntries bounds the messages remembered, over all consumers; when
	// it is reached the oldest is forgotten first. If MaxEntries is less
	// than or equal to 0, it is 100,000.
	MaxEntries int
}

// MemoryInbox is an [Inbox] that remembers, in this process's memory,
// the messages handled in the last TTL, up to MaxEntries: a duplicate
// delivered to the same process within that window is dropped. It
// forgets everything when the process ends, and cannot make its record
// one transaction with a handler's writes: a process that dies after a
// handler succeeded and before its transport acknowledged the message
// runs it again in the process that gets it next. For handled messages
// that outlive the process, use an inbox in the database the handlers
// write (the outbox module's).
//
// Make one with [NewMemoryInbox]; the zero value is not usable. A
// MemoryInbox is safe for concurrent use. It starts no goroutine: expired
// records are dropped as new ones are made.
type MemoryInbox struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	handled map[inboxKey]time.Time // the handled messages, to when they expire
	order   []inboxKey             // handled keys, oldest first, from head
	head    int
	running map[inboxKey]*inboxRun // the messages whose fn runs now
}

type inboxKey struct{ consumer, id string }

// inboxRun is one running fn, which duplicates wait for.
type inboxRun struct {
	done chan struct{} // closed once fn has returned and its outcome is recorded
}

// NewMemoryInbox returns an empty inbox configured by cfg.
func NewMemoryInbox(cfg MemoryInboxConfig) *MemoryInbox {
	if cfg.TTL <= 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 100_000
	}
	return &MemoryInbox{
		ttl:     cfg.TTL,
		max:     cfg.MaxEntries,
		handled: make(map[inboxKey]time.Time),
		running: make(map[inboxKey]*inboxRun),
	}
}

// ErrNilInbox is the error of [MemoryInbox.Once] on an inbox that was
// not made with [NewMemoryInbox].
var ErrNilInbox = errors.New("middleware: inbox not made with NewMemoryInbox")

// Once calls fn unless consumer has handled id within the TTL, as
// [Inbox] says. A Once that waits for a running duplicate returns ctx's
// error, without running fn, if ctx ends first. fn's panic is not
// recovered: it leaves nothing recorded, releases the duplicates waiting,
// and goes on up.
func (m *MemoryInbox) Once(ctx context.Context, consumer, id string, fn func(ctx context.Context) error) (ran bool, err error) {
	if m == nil || m.handled == nil {
		return false, ErrNilInbox
	}
	if fn == nil {
		return false, fmt.Errorf("%w: Once with a nil fn", cqrs.ErrNilHandler)
	}
	key := inboxKey{consumer, id}
	for {
		m.mu.Lock()
		now := time.Now()
		m.expireLocked(now)
		if _, ok := m.handled[key]; ok {
			m.mu.Unlock()
			return false, nil
		}
		run := m.running[key]
		if run == nil {
			run = &inboxRun{done: make(chan struct{})}
			m.running[key] = run
			m.mu.Unlock()
			return true, m.run(ctx, key, run, fn)
		}
		m.mu.Unlock()
		select {
		case <-run.done: // look again: handled, or free to run
		case <-ctx.Done():
			return false, fmt.Errorf("middleware: waiting for a duplicate of %s to finish: %w", id, ctx.Err())
		}
	}
}

// run calls fn as the one run of key, then records its outcome and
// releases the duplicates waiting for it.
func (m *MemoryInbox) run(ctx context.Context, key inboxKey, run *inboxRun, fn func(context.Context) error) (err error) {
	ok := false
	defer func() {
		m.mu.Lock()
		delete(m.running, key)
		if ok {
			m.recordLocked(key, time.Now())
		}
		m.mu.Unlock()
		close(run.done)
	}()
	err = fn(ctx)
	ok = err == nil
	return err
}

// recordLocked remembers key as handled at now, forgetting the oldest
// record if the inbox is full.
func (m *MemoryInbox) recordLocked(key inboxKey, now time.Time) {
	for len(m.handled) >= m.max && m.head < len(m.order) {
		m.dropOldestLocked()
	}
	m.handled[key] = now.Add(m.ttl)
	m.order = append(m.order, key)
}

// expireLocked forgets the records expired at now. Every record lives
// for the same TTL, so the oldest expire first.
func (m *MemoryInbox) expireLocked(now time.Time) {
	for m.head < len(m.order) {
		exp, ok := m.handled[m.order[m.head]]
		if ok && exp.After(now) {
			return
		}
		m.dropOldestLocked()
	}
}

// dropOldestLocked forgets the oldest record, and compacts order once
// half of it is spent.
func (m *MemoryInbox) dropOldestLocked() {
	if m.head >= len(m.order) {
		return
	}
	delete(m.handled, m.order[m.head])
	m.order[m.head] = inboxKey{}
	m.head++
	if m.head > len(m.order)/2 && m.head > 64 {
		n := copy(m.order, m.order[m.head:])
		clear(m.order[n:])
		m.order = m.order[:n]
		m.head = 0
	}
}

// Len returns how many handled messages m remembers now, over all
// consumers, counting those expired and not yet dropped.
func (m *MemoryInbox) Len() int {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.handled)
}
