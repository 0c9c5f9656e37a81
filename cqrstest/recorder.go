package cqrstest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// DefaultTimeout bounds each wait of a [Recorder] ([Recorder.Await],
// [AwaitPublished], [Outcome.Then]) unless [Recorder.SetTimeout] sets
// another. Inside a testing/synctest bubble the time is the bubble's: a
// wait for something that can no longer happen fails at once.
const DefaultTimeout = 10 * time.Second

// Recorder records every dispatch on the buses it intercepts: each
// command sent, each query asked, and each delivery of an event to a
// subscriber, with the message, its [cqrs.Identity], and, once the handler
// has returned, its result and error. It is a [cqrs.Interceptor]: give it
// to a bus made by the application itself, so that its real handlers are
// recorded too.
//
//	rec := cqrstest.NewRecorder(t)
//	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(rec))
//	events := cqrs.NewEventBus(cqrs.WithIdentity(), cqrs.WithInterceptors(rec))
//	…
//	placed := cqrstest.Published[OrderPlaced](rec) // []OrderPlaced
//
// The typed readers [Sent], [Asked], [Published], [Delivered] and [Calls]
// read it, and [Recorder.Await] and [AwaitPublished] wait for what an
// asynchronous strategy delivers later.
//
// It records what reaches it, where it is among the bus's interceptors.
// Given first, it records each dispatch as its caller sees it: once
// however many attempts a retry makes, ended when the last has. Given
// last, it records each attempt as the handler receives it; but a call
// that an interceptor before it refuses (a breaker, a validation, a fault
// of [Faults]) is not recorded, and a delivery that a retry will attempt
// again is recorded as ended when its first attempt fails.
//
// Published groups an event's deliveries into publishes by their
// identity, which a publish gives all its subscribers alike: a bus that
// delivers an event to more than one subscriber must give every event
// one, with [cqrs.WithIdentity] (a [Harness] does).
//
// A Recorder is safe for concurrent use. It must be made with
// [NewRecorder]: its zero value is not usable. Inside a testing/synctest
// bubble, make it in the bubble that uses it.
type Recorder struct {
	t       testing.TB
	mu      sync.Mutex
	calls   []*record
	subs    map[reflect.Type][]string // subscriber names seen, in order
	wake    chan struct{}             // closed at the next change, made by a waiter
	timeout time.Duration
}

// record is one recorded call, completed when its handler returns.
type record struct {
	spec   *cqrs.Spec
	msg    any
	id     cqrs.Identity
	hasID  bool
	result any
	err    error
	done   bool
}

// NewRecorder returns a Recorder with nothing recorded, which reports its
// failures, and those of the readers given it, to t.
func NewRecorder(t testing.TB) *Recorder {
	return &Recorder{t: t, subs: map[reflect.Type][]string{}, timeout: DefaultTimeout}
}

// SetTimeout sets how long each wait may last; d <= 0 restores
// [DefaultTimeout]. It is safe to call while dispatches run.
func (r *Recorder) SetTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultTimeout
	}
	r.mu.Lock()
	r.timeout = d
	r.mu.Unlock()
}

// errUnwound is the error recorded for a call that a panic unwound
// through the recorder: a panic in an interceptor or middleware inside it,
// which the bus recovers further out.
var errUnwound = fmt.Errorf("cqrstest: a panic in an interceptor or middleware unwound the call")

// Intercept implements [cqrs.Interceptor]: the bus calls it once per
// message type, or per subscriber of an event, when the handler is
// registered.
func (r *Recorder) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	sp := &spec
	if spec.Subscriber != "" {
		r.mu.Lock()
		if !slices.Contains(r.subs[spec.MessageType], spec.Subscriber) {
			r.subs[spec.MessageType] = append(r.subs[spec.MessageType], spec.Subscriber)
		}
		r.mu.Unlock()
	}
	return func(ctx context.Context, c cqrs.Call) (err error) {
		rec := &record{spec: sp, msg: c.Message()}
		rec.id, rec.hasID = cqrs.IdentityOf(ctx)
		r.mu.Lock()
		r.calls = append(r.calls, rec)
		r.changed()
		r.mu.Unlock()
		returned := false
		defer func() {
			if !returned {
				r.finish(rec, nil, errUnwound)
			}
		}()
		err = next(ctx, c)
		returned = true
		r.finish(rec, c.Result(), err)
		return err
	}
}

func (r *Recorder) finish(rec *record, result any, err error) {
	r.mu.Lock()
	rec.result, rec.err, rec.done = result, err, true
	r.changed()
	r.mu.Unlock()
}

// changed wakes the waiters. r.mu is held.
func (r *Recorder) changed() {
	if r.wake != nil {
		close(r.wake)
		r.wake = nil
	}
}

// recording implements [Recording].
func (r *Recorder) recording() *Recorder { return r }

// Recording is what the typed readers read: a [*Recorder], or a
// [*Harness], which reads its own. Only this package implements it.
type Recording interface {
	recording() *Recorder
}

