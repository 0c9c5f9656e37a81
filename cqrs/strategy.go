package cqrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Strategy is how a publish on an [EventBus] runs an event's subscribers.
// A bus has one ([WithStrategy]); a call may choose another
// ([PublishWith]).
//
//	strategy      order of calls       Publish returns            on a failure
//	Sequential    subscription order   when all have run          all run; errors joined
//	StopOnError   subscription order   at the first failure       the rest do not run
//	Concurrent    none: n at a time    when all have run          all run; errors joined
//	Async         queue order          once the event is queued   logged and counted
//
// In every strategy a subscriber's failure is a [*SubscriberError] naming
// it, and a panic is that subscriber's failure (a [*PanicError]), seen by
// its interceptors and middleware like any error: it never crashes the
// process nor reaches the caller as a panic.
//
// The caller's ctx is given to each subscriber. When it ends during a
// synchronous publish, subscribers not yet started are not started and
// ctx.Err() is among the errors returned. An asynchronous publish hands
// the subscribers a ctx with the caller's values but without its
// cancellation, since the caller has moved on: see [Async].
//
// Strategy is a small value, safe to copy and to share. Its zero value
// stands for the bus's strategy, and the bus's for [Sequential].
type Strategy struct {
	mode          strategyMode
	limit         int
	cancelOnError bool
}

type strategyMode uint8

const (
	modeSequential strategyMode = iota + 1
	modeStopOnError
	modeConcurrent
	modeAsync
)

// Sequential calls the subscribers one after the other, in the order they
// subscribed, every one of them, and returns the errors of those that
// failed, joined ([errors.Join]). It is the default strategy: one
// subscriber's failure does not deprive the others of the event.
func Sequential() Strategy { return Strategy{mode: modeSequential} }

// StopOnError calls the subscribers one after the other, in the order they
// subscribed, and stops at the first that fails, returning its error. The
// subscribers after it do not see the event. It is go-mediatr's
// behaviour and MediatR's default.
func StopOnError() Strategy { return Strategy{mode: modeStopOnError} }

// Concurrent calls the subscribers at the same time, at most limit at once
// (each in a goroutine of its own), waits for all, and returns the errors
// of those that failed, joined. They may run in any order. If limit is
// less than 1 or more than the number of subscribers, all run at once.
// See [Strategy.CancelOnError].
func Concurrent(limit int) Strategy { return Strategy{mode: modeConcurrent, limit: limit} }

// Async queues the event on the bus's queue and returns once it is queued;
// the bus's workers then call the subscribers one after the other, every
// one of them, as [Sequential] does. A subscriber's failure cannot reach
// the caller: it is logged at [slog.LevelError] by the bus's logger, seen
// by the subscriber's interceptors, and counted in its metrics.
//
// The queue is bounded: when it is full, Publish waits for room until ctx
// ends (then returns ctx.Err() and the event is not queued), or fails at
// once with [ErrQueueFull] if the queue fails fast; see [EventQueue].
// Subscribers get a ctx with the caller's values (such as a trace) but
// not its cancellation or deadline. A subscriber that publishes
// asynchronously with that ctx runs on the queue's worker, which could
// not make room while it waits: such a publish never waits, and fails
// with ErrQueueFull when the queue is full. [EventBus.Close] waits until
// every queued event has been handled.
func Async() Strategy { return Strategy{mode: modeAsync} }

// CancelOnError returns a [Concurrent] strategy that, at the first
// failure, cancels the context of the subscribers still running and does
// not start those still waiting for their turn. A subscriber that then
// returns context.Canceled is not counted as failed: the error holds the
// failures that caused the cancellation. It returns other strategies
// unchanged.
func (s Strategy) CancelOnError() Strategy {
	if s.mode == modeConcurrent {
		s.cancelOnError = true
	}
	return s
}

