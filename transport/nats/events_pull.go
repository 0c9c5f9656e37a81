package nats

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// eventPullBatch bounds the events of one subscriber that one instance
// has taken from JetStream and not yet acknowledged: the one being
// handled and those waiting their turn.
const eventPullBatch = 32

// eventPullExpiry is how long one pull request waits at the server for
// events, and eventPullHeartbeat how often the server says meanwhile
// that it still holds it: a request lost with a restarting server is
// replaced within twice the heartbeat.
const (
	eventPullExpiry    = 5 * time.Second
	eventPullHeartbeat = time.Second
)

// heldEvent is an event taken ahead, waiting for its turn.
type heldEvent struct {
	m       jetstream.Msg
	touched time.Time // when it arrived, or was last kept alive
}

// puller takes the events of one JetStream subscription from its
// consumer and hands them to the subscriber one at a time, in the order
// they arrive.
//
// It takes up to eventPullBatch ahead, so that a fast subscriber does not
// wait a round trip for each event. JetStream counts AckWait from an
// event's delivery, not from when the subscriber starts on it, so the
// events waiting are kept alive: each gets an in-progress
// acknowledgement every quarter of AckWait while it waits, and one more
// as the subscriber starts on it, unless it arrived or was kept alive
// within the last hundredth of AckWait. AckWait thus bounds the
// subscriber's own time on an event, however many wait before it
// (issue #18, item 1: with 32 taken ahead and no such acknowledgement,
// a 100 ms subscriber with AckWait 1 s handled 47 of 64 events twice).
//
// The events are taken with pull requests of its own (Fetch), rather
// than nats.go's Consume, whose buffer holds the events it has taken
// out of reach: none could be kept alive.
type puller struct {
	s        *EventSubscription
	consumer jetstream.Consumer
	nc       *natsgo.Conn
	keep     time.Duration // how often waiting events are kept alive
	fresh    time.Duration // an event younger than this starts without an acknowledgement

	ctx    context.Context // ends with Stop, or when the connection closes
	cancel context.CancelFunc

	mu    sync.Mutex
	held  []heldEvent   // taken, not started, oldest first, from head
	head  int           // where held starts in its array, which is reused
	busy  bool          // the subscriber is handling one
	ready chan struct{} // signalled when held grows
	room  chan struct{} // signalled when the subscriber is done with one

	fetched chan struct{} // closed when fetch returns
	worked  chan struct{} // closed when work returns
}

// startPuller starts taking s's events from consumer.
func startPuller(s *EventSubscription, consumer jetstream.Consumer, nc *natsgo.Conn, ackWait time.Duration) *puller {
	p := &puller{
		s: s, consumer: consumer, nc: nc,
		keep: max(ackWait/4, time.Millisecond), fresh: ackWait / 100,
		held:  make([]heldEvent, 0, eventPullBatch),
		ready: make(chan struct{}, 1), room: make(chan struct{}, 1),
		fetched: make(chan struct{}), worked: make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	go p.fetch()
	go p.work()
	return p
}

// stop makes p stop taking events and gives those waiting back to the
// stream at once; the subscriber finishes the one it handles, and wait
// returns then.
func (p *puller) stop() {
	p.cancel()
	p.release()
}

// wait returns once p's goroutines have returned.
func (p *puller) wait() {
	<-p.fetched
	<-p.worked
}

// wake wakes whoever waits on ch, if nobody has yet.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// work hands the events to the subscriber until p stops.
func (p *puller) work() {
	defer close(p.worked)
	for {
		e, ok := p.next()
		if !ok {
			p.release()
			return
		}
		if time.Since(e.touched) > p.fresh {
			_ = e.m.InProgress() // AckWait counts from now
		}
		p.s.receiveStored(e.m)
		p.mu.Lock()
		p.busy = false
		roomNow := len(p.held)-p.head == eventPullBatch/2 // room for a batch from now
		p.mu.Unlock()
		if roomNow {
			wake(p.room)
		}
	}
}

// next returns the oldest waiting event, waiting for one, or false once
// p has stopped.
func (p *puller) next() (heldEvent, bool) {
	for {
		p.mu.Lock()
		if p.ctx.Err() != nil {
			p.mu.Unlock()
			return heldEvent{}, false
		}
		if p.head < len(p.held) {
			e := p.held[p.head]
			p.held[p.head] = heldEvent{}
			if p.head++; p.head == len(p.held) {
				p.held, p.head = p.held[:0], 0 // empty: start the array again
			}
			p.busy = true
			p.mu.Unlock()
			return e, true
		}
		p.mu.Unlock()
		select {
		case <-p.ready:
		case <-p.ctx.Done():
		}
	}
}

// release gives the waiting events back to the stream, for another
// instance (each counts as a delivery towards MaxDeliver, as any
// delivery without an outcome does).
func (p *puller) release() {
	p.mu.Lock()
	held := p.held[p.head:]
	p.held, p.head = nil, 0
	p.mu.Unlock()
	for _, e := range held {
		_ = e.m.Nak()
	}
}

// hold queues m for the subscriber, or once p has stopped gives it back
// at once, as release did with those waiting then.
func (p *puller) hold(m jetstream.Msg) {
	p.mu.Lock()
	if p.ctx.Err() != nil {
		p.mu.Unlock()
		_ = m.Nak()
		return
	}
	p.held = append(p.held, heldEvent{m: m, touched: time.Now()})
	p.mu.Unlock()
	wake(p.ready)
}

// roomLeft returns how many more events p may take now: 0 until at least
// half the batch is free, so that it takes them in batches.
func (p *puller) roomLeft() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	taken := len(p.held) - p.head
	if p.busy {
		taken++
	}
	if n := eventPullBatch - taken; n >= eventPullBatch/2 {
		return n
	}
	return 0
}

