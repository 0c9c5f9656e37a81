package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// listNumbers streams the numbers from 0 to N-1; Fail, Panic and Wait
// shape how the stream goes.
type listNumbers struct {
	cqrs.StreamQuery[int]
	N     int
	Fail  int // fail after this many items, if positive
	Panic bool
}

var errDisk = errors.New("disk read failed")

// numbers is a streaming handler that records what it did.
type numbers struct {
	runs      int
	produced  int  // items yielded
	refused   int  // yields that returned false
	cancelled bool // saw its ctx cancelled when it returned
	ignore    bool // keeps yielding after false and ignores ctx
}

func (n *numbers) List(ctx context.Context, q listNumbers, yield func(int) bool) error {
	n.runs++
	defer func() { n.cancelled = ctx.Err() != nil }()
	for i := range q.N {
		if q.Fail > 0 && i == q.Fail {
			return errDisk
		}
		if q.Panic && i == 3 {
			panic("corrupt page")
		}
		n.produced++
		if !yield(i) {
			n.refused++
			if !n.ignore {
				return nil
			}
		}
		if !n.ignore && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func newNumbers(t *testing.T, opts ...cqrs.Option) (*cqrs.QueryBus, *numbers) {
	t.Helper()
	queries := cqrs.NewQueryBus(opts...)
	n := &numbers{}
	require.NoError(t, cqrs.HandleStream(queries, n.List))
	return queries, n
}

// collect ranges over a stream, returning its items and its errors.
func collect[R any](seq func(func(R, error) bool)) (items []R, errs []error) {
	for item, err := range seq {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		items = append(items, item)
	}
	return items, errs
}

func TestStreamYieldsEveryItemInOrder(t *testing.T) {
	t.Parallel()
	queries, n := newNumbers(t)
	items, errs := collect(cqrs.Stream(context.Background(), queries, listNumbers{N: 1000}))
	assert.Empty(t, errs)
	require.Len(t, items, 1000)
	for i, v := range items {
		require.Equal(t, i, v)
	}
	assert.Equal(t, 1, n.runs)
}

func TestBreakingStopsTheProducer(t *testing.T) {
	t.Parallel()
	queries, n := newNumbers(t)
	var got []int
	for v, err := range cqrs.Stream(context.Background(), queries, listNumbers{N: 1_000_000}) {
		require.NoError(t, err)
		got = append(got, v)
		if len(got) == 10 {
			break
		}
	}
	assert.Len(t, got, 10)
	assert.Equal(t, 10, n.produced, "nothing produced after the break")
	assert.Equal(t, 1, n.refused)
	assert.True(t, n.cancelled, "the producer's context is cancelled when the reader breaks")
}

func TestProducerThatIgnoresFalseIsHarmless(t *testing.T) {
	t.Parallel()
	queries, n := newNumbers(t)
	n.ignore = true
	count := 0
	for range cqrs.Stream(context.Background(), queries, listNumbers{N: 100}) {
		count++
		if count == 5 {
			break // a range-over-func body that returned false must not run again
		}
	}
	assert.Equal(t, 5, count)
	assert.Equal(t, 100, n.produced)
	assert.Equal(t, 96, n.refused, "every yield after the break returned false")
}

func TestStreamEndsWithTheHandlersError(t *testing.T) {
	t.Parallel()
	queries, _ := newNumbers(t)
	items, errs := collect(cqrs.Stream(context.Background(), queries, listNumbers{N: 10, Fail: 4}))
	assert.Equal(t, []int{0, 1, 2, 3}, items)
	require.Len(t, errs, 1)
	require.ErrorIs(t, errs[0], errDisk)

	items, errs = collect(cqrs.Stream(context.Background(), queries, listNumbers{N: 10, Panic: true}))
	assert.Equal(t, []int{0, 1, 2}, items)
	require.Len(t, errs, 1)
	var pe *cqrs.PanicError
	require.ErrorAs(t, errs[0], &pe)
	assert.Equal(t, "corrupt page", pe.Value)
}

func TestCallerContextEndsTheStream(t *testing.T) {
	t.Parallel()
	for _, ignore := range []bool{false, true} {
		queries, n := newNumbers(t)
		n.ignore = ignore
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var items int
		var errs []error
		for _, err := range cqrs.Stream(ctx, queries, listNumbers{N: 100_000}) {
			if err != nil {
				errs = append(errs, err)
				continue
			}
			items++
			if items == 20 {
				cancel()
			}
		}
		require.Len(t, errs, 1, "ignore=%v", ignore)
		require.ErrorIs(t, errs[0], context.Canceled)
		if ignore {
			// A producer deaf to its context is stopped within 64 items.
			assert.LessOrEqual(t, items, 20+64)
		} else {
			assert.Equal(t, 20, items)
		}
	}
}

func TestRangingTwiceRunsTheQueryTwice(t *testing.T) {
	t.Parallel()
	queries, n := newNumbers(t)
	seq := cqrs.Stream(context.Background(), queries, listNumbers{N: 3})
	first, _ := collect(seq)
	second, _ := collect(seq)
	assert.Equal(t, []int{0, 1, 2}, first)
	assert.Equal(t, first, second)
	assert.Equal(t, 2, n.runs)
}

type plainList struct{ N int } // an undeclared streaming query

func TestStreamBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	one := func(seq func(func(int, error) bool)) error {
		items, errs := collect(seq)
		require.Empty(t, items)
		require.Len(t, errs, 1)
		return errs[0]
	}
	var nilBus *cqrs.QueryBus
	require.ErrorIs(t, one(cqrs.Stream(ctx, nilBus, listNumbers{N: 1})), cqrs.ErrNilBus)
	require.ErrorIs(t, cqrs.HandleStream(nilBus, (&numbers{}).List), cqrs.ErrNilBus)
	require.ErrorIs(t, one(cqrs.Stream(ctx, cqrs.NewQueryBus(), listNumbers{N: 1})), cqrs.ErrHandlerNotFound)

	queries, n := newNumbers(t)
	//lint:ignore SA1012 a nil context is what is tested
	require.ErrorIs(t, one(cqrs.Stream(nil, queries, listNumbers{N: 1})), cqrs.ErrNilContext)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, one(cqrs.Stream(cancelled, queries, listNumbers{N: 1})), context.Canceled)
	assert.Zero(t, n.runs, "no run for a caller who has given up")

	require.ErrorIs(t, cqrs.HandleStream(queries, (&numbers{}).List), cqrs.ErrHandlerExists)
	var fn func(context.Context, listNumbers, func(int) bool) error
	require.ErrorIs(t, cqrs.HandleStream(cqrs.NewQueryBus(), fn), cqrs.ErrNilHandler)

	// A stream is no single result, and the reverse.
	_, err := cqrs.Dispatch[int](ctx, queries, listNumbers{N: 1})
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	_, err = queries.Execute(ctx, listNumbers{N: 1})
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	err = cqrs.Register(cqrs.NewQueryBus(), cqrs.HandlerFunc[listNumbers, int](func(context.Context, listNumbers) (int, error) { return 0, nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	err = cqrs.RegisterStream(cqrs.NewQueryBus(), cqrs.StreamFunc[getAccount, account](
		func(context.Context, getAccount, func(account) bool) error { return nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	err = cqrs.RegisterStream(cqrs.NewQueryBus(), cqrs.StreamFunc[listNumbers, string](
		func(context.Context, listNumbers, func(string) bool) error { return nil }))
	require.ErrorIs(t, err, cqrs.ErrResultType)
	_, accountQueries := newAccountBuses(t)
	require.ErrorIs(t, one(cqrs.StreamOf[int](ctx, accountQueries, getAccount{ID: 1})), cqrs.ErrInvalidMessageType)

	// Undeclared types, with the item type written.
	plain := cqrs.NewQueryBus()
	require.NoError(t, cqrs.RegisterStream(plain, cqrs.StreamFunc[*plainList, int](
		func(_ context.Context, q *plainList, yield func(int) bool) error {
			for i := range q.N {
				if !yield(i) {
					return nil
				}
			}
			return nil
		})))
	items, errs := collect(cqrs.StreamOf[int](ctx, plain, &plainList{N: 2}))
	assert.Equal(t, []int{0, 1}, items)
	assert.Empty(t, errs)
	require.ErrorIs(t, one(cqrs.StreamOf[int](ctx, plain, (*plainList)(nil))), cqrs.ErrNilMessage)
	_, strErrs := collect(cqrs.StreamOf[string](ctx, plain, &plainList{N: 2}))
	require.Len(t, strErrs, 1)
	require.ErrorIs(t, strErrs[0], cqrs.ErrResultType)
	require.NoError(t, cqrs.Require(plain, &plainList{}))
}

func TestInterceptorsSeeAStreamAsOneCall(t *testing.T) {
	t.Parallel()
	type seen struct {
		spec  cqrs.Spec
		items int
		err   error
	}
	var calls []seen
	watch := cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			err := next(ctx, c)
			sum, _ := c.Result().(cqrs.StreamSummary)
			calls = append(calls, seen{spec: c.Spec(), items: sum.Items, err: err})
			return err
		}
	})
	queries, _ := newNumbers(t, cqrs.WithInterceptors(watch), cqrs.WithMetrics())
	ctx := context.Background()
	items, _ := collect(cqrs.Stream(ctx, queries, listNumbers{N: 5}))
	assert.Len(t, items, 5)
	_, errs := collect(cqrs.Stream(ctx, queries, listNumbers{N: 9, Panic: true}))
	require.Len(t, errs, 1)

	require.Len(t, calls, 2)
	assert.True(t, calls[0].spec.Stream)
	assert.Equal(t, "query cqrs_test.listNumbers", calls[0].spec.String())
	assert.Equal(t, 5, calls[0].items)
	assert.NoError(t, calls[0].err)
	assert.Equal(t, 3, calls[1].items)
	var pe *cqrs.PanicError
	require.ErrorAs(t, calls[1].err, &pe, "the handler's panic is an error to the interceptors")

	m := queries.Metrics()
	require.Len(t, m, 1)
	assert.Equal(t, uint64(2), m[0].Calls)
	assert.Equal(t, uint64(1), m[0].Errors)
	assert.Equal(t, uint64(8), m[0].Items)
}

func TestRetryingInterceptorNeverRepeatsItems(t *testing.T) {
	t.Parallel()
	retry := cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		return func(ctx context.Context, c cqrs.Call) error {
			err := next(ctx, c)
			for range 2 {
				if err == nil {
					break
				}
				err = next(ctx, c)
			}
			return err
		}
	})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(retry))
	runs := 0
	require.NoError(t, cqrs.HandleStream(queries, func(_ context.Context, q listNumbers, yield func(int) bool) error {
		runs++
		if q.Fail == 0 && runs < 3 {
			return errDisk // before any item: worth another run
		}
		for i := range q.N {
			if q.Fail > 0 && i == q.Fail {
				return errDisk
			}
			if !yield(i) {
				return nil
			}
		}
		return nil
	}))
	items, errs := collect(cqrs.Stream(context.Background(), queries, listNumbers{N: 3}))
	assert.Equal(t, []int{0, 1, 2}, items)
	assert.Empty(t, errs)
	assert.Equal(t, 3, runs, "retried while nothing was yielded")

	runs = 0
	items, errs = collect(cqrs.Stream(context.Background(), queries, listNumbers{N: 5, Fail: 2}))
	assert.Equal(t, []int{0, 1}, items, "no item twice")
	require.Len(t, errs, 1)
	require.ErrorIs(t, errs[0], errDisk)
	assert.Equal(t, 1, runs, "not rerun after an item")
}

func TestFirstItemTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		queries := cqrs.NewQueryBus()
		require.NoError(t, cqrs.HandleStream(queries, func(ctx context.Context, q listNumbers, yield func(int) bool) error {
			for i := range q.N {
				select {
				case <-time.After(time.Duration(q.Fail) * time.Second): // Fail is the wait per item here
				case <-ctx.Done():
					return ctx.Err()
				}
				if !yield(i) {
					return nil
				}
			}
			return nil
		}, cqrs.WithFirstItemTimeout(1500*time.Millisecond)))

		// Slow to start: cut at 1.5s.
		start := time.Now()
		items, errs := collect(cqrs.Stream(context.Background(), queries, listNumbers{N: 3, Fail: 2}))
		assert.Empty(t, items)
		require.Len(t, errs, 1)
		require.ErrorIs(t, errs[0], cqrs.ErrExecutionTimeout)
		require.ErrorIs(t, errs[0], context.DeadlineExceeded)
		assert.Equal(t, 1500*time.Millisecond, time.Since(start))

		// The first item in time: the rest take as long as they take.
		start = time.Now()
		items, errs = collect(cqrs.Stream(context.Background(), queries, listNumbers{N: 3, Fail: 1}))
		assert.Equal(t, []int{0, 1, 2}, items)
		assert.Empty(t, errs)
		assert.Equal(t, 3*time.Second, time.Since(start))
	})
}