// String names the strategy, such as "sequential" or "concurrent(4)".
func (s Strategy) String() string {
	switch s.mode {
	case modeSequential:
		return "sequential"
	case modeStopOnError:
		return "stop-on-error"
	case modeConcurrent:
		name := "concurrent(" + strconv.Itoa(s.limit) + ")"
		if s.cancelOnError {
			name += ", cancel on error"
		}
		return name
	case modeAsync:
		return "async"
	default:
		return "bus default"
	}
}

// EventQueue configures the queue of asynchronous publishes: see [Async].
// Its zero value is a queue of 1,024 events handled by one worker, which
// makes publishers wait when it is full.
type EventQueue struct {
	// Size bounds the events waiting to be handled. If Size is less than
	// 1, 1,024 is used. For each event type published asynchronously, the
	// bus keeps, for reuse, as many queued jobs (a few words and the
	// event) as were ever waiting at once, at most Size.
	Size int
	// Workers is the number of goroutines handling queued events. With
	// one, events are handled in the order they were queued. If Workers
	// is less than 1, 1 is used.
	Workers int
	// FailFast makes a publish that finds the queue full fail at once
	// with [ErrQueueFull], rather than wait for room.
	FailFast bool
}

// eventConfig is what the event bus's options set.
type eventConfig struct {
	strategy           Strategy
	queue              EventQueue
	requireSubscribers bool
	// subscriberInterceptors holds, by subscriber name, the interceptors
	// of WithSubscriberInterceptors. Each bus has a map of its own.
	subscriberInterceptors map[string][]Interceptor
}

// WithStrategy sets the strategy of an [EventBus]'s publishes; a call to
// [PublishWith] may choose another. The zero Strategy, and no option,
// mean [Sequential]. Buses of other kinds ignore it.
func WithStrategy(s Strategy) Option {
	return optionFunc(func(c *config) { c.events.strategy = s })
}

// WithEventQueue configures the queue of an [EventBus]'s asynchronous
// publishes. Buses of other kinds ignore it.
func WithEventQueue(q EventQueue) Option {
	return optionFunc(func(c *config) { c.events.queue = q })
}

// WithRequireSubscribers makes publishing an event that nobody subscribes
// to an error wrapping [ErrNoSubscribers]; by default it is not an error.
// Buses of other kinds ignore it.
func WithRequireSubscribers() Option {
	return optionFunc(func(c *config) { c.events.requireSubscribers = true })
}

// publishTyped runs evt through the subscribers with strategy s.
func (r *eventRoute[E]) publishTyped(ctx context.Context, s Strategy, evt E) error {
	if ctx == nil {
		return fmt.Errorf("%w: publishing %s", ErrNilContext, r.spec)
	}
	if r.nils != neverNil && isNil(r.nils, unsafe.Pointer(&evt)) {
		return fmt.Errorf("%w: %s", ErrNilMessage, r.spec)
	}
	// A ctx whose Done is nil never ends (the context package's
	// contract): one call rather than Err's and Done's.
	done := ctx.Done()
	if done != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if ids := r.bus.cfg.identity; ids || used.Load() {
		ctx = identify(ctx, ids) // one identity for every subscriber
	}
	if s.mode == modeAsync {
		if len(r.list.Load().subs) == 0 {
			return r.bus.noSubscribers(r.spec.MessageType, r.spec.Name)
		}
		return enqueue(ctx, r, evt)
	}
	l := r.acquire()
	if len(l.subs) == 0 {
		l.release()
		return r.bus.noSubscribers(r.spec.MessageType, r.spec.Name)
	}
	if s.mode != modeConcurrent && l.fns != nil && done == nil {
		// Plain functions and a ctx that never ends: the loop a caller
		// would write by hand.
		next, err := direct(ctx, l, evt)
		if err == nil {
			if next >= 0 { // else direct let go of l
				l.release()
			}
			return nil
		}
		return afterFailure(ctx, l, s, next, err, evt)
	}
	return held(ctx, r, l, s, evt)
}

