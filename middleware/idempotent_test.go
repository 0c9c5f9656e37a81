package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// withID returns a context from which the next message sent has ID id,
// as a transport's handler context does for a message it received.
func withID(id string) context.Context {
	return cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: id})
}

func TestIdempotentRunsAMessageOnce(t *testing.T) {
	t.Parallel()
	bus, j := jobBus(t, middleware.Idempotent(middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})))

	got, err := runCtx(withID("m-1"), bus, Job{ID: 7})
	require.NoError(t, err)
	assert.Equal(t, Done{ID: 7}, got)

	got, err = runCtx(withID("m-1"), bus, Job{ID: 7})
	require.NoError(t, err, "a duplicate is acknowledged, not failed")
	assert.Equal(t, Done{}, got, "a duplicate returns the zero result")
	assert.EqualValues(t, 1, j.calls.Load(), "the handler ran once")

	_, err = runCtx(withID("m-2"), bus, Job{ID: 8})
	require.NoError(t, err)
	assert.EqualValues(t, 2, j.calls.Load(), "another message runs")
}

func TestIdempotentRunsAFailedMessageAgain(t *testing.T) {
	t.Parallel()
	bus, j := jobBus(t, middleware.Idempotent(middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})))

	_, err := runCtx(withID("m-1"), bus, Job{ID: 1, Do: "fail"})
	require.ErrorIs(t, err, errJob, "the handler's error passes through")
	_, err = runCtx(withID("m-1"), bus, Job{ID: 1, Do: "panic"})
	require.ErrorIs(t, err, cqrs.ErrHandlerPanic)
	got, err := runCtx(withID("m-1"), bus, Job{ID: 1})
	require.NoError(t, err)
	assert.Equal(t, Done{ID: 1}, got, "after a failure and a panic, the redelivery runs")
	_, err = runCtx(withID("m-1"), bus, Job{ID: 1})
	require.NoError(t, err)
	assert.EqualValues(t, 3, j.calls.Load(), "once it succeeded, it never runs again")
}

func TestIdempotentRunsMessagesWithoutIdentity(t *testing.T) {
	t.Parallel()
	bus, j := jobBus(t, middleware.Idempotent(middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})))
	for range 3 {
		got, err := run(bus, Job{ID: 2})
		require.NoError(t, err)
		assert.Equal(t, Done{ID: 2}, got)
	}
	assert.EqualValues(t, 3, j.calls.Load(), "a message with no identity cannot be a duplicate")
}

func TestIdempotentKeysByMessageType(t *testing.T) {
	t.Parallel()
	type Other struct{ N int }
	inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
	bus, j := jobBus(t, middleware.Idempotent(inbox))
	var others atomic.Int64
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Other, cqrs.NoResult](func(context.Context, Other) (cqrs.NoResult, error) {
		others.Add(1)
		return cqrs.NoResult{}, nil
	})))
	_, err := runCtx(withID("same"), bus, Job{ID: 1})
	require.NoError(t, err)
	_, err = cqrs.Dispatch[cqrs.NoResult](withID("same"), bus, Other{N: 1})
	require.NoError(t, err)
	assert.EqualValues(t, 1, j.calls.Load())
	assert.EqualValues(t, 1, others.Load(), "each consumer (message type) keeps its own record")
	assert.Equal(t, 2, inbox.Len())
}

func TestIdempotentRunsEachSubscriberOnce(t *testing.T) {
	t.Parallel()
	type Placed struct {
		cqrs.Event
		Order int
	}
	events := cqrs.NewEventBus(cqrs.WithInterceptors(middleware.Idempotent(middleware.NewMemoryInbox(middleware.MemoryInboxConfig{}))))
	var email, stock atomic.Int64
	_, err := cqrs.Subscribe(events, "email", func(context.Context, Placed) error { email.Add(1); return nil })
	require.NoError(t, err)
	failStock := atomic.Bool{}
	failStock.Store(true)
	_, err = cqrs.Subscribe(events, "stock", func(context.Context, Placed) error {
		stock.Add(1)
		if failStock.Load() {
			return errJob
		}
		return nil
	})
	require.NoError(t, err)

	err = cqrs.Publish(withID("e-1"), events, Placed{Order: 1})
	require.ErrorIs(t, err, errJob)
	failStock.Store(false)
	require.NoError(t, cqrs.Publish(withID("e-1"), events, Placed{Order: 1}), "the redelivery")
	require.NoError(t, cqrs.Publish(withID("e-1"), events, Placed{Order: 1}), "another redelivery")
	assert.EqualValues(t, 1, email.Load(), "the subscriber that succeeded runs once")
	assert.EqualValues(t, 2, stock.Load(), "the one that failed runs again, then never")
}

