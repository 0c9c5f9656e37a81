package cqrs

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/typedcqrs/dispatch/internal/registry"
	"github.com/typedcqrs/dispatch/internal/stats"
)

// StreamQuery marks a query whose handler streams items of type R, one at
// a time, rather than returning one result: embed it as the query's first
// field, as [Query] is embedded.
//
//	type ListOrders struct {
//		cqrs.StreamQuery[Order]
//		Customer string
//	}
//
// Its handler is registered with [HandleStream] and its items are read
// with [Stream]; [Ask], [Handle] and [Register] refuse it.
//
// StreamQuery has no state: its zero value is the only value.
type StreamQuery[R any] struct{}

// The methods are those of every marker: see [Command]'s. servedBy takes a
// streamOnQueryBus, not a *QueryBus, so that [Ask] refuses a streaming
// query and [Stream] a query with one result, and the compiler's message
// says which is which; and a type that embeds both a Query and a
// StreamQuery has every method twice, so neither constraint holds.
func (StreamQuery[R]) mustEmbedCommandQueryOrEvent() {}
func (StreamQuery[R]) mustEmbedStreamQuery()         {}
func (StreamQuery[R]) servedBy(streamOnQueryBus) R   { return *new(R) }

// streamOnQueryBus stands, in a streaming query's servedBy, for the query
// bus read through [Stream]: named for the compiler's messages, which
// quote it ("have servedBy(cqrs.streamOnQueryBus) Order").
type streamOnQueryBus struct{}

func (StreamQuery[R]) declaration() declaration {
	return declaration{kind: KindQuery, result: reflect.TypeFor[R](), stream: true}
}

// StreamMessage is satisfied by every query type that embeds
// [StreamQuery][R], and by pointers to such types. It is the constraint of
// [Stream] and [HandleStream]; only StreamQuery implements it. When a
// type does not satisfy it, the compiler's message names one of its
// methods, as for [Message]: a type missing mustEmbedStreamQuery embeds
// no marker; a query whose servedBy takes a *cqrs.QueryBus returns one
// result, and is read with [Ask].
type StreamMessage[R any] interface {
	mustEmbedStreamQuery()
	servedBy(streamOnQueryBus) R
}

// StreamHandler produces the items of a streaming query of type Q, pushing
// each to yield, and returns nil at the end of the stream or the error that
// ended it.
//
// yield returns false when the reader has stopped (it broke out of its
// loop, or its context ended): the handler should then return at once; a
// later call to yield does nothing and returns false. yield must be called
// from the goroutine that called Stream, and not after Stream returns. The
// handler should also honour ctx, which is cancelled when the reader stops.
//
// This push shape is chosen over a handler that returns an iter.Seq2
// because it is harder to misuse: the handler returns its error once,
// where the bus can see it, rather than as an item; it cannot be ranged
// twice or leak a goroutine behind a sequence nobody finishes; and a
// handler that ignores yield's false gets false again, where an iterator
// that does makes the range statement panic.
//
// A StreamHandler registered with [RegisterStream] is called by every
// stream of its query, possibly from many goroutines at once, so it must
// be safe for concurrent use.
type StreamHandler[Q, R any] interface {
	Stream(ctx context.Context, q Q, yield func(R) bool) error
}

// StreamFunc adapts a function to the [StreamHandler] interface.
type StreamFunc[Q, R any] func(ctx context.Context, q Q, yield func(R) bool) error

// Stream calls f(ctx, q, yield).
func (f StreamFunc[Q, R]) Stream(ctx context.Context, q Q, yield func(R) bool) error {
	return f(ctx, q, yield)
}

// StreamSummary is what an [Interceptor] sees as the result of a streaming
// query: the stream is one [Call], from the first item to the last, and
// [Call.Result] returns a StreamSummary once the inner [Invoker] returned.
type StreamSummary struct {
	// Items counts the items the handler yielded to the reader.
	Items int
}

// StreamOption configures one streaming query's handler, given to
// [HandleStream] or [RegisterStream].
type StreamOption interface {
	applyStream(*streamConfig)
}

