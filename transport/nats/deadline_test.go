package nats

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type key struct{}

func TestLazyDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent := context.WithValue(context.Background(), key{}, "v")
		ctx := withLazyDeadline(parent, time.Second)
		defer ctx.stop()

		d, ok := ctx.Deadline()
		require.True(t, ok)
		assert.Equal(t, time.Now().Add(time.Second), d)
		assert.Equal(t, "v", ctx.Value(key{}))
		require.NoError(t, ctx.Err())
		assert.False(t, ctx.started.Load(), "nothing waited, so no timer")

		// Past the deadline Err reports it, with or without a timer.
		time.Sleep(time.Second)
		require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		select {
		case <-ctx.Done():
		default:
			t.Fatal("Done is not closed past the deadline")
		}
	})
}

func TestLazyDeadlineDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := withLazyDeadline(context.Background(), time.Second)
		defer ctx.stop()
		start := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { <-ctx.Done() })
		}
		// A child context sees the deadline too.
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		<-child.Done()
		wg.Wait()
		assert.Equal(t, time.Second, time.Since(start))
		require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		require.ErrorIs(t, child.Err(), context.DeadlineExceeded)
	})
}

func TestLazyDeadlineParentCancelled(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	ctx := withLazyDeadline(parent, time.Hour)
	defer ctx.stop()
	cancel()
	require.ErrorIs(t, ctx.Err(), context.Canceled)
	<-ctx.Done()
}