func TestIdempotentPassesQueriesOn(t *testing.T) {
	t.Parallel()
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(middleware.Idempotent(middleware.NewMemoryInbox(middleware.MemoryInboxConfig{}))))
	j := &jobs{}
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Job, Done](j.handle)))
	for range 2 {
		got, err := runCtx(withID("q-1"), queries, Job{ID: 3})
		require.NoError(t, err)
		assert.Equal(t, Done{ID: 3}, got)
	}
	assert.EqualValues(t, 2, j.calls.Load(), "a query changes nothing: it is never a duplicate")
}

func TestIdempotentRefusesNilInbox(t *testing.T) {
	t.Parallel()
	var nilMemory *middleware.MemoryInbox
	for name, in := range map[string]middleware.Inbox{"nil": nil, "nil *MemoryInbox": nilMemory} {
		bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Idempotent(in)))
		err := cqrs.Register(bus, cqrs.HandlerFunc[Job, Done]((&jobs{}).handle))
		assert.ErrorIs(t, err, cqrs.ErrNilHandler, name)
	}
}

// brokenInbox fails every Once without calling fn.
type brokenInbox struct{ err error }

func (b brokenInbox) Once(context.Context, string, string, func(context.Context) error) (bool, error) {
	return false, b.err
}

func TestIdempotentReturnsTheInboxError(t *testing.T) {
	t.Parallel()
	down := errors.New("database down")
	bus, j := jobBus(t, middleware.Idempotent(brokenInbox{down}))
	_, err := runCtx(withID("m-1"), bus, Job{ID: 1})
	require.ErrorIs(t, err, down)
	assert.Zero(t, j.calls.Load(), "the handler does not run when the inbox cannot say")
}

func TestIdempotentConcurrentDuplicatesWait(t *testing.T) {
	t.Parallel()
	bus, j := jobBus(t, middleware.Idempotent(middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})))
	const n = 8
	var wg sync.WaitGroup
	results := make([]Done, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = runCtx(withID("m-1"), bus, Job{ID: 5, Do: "block"})
		})
	}
	require.Eventually(t, func() bool { return j.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	close(j.release)
	wg.Wait()
	ran := 0
	for i := range n {
		require.NoError(t, errs[i])
		if results[i] == (Done{ID: 5}) {
			ran++
		}
	}
	assert.Equal(t, 1, ran, "one dispatch ran the handler, the others were duplicates")
	assert.EqualValues(t, 1, j.calls.Load())
}

func TestMemoryInboxDuplicateRunsWhenTheFirstFails(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
		release := make(chan error)
		var calls atomic.Int64
		fn := func(context.Context) error {
			calls.Add(1)
			return <-release
		}
		type outcome struct {
			ran bool
			err error
		}
		first, second := make(chan outcome, 1), make(chan outcome, 1)
		go func() {
			ran, err := inbox.Once(t.Context(), "c", "m", fn)
			first <- outcome{ran, err}
		}()
		synctest.Wait()
		go func() {
			ran, err := inbox.Once(t.Context(), "c", "m", fn)
			second <- outcome{ran, err}
		}()
		synctest.Wait()
		assert.EqualValues(t, 1, calls.Load(), "the duplicate waits")
		release <- errJob
		assert.Equal(t, outcome{true, errJob}, <-first)
		synctest.Wait()
		assert.EqualValues(t, 2, calls.Load(), "the first failed: the duplicate runs")
		release <- nil
		assert.Equal(t, outcome{true, nil}, <-second)
		ran, err := inbox.Once(t.Context(), "c", "m", fn)
		assert.False(t, ran)
		assert.NoError(t, err)
	})
}