type streamConfig struct {
	firstItem time.Duration
}

type streamOptionFunc func(*streamConfig)

func (f streamOptionFunc) applyStream(c *streamConfig) { f(c) }

// WithFirstItemTimeout bounds the wait for a stream's first item: if the
// handler yields nothing within d, its context is cancelled, an item it
// yields later is refused (its yield returns false), and the stream ends
// with an error wrapping [ErrExecutionTimeout] and
// [context.DeadlineExceeded]. (The handler's own ctx.Err() is
// context.Canceled.) Once the first item arrived, the handler
// takes as long as it needs; bound the whole stream with a timeout
// interceptor (middleware.Timeout). If d is less than or equal to 0, there
// is no bound.
func WithFirstItemTimeout(d time.Duration) StreamOption {
	return streamOptionFunc(func(c *streamConfig) { c.firstItem = d })
}

// HandleStream registers fn as the handler of the declared streaming query
// Q on b; Q and R are inferred from fn, a plain function or a method value:
//
//	err := cqrs.HandleStream(queries, store.ListOrders) // func(context.Context, ListOrders, func(Order) bool) error
//
// The compiler refuses a handler whose items are not the type Q declares.
// It fails as [RegisterStream] does.
func HandleStream[Q StreamMessage[R], R any](b *QueryBus, fn func(ctx context.Context, q Q, yield func(R) bool) error, opts ...StreamOption) error {
	return RegisterStream(b, StreamFunc[Q, R](fn), opts...)
}

// RegisterStream registers h as the handler of the streaming query type Q
// on b, inside the bus's interceptors, under the rules of [Register]: one
// handler per type and name, keyed by Q's type, safe while other
// goroutines dispatch. A nil b is [ErrNilBus], a nil h [ErrNilHandler], a
// second handler for Q [ErrHandlerExists], an interface Q or one declared
// as a query with a single result [ErrInvalidMessageType], and a Q that
// declares items of another type [ErrResultType].
//
// A streaming query is read with [Stream] (or [StreamOf]); [Dispatch] and
// the untyped methods refuse it with [ErrInvalidMessageType].
func RegisterStream[Q, R any](b *QueryBus, h StreamHandler[Q, R], opts ...StreamOption) error {
	c := b.core()
	if c == nil {
		return fmt.Errorf("%w: registering a stream handler", ErrNilBus)
	}
	t := reflect.TypeFor[Q]()
	if t.Kind() == reflect.Interface {
		return fmt.Errorf("%w: query %s is an interface type; register a concrete type", ErrInvalidMessageType, t)
	}
	in := specOn(b, t, reflect.TypeFor[R]())
	in.Stream = true
	if isNilValue(h) {
		return fmt.Errorf("%w: registering %s", ErrNilHandler, in)
	}
	if err := checkDeclaredStream(t, in.ResultType, true); err != nil {
		return err
	}
	if err := c.routes.Check(t, in.Name); err != nil {
		return c.registrationError(err, in, t)
	}
	var cfg streamConfig
	for _, o := range opts {
		if o != nil {
			o.applyStream(&cfg)
		}
	}
	r := &streamRoute[Q, R]{spec: in, handler: h, nils: nilKindOf(t), log: c.logger(), firstItem: cfg.firstItem, ids: c.cfg.identity}
	if c.cfg.metrics {
		r.stats = stats.New()
	}
	if len(c.cfg.interceptors) > 0 {
		chain, err := decorate(in, Handler[Q, StreamSummary](streamInner[Q, R]{r}), nil, c.cfg.interceptors, nil)
		if err != nil {
			return err
		}
		r.chain = chain
	}
	refuse := func(context.Context, any) (any, error) {
		return nil, fmt.Errorf("%w: %s streams its results: range over cqrs.Stream", ErrInvalidMessageType, in)
	}
	e := &entry{spec: in, stats: r.stats, items: &r.items, typed: r, untyped: refuse}
	// ExecuteStream's path: q's dynamic type is Q, since the entry was
	// found by it.
	e.stream = func(ctx context.Context, q any, yield func(any, error) bool) {
		typed, _ := q.(Q)
		r.run(ctx, typed, func(item R, err error) bool {
			if err != nil {
				return yield(nil, err)
			}
			return yield(item, nil)
		})
	}
	if err := c.routes.Add(t, in.Name, e); err != nil {
		return c.registrationError(err, in, t)
	}
	return nil
}