func ExampleStream() {
	queries := cqrs.NewQueryBus()
	_ = cqrs.HandleStream(queries, func(_ context.Context, q listNumbers, yield func(int) bool) error {
		for i := range q.N {
			if !yield(i * i) {
				return nil // the reader stopped
			}
		}
		return nil
	})
	for square, err := range cqrs.Stream(context.Background(), queries, listNumbers{N: 100}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		if square > 20 {
			break // the handler's yield returns false and its ctx is cancelled
		}
		fmt.Println(square)
	}
	// Output:
	// 0
	// 1
	// 4
	// 9
	// 16
}

func TestReadersPanicIsTheReaders(t *testing.T) {
	t.Parallel()
	for _, intercepted := range []bool{false, true} {
		var opts []cqrs.Option
		var seen []error
		if intercepted {
			// An interceptor that recovers panics, as middleware.Recovery does.
			opts = append(opts, cqrs.WithInterceptors(cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
				return func(ctx context.Context, c cqrs.Call) (err error) {
					defer func() {
						if v := recover(); v != nil {
							err = fmt.Errorf("recovered: %v", v)
						}
						seen = append(seen, err)
					}()
					return next(ctx, c)
				}
			})))
		}
		queries, n := newNumbers(t, opts...)
		func() {
			defer func() {
				assert.Equal(t, "the reader's own bug", recover(), "the panic reaches the reader unchanged (intercepted=%v)", intercepted)
			}()
			for v, err := range cqrs.Stream(context.Background(), queries, listNumbers{N: 10}) {
				require.NoError(t, err)
				if v == 2 {
					panic("the reader's own bug")
				}
			}
		}()
		assert.Equal(t, 3, n.produced)
	}
}

