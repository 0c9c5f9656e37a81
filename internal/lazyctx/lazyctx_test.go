package lazyctx

import (
	"context"
	"errors"
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

var errMine = errors.New("mine")

func TestAnswersWithoutATimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent := context.WithValue(context.Background(), key{}, "v")
		ctx := WithTimeout(parent, time.Second, errMine)
		defer ctx.Stop()

		d, ok := ctx.Deadline()
		require.True(t, ok)
		assert.Equal(t, time.Now().Add(time.Second), d)
		assert.Equal(t, "v", ctx.Value(key{}))
		require.NoError(t, ctx.Err())
		assert.False(t, ctx.Expired())
		assert.False(t, ctx.started.Load(), "nothing waited, so no timer")
		assert.True(t, ctx.Own())

		time.Sleep(time.Second)
		assert.True(t, ctx.Expired())
		require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		<-ctx.Done()
		assert.Equal(t, errMine, context.Cause(ctx))
	})
}

func TestWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := WithTimeout(context.Background(), time.Second, errMine)
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
		ctx := WithTimeout(parent, time.Hour, errMine)
		defer ctx.Stop()
		d, _ := ctx.Deadline()
		assert.Equal(t, time.Now().Add(100*time.Millisecond), d, "the parent's earlier deadline")
		assert.False(t, ctx.Own())
		<-ctx.Done()
		require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		assert.NotEqual(t, errMine, context.Cause(ctx), "the parent's deadline, not ours")
	})

	parent, cancel := context.WithCancel(context.Background())
	ctx := WithTimeout(parent, time.Hour, errMine)
	defer ctx.Stop()
	cancel()
	require.ErrorIs(t, ctx.Err(), context.Canceled)
	<-ctx.Done()
}

func TestNoAllocationUntilWaitedOn(t *testing.T) {
	// The context itself is one allocation; the timer none until Done.
	allocs := testing.AllocsPerRun(100, func() {
		ctx := WithTimeout(context.Background(), time.Minute, errMine)
		if ctx.Err() != nil {
			t.Fatal("done too early")
		}
		ctx.Stop()
	})
	assert.LessOrEqual(t, allocs, 1.0)
}