// checkDeclaredStream refuses a streaming handler for a type declared as a
// query with one result, and a plain handler for a type declared as a
// streaming query (stream says which is being registered); and a stream
// of items other than those declared.
func checkDeclaredStream(t reflect.Type, item reflect.Type, stream bool) error {
	d, ok := declaredBy(t)
	switch {
	case !ok || !stream:
		return nil
	case d.pointer:
		return errPointerMarker(t)
	case d.ambiguous != nil:
		return errAmbiguousMarkers(t, d)
	case !d.stream:
		return fmt.Errorf("%w: %s is declared a %s with one result; register it with Handle or Register",
			ErrInvalidMessageType, t, d.kind)
	case d.result != item:
		return fmt.Errorf("%w: %s declares items of type %s; its handler yields %s", ErrResultType, t, d.result, item)
	}
	return nil
}

// Stream runs the declared streaming query q on b and returns its items as
// a sequence, with no type arguments: R is inferred from q's
// [StreamQuery] marker.
//
//	for order, err := range cqrs.Stream(ctx, queries, ListOrders{Customer: "c-1"}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(order.ID)
//	}
//
// The handler runs when the sequence is ranged over, on the ranging
// goroutine, and again each time it is ranged over: a sequence is the
// query, not a cursor over one result. Each item comes with a nil error.
// The stream ends:
//
//   - when the handler returns nil, with no further item;
//   - with the handler's error as a last item (zero R, the error), a
//     [*PanicError] if it panicked;
//   - when the loop breaks: the handler's ctx is cancelled and its yield
//     returns false, so it stops, and no error is reported;
//   - when ctx ends: the last item is ctx.Err();
//   - before the handler runs, with one error item: [ErrNilBus],
//     [ErrNilContext], [ErrNilMessage], [ErrHandlerNotFound], or ctx.Err().
//
// No goroutine is started (but the timer of [WithFirstItemTimeout]'s). A
// stream allocates twice (its state, which is also the handler's ctx, and
// the handler's yield), and twice more if the handler, or a context
// derived from its ctx, asks for ctx.Done() (a cancellable context);
// reading an item allocates nothing.
//
// The type parameter ItemOfEmbeddedStreamQuery is named for the
// compiler's message when q embeds no marker, such as a string literal:
// "cannot infer ItemOfEmbeddedStreamQuery".
func Stream[Q StreamMessage[ItemOfEmbeddedStreamQuery], ItemOfEmbeddedStreamQuery any](ctx context.Context, b *QueryBus, q Q) iter.Seq2[ItemOfEmbeddedStreamQuery, error] {
	return StreamOf[ItemOfEmbeddedStreamQuery](ctx, b, q)
}

// StreamOf is [Stream] for a streaming query whose type does not declare
// its items, registered with [RegisterStream]: write the item type.
//
//	for line, err := range cqrs.StreamOf[string](ctx, queries, Tail{File: "app.log"}) { … }
//
// An item type other than the handler's is [ErrResultType], as the one
// error item.
func StreamOf[R, Q any](ctx context.Context, b *QueryBus, q Q) iter.Seq2[R, error] {
	return func(yield func(R, error) bool) {
		r, err := streamRouteOf[R](b, q)
		if err != nil {
			var zero R
			yield(zero, err)
			return
		}
		r.run(ctx, q, yield)
	}
}