// Await waits until cond returns true, checking it at once and again
// each time the recorder records a call starting or ending, so a
// condition on what the handlers and subscribers did (the recorded calls,
// or state they changed before returning) is seen as soon as it holds.
// It fails the test with t.Fatalf, naming what was recorded, if cond is
// still false after the recorder's timeout ([DefaultTimeout] unless
// [Recorder.SetTimeout]).
//
// It is the wait for an asynchronous strategy's deliveries: it needs no
// Close and no sleep. Inside a testing/synctest bubble it waits in the
// bubble's time, so a delivery held back by a timer (a retry's backoff)
// is waited for at no cost if the timer ends within the timeout, and a
// condition that can no longer come true fails at once rather than after
// the timeout. Await must be called from the
// test's goroutine, as t.FailNow must; cond is called from it too.
func (r *Recorder) Await(cond func() bool) {
	r.t.Helper()
	if !r.await(cond) {
		r.t.Fatalf("cqrstest: Await: the condition did not hold within %v; recorded: %s", r.timeoutNow(), r.summary())
	}
}

func (r *Recorder) timeoutNow() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.timeout
}

// await waits until cond holds, or the timeout, and reports whether it
// held.
func (r *Recorder) await(cond func() bool) bool {
	timer := time.NewTimer(r.timeoutNow())
	defer timer.Stop()
	for {
		// Take the channel before testing cond, so that a change made
		// after the test closes it.
		r.mu.Lock()
		if r.wake == nil {
			r.wake = make(chan struct{})
		}
		wake := r.wake
		r.mu.Unlock()
		if cond() {
			return true
		}
		select {
		case <-wake:
		case <-timer.C:
			return cond()
		}
	}
}

// resultOf returns the result recorded for the command or query whose
// identity's ID is id, or nil.
func (r *Recorder) resultOf(id string) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range slices.Backward(r.calls) {
		if c.spec.Kind != cqrs.KindEvent && c.hasID && c.id.ID == id && c.done {
			return c.result
		}
	}
	return nil
}

// summary describes what was recorded, for failure messages.
func (r *Recorder) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	type count struct {
		name        string
		calls, done int
	}
	var counts []*count
	byName := map[string]*count{}
	for _, c := range r.calls {
		name := c.spec.String()
		n := byName[name]
		if n == nil {
			n = &count{name: name}
			byName[name] = n
			counts = append(counts, n)
		}
		n.calls++
		if c.done {
			n.done++
		}
	}
	if len(counts) == 0 {
		return "nothing"
	}
	parts := make([]string, len(counts))
	for i, n := range counts {
		parts[i] = fmt.Sprintf("%s: %d calls, %d returned", n.name, n.calls, n.done)
	}
	return strings.Join(parts, "; ")
}

// Call is one call a [Recorder] recorded, as [Calls] returns it: a command
// sent, a query asked, or an event delivered to one subscriber. It is a
// plain value, a copy of the record taken when Calls was called.
type Call[M any] struct {
	// Message is the message the handler was given.
	Message M
	// Spec describes the handler; for an event, Spec.Subscriber names the
	// subscriber it was delivered to.
	Spec cqrs.Spec
	// Identity is the message's identity, as the handler saw it with
	// [cqrs.IdentityOf]; HasIdentity is false if it had none.
	Identity    cqrs.Identity
	HasIdentity bool
	// Done is true once the handler has returned; Result and Err are what
	// it returned (for an event, Result is a [cqrs.NoResult]).
	Done   bool
	Result any
	Err    error
}

// Calls returns every recorded call whose message is an M, of any kind,
// in the order they started. It is safe to call while dispatches run.
func Calls[M any](r Recording) []Call[M] {
	rec := r.recording()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []Call[M]
	for _, c := range rec.calls {
		if m, ok := c.msg.(M); ok {
			out = append(out, Call[M]{Message: m, Spec: *c.spec, Identity: c.id, HasIdentity: c.hasID,
				Done: c.done, Result: c.result, Err: c.err})
		}
	}
	return out
}

// Sent returns the commands of type C recorded on a command bus, in the
// order they were sent, including those whose handler has not returned
// yet and those that failed:
//
//	assert.Equal(t, []PlaceOrder{{Customer: "ada"}}, cqrstest.Sent[PlaceOrder](rec))
//
// It is safe to call while dispatches run.
func Sent[C any](r Recording) []C { return messages[C](r, ofKind(cqrs.KindCommand)) }

// Asked returns the queries of type Q recorded on a query bus, in the
// order they were asked, as [Sent] returns commands. A streaming query
// is recorded once, as it starts.
func Asked[Q any](r Recording) []Q { return messages[Q](r, ofKind(cqrs.KindQuery)) }

// messages returns the messages of type M of the recorded calls keep
// keeps, in the order they started.
func messages[M any](r Recording, keep func(*record) bool) []M {
	rec := r.recording()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []M
	for _, c := range rec.calls {
		if !keep(c) {
			continue
		}
		if m, ok := c.msg.(M); ok {
			out = append(out, m)
		}
	}
	return out
}

// ofKind keeps the calls of one kind.
func ofKind(kind cqrs.Kind) func(*record) bool {
	return func(c *record) bool { return c.spec.Kind == kind }
}

