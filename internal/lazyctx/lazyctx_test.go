package lazyctx

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type key struct{}

func TestAnswersWithoutATimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent := context.WithValue(context.Background(), key{}, "v")
		ctx := WithTimeout(parent, time.Second)
		defer ctx.Stop()

		d, ok := ctx.Deadline()
		require.True(t, ok)
		assert.Equal(t, time.Now().Add(time.Second), d)
		assert.Equal(t, "v", ctx.Value(key{}))
		require.NoError(t, ctx.Err())
		assert.False(t, ctx.Expired())
		assert.False(t, ctx.started(), "nothing waited, so no timer")

		time.Sleep(time.Second)
		assert.True(t, ctx.Expired())
		require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		<-ctx.Done()
		assert.Equal(t, ErrTimeout, context.Cause(ctx))
	})
}

func TestWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := WithTimeout(context.Background(), time.Second)
		defer ctx.Stop()
		start := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { <-ctx.Done() })
		}
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		<-child.Done()
		wg.Wait()
		assert.Equal(t, time.Second, time.Since(start))
		require.ErrorIs(t, child.Err(), context.DeadlineExceeded)
	})
}

func TestParentFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		assert.Nil(t, WithTimeout(parent, time.Hour), "the parent's earlier deadline stands")
		ctx := WithTimeout(parent, 100*time.Millisecond)
		require.NotNil(t, ctx, "a deadline at the same time is ours")
		defer ctx.Stop()
		<-ctx.Done()
		require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
	})

	parent, cancel := context.WithCancel(context.Background())
	ctx := WithTimeout(parent, time.Hour)
	defer ctx.Stop()
	cancel()
	require.ErrorIs(t, ctx.Err(), context.Canceled)
	<-ctx.Done()
}

func TestParentDeadlineOnTheWallClock(t *testing.T) {
	// A deadline without a monotonic reading, as from a date, is placed by
	// the wall clock, as the parent's own timer places it.
	for _, tc := range []struct {
		name   string
		parent time.Duration
		ours   bool
	}{
		{"parent first", time.Minute, false},
		{"ours first", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pd := time.Now().Add(tc.parent).Round(0)
			parent, cancel := context.WithDeadline(context.Background(), pd)
			defer cancel()
			ctx := WithTimeout(parent, 10*time.Minute)
			require.Equal(t, tc.ours, ctx != nil)
			if ctx != nil {
				ctx.Stop()
			}
		})
	}
}

func TestParentDeadlineLater(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		ctx := WithTimeout(parent, time.Second)
		require.NotNil(t, ctx)
		defer ctx.Stop()
		d, ok := ctx.Deadline()
		require.True(t, ok)
		assert.Equal(t, time.Now().Add(time.Second), d)
		time.Sleep(time.Second)
		require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		assert.Equal(t, ErrTimeout, context.Cause(ctx))
	})
}

func TestDeadlineIsFixedAtTheStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		ctx := WithTimeout(context.Background(), time.Second)
		defer ctx.Stop()
		time.Sleep(300 * time.Millisecond)
		d, _ := ctx.Deadline()
		assert.Equal(t, start.Add(time.Second), d, "asked later, the deadline is still d from the start")
		time.Sleep(time.Second)
		again, _ := ctx.Deadline()
		assert.Equal(t, d, again, "the same on every call")
		assert.True(t, ctx.Expired())
	})

	// Outside a bubble the deadline keeps the start's monotonic reading
	// plus d, exactly.
	before := time.Now()
	ctx := WithTimeout(context.Background(), time.Minute)
	after := time.Now()
	defer ctx.Stop()
	d, _ := ctx.Deadline()
	assert.False(t, d.Before(before.Add(time.Minute)))
	assert.False(t, d.After(after.Add(time.Minute)))
	assert.NotEqual(t, d, d.Round(0), "it has a monotonic reading")
}

func TestConcurrentFirstUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := WithTimeout(context.Background(), time.Second)
		defer ctx.Stop()
		var wg sync.WaitGroup
		deadlines := make([]time.Time, 8)
		for i := range deadlines {
			wg.Go(func() {
				deadlines[i], _ = ctx.Deadline()
				<-ctx.Done()
			})
		}
		wg.Wait()
		for _, d := range deadlines {
			assert.Equal(t, deadlines[0], d)
		}
		assert.Equal(t, ErrTimeout, context.Cause(ctx))
	})
}

func TestHugeTimeout(t *testing.T) {
	ctx := WithTimeout(context.Background(), math.MaxInt64)
	require.NotNil(t, ctx)
	defer ctx.Stop()
	require.NoError(t, ctx.Err())
	assert.False(t, ctx.Expired())
	d, _ := ctx.Deadline()
	assert.True(t, d.After(time.Now().Add(100*365*24*time.Hour)))
}

func TestNoAllocationUntilWaitedOn(t *testing.T) {
	// The context itself is one allocation; its deadline and timer none
	// until asked for.
	allocs := testing.AllocsPerRun(100, func() {
		ctx := WithTimeout(context.Background(), time.Minute)
		if ctx.Err() != nil {
			t.Fatal("done too early")
		}
		ctx.Stop()
	})
	assert.Equal(t, 1.0, allocs)
}

func TestCauseUnderACancelableParent(t *testing.T) {
	// Value answers keys of other types than *int from the parent without
	// the clock. This checks that the context package's own key is still
	// one, so that context.Cause does not find the parent's cause instead
	// of ours.
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
		defer cancel()
		ctx := WithTimeout(parent, time.Second)
		defer ctx.Stop()
		assert.Equal(t, "v", ctx.Value(key{}))
		assert.False(t, ctx.started(), "a value lookup makes no timer")
		time.Sleep(time.Second)
		assert.Equal(t, ErrTimeout, context.Cause(ctx), "before anyone waited")
		assert.Equal(t, "v", ctx.Value(key{}))
		<-ctx.Done()
		assert.Equal(t, ErrTimeout, context.Cause(ctx), "after")
	})
}

func TestCauseOfACanceledParent(t *testing.T) {
	errParent := errors.New("parent gone")
	parent, cancel := context.WithCancelCause(context.Background())
	ctx := WithTimeout(parent, time.Hour)
	defer ctx.Stop()
	cancel(errParent)
	<-ctx.Done()
	assert.Equal(t, errParent, context.Cause(ctx))
}

// TestParentDeadlineOnTheMonotonicClock is TestParentDeadlineOnTheWallClock
// for the deadlines production code sees: from context.WithTimeout outside
// a synctest bubble, with a monotonic reading, which alone places them.
func TestParentDeadlineOnTheMonotonicClock(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent time.Duration
		ours   bool
	}{
		{"parent first", time.Minute, false},
		{"ours first", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent, cancel := context.WithTimeout(context.Background(), tc.parent)
			defer cancel()
			pd, _ := parent.Deadline()
			require.NotEqual(t, pd, pd.Round(0), "the parent's deadline has a monotonic reading")
			ctx := WithTimeout(parent, 10*time.Minute)
			require.Equal(t, tc.ours, ctx != nil)
			if ctx != nil {
				ctx.Stop()
			}
		})
	}
}

func TestAddSat(t *testing.T) {
	assert.Equal(t, time.Duration(5), addSat(2, 3))
	assert.Equal(t, time.Duration(-1), addSat(2, -3))
	assert.Equal(t, time.Duration(math.MaxInt64), addSat(math.MaxInt64-1, 2), "held at the largest")
	assert.Equal(t, time.Duration(math.MinInt64), addSat(math.MinInt64+1, -2), "held at the smallest")
}
