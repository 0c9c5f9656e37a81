package nats

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
)

// progressMsg is a held command that records when it was told in
// progress; its other methods are not called.
type progressMsg struct {
	jetstream.Msg
	mu    sync.Mutex
	times []time.Time
}

func (m *progressMsg) InProgress() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.times = append(m.times, time.Now())
	return nil
}

func (m *progressMsg) told() []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Time(nil), m.times...)
}

// assertKeptAlive checks that JetStream heard of m within half of ackWait
// after from, and then at least every half of ackWait until to: its
// AckWait never ran out. It also checks that m was not told more than
// once per quarter of ackWait.
func assertKeptAlive(t *testing.T, m *progressMsg, ackWait time.Duration, from, to time.Time, what string) {
	t.Helper()
	last := from
	for _, at := range m.told() {
		if at.After(to) {
			break
		}
		assert.LessOrEqual(t, at.Sub(last), ackWait/2, "%s: a gap in its in-progress acknowledgements", what)
		assert.GreaterOrEqual(t, at.Sub(last), ackWait/4, "%s: told too often", what)
		last = at
	}
	assert.LessOrEqual(t, to.Sub(last), ackWait/2, "%s: not told at the end", what)
}

// A held command is told in progress every quarter of AckWait, waiting or
// in its handler, so its AckWait never runs out while it is held; one
// whose handler's context ended, or that was released, is not told.
func TestDurableHoldsKeepCommandsAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ackWait = time.Second
		h := newDurableHolds(ackWait)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			h.keepAlive(ctx)
			close(done)
		}()

		start := time.Now()
		waiting, running, late, ended, released := &progressMsg{}, &progressMsg{}, &progressMsg{}, &progressMsg{}, &progressMsg{}
		h.hold(waiting, start)
		// Delivered AckWait/3 before it was held.
		h.hold(late, start.Add(-ackWait/3))
		runCtx, stopRun := context.WithCancel(ctx)
		h.run(h.hold(running, start), runCtx.Done())
		endCtx, end := context.WithCancel(ctx)
		h.run(h.hold(ended, start), endCtx.Done())
		end()
		h.release(h.hold(released, start))

		time.Sleep(5 * ackWait)
		stopped := time.Now()
		stopRun() // its handler's context ends: no more refreshes
		time.Sleep(2 * ackWait)
		synctest.Wait()

		assertKeptAlive(t, waiting, ackWait, start, time.Now(), "waiting")
		assertKeptAlive(t, running, ackWait, start, stopped, "running")
		assertKeptAlive(t, late, ackWait, start, time.Now(), "delivered before it was held")
		if told := late.told(); assert.NotEmpty(t, told) {
			assert.LessOrEqual(t, told[0].Sub(start), ackWait/4, "delivered AckWait/3 before it was held: told at the first tick")
		}
		for _, at := range running.told() {
			assert.False(t, at.After(stopped), "told after its handler's context ended")
		}
		assert.Empty(t, ended.told(), "its handler's context had ended")
		assert.Empty(t, released.told(), "released")

		cancel()
		<-done
	})
}
