package nats

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// durableHolds keeps the commands a process holds (taken and waiting for
// their handler, or in it) from being given to another process while it
// means to handle them. JetStream gives a command to another consumer
// AckWait after it delivered it, or after the last in-progress
// acknowledgement for it, whether the process holding it is dead or only
// busy; so every command held for a quarter of AckWait gets an
// in-progress acknowledgement, which JetStream answers by starting its
// AckWait over. A command whose handler's context has ended gets none: a
// handler that ignores its context keeps its command for at most AckWait
// more. A process that dies sends none, and its commands come back after
// AckWait.
//
// durableHolds is safe for concurrent use. Its zero value is not usable:
// make one with newDurableHolds.
type durableHolds struct {
	every time.Duration // how often, and how old a hold must be, to refresh it

	mu   sync.Mutex
	held map[*durableHold]struct{}
}

// durableHold is one command held.
type durableHold struct {
	msg jetstream.Msg
	// since is no later than when JetStream last started msg's AckWait:
	// when it delivered msg, or received its last in-progress
	// acknowledgement.
	since time.Time
	// until, once msg's handler runs, is its context's Done: msg is not
	// refreshed after it closes.
	until <-chan struct{}
}

// newDurableHolds returns the holds of a server whose commands have
// ackWait as their AckWait.
func newDurableHolds(ackWait time.Duration) *durableHolds {
	return &durableHolds{every: max(ackWait/4, time.Millisecond), held: map[*durableHold]struct{}{}}
}

// hold starts holding m, which JetStream delivered no earlier than since.
func (h *durableHolds) hold(m jetstream.Msg, since time.Time) *durableHold {
	x := &durableHold{msg: m, since: since}
	h.mu.Lock()
	h.held[x] = struct{}{}
	h.mu.Unlock()
	return x
}

// run marks x's handler as started, its context ending with done.
func (h *durableHolds) run(x *durableHold, done <-chan struct{}) {
	h.mu.Lock()
	x.until = done
	h.mu.Unlock()
}

// release stops holding x: from now on it gets no in-progress
// acknowledgement, so that none follows its acknowledgement or its
// return to the stream.
func (h *durableHolds) release(x *durableHold) {
	h.mu.Lock()
	delete(h.held, x)
	h.mu.Unlock()
}

// refresh sends an in-progress acknowledgement for each command held for
// at least h.every since its AckWait last started, and returns how many
// it sent. It holds the lock while it sends (publishes that do not wait
// for an answer), so that no acknowledgement of a released command
// follows its release.
func (h *durableHolds) refresh(now time.Time) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for x := range h.held {
		if now.Sub(x.since) < h.every || doneClosed(x.until) {
			continue
		}
		if x.msg.InProgress() == nil {
			x.since = now
			n++
		}
	}
	return n
}

// doneClosed reports whether done, a context's Done, is closed; a nil done
// (the handler has not started) is not.
func doneClosed(done <-chan struct{}) bool {
	if done == nil {
		return false
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// keepAlive refreshes what h holds every h.every until ctx ends.
func (h *durableHolds) keepAlive(ctx context.Context) {
	tick := time.NewTicker(h.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			h.refresh(now)
		}
	}
}