// ExecuteStream runs the streaming query q, whose dynamic type selects
// the handler, and returns its items boxed in interfaces. It is for
// callers that only have an any, such as routers and transports, as
// [QueryBus.Execute] is for queries with one result; callers that know
// the item type should prefer [Stream] or [StreamOf]. It ends as Stream
// does, with the same errors as its one error item; a query whose handler
// returns one result, rather than a stream, is [ErrInvalidMessageType].
// Each item is boxed: an item that is not a pointer costs an allocation.
func (b *QueryBus) ExecuteStream(ctx context.Context, q any) iter.Seq2[any, error] {
	return func(yield func(any, error) bool) {
		t := reflect.TypeOf(q)
		e := find(b, t)
		switch {
		case e == nil:
			yield(nil, missing(b, t, q))
		case e.stream == nil:
			yield(nil, fmt.Errorf("%w: %s returns one result, not a stream: use Execute", ErrInvalidMessageType, e.spec))
		default:
			e.stream(ctx, q, yield)
		}
	}
}

// streamRouteOf finds the stream route of q's type on b.
func streamRouteOf[R, Q any](b *QueryBus, q Q) (*streamRoute[Q, R], error) {
	t := reflect.TypeFor[Q]()
	c := b.core()
	if c == nil {
		return nil, fmt.Errorf("%w: streaming a query", ErrNilBus)
	}
	e, ok := c.routes.Lookup(registry.KeyOf(t))
	if !ok {
		if isNilValue(any(q)) {
			return nil, fmt.Errorf("%w: query %s", ErrNilMessage, t)
		}
		return nil, fmt.Errorf("%w: no handler for %s on the query bus%s", ErrHandlerNotFound, t, pointerHint(b, t))
	}
	r, ok := e.typed.(*streamRoute[Q, R])
	if !ok {
		if !e.spec.Stream {
			return nil, fmt.Errorf("%w: %s returns one result, not a stream: use Ask or Dispatch", ErrInvalidMessageType, e.spec)
		}
		return nil, fmt.Errorf("%w: %s streams %s, not %s", ErrResultType, e.spec, e.spec.ResultType, reflect.TypeFor[R]())
	}
	return r, nil
}

// streamRoute is the path of one streaming query type.
type streamRoute[Q, R any] struct {
	spec      *Spec
	handler   StreamHandler[Q, R]
	chain     Handler[Q, StreamSummary] // the interceptors around the handler, or nil
	nils      nilKind
	log       *slog.Logger
	stats     *stats.Stats // nil when metrics are off
	items     atomic.Uint64
	firstItem time.Duration
	ids       bool // the bus gives every message an identity: WithIdentity
}

// streamKey carries a stream's state through the interceptors' contexts
// to the handler.
type streamKey struct{}

// streamState is one run of a stream, and its handler's context: the
// caller's (its values, deadline and end), cancelled besides when the
// reader stops or the first item is late. Being the context saves a
// stream the two allocations of context.WithCancelCause, unless the
// handler (or an interceptor, or a context derived from it) asks for
// Done: then it makes that cancellable context, inner, and is it from
// then on, so that contexts derived from it, even through others such as
// a context.WithValue, are its children as they were before.
type streamState[R any] struct {
	yield  func(R, error) bool
	parent context.Context // the caller's
	items  int
	check  int          // the item count at which push looks again at ctx and the stream's end
	broke  bool         // the reader broke out of its loop
	ended  bool         // the caller's ctx ended during the stream
	halted bool         // broke, ended or finished: yield does nothing
	inBody bool         // the reader's loop body runs: a panic is the reader's
	panicV any          // the value the reader's loop body panicked with
	push   func(R) bool // the handler's yield: see pusher
	ran    bool         // the handler ran once: an interceptor that retries gets its error
	err    error
	first  *time.Timer // the first item's timer, stopped when it comes

	// The context's own state, guarded by mu: the first item's timer
	// cancels from another goroutine.
	mu     sync.Mutex
	ctxErr error // context.Canceled once cancelled by the stream
	cause  error
	inner  atomic.Pointer[innerCtx] // made by Done
}

// innerCtx is the cancellable context a stream's context becomes once
// asked for its Done channel.
type innerCtx struct {
	ctx    context.Context // context.WithCancelCause(parent)
	cancel context.CancelCauseFunc
}