// Delivered returns the events of type E whose delivery to subscriber has
// ended (with or without an error), in the order their deliveries
// started. A delivery is a call that reached the recorder: where it is
// among the interceptors decides whether a retry's attempts, or a copy
// that [Fault.Duplicate] delivers, count apart (see [Recorder]). It is
// safe to call while dispatches run.
func Delivered[E any](r Recording, subscriber string) []E {
	return messages[E](r, func(c *record) bool {
		return c.spec.Kind == cqrs.KindEvent && c.spec.Subscriber == subscriber && c.done
	})
}

// Published returns the events of type E that were published, once per
// publish however many subscribers it was delivered to (and however many
// times), in the order their first deliveries started. A publish is seen
// as it is delivered: an event with no subscriber is not recorded, nor an
// asynchronous one not yet taken from the queue (see [AwaitPublished]).
//
// The deliveries of one publish share its [cqrs.Identity], and are told
// apart from another publish's by it. A delivery with no identity counts
// as a publish of its own, which is right only when E has one subscriber:
// if the recorder has seen more than one subscribe to E, such a delivery
// fails the test, naming the fix ([cqrs.WithIdentity] on the event bus).
// It is safe to call while dispatches run.
func Published[E any](r Recording) []E {
	rec := r.recording()
	rec.t.Helper()
	groups, err := rec.publishes(reflect.TypeFor[E](), nil)
	if err != nil {
		rec.t.Errorf("%v", err)
	}
	var out []E
	for _, g := range groups {
		if e, ok := g.msg.(E); ok {
			out = append(out, e)
		}
	}
	return out
}

// AwaitPublished waits until n events of type E have been published and
// delivered to every subscriber of E the recorder has seen subscribe,
// then returns what [Published] returns. It fails the test with t.Fatalf
// after the recorder's timeout, naming what was delivered to whom. It
// waits as [Recorder.Await] does, inside a testing/synctest bubble or
// outside, and must be called from the test's goroutine.
//
// A subscriber cancelled after the recorder saw it subscribe is still
// waited for: wait with [Recorder.Await] and [Delivered] instead.
func AwaitPublished[E any](r Recording, n int) []E {
	rec := r.recording()
	rec.t.Helper()
	t := reflect.TypeFor[E]()
	var err error
	ok := rec.await(func() bool {
		var groups []*publish
		if groups, err = rec.publishes(t, nil); err != nil {
			return true // it will not get better
		}
		complete := 0
		for _, g := range groups {
			if g.complete {
				complete++
			}
		}
		return complete >= n
	})
	if err != nil {
		rec.t.Fatalf("%v", err)
	}
	if !ok {
		rec.t.Fatalf("cqrstest: AwaitPublished: %d publishes of %s delivered to every subscriber (%s) did not come within %v; recorded: %s",
			n, t, strings.Join(rec.subscribersOf(t), ", "), rec.timeoutNow(), rec.summary())
	}
	return Published[E](r)
}

func (r *Recorder) subscribersOf(t reflect.Type) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for et, names := range r.subs {
		if et == t || (t.Kind() == reflect.Interface && et.Implements(t)) {
			out = append(out, names...)
		}
	}
	return out
}

// publish is one publish of an event: its deliveries grouped.
type publish struct {
	msg      any
	typ      reflect.Type
	id       cqrs.Identity
	hasID    bool
	done     map[string]bool // the subscribers that have returned
	complete bool            // every subscriber seen has returned
}

// publishes groups the recorded deliveries of events assignable to t into
// publishes, in the order their first deliveries started, keeping those
// for which keep (if not nil) returns true. It fails when deliveries
// without an identity cannot be grouped.
func (r *Recorder) publishes(t reflect.Type, keep func(*record) bool) ([]*publish, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	type key struct {
		t  reflect.Type
		id string
	}
	var out []*publish
	byKey := map[key]*publish{}
	for _, c := range r.calls {
		if c.spec.Kind != cqrs.KindEvent || !reflect.TypeOf(c.msg).AssignableTo(t) || (keep != nil && !keep(c)) {
			continue
		}
		et := c.spec.MessageType
		var p *publish
		if c.hasID {
			p = byKey[key{et, c.id.ID}]
		} else if len(r.subs[et]) > 1 {
			return nil, fmt.Errorf("cqrstest: %s was delivered without an identity to one of its %d subscribers (%s), so its deliveries cannot be told apart by publish: make the event bus with cqrs.WithIdentity(), as cqrstest.NewHarness does",
				c.spec.Name, len(r.subs[et]), strings.Join(r.subs[et], ", "))
		}
		if p == nil {
			p = &publish{msg: c.msg, typ: et, id: c.id, hasID: c.hasID, done: map[string]bool{}}
			out = append(out, p)
			if c.hasID {
				byKey[key{et, c.id.ID}] = p
			}
		}
		if c.done {
			p.done[c.spec.Subscriber] = true
		}
	}
	for _, p := range out {
		p.complete = len(p.done) > 0
		for _, s := range r.subs[p.typ] {
			if !p.done[s] {
				p.complete = false
			}
		}
	}
	return out, nil
}