// held publishes evt to the subscribers of l, which it releases. The
// defers are here, not in publishTyped, whose many returns would make the
// compiler run them through the runtime on every publish.
func held[E any](ctx context.Context, r *eventRoute[E], l *subscriberList[E], s Strategy, evt E) error {
	defer l.release()
	switch s.mode {
	case modeStopOnError:
		_, err, ended := inOrder(ctx, l, 0, evt)
		if ended {
			return ctx.Err()
		}
		return err
	case modeConcurrent:
		return concurrent(ctx, r, l.subs, s, evt)
	default:
		return sequential(ctx, l, 0, nil, evt)
	}
}

// afterFailure ends a direct publish whose subscriber failed with err:
// StopOnError stops there, Sequential calls the rest from next. It
// releases l.
func afterFailure[E any](ctx context.Context, l *subscriberList[E], s Strategy, next int, err error, evt E) error {
	defer l.release()
	if s.mode == modeStopOnError {
		return err
	}
	return sequential(ctx, l, next, []error{err}, evt)
}

// direct calls l's subscribers, every one a plain function, in order,
// for a ctx that never ends, until one fails; it returns the failure and
// the index of the next subscriber. It keeps l, which the caller
// releases, but if a subscriber ends its goroutine (runtime.Goexit), or
// panics with nil under GODEBUG=panicnil=1, which recover cannot tell
// apart: then it releases l itself and returns -1 and no error. Its
// deferred call recovers a panic, and calls recover only when a
// subscriber did not return, as a dispatch does; it holds as few words as
// it can, since it is built on every publish: not the event.
func direct[E any](ctx context.Context, l *subscriberList[E], evt E) (next int, err error) {
	returned := false
	defer func() {
		if returned {
			return
		}
		v := recover()
		if v == nil { // runtime.Goexit: nobody goes on with l
			l.release()
			next, err = -1, nil
			return
		}
		sub := l.subs[next]
		err, next = sub.failed(panicked(ctx, sub.log, sub.spec, v)), next+1
	}()
	fns := l.fns
	for ; next < len(fns); next++ {
		if e := fns[next](ctx, evt); e != nil {
			err, next = l.subs[next].failed(e), next+1
			break
		}
	}
	returned = true
	return next, err
}

// inOrder calls subs[from:] in order, and returns at the first failure,
// with the index of the next subscriber to call, or when ctx has ended.
// A subscriber called directly is recovered here, with one deferred call
// for the whole loop rather than one per subscriber.
//
// A subscriber that panics with nil under GODEBUG=panicnil=1, which
// recover cannot tell from no panic, fails as any panicking one does,
// rather than being called again and again.
func inOrder[E any](ctx context.Context, l *subscriberList[E], from int, evt E) (next int, err error, ended bool) {
	subs := l.subs
	next = from
	returned := false
	defer func() {
		if returned {
			return
		}
		v := recover() // nil: a panic(nil) under panicnil=1, or runtime.Goexit, which goes on anyway
		sub := subs[next]
		err, next = sub.failed(panicked(ctx, sub.log, sub.spec, v)), next+1
	}()
	done := ctx.Done()
	if fns := l.fns; fns != nil && done == nil {
		// Every subscriber is a plain function and ctx never ends: the
		// loop a caller would write by hand.
		for ; next < len(fns); next++ {
			if err = fns[next](ctx, evt); err != nil {
				returned = true
				return next + 1, subs[next].failed(err), false
			}
		}
		returned = true
		return next, nil, false
	}
	for ; next < len(subs); next++ {
		if done != nil && ctxEnded(done) {
			returned = true
			return next, nil, true
		}
		sub := subs[next]
		if sub.direct {
			err = sub.fn(ctx, evt)
		} else {
			err = sub.call(ctx, evt)
		}
		if err != nil {
			returned = true
			return next + 1, sub.failed(err), false
		}
	}
	returned = true
	return next, nil, false
}