// errFirstItem is the cause with which a stream's context is cancelled
// when its first item did not come in time.
var errFirstItem = errors.New("cqrs: the first item did not come in time")

// checkEvery is how many items pass between two looks at the context of a
// stream whose handler does not watch it.
const checkEvery = 64

// Deadline is the caller's.
func (s *streamState[R]) Deadline() (time.Time, bool) { return s.parent.Deadline() }

// Done returns a channel closed when the stream's context is cancelled:
// when the reader stops, the first item is late, the stream ends, or the
// caller's context ends. It makes inner, once.
func (s *streamState[R]) Done() <-chan struct{} {
	return s.innerCtx().ctx.Done()
}

func (s *streamState[R]) innerCtx() *innerCtx {
	if in := s.inner.Load(); in != nil {
		return in
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.inner.Load(); in != nil {
		return in
	}
	ctx, cancel := context.WithCancelCause(s.parent)
	if s.ctxErr != nil {
		cancel(s.cause)
	}
	in := &innerCtx{ctx: ctx, cancel: cancel}
	s.inner.Store(in)
	return in
}

// Err returns nil until the context is cancelled; it sees the caller's
// context end at once, whether or not Done was asked for.
func (s *streamState[R]) Err() error {
	s.mu.Lock()
	err := s.ctxErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if in := s.inner.Load(); in != nil {
		return in.ctx.Err()
	}
	if s.parent.Done() != nil {
		return s.parent.Err()
	}
	return nil
}

// Value is the caller's, or inner's once made, which has the caller's
// and answers for its own cancellation ([context.Cause] and derived
// contexts ask it); the stream's state is found by streamKey.
func (s *streamState[R]) Value(key any) any {
	if key == (streamKey{}) {
		return s
	}
	if in := s.inner.Load(); in != nil {
		return in.ctx.Value(key)
	}
	return s.parent.Value(key)
}

func (s *streamState[R]) String() string { return "cqrs.Stream" }

// cancel cancels the stream's context, with cause, unless it was
// cancelled before.
func (s *streamState[R]) cancel(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctxErr != nil {
		return
	}
	s.ctxErr, s.cause = context.Canceled, cause
	if in := s.inner.Load(); in != nil {
		in.cancel(cause)
	}
}

// firstLate reports whether the context was cancelled because the first
// item did not come in time.
func (s *streamState[R]) firstLate() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cause == errFirstItem
}

// pusher returns the handler's yield, a closure over s: a method value
// would add a wrapper's call to every item. An item costs one comparison
// besides the reader's call: push looks at ctx and the end of the stream
// only when items reaches check.
func (s *streamState[R]) pusher() func(R) bool {
	return func(item R) bool {
		if s.items >= s.check && !s.lookAgain() {
			return false
		}
		s.items++
		s.inBody = true // a panic from here on is the reader's, not the handler's
		more := s.yield(item, nil)
		s.inBody = false
		if !more {
			s.broke, s.halted, s.check = true, true, 0
			s.cancel(context.Canceled)
			return false
		}
		return true
	}
}

// lookAgain is push's look, at the checkpoints, at whether the stream may
// go on: not once it halted, nor once ctx ended (looked at every
// checkEvery items), nor if the first item came after its deadline.
func (s *streamState[R]) lookAgain() bool {
	if s.halted {
		return false
	}
	if s.items == 0 && s.first != nil && !s.first.Stop() {
		// The first item came after its deadline: the stream is over.
		s.ended, s.halted, s.check = true, true, 0
		return false
	}
	if s.items%checkEvery == checkEvery-1 && s.Err() != nil {
		s.ended, s.halted, s.check = true, true, 0
		return false
	}
	// The next checkpoint: the next count that is checkEvery-1 modulo
	// checkEvery.
	s.check = s.items/checkEvery*checkEvery + checkEvery - 1
	if s.check <= s.items {
		s.check += checkEvery
	}
	return true
}

// halt stops every later yield, once the handler returned.
func (s *streamState[R]) halt() { s.halted, s.check = true, 0 }

