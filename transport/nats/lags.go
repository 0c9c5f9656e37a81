package nats

import (
	"strings"
	"sync"
	"time"
)

// lags keeps, for each caller, the least lag (see envelope.lag) of its
// recent requests, so that the serving side can tell a request's time on
// the way from the difference between its clock and the caller's: the
// difference is in every lag of one caller, the time on the way varies.
// A caller is known by the inbox its replies go to, the reply subject
// without its last token: one per connection with nats.go's requests,
// one per [Client] with this package's.
//
// The least lag is that of the last 2 to 4 seconds: a caller's clock set
// back while it sends shortens that caller's deadlines by as much, for 4
// seconds at most. At most 4096 callers are kept; past that, all are
// forgotten and learnt again. It is safe for concurrent use; the zero
// value is empty.
type lags struct {
	mu      sync.Mutex
	callers map[string]*leastLag
}

type leastLag struct {
	cur, prev time.Duration // the least lag of this window, and of the one before
	since     time.Time     // when this window began
}

const (
	lagWindow  = 2 * time.Second
	maxCallers = 4096
)

// least records lag, the lag of a request that arrived at now with reply
// subject reply, and returns the least lag of its caller's recent
// requests, this one's included; known is false for a caller's first
// request, which has none to compare with.
func (l *lags) least(reply string, lag time.Duration, now time.Time) (least time.Duration, known bool) {
	caller := reply[:max(strings.LastIndexByte(reply, '.'), 0)]
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.callers[caller]
	if !ok {
		if l.callers == nil || len(l.callers) >= maxCallers {
			l.callers = make(map[string]*leastLag)
		}
		l.callers[strings.Clone(caller)] = &leastLag{cur: lag, prev: lag, since: now}
		return lag, false
	}
	if now.Sub(c.since) >= lagWindow {
		c.prev, c.cur, c.since = c.cur, lag, now
	} else {
		c.cur = min(c.cur, lag)
	}
	return min(c.prev, c.cur), true
}