// keepAlive sends an in-progress acknowledgement for each waiting event
// not kept alive for a while.
func (p *puller) keepAlive() {
	now := time.Now()
	var due []jetstream.Msg
	p.mu.Lock()
	for i := p.head; i < len(p.held); i++ {
		if now.Sub(p.held[i].touched) >= p.keep {
			due = append(due, p.held[i].m)
			p.held[i].touched = now
		}
	}
	p.mu.Unlock()
	for _, m := range due {
		_ = m.InProgress()
	}
}

// fetch takes events with pull requests until p stops or the connection
// closes, which stops p too.
func (p *puller) fetch() {
	defer close(p.fetched)
	defer p.cancel()
	closed := p.nc.StatusChanged(natsgo.CLOSED)
	defer p.nc.RemoveStatusListener(closed)
	keep := time.NewTicker(p.keep)
	defer keep.Stop()
	var retry time.Duration
	for p.ctx.Err() == nil && !p.nc.IsClosed() {
		n := p.roomLeft()
		if n == 0 {
			select {
			case <-p.ctx.Done():
			case <-closed:
			case <-keep.C:
				p.keepAlive()
			case <-p.room:
			}
			continue
		}
		err := p.take(n, keep.C, closed)
		if err == nil || p.ctx.Err() != nil || p.nc.IsClosed() {
			retry = 0
			continue
		}
		// Wait before the next request: NATS is down, or the consumer
		// went away; the events wait in the stream meanwhile.
		retry = min(max(2*retry, 50*time.Millisecond), 2*time.Second)
		p.s.r.ev.Logger.LogAttrs(p.ctx, slog.LevelWarn, "nats: taking events failed; trying again",
			slog.String("event", p.s.spec.Name), slog.String("subscriber", p.s.spec.Subscriber),
			slog.String("consumer", p.s.consumer), slog.Duration("in", retry), slog.Any("error", err))
		p.pause(retry, keep.C, closed)
	}
}

// pause waits for d, or until p stops or the connection closes, keeping
// the waiting events alive meanwhile.
func (p *puller) pause(d time.Duration, keep <-chan time.Time, closed <-chan natsgo.Status) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-closed:
			return
		case <-t.C:
			return
		case <-keep:
			p.keepAlive()
		}
	}
}

// take makes one pull request for n events and holds each as it comes,
// keeping the waiting ones alive meanwhile. It returns the request's
// error, nil when it ended normally (all n came, or it expired).
func (p *puller) take(n int, keep <-chan time.Time, closed <-chan natsgo.Status) error {
	ctx, cancel := context.WithTimeout(p.ctx, eventPullExpiry)
	defer cancel()
	batch, err := p.consumer.Fetch(n, jetstream.FetchContext(ctx), jetstream.FetchHeartbeat(eventPullHeartbeat))
	if err != nil {
		return err
	}
	msgs := batch.Messages()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
					return err
				}
				return nil
			}
			p.hold(m)
		case <-keep:
			p.keepAlive()
		case <-closed:
			cancel() // the batch ends; what it holds comes again after AckWait
			closed = nil
		}
	}
}