// run runs the stream of q into yield.
func (r *streamRoute[Q, R]) run(ctx context.Context, q Q, yield func(R, error) bool) {
	var zero R
	switch {
	case ctx == nil:
		yield(zero, fmt.Errorf("%w: streaming %s", ErrNilContext, r.spec))
		return
	case r.nils != neverNil && isNil(r.nils, unsafe.Pointer(&q)):
		yield(zero, fmt.Errorf("%w: %s", ErrNilMessage, r.spec))
		return
	case ctx.Err() != nil:
		yield(zero, ctx.Err())
		return
	}
	var start time.Duration
	if r.stats != nil {
		start = stats.Now()
	}
	if r.ids || used.Load() {
		ctx = identify(ctx, r.ids)
	}
	caller := ctx
	s := &streamState[R]{yield: yield, parent: ctx, check: checkEvery - 1}
	defer s.cancel(context.Canceled)
	s.push = s.pusher()
	if r.firstItem > 0 {
		s.check = 0
		s.first = time.AfterFunc(r.firstItem, func() { s.cancel(errFirstItem) })
		defer s.first.Stop()
	}

	var err error
	if r.chain != nil {
		err = r.intercepted(s, s, q) // s is its own streamKey
	} else {
		err = r.produce(s, s, q)
	}
	s.halt() // the handler returned
	if s.inBody {
		// The reader's loop body panicked and an interceptor recovered
		// it: the reader must not be called again, and its panic goes on.
		panic(s.panicV)
	}

	switch {
	case s.broke:
		err = nil // the reader left: nobody to tell
	case s.firstLate():
		err = fmt.Errorf("%w: %s yielded nothing within %v: %w", ErrExecutionTimeout, r.spec, r.firstItem, context.DeadlineExceeded)
	case err == nil && (s.ended || caller.Err() != nil):
		err = caller.Err() // cut short, whatever the handler said
	}
	if r.stats != nil {
		r.stats.Record(stats.Now()-start, err != nil)
		r.items.Add(uint64(s.items))
	}
	if err != nil && !s.broke {
		yield(zero, err)
	}
}

// intercepted runs the stream inside the bus's interceptors, recovering a
// panic of theirs.
func (r *streamRoute[Q, R]) intercepted(ctx context.Context, s *streamState[R], q Q) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = r.recovered(ctx, s, v)
		}
	}()
	_, err = r.chain.Handle(ctx, q)
	return err
}

// produce runs the handler, recovering its panic.
func (r *streamRoute[Q, R]) produce(ctx context.Context, s *streamState[R], q Q) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = r.recovered(ctx, s, v)
		}
	}()
	return r.handler.Stream(ctx, q, s.push)
}

// recovered turns the handler's panic v into a *PanicError. A panic of
// the reader's own loop body, which unwinds through the handler's yield,
// is not the handler's: it goes on up to the reader, unchanged.
func (r *streamRoute[Q, R]) recovered(ctx context.Context, s *streamState[R], v any) error {
	if s.inBody {
		s.panicV = v
		panic(v)
	}
	return panicked(ctx, r.log, r.spec, v)
}

// streamInner is the innermost handler of a stream's interceptor chain:
// it finds the stream's state in ctx and runs the handler. An interceptor
// that calls it again, as a retry does, runs the handler again only if no
// item was yielded; after that it gets the first run's error, since a
// stream cannot be taken back.
type streamInner[Q, R any] struct{ r *streamRoute[Q, R] }

func (h streamInner[Q, R]) Handle(ctx context.Context, q Q) (StreamSummary, error) {
	s, ok := ctx.Value(streamKey{}).(*streamState[R])
	if !ok {
		return StreamSummary{}, fmt.Errorf("cqrs: %s: an interceptor replaced the stream's context with one not derived from it", h.r.spec)
	}
	if !s.ran || (s.items == 0 && !s.broke) {
		s.ran = true
		// The handler's panic is recovered here, innermost, so that the
		// interceptors see it as the stream's error.
		s.err = h.r.produce(ctx, s, q)
	}
	return StreamSummary{Items: s.items}, s.err
}