func TestItemsAfterTheFirstItemTimeoutAreRefused(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		queries := cqrs.NewQueryBus()
		refused := 0
		require.NoError(t, cqrs.HandleStream(queries, func(_ context.Context, q listNumbers, yield func(int) bool) error {
			time.Sleep(2 * time.Second) // deaf to its context
			for i := range q.N {
				if !yield(i) {
					refused++
				}
			}
			return nil
		}, cqrs.WithFirstItemTimeout(time.Second)))
		items, errs := collect(cqrs.Stream(context.Background(), queries, listNumbers{N: 5}))
		assert.Empty(t, items, "nothing after the deadline")
		require.Len(t, errs, 1)
		require.ErrorIs(t, errs[0], cqrs.ErrExecutionTimeout)
		assert.Equal(t, 5, refused)
	})
}

func TestExecuteStream(t *testing.T) {
	type count struct {
		cqrs.StreamQuery[int]
		N int
	}
	type one struct{ cqrs.Query[int] }
	queries := cqrs.NewQueryBus()
	require.NoError(t, cqrs.HandleStream(queries, func(ctx context.Context, q count, yield func(int) bool) error {
		for i := range q.N {
			if !yield(i) {
				return nil
			}
		}
		if q.N > 2 {
			return errors.New("too many")
		}
		return nil
	}))
	require.NoError(t, cqrs.Handle(queries, func(context.Context, one) (int, error) { return 1, nil }))
	ctx := context.Background()

	collect := func(q any) (items []any, errs []error) {
		for item, err := range queries.ExecuteStream(ctx, q) {
			if err != nil {
				errs = append(errs, err)
				continue
			}
			items = append(items, item)
		}
		return items, errs
	}

	items, errs := collect(count{N: 2})
	assert.Equal(t, []any{0, 1}, items)
	assert.Empty(t, errs)

	items, errs = collect(count{N: 3})
	assert.Equal(t, []any{0, 1, 2}, items)
	require.Len(t, errs, 1)
	assert.EqualError(t, errs[0], "too many", "the handler's error is the last item")

	var got []any
	for item := range queries.ExecuteStream(ctx, count{N: 100}) {
		got = append(got, item)
		if len(got) == 3 {
			break
		}
	}
	assert.Equal(t, []any{0, 1, 2}, got, "breaking out stops the stream")

	_, errs = collect(one{})
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], cqrs.ErrInvalidMessageType)
	assert.Contains(t, errs[0].Error(), "use Execute")

	_, errs = collect("no such query")
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], cqrs.ErrHandlerNotFound)

	_, errs = collect(nil)
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], cqrs.ErrNilMessage)

	var none *cqrs.QueryBus
	for _, err := range none.ExecuteStream(ctx, count{N: 1}) {
		assert.ErrorIs(t, err, cqrs.ErrNilBus)
	}
}

