package nats

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// eventPullBatch bounds the events of one subscriber that one instance
// has taken from JetStream and not yet acknowledged: the one being
// handled, those waiting their turn, and those asked for and not yet
// arrived.
const eventPullBatch = 32

// eventPullExpiry is how long one pull request waits at the server for
// events, and eventPullHeartbeat how often the server says meanwhile
// that it still holds it: a request lost with a restarting server is
// replaced once two heartbeats are missing.
const (
	eventPullExpiry    = 5 * time.Second
	eventPullHeartbeat = time.Second
)

// pullRequest is the body of a JetStream pull request
// ($JS.API.CONSUMER.MSG.NEXT), its durations in nanoseconds.
type pullRequest struct {
	Batch     int           `json:"batch"`
	Expires   time.Duration `json:"expires"`
	Heartbeat time.Duration `json:"idle_heartbeat"`
}

// The header of a status message, which JetStream sends to a pull
// request's inbox with no data: 100 for a heartbeat, 404 or 408 when the
// request ended with nothing (more) to deliver, 409 when the server ended
// it for a reason it describes (the consumer was deleted, too many
// requests wait, ...).
const (
	statusHeader      = "Status"
	descriptionHeader = "Description"
)

// heldEvent is an event taken ahead, waiting for its turn.
type heldEvent struct {
	m       *natsgo.Msg
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
// It makes the pull requests itself, on an inbox of its own, rather than
// through nats.go's jetstream package: Consume keeps the events it has
// taken in a buffer out of reach, where none could be kept alive, and a
// Fetch cut short drops those that have arrived and not yet been read,
// where a subscription of its own can be drained: Stop gives back every
// event the server sent, none is left to wait for AckWait.
type puller struct {
	s     *EventSubscription
	nc    *natsgo.Conn
	next  string // the subject of its pull requests
	inbox *natsgo.Subscription
	keep  time.Duration // how often waiting events are kept alive
	fresh time.Duration // an event younger than this starts without an acknowledgement

	ctx    context.Context // ends with Stop, or when the connection closes
	cancel context.CancelFunc

	mu    sync.Mutex
	held  []heldEvent // taken, not started, oldest first, from head
	head  int         // where held starts in its array, which is reused
	busy  bool        // the subscriber is handling one
	asked int         // events the open pull request may still bring; 0 when none is open
	heard time.Time   // when the server last sent anything for the open request
	ended string      // why the server ended the last request, if not as usual
	fine  bool        // the server sent something usual since ask last looked

	ready   chan struct{} // signalled when held grows
	room    chan struct{} // signalled when the puller may ask for more
	fetched chan struct{} // closed when fetch returns
	worked  chan struct{} // closed when work returns
}

// startPuller starts taking s's events from the consumer named consumer
// of stream.
func startPuller(s *EventSubscription, nc *natsgo.Conn, stream, consumer string, ackWait time.Duration) (*puller, error) {
	p := &puller{
		s: s, nc: nc, next: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer,
		keep: max(ackWait/4, time.Millisecond), fresh: ackWait / 100,
		held:  make([]heldEvent, 0, eventPullBatch),
		ready: make(chan struct{}, 1), room: make(chan struct{}, 1),
		fetched: make(chan struct{}), worked: make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	inbox, err := nc.Subscribe(nc.NewInbox(), p.arrive)
	if err != nil {
		p.cancel()
		return nil, err
	}
	p.inbox = inbox
	go p.fetch()
	go p.work()
	return p, nil
}

// stop makes p stop taking events and gives those waiting back to the
// stream at once, and those still arriving as they arrive; the
// subscriber finishes the one it handles, and wait returns then.
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

// arrive takes what the server sends to p's inbox: an event, which it
// holds for the subscriber (or, once p has stopped, gives back at once),
// or a status message about the open pull request.
func (p *puller) arrive(m *natsgo.Msg) {
	now := time.Now()
	if status := m.Header.Get(statusHeader); status != "" && len(m.Data) == 0 {
		p.mu.Lock()
		p.heard = now
		ended := status != "100" // a heartbeat; anything else ends the request
		if ended {
			p.asked = 0
		}
		if ended && status != "404" && status != "408" {
			p.ended = status + " " + m.Header.Get(descriptionHeader)
			if status == "503" {
				p.ended = "503 no responders: the consumer does not exist"
			}
		} else {
			p.fine = true
		}
		p.mu.Unlock()
		if ended {
			wake(p.room)
		}
		return
	}
	p.mu.Lock()
	p.heard, p.fine = now, true
	done := false // the open request has brought all it asked for
	if p.asked > 0 {
		p.asked--
		done = p.asked == 0
	}
	if p.ctx.Err() != nil {
		p.mu.Unlock()
		_ = m.Nak()
		return
	}
	p.held = append(p.held, heldEvent{m: m, touched: now})
	p.mu.Unlock()
	wake(p.ready)
	if done {
		wake(p.room)
	}
}

// work hands the events to the subscriber until p stops.
func (p *puller) work() {
	defer close(p.worked)
	for {
		e, ok := p.nextEvent()
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
		roomNow := p.asked == 0 && p.takenLocked() == eventPullBatch/2 // room for a batch from now
		p.mu.Unlock()
		if roomNow {
			wake(p.room)
		}
	}
}

// nextEvent returns the oldest waiting event, waiting for one, or false
// once p has stopped.
func (p *puller) nextEvent() (heldEvent, bool) {
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

// takenLocked returns the events p holds or handles. p.mu is held.
func (p *puller) takenLocked() int {
	taken := len(p.held) - p.head
	if p.busy {
		taken++
	}
	return taken
}

// keepAlive sends an in-progress acknowledgement for each waiting event
// not kept alive for a while.
func (p *puller) keepAlive(now time.Time) {
	var due []*natsgo.Msg
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

// ask returns the events p should ask for now, and notes them asked: 0
// while a request is open, or until half a batch is free, so that it
// asks in batches. A request the server has not spoken of for two
// heartbeats, or made before the connection was lost, is taken as lost
// (the server restarted): if it was not, it brings events beyond the
// batch, no more than another batch. It also returns why the server
// ended the last request, if not as usual, and whether the server sent
// anything usual since the last call.
func (p *puller) ask(now time.Time, reconnected bool) (n int, ended string, fine bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ended, p.ended = p.ended, ""
	fine, p.fine = p.fine, false
	if p.asked > 0 && (reconnected || now.Sub(p.heard) > 2*eventPullHeartbeat) {
		p.asked = 0
	}
	if p.asked > 0 || ended != "" {
		return 0, ended, fine
	}
	if n = eventPullBatch - p.takenLocked(); n < eventPullBatch/2 {
		return 0, "", fine
	}
	p.asked, p.heard = n, now
	return n, "", fine
}

// fetch asks for events until p stops or the connection closes (which
// stops p too), keeping the waiting events alive; then it drains p's
// inbox, so that every event the server had sent reaches arrive, which
// gives it back.
func (p *puller) fetch() {
	defer close(p.fetched)
	defer p.cancel()
	status := p.nc.StatusChanged(natsgo.CONNECTED, natsgo.CLOSED)
	defer p.nc.RemoveStatusListener(status)
	tick := time.NewTicker(min(p.keep, eventPullHeartbeat))
	defer tick.Stop()
	var retry time.Duration
	reconnected := false
	for p.ctx.Err() == nil && !p.nc.IsClosed() {
		if !p.nc.IsConnected() {
			// A request sent now would wait in the reconnect buffer,
			// and each sent meanwhile bring a batch once it is back.
			reconnected = p.await(status, tick.C, nil)
			continue
		}
		n, ended, fine := p.ask(time.Now(), reconnected)
		reconnected = false
		if fine {
			retry = 0
		}
		var err error
		switch {
		case ended != "":
			err = fmt.Errorf("the server ended a pull request: %s", ended)
		case n > 0:
			body, _ := json.Marshal(pullRequest{Batch: n, Expires: eventPullExpiry, Heartbeat: eventPullHeartbeat})
			if err = p.nc.PublishRequest(p.next, p.inbox.Subject, body); err != nil {
				p.mu.Lock()
				p.asked = 0
				p.mu.Unlock()
			}
		}
		if err == nil {
			reconnected = p.await(status, tick.C, nil)
			continue
		}
		// NATS is down, or the consumer went away: the events wait in
		// the stream meanwhile.
		retry = min(max(2*retry, 50*time.Millisecond), 2*time.Second)
		p.s.r.ev.Logger.LogAttrs(p.ctx, slog.LevelWarn, "nats: taking events failed; trying again",
			slog.String("event", p.s.spec.Name), slog.String("subscriber", p.s.spec.Subscriber),
			slog.String("consumer", p.s.consumer), slog.Duration("in", retry), slog.Any("error", err))
		t := time.NewTimer(retry)
		reconnected = p.await(status, tick.C, t.C)
		t.Stop()
	}
	p.drain()
}

// await waits for something that may let fetch ask for more: without
// pause, the next tick, room, or a change of the connection; with pause,
// until it fires or the connection is back. It keeps the waiting events
// alive meanwhile, and reports whether the connection came back.
func (p *puller) await(status <-chan natsgo.Status, tick <-chan time.Time, pause <-chan time.Time) (reconnected bool) {
	for {
		select {
		case <-p.ctx.Done():
			return false
		case st := <-status:
			return st == natsgo.CONNECTED
		case now := <-tick:
			p.keepAlive(now)
			if pause == nil {
				return false
			}
		case <-p.room:
			if pause == nil {
				return false
			}
		case <-pause:
			return false
		}
	}
}

// drain ends p's inbox: it drains it while the server is there to say
// that everything it sent has arrived, and unsubscribes otherwise.
func (p *puller) drain() {
	drained := p.inbox.StatusChanged(natsgo.SubscriptionClosed)
	down := p.nc.StatusChanged(natsgo.DISCONNECTED, natsgo.RECONNECTING, natsgo.CLOSED)
	defer p.nc.RemoveStatusListener(down)
	if !p.nc.IsConnected() || p.inbox.Drain() != nil {
		_ = p.inbox.Unsubscribe()
		return
	}
	select {
	case <-drained:
	case <-down:
		_ = p.inbox.Unsubscribe()
	}
}