func TestMemoryInboxWaitEndsWithContext(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
		release := make(chan struct{})
		go func() {
			_, _ = inbox.Once(t.Context(), "c", "m", func(context.Context) error { <-release; return nil })
		}()
		synctest.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		ran, err := inbox.Once(ctx, "c", "m", func(context.Context) error { return nil })
		assert.False(t, ran)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		close(release)
	})
}

func TestMemoryInboxPanicReleasesDuplicates(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
		release := make(chan struct{})
		panicked := make(chan any, 1)
		go func() {
			defer func() { panicked <- recover() }()
			_, _ = inbox.Once(t.Context(), "c", "m", func(context.Context) error { <-release; panic("boom") })
		}()
		synctest.Wait()
		done := make(chan bool, 1)
		go func() {
			ran, err := inbox.Once(t.Context(), "c", "m", func(context.Context) error { return nil })
			assert.NoError(t, err)
			done <- ran
		}()
		synctest.Wait()
		close(release)
		assert.Equal(t, "boom", <-panicked, "the panic goes on up")
		assert.True(t, <-done, "the panic recorded nothing: the duplicate ran")
	})
}

func TestMemoryInboxForgetsAfterTTL(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{TTL: time.Minute})
		ok := func(context.Context) error { return nil }
		ran, err := inbox.Once(t.Context(), "c", "m", ok)
		require.NoError(t, err)
		require.True(t, ran)
		time.Sleep(59 * time.Second)
		ran, _ = inbox.Once(t.Context(), "c", "m", ok)
		assert.False(t, ran, "within the TTL, a duplicate")
		time.Sleep(time.Second)
		ran, _ = inbox.Once(t.Context(), "c", "m", ok)
		assert.True(t, ran, "after the TTL, forgotten")
		assert.Equal(t, 1, inbox.Len(), "the expired record was dropped, the new one kept")
	})
}

func TestMemoryInboxDefaultTTLIsADay(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{TTL: -1})
		ok := func(context.Context) error { return nil }
		_, _ = inbox.Once(t.Context(), "c", "m", ok)
		time.Sleep(24*time.Hour - time.Second)
		ran, _ := inbox.Once(t.Context(), "c", "m", ok)
		assert.False(t, ran)
		time.Sleep(time.Second)
		ran, _ = inbox.Once(t.Context(), "c", "m", ok)
		assert.True(t, ran)
	})
}

func TestMemoryInboxForgetsTheOldestWhenFull(t *testing.T) {
	t.Parallel()
	inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{MaxEntries: 100})
	ok := func(context.Context) error { return nil }
	for i := range 250 {
		ran, err := inbox.Once(t.Context(), "c", fmt.Sprint(i), ok)
		require.NoError(t, err)
		require.True(t, ran)
	}
	assert.Equal(t, 100, inbox.Len())
	for i := 150; i < 250; i++ {
		ran, _ := inbox.Once(t.Context(), "c", fmt.Sprint(i), ok)
		assert.False(t, ran, "the newest 100 are remembered: %d", i)
	}
	ran, _ := inbox.Once(t.Context(), "c", "149", ok)
	assert.True(t, ran, "the oldest were forgotten")
	assert.Equal(t, 100, inbox.Len())
}

func TestMemoryInboxZeroValueAndNilFn(t *testing.T) {
	t.Parallel()
	var zero middleware.MemoryInbox
	ran, err := zero.Once(t.Context(), "c", "m", func(context.Context) error { return nil })
	assert.False(t, ran)
	assert.ErrorIs(t, err, middleware.ErrNilInbox)
	assert.Zero(t, zero.Len())

	inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
	ran, err = inbox.Once(t.Context(), "c", "m", nil)
	assert.False(t, ran)
	assert.ErrorIs(t, err, cqrs.ErrNilHandler)
}
