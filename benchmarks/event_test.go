package benchmarks

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// userRenamed is the event the event benchmarks publish.
type userRenamed struct {
	cqrs.Event
	ID   int64
	Name string
}

// eventCounter is what every subscriber does: count the event, so the
// loop and the bus do the same work.
type eventCounter struct{ n atomic.Int64 }

func (c *eventCounter) handle(_ context.Context, e userRenamed) error {
	c.n.Add(e.ID)
	return nil
}

// renameUserCommand is userRenamed as a command, with the same fields, for the
// Dispatch row: the same function dispatched rather than published.
type renameUserCommand struct {
	ID   int64
	Name string
}

// BenchmarkPublish publishes one event to 1, 8 and 64 subscribers with
// each strategy, against a plain loop calling the same functions: the
// cost of the bus per publish, and per subscriber. With one subscriber,
// the Dispatch row sends the same event, as a command with the same
// fields, to the same function on a CommandBus: a publish to one
// subscriber is measured against a bare dispatch in the same pass. Each
// row reports cpu-ns/op beside sec/op: see reportCPU.
func BenchmarkPublish(b *testing.B) {
	const queue = 1 << 16
	ctx := context.Background()
	evt := userRenamed{ID: 1, Name: "Ada"}
	for _, n := range []int{1, 8, 64} {
		counters := make([]*eventCounter, n)
		fns := make([]func(context.Context, userRenamed) error, n)
		for i := range counters {
			counters[i] = &eventCounter{}
			fns[i] = counters[i].handle
		}
		b.Run(fmt.Sprintf("subscribers=%d/Loop", n), func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				for _, fn := range fns {
					if err := fn(ctx, evt); err != nil {
						b.Fatal(err)
					}
				}
			}
			reportCPU(b, cpuTime()-cpu)
		})
		if n == 1 {
			commands := cqrs.NewCommandBus()
			fn := fns[0]
			require.NoError(b, cqrs.Register(commands, cqrs.HandlerFunc[renameUserCommand, cqrs.NoResult](
				func(ctx context.Context, c renameUserCommand) (cqrs.NoResult, error) {
					return cqrs.NoResult{}, fn(ctx, userRenamed{ID: c.ID, Name: c.Name})
				})))
			cmd := renameUserCommand{ID: evt.ID, Name: evt.Name}
			b.Run("subscribers=1/Dispatch", func(b *testing.B) {
				b.ReportAllocs()
				cpu := cpuTime()
				for b.Loop() {
					if _, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, cmd); err != nil {
						b.Fatal(err)
					}
				}
				reportCPU(b, cpuTime()-cpu)
			})
		}
		for _, s := range []cqrs.Strategy{cqrs.Sequential(), cqrs.StopOnError(), cqrs.Concurrent(0), cqrs.Async()} {
			b.Run(fmt.Sprintf("subscribers=%d/%s", n, s), func(b *testing.B) {
				// A bus of its own each time: -count runs this again, and
				// the last run closed the bus.
				events := cqrs.NewEventBus(cqrs.WithEventQueue(cqrs.EventQueue{Size: queue}))
				for i, fn := range fns {
					_, err := cqrs.Subscribe(events, fmt.Sprintf("s%d", i), fn)
					require.NoError(b, err)
				}
				if s == cqrs.Async() {
					warmUp(b, events, queue)
				}
				b.ReportAllocs()
				cpu := cpuTime()
				for b.Loop() {
					if err := cqrs.PublishWith(ctx, events, s, evt); err != nil {
						b.Fatal(err)
					}
				}
				reportCPU(b, cpuTime()-cpu)
				// An asynchronous publish is done when it is handled.
				require.NoError(b, events.Close(ctx))
			})
		}
	}
}

// reportCPU reports cpu, the CPU time the process spent in a benchmark's
// loop, per operation, as cpu-ns/op: on a shared machine, a figure that
// others' load moves less than sec/op. It includes the CPU time of every
// goroutine of the process meanwhile, such as an asynchronous bus's
// workers.
func reportCPU(b *testing.B, cpu time.Duration) {
	if cpu > 0 && b.N > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// warmUp brings an asynchronous bus to its steady state: it fills the
// queue of size queue once, holding the worker with a subscriber of its
// own, so that every job a publish of the benchmark takes is one that a
// worker gave back.
func warmUp(b *testing.B, events *cqrs.EventBus, queue int) {
	ctx := context.Background()
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	gate, err := cqrs.Subscribe(events, "gate", func(context.Context, userRenamed) error {
		once.Do(func() {
			close(held)
			<-release
		})
		return nil
	})
	require.NoError(b, err)
	require.NoError(b, cqrs.PublishWith(ctx, events, cqrs.Async(), userRenamed{}))
	<-held // the worker holds one job: queue more fill the queue
	for range queue {
		require.NoError(b, cqrs.PublishWith(ctx, events, cqrs.Async(), userRenamed{}))
	}
	close(release)
	require.NoError(b, events.Flush(ctx))
	gate.Cancel()
}

// TestPublishMatchesTheLoop checks that the bus delivers each event to
// every subscriber, as the loop does, under every strategy.
func TestPublishMatchesTheLoop(t *testing.T) {
	ctx := context.Background()
	for _, s := range []cqrs.Strategy{cqrs.Sequential(), cqrs.StopOnError(), cqrs.Concurrent(0), cqrs.Async()} {
		events := cqrs.NewEventBus()
		counters := make([]*eventCounter, 8)
		for i := range counters {
			counters[i] = &eventCounter{}
			_, err := cqrs.Subscribe(events, fmt.Sprintf("s%d", i), counters[i].handle)
			require.NoError(t, err)
		}
		for range 10 {
			require.NoError(t, cqrs.PublishWith(ctx, events, s, userRenamed{ID: 3}))
		}
		require.NoError(t, events.Close(ctx))
		for i, c := range counters {
			require.Equal(t, int64(30), c.n.Load(), "%s: subscriber %d", s, i)
		}
	}
}