// ctxEnded reports whether done, a context's Done channel, is closed.
func ctxEnded(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// sequential calls every subscriber in order from index from, and joins
// their failures to errs, those of the subscribers before it.
func sequential[E any](ctx context.Context, l *subscriberList[E], from int, errs []error, evt E) error {
	for i := from; i < len(l.subs); {
		var err error
		var ended bool
		i, err, ended = inOrder(ctx, l, i, evt)
		if ended {
			errs = append(errs, ctx.Err())
			break
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return joined(errs)
}

// concurrent calls the subscribers in goroutines, s.limit at a time.
func concurrent[E any](ctx context.Context, r *eventRoute[E], subs []*subscriber[E], s Strategy, evt E) error {
	limit := s.limit
	if limit < 1 || limit > len(subs) {
		limit = len(subs)
	}
	c := r.runs.get()
	c.subs, c.ctx, c.evt, c.cancelOnError = subs, ctx, evt, s.cancelOnError
	if s.cancelOnError {
		c.ctx, c.cancel = context.WithCancelCause(ctx)
	}
	if n := len(subs) + 1; cap(c.errs) < n { // the last for the caller's ctx
		c.errs = make([]error, n)
	} else {
		c.errs = c.errs[:n]
	}
	var slots chan struct{}
	if limit < len(subs) {
		if cap(c.slots) != limit {
			c.slots = make(chan struct{}, limit)
		}
		slots = c.slots
	}
	c.limited = slots != nil
	done := c.ctx.Done()
	for range subs {
		if slots != nil {
			select {
			case slots <- struct{}{}:
			case <-done:
			}
		}
		if done != nil && c.ctx.Err() != nil {
			// A failure cancelled the rest, or the caller gave up: those
			// not started do not start. Failures report themselves; the
			// caller's end is reported here.
			c.errs[len(subs)] = ctx.Err()
			break
		}
		c.wg.Add(1)
		go c.start() // a func value made once: no closure per goroutine
	}
	c.wg.Wait()
	if c.cancel != nil {
		c.cancel(nil)
	}
	for len(slots) > 0 {
		// The slot taken for a subscriber that was then not started,
		// since ctx had ended: the next run of c must find them all.
		<-slots
	}
	err := joined(c.errs)
	r.runs.put(c)
	return err
}

// concurrentRun is one concurrent publish, shared by the goroutines it
// starts, each of which calls the next subscriber. It is recycled by its
// route's runList once every goroutine has ended, so a concurrent publish
// allocates neither its state nor a closure per goroutine.
type concurrentRun[E any] struct {
	wg            sync.WaitGroup
	next          atomic.Int64 // the index of the next subscriber to call
	subs          []*subscriber[E]
	ctx           context.Context // the subscribers'
	cancel        context.CancelCauseFunc
	cancelOnError bool
	evt           E
	errs          []error       // by subscriber, then the caller's ctx's
	slots         chan struct{} // kept for the next run of the same limit
	limited       bool          // slots is in use: a goroutine frees its slot
	start         func()        // run, made once
}

// run calls the next subscriber, in a goroutine of its own.
func (c *concurrentRun[E]) run() {
	defer c.wg.Done() // last: then the run may be recycled
	if c.limited {
		defer func() { <-c.slots }()
	}
	i := int(c.next.Add(1) - 1)
	sub := c.subs[i]
	if err := sub.call(c.ctx, c.evt); err != nil {
		if c.cancelOnError && errors.Is(err, context.Canceled) && errors.Is(context.Cause(c.ctx), errSubscriberFailed) {
			return // stopped because another failed: not a failure of its own
		}
		c.errs[i] = sub.failed(err)
		if c.cancel != nil {
			c.cancel(errSubscriberFailed)
		}
	}
}

// runList keeps the concurrentRuns no publish uses: one in last, which a
// publisher alone always finds, even under the race detector, and the
// others in spare.
type runList[E any] struct {
	last  atomic.Pointer[concurrentRun[E]]
	spare sync.Pool
}

func (l *runList[E]) get() *concurrentRun[E] {
	if c := l.last.Swap(nil); c != nil {
		return c
	}
	if c, ok := l.spare.Get().(*concurrentRun[E]); ok {
		return c
	}
	c := &concurrentRun[E]{}
	c.start = c.run
	return c
}

// put clears c, which then keeps no event, context or error alive, and
// keeps it.
func (l *runList[E]) put(c *concurrentRun[E]) {
	var zero E
	clear(c.errs)
	c.subs, c.ctx, c.cancel, c.evt, c.errs = nil, nil, nil, zero, c.errs[:0]
	c.next.Store(0)
	if !l.last.CompareAndSwap(nil, c) {
		l.spare.Put(c)
	}
}

// errSubscriberFailed is the cause with which a concurrent publish that
// cancels on error cancels its subscribers.
var errSubscriberFailed = errors.New("cqrs: another subscriber failed")

// joined is errors.Join, but returns a single error unwrapped.
func joined(errs []error) error {
	var first error
	n := 0
	for _, err := range errs {
		if err != nil {
			if n == 0 {
				first = err
			}
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case 1:
		return first
	default:
		return errors.Join(errs...)
	}
}

// eventQueue is an EventBus's queue of asynchronous publishes and its
// workers, started by the first such publish.
type eventQueue struct {
	start   sync.Once
	mu      sync.RWMutex // senders read-lock; Close write-locks to close jobs
	jobs    chan queuedJob
	size    int // of jobs, set by run: the free lists of the routes' jobs are as long
	closed  bool
	workers sync.WaitGroup
	done    chan struct{} // closed when the workers have ended

	closingInit sync.Once
	closingOnce sync.Once
	closing     chan struct{} // closed first by Close, so that blocked senders leave

	// lastCtx is the context of the last asynchronous publish's
	// subscribers: see queuedContext.
	lastCtx atomic.Pointer[queuedCtx]

	// pending counts the events queued and not yet handled; Flush waits
	// for it to be 0. A worker that brings it to 0 while a Flush waits
	// closes idle.
	pending  atomic.Int64
	flushing atomic.Int32
	idleMu   sync.Mutex
	idle     chan struct{}
}

// finished counts a queued event as handled, or as never queued.
func (q *eventQueue) finished() {
	if q.pending.Add(-1) == 0 && q.flushing.Load() > 0 {
		q.idleMu.Lock()
		if q.idle != nil {
			close(q.idle)
			q.idle = nil
		}
		q.idleMu.Unlock()
	}
}

// closingCh returns q.closing, made on first use: the zero EventBus is
// usable.
func (q *eventQueue) closingCh() chan struct{} {
	q.closingInit.Do(func() { q.closing = make(chan struct{}) })
	return q.closing
}

// workerKey marks the context a queued event is handled with: a
// subscriber that publishes asynchronously from it runs on one of the
// queue's own workers, so it must not wait for room in the queue.
type workerKey struct{}

// queuedCtx is the context a queued event's subscribers get: the
// caller's values, without its cancellation or deadline
// (context.WithoutCancel), and marked as the queue's (workerKey). It
// never changes once made, so a subscriber may keep it after it returned
// (in a goroutine of its own, say): it goes on showing the values of the
// publish it was made for.
type queuedCtx struct {
	context.Context                 // context.WithoutCancel(parent)
	parent          context.Context // the publisher's, whose values it shows
	q               *eventQueue
}

func (c *queuedCtx) Value(key any) any {
	if key == (workerKey{}) {
		return c.q
	}
	return c.Context.Value(key)
}

// queuedContext returns the queuedCtx of parent: the one made for the
// last asynchronous publish on q if that came from the same context, else
// a new one, remembered for the next. A caller that publishes again and
// again from one context, as a loop or a long-lived worker does, so
// allocates nothing for it; one whose every publish has a context of its
// own pays two allocations, the context.WithoutCancel and the queuedCtx.
// The queue so keeps the last such context alive until the next
// asynchronous publish, or the bus, is gone.
func (q *eventQueue) queuedContext(parent context.Context) *queuedCtx {
	if c := q.lastCtx.Load(); c != nil && sameContext(c.parent, parent) {
		return c
	}
	c := &queuedCtx{Context: context.WithoutCancel(parent), parent: parent, q: q}
	q.lastCtx.Store(c)
	return c
}

// sameContext reports whether a and b hold the same dynamic type and the
// same data word: for a pointer, as every context of the context package
// is, the same object. A boxed value is never changed, so two interfaces
// that share both words hold equal contexts. It does not compare with ==,
// which panics on a context type that is not comparable; it may say false
// for two equal values boxed apart, which only costs a new queuedCtx.
func sameContext(a, b context.Context) bool {
	return *(*[2]unsafe.Pointer)(unsafe.Pointer(&a)) == *(*[2]unsafe.Pointer)(unsafe.Pointer(&b))
}

// queuedJob is an asynchronous publish waiting in an eventQueue.
type queuedJob interface{ run() }

// asyncJob is the queuedJob of an event of type E, recycled through its
// route's jobList once a worker took it: a steady flow of asynchronous
// publishes allocates no job.
type asyncJob[E any] struct {
	r   *eventRoute[E]
	ctx *queuedCtx
	evt E
}

// run hands the event to the subscribers, having given the job back
// first: the job is only the queue's envelope, and the subscribers see
// the event and the queuedCtx, never the job.
func (j *asyncJob[E]) run() {
	r, ctx, evt := j.r, j.ctx, j.evt
	r.jobs.put(j)
	r.handleQueued(ctx, evt)
}

// jobList keeps the asyncJobs no publish uses, for one event type: a
// free list as long as the queue can hold jobs, made by the first
// asynchronous publish of the type. A worker gives each job it took back,
// and a publish takes one, or makes one when none is free, so a steady
// flow of publishes allocates none; the list keeps as many as were ever
// queued at once, never more than the queue's size. Unlike a sync.Pool,
// it is not emptied by the garbage collector, nor, under the race
// detector, at random.
type jobList[E any] struct {
	once sync.Once
	free chan *asyncJob[E]
}

// get returns a free job, or a new one; size is the queue's.
func (l *jobList[E]) get(size int) *asyncJob[E] {
	l.once.Do(func() { l.free = make(chan *asyncJob[E], size) })
	select {
	case j := <-l.free:
		return j
	default:
		return new(asyncJob[E])
	}
}

// put clears j, which then keeps no event or context alive, and keeps it
// if the list has room. Only a job get returned is put back, so the list
// is made.
func (l *jobList[E]) put(j *asyncJob[E]) {
	*j = asyncJob[E]{}
	select {
	case l.free <- j:
	default:
	}
}

// enqueue queues the handling of evt by r's subscribers.
func enqueue[E any](ctx context.Context, r *eventRoute[E], evt E) error {
	b := r.bus
	q := &b.queue
	q.start.Do(func() { q.run(b.cfg.events.queue) })
	closing := q.closingCh()
	fromWorker := ctx.Value(workerKey{}) == q
	job := r.jobs.get(q.size)
	job.r, job.ctx, job.evt = r, q.queuedContext(ctx), evt
	queued := false
	defer func() {
		if !queued {
			r.jobs.put(job)
		}
	}()

	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return fmt.Errorf("%w: publishing %s", ErrClosed, r.spec)
	}
	q.pending.Add(1)
	defer func() {
		if !queued {
			q.finished()
		}
	}()
	if b.cfg.events.queue.FailFast || fromWorker {
		select {
		case q.jobs <- job:
			queued = true
			return nil
		default:
			if fromWorker {
				return fmt.Errorf("%w: publishing %s from a subscriber the queue's worker runs, which cannot wait for room",
					ErrQueueFull, r.spec)
			}
			return fmt.Errorf("%w: publishing %s", ErrQueueFull, r.spec)
		}
	}
	select {
	case q.jobs <- job:
		queued = true
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-closing:
		return fmt.Errorf("%w: publishing %s", ErrClosed, r.spec)
	}
}

// run starts the workers, unless the bus was closed first.
func (q *eventQueue) run(cfg EventQueue) {
	size, workers := cfg.Size, cfg.Workers
	if size < 1 {
		size = 1024
	}
	if workers < 1 {
		workers = 1
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.size = size
	if q.closed {
		return
	}
	q.jobs = make(chan queuedJob, size)
	q.done = make(chan struct{})
	for range workers {
		q.workers.Go(func() {
			for job := range q.jobs {
				job.run()
				q.finished()
			}
		})
	}
	go func() {
		q.workers.Wait()
		close(q.done)
	}()
}

// close stops the queue taking events and waits for its workers to have
// handled every queued one.
func (q *eventQueue) close() {
	q.start.Do(func() {}) // no worker starts after this
	// Senders blocked on a full queue hold the read lock: tell them to
	// leave first, or the write lock would wait for room.
	q.closingOnce.Do(func() { close(q.closingCh()) })
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		if q.jobs != nil {
			close(q.jobs)
		}
	}
	done := q.done
	q.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Close stops the bus taking asynchronous publishes, which then fail with
// [ErrClosed] (so do those waiting for room in a full queue), and waits
// until every event already queued has been handled by its subscribers:
// none is lost. Synchronous publishes are
// not affected. If ctx ends first, Close returns its error and the queue
// goes on draining in the background. Close may be called more than once;
// a bus that never published asynchronously has nothing to wait for.
func (b *EventBus) Close(ctx context.Context) error {
	if b == nil {
		return nil
	}
	if ctx == nil {
		return fmt.Errorf("%w: closing the event bus", ErrNilContext)
	}
	closed := make(chan struct{})
	go func() {
		b.queue.close()
		close(closed)
	}()
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cqrs: closing the event bus: %w", ctx.Err())
	}
}

// Flush waits until the bus's queue of asynchronous publishes is empty
// and no queued event is being handled: every event published with
// [Async] before the call, and every one its subscribers published
// asynchronously in turn, has been handled by every subscriber. Unlike
// [EventBus.Close], it leaves the bus taking publishes, so a test can
// publish, flush and check, again and again. Events published by other
// goroutines while Flush waits are waited for too, so under a steady flow
// of publishes Flush returns only when ctx ends, with ctx's error. A bus
// that never published asynchronously returns nil at once. Flush is safe
// for concurrent use; inside a testing/synctest bubble, it blocks durably
// while it waits.
func (b *EventBus) Flush(ctx context.Context) error {
	if b == nil {
		return nil
	}
	if ctx == nil {
		return fmt.Errorf("%w: flushing the event bus", ErrNilContext)
	}
	q := &b.queue
	q.flushing.Add(1)
	defer q.flushing.Add(-1)
	for {
		q.idleMu.Lock()
		if q.idle == nil {
			q.idle = make(chan struct{})
		}
		idle := q.idle
		q.idleMu.Unlock()
		if q.pending.Load() == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("cqrs: flushing the event bus: %w", ctx.Err())
		}
	}
}

// queueClosed reports whether Close was called.
func (b *EventBus) queueClosed() bool {
	b.queue.mu.RLock()
	defer b.queue.mu.RUnlock()
	return b.queue.closed
}

// handleQueued runs a queued event through every subscriber; failures,
// which have no caller to go to, are logged.
func (r *eventRoute[E]) handleQueued(ctx context.Context, evt E) {
	l := r.acquire()
	defer l.release()
	for _, sub := range l.subs {
		if err := sub.call(ctx, evt); err != nil {
			logAttrs(ctx, sub.log, slog.LevelError, "cqrs: subscriber failed",
				slog.String("kind", sub.spec.Kind.String()),
				slog.String("message", sub.spec.Name),
				slog.String("subscriber", sub.spec.Subscriber),
				slog.Any("error", err))
		}
	}
}