// TestStreamContextFollowsTheReaderAndTheCaller: the handler's ctx, and
// the contexts derived from it, end when the reader breaks and when the
// caller's ctx ends, and context.Cause tells which; it carries the
// caller's values and deadline.
func TestStreamContextFollowsTheReaderAndTheCaller(t *testing.T) {
	t.Parallel()
	type key struct{}
	synctest.Test(t, func(t *testing.T) {
		queries := cqrs.NewQueryBus()
		type seen struct {
			value        any
			deadline     time.Time
			err, derived error
			cause        error
			at           error // a derived context's error as the reader broke
		}
		var got seen
		require.NoError(t, cqrs.HandleStream(queries, func(ctx context.Context, q listNumbers, yield func(int) bool) error {
			derived, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			// Derived through another context, as under an interceptor
			// that adds a value: still a child, cancelled with it, not
			// by a goroutine of its own later.
			through, cancelThrough := context.WithCancel(context.WithValue(ctx, key{}, "inner"))
			defer cancelThrough()
			got.value = ctx.Value(key{})
			got.deadline, _ = ctx.Deadline()
			if !yield(0) { // the reader breaks
				got.at = through.Err()
				synctest.Wait()
				got.err, got.derived, got.cause = ctx.Err(), derived.Err(), context.Cause(ctx)
				return nil
			}
			<-ctx.Done() // the caller's ctx ends
			synctest.Wait()
			got.err, got.derived, got.cause = ctx.Err(), derived.Err(), context.Cause(ctx)
			return ctx.Err()
		}))

		parent, stop := context.WithDeadline(context.WithValue(context.Background(), key{}, "v"), time.Now().Add(time.Minute))
		defer stop()
		for range cqrs.Stream(parent, queries, listNumbers{N: 1}) {
			break
		}
		assert.Equal(t, "v", got.value)
		assert.Equal(t, time.Now().Add(time.Minute), got.deadline)
		assert.ErrorIs(t, got.err, context.Canceled)
		assert.ErrorIs(t, got.derived, context.Canceled)
		assert.ErrorIs(t, got.cause, context.Canceled, "the stream's own cause, not the caller's")
		assert.ErrorIs(t, got.at, context.Canceled, "a derived context is cancelled with the stream's")

		got = seen{}
		caller, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		var errs []error
		for _, err := range cqrs.Stream(caller, queries, listNumbers{N: 1}) {
			if err != nil {
				errs = append(errs, err)
				continue
			}
			cancel(errDisk)
		}
		require.Len(t, errs, 1)
		assert.ErrorIs(t, errs[0], context.Canceled)
		assert.ErrorIs(t, got.err, context.Canceled)
		assert.ErrorIs(t, got.derived, context.Canceled)
		assert.ErrorIs(t, got.cause, errDisk, "the caller's cause")
	})
}

// TestStreamAllocations: a stream allocates at most 2 more times than
// ranging over a bare iter.Seq2 of the same items (issue #21), whatever
// its length: nothing per item.
func TestStreamAllocations(t *testing.T) {
	queries := cqrs.NewQueryBus()
	require.NoError(t, cqrs.HandleStream(queries, func(_ context.Context, q listNumbers, yield func(int) bool) error {
		for i := range q.N {
			if !yield(i) {
				return nil
			}
		}
		return nil
	}))
	bare := func(n int) func(func(int, error) bool) {
		return func(yield func(int, error) bool) {
			for i := range n {
				if !yield(i, nil) {
					return
				}
			}
		}
	}
	ctx := context.Background()
	for _, n := range []int{1, 1000} {
		var sum int
		read := func(seq func(func(int, error) bool)) {
			for v, err := range seq {
				if err != nil {
					t.Fatal(err)
				}
				sum += v
			}
		}
		base := testing.AllocsPerRun(100, func() { read(bare(n)) })
		allocs := testing.AllocsPerRun(100, func() { read(cqrs.Stream(ctx, queries, listNumbers{N: n})) })
		assert.LessOrEqual(t, allocs-base, 2.0, "%d items: %v allocations, the bare sequence %v", n, allocs, base)
		t.Logf("%d items: %v allocations, the bare sequence %v", n, allocs, base)
	}
}
