package nats_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// mendable handles Ship: it fails for good (one delivery, then a dead
// letter) until the parcel is mended, then records it in l.
type mendable struct {
	l      *ledger
	mu     sync.Mutex
	mended map[int]bool
	calls  atomic.Int32
}

func newMendable() *mendable { return &mendable{l: newLedger(), mended: map[int]bool{}} }

func (h *mendable) mend(parcels ...int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range parcels {
		h.mended[p] = true
	}
}

func (h *mendable) handle(_ context.Context, c Ship) (cqrs.NoResult, error) {
	h.calls.Add(1)
	h.mu.Lock()
	ok := h.mended[c.Parcel]
	h.mu.Unlock()
	if !ok {
		return cqrs.NoResult{}, middleware.Permanent(errors.New("no address for this parcel"))
	}
	h.l.add(shipKey(c))
	return cqrs.NoResult{}, nil
}

// serve serves h durably until the test ends; the returned function
// stops it sooner.
func (h *mendable) serve(t *testing.T, js jetstream.JetStream, cfg cqrsnats.DurableConfig) func() {
	t.Helper()
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](h.handle)))
	return serveCommands(t, js, bus, cfg)
}

// awaitDeadLetters waits until the default dead-letter stream holds n
// letters.
func awaitDeadLetters(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(deadLetters(t, js)) == n }, 10*time.Second, 20*time.Millisecond, "%d dead letters", n)
}

func parcels(from, to int) []int {
	var out []int
	for p := from; p < to; p++ {
		out = append(out, p)
	}
	return out
}

// Two replays of one type run at once: each letter goes back to the
// work queue once and is handled once, both replays succeed, and
// between them they report every letter moved, once. Before, the
// second to remove a letter failed with "no message found".
func TestDurableConcurrentReplays(t *testing.T) {
	js := startJetStream(t)
	cfg := cqrsnats.DurableConfig{MaxDeliver: 1}
	h := newMendable()
	h.serve(t, js, cfg)
	const total = 50
	keys := enqueueAll(t, js, total, parcel, shipKey, cfg)
	awaitDeadLetters(t, js, total)
	h.mend(parcels(0, total)...)

	var (
		wg    sync.WaitGroup
		moved [2]int
		errs  [2]error
		start = make(chan struct{})
	)
	for i := range 2 {
		wg.Go(func() {
			<-start
			moved[i], errs[i] = cqrsnats.ReplayDeadLetters[Ship](context.Background(), js, cfg)
		})
	}
	close(start)
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	assert.Equal(t, total, moved[0]+moved[1], "letters moved, counted once")

	h.l.await(total, 10*time.Second)
	assertDrained(t, js, "CQRS_COMMANDS")
	lost, duplicated := h.l.count(keys)
	t.Logf("two replays at once: %d letters, moved %d + %d, lost %d, duplicated %d", total, moved[0], moved[1], lost, duplicated)
	assert.Zero(t, lost, "letters lost")
	assert.Zero(t, duplicated, "letters handled twice")
	assert.Empty(t, deadLetters(t, js))
}

// A replay run while the handler still fails moves each letter once and
// ends: the letters it buried again are the next replay's. Each is
// marked with the replays it has been through.
func TestDurableReplayWhileStillFailing(t *testing.T) {
	js := startJetStream(t)
	cfg := cqrsnats.DurableConfig{MaxDeliver: 1}
	h := newMendable() // never mended
	h.serve(t, js, cfg)
	const total = 20
	enqueueAll(t, js, total, parcel, shipKey, cfg)
	awaitDeadLetters(t, js, total)

	for replay := 1; replay <= 2; replay++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := cqrsnats.ReplayDeadLetters[Ship](ctx, js, cfg)
		cancel()
		require.NoError(t, err)
		assert.Equal(t, total, n, "replay %d moves what was there when it started", replay)
		require.Eventually(t, func() bool {
			dead := deadLetters(t, js)
			if len(dead) != total {
				return false
			}
			for _, m := range dead {
				if m.Header.Get("Cqrs-Replays") != string(rune('0'+replay)) {
					return false
				}
			}
			return true
		}, 10*time.Second, 20*time.Millisecond, "the letters buried again after replay %d", replay)
		assert.Equal(t, int32(total*(replay+1)), h.calls.Load(), "handler runs after replay %d", replay)
	}
}

