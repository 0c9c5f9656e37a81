package nats

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// replies receives the replies to one [Client]'s requests, on one
// wildcard subscription under the connection's inbox prefix, as nats.go's
// own request does, but without what nats.go's costs each request: a
// context.WithDeadline for the client's timeout (its timer, its Done
// channel, and its registration in the caller's context, which 8 callers
// of one context contend for), a channel, and a map keyed by string under
// the connection's lock. A request waits on a pooled waiter (a channel
// and a timer, reused) in a map sharded by its number.
//
// It is safe for concurrent use; the zero value is ready, and subscribes
// on the first request.
type replies struct {
	mu     sync.Mutex // guards sub and prefix while they are set up
	ready  atomic.Bool
	sub    *natsgo.Subscription
	prefix string        // the reply subjects' prefix: an inbox and "."
	closed chan struct{} // closed when the subscription ends: the connection closed

	next   atomic.Uint64
	shards [replyShards]replyShard
}

const replyShards = 16

type replyShard struct {
	mu      sync.Mutex
	waiting map[uint64]*waiter
	_       [40]byte // keeps shards on cache lines of their own
}

// waiter is one request's wait for its reply.
type waiter struct {
	reply chan *natsgo.Msg // buffered: the reply is sent under its shard's lock, never blocking
	timer *time.Timer
}

var waiters = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &waiter{reply: make(chan *natsgo.Msg, 1), timer: t}
}}

// subscribe makes the subscription, once it succeeds.
func (r *replies) subscribe(nc *natsgo.Conn) error {
	if r.ready.Load() {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub != nil {
		return nil
	}
	prefix := nc.NewInbox() + "."
	closed := make(chan struct{})
	r.prefix, r.closed = prefix, closed
	sub, err := nc.Subscribe(prefix+"*", r.deliver)
	if err != nil {
		return err
	}
	// An async subscription's handler runs when it ends, which it does
	// when the connection closes: the requests waiting fail at once, as
	// nats.go's own do.
	sub.SetClosedHandler(func(string) { close(closed) })
	r.sub = sub
	r.ready.Store(true)
	return nil
}

func (r *replies) shard(id uint64) *replyShard { return &r.shards[id%replyShards] }

// deliver hands a reply to the request waiting for it, if any still is.
func (r *replies) deliver(m *natsgo.Msg) {
	if len(m.Subject) <= len(r.prefix) {
		return
	}
	id, err := strconv.ParseUint(m.Subject[len(r.prefix):], 36, 64)
	if err != nil {
		return
	}
	sh := r.shard(id)
	sh.mu.Lock()
	if w, ok := sh.waiting[id]; ok {
		delete(sh.waiting, id)
		w.reply <- m // buffered and empty: the only reply it gets
	}
	sh.mu.Unlock()
}

// forget takes w, which waited for request id, out of the map and empties
// its channel, so that it can be reused.
func (r *replies) forget(id uint64, w *waiter) {
	sh := r.shard(id)
	sh.mu.Lock()
	if _, ok := sh.waiting[id]; ok {
		delete(sh.waiting, id)
	} else {
		select {
		case <-w.reply: // delivered as it gave up
		default:
		}
	}
	sh.mu.Unlock()
}

// request sends req and waits for its reply until ctx ends or, when
// timed, until deadline. It returns nats.go's errors (ErrNoResponders,
// ErrConnectionClosed, a publish's), ctx's error, or
// context.DeadlineExceeded at the deadline.
func (r *replies) request(ctx context.Context, nc *natsgo.Conn, req *natsgo.Msg, deadline time.Time, timed bool) (*natsgo.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := r.subscribe(nc); err != nil {
		return nil, err
	}
	id := r.next.Add(1)
	var buf [128]byte
	req.Reply = string(strconv.AppendUint(append(buf[:0], r.prefix...), id, 36))
	w := waiters.Get().(*waiter)
	sh := r.shard(id)
	sh.mu.Lock()
	if sh.waiting == nil {
		sh.waiting = make(map[uint64]*waiter)
	}
	sh.waiting[id] = w
	sh.mu.Unlock()
	if err := nc.PublishMsg(req); err != nil {
		r.forget(id, w)
		waiters.Put(w)
		return nil, err
	}
	var expired <-chan time.Time
	if timed {
		w.timer.Reset(time.Until(deadline))
		expired = w.timer.C
	}
	var m *natsgo.Msg
	var err error
	select {
	case m = <-w.reply:
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = context.DeadlineExceeded
	case <-r.closed:
		err = natsgo.ErrConnectionClosed
	}
	if timed {
		w.timer.Stop() // since Go 1.23, no stale tick can follow
	}
	if err != nil {
		r.forget(id, w)
	}
	waiters.Put(w)
	if err == nil && noResponders(m) {
		return nil, natsgo.ErrNoResponders
	}
	return m, err
}