// The work-queue stream is removed and made again within JetStream's
// duplicate window: its sequences start over, and the dead letters of
// the new commands are kept beside the old ones. Before, a dead letter
// was keyed by stream and sequence, and all 10 new ones were dropped as
// duplicates while their commands left the work queue.
func TestDurableRecreatedWorkQueueKeepsDeadLetters(t *testing.T) {
	s := startJetStreamServer(t)
	js := process(t, s)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{MaxDeliver: 1}
	h := newMendable()
	stop := h.serve(t, process(t, s), cfg)
	enqueueAll(t, js, 10, parcel, shipKey, cfg)
	awaitDeadLetters(t, js, 10)
	stop()

	require.NoError(t, js.DeleteStream(ctx, "CQRS_COMMANDS"))
	enqueueAll(t, js, 10, func(i int) Ship { return Ship{Parcel: 100 + i} }, shipKey, cfg) // makes it again
	h.serve(t, process(t, s), cfg)
	assertDrained(t, js, "CQRS_COMMANDS")
	assert.Eventually(t, func() bool { return len(deadLetters(t, js)) == 20 }, 5*time.Second, 20*time.Millisecond,
		"dead letters kept: 10 before the stream was made again, 10 after")
}

// The dead-letter stream is removed and made again within the work
// queue's duplicate window: its sequences start over, and a replay of
// the new letters gives them back to the handler. Before, a replay was
// keyed by the letter's sequence, the work queue dropped all 5 as
// duplicates of the first replay's, and the replay said "moved 5".
func TestDurableRecreatedDeadLetterStreamReplays(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{MaxDeliver: 1}
	h := newMendable()
	stop := h.serve(t, js, cfg)

	first := enqueueAll(t, js, 5, parcel, shipKey, cfg)
	awaitDeadLetters(t, js, 5)
	h.mend(parcels(0, 5)...)
	n, err := cqrsnats.ReplayDeadLetters[Ship](ctx, js, cfg)
	require.NoError(t, err)
	require.Equal(t, 5, n)
	h.l.await(5, 10*time.Second)

	stop()
	require.NoError(t, js.DeleteStream(ctx, "CQRS_DEAD"))
	h.serve(t, js, cfg) // makes it again
	second := enqueueAll(t, js, 5, func(i int) Ship { return Ship{Parcel: 100 + i} }, shipKey, cfg)
	awaitDeadLetters(t, js, 5)
	h.mend(parcels(100, 105)...)
	n, err = cqrsnats.ReplayDeadLetters[Ship](ctx, js, cfg)
	require.NoError(t, err)
	assert.Equal(t, 5, n)
	h.l.await(10, 10*time.Second)
	lost, duplicated := h.l.count(append(first, second...))
	assert.Zero(t, lost, "replayed letters not handled")
	assert.Zero(t, duplicated)
}

// The dead-letter stream is removed while a process serves: the next
// command to die makes it again, and its letter is kept. Before, the
// letter was refused, the command went back to the work queue, and after
// its last delivery it stayed there, never delivered again.
func TestDurableDeadLetterStreamRemovedWhileServing(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	cfg := cqrsnats.DurableConfig{MaxDeliver: 1, BackOff: []time.Duration{10 * time.Millisecond}}
	h := newMendable()
	h.serve(t, js, cfg) // makes the streams
	require.NoError(t, js.DeleteStream(ctx, "CQRS_DEAD"))
	enqueueAll(t, js, 3, parcel, shipKey, cfg)
	assert.Eventually(t, func() bool {
		stream, err := js.Stream(ctx, "CQRS_DEAD")
		if err != nil {
			return false // not made again yet
		}
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 3
	}, 10*time.Second, 20*time.Millisecond, "dead letters kept")
	assertDrained(t, js, "CQRS_COMMANDS")
}

// ReplayDeadLetters refuses what Enqueue refuses: an invalid option, and
// no JetStream.
func TestDurableReplayRefusesBadArguments(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	_, err := cqrsnats.ReplayDeadLetters[Ship](ctx, js, cqrsnats.DurableConfig{}, cqrsnats.WithQueueGroup("bad group"))
	assert.ErrorIs(t, err, cqrsnats.ErrInvalidSubject)
	_, err = cqrsnats.ReplayDeadLetters[Ship](ctx, js, cqrsnats.DurableConfig{}, cqrsnats.WithPrefix("bad prefix"))
	assert.ErrorIs(t, err, cqrsnats.ErrInvalidSubject)
	_, err = cqrsnats.ReplayDeadLetters[Ship](ctx, nil, cqrsnats.DurableConfig{})
	assert.ErrorIs(t, err, cqrsnats.ErrTransport)
}
