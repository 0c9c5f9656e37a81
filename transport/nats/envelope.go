package nats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// The envelope: what this package's client sends is
//
//	0x01, uvarint(timeout in ns), uvarint(deadline in Unix ns),
//	uvarint(len(id)), id, encoded message
//
// where the timeout is the caller's remaining time (0 for none, which
// the client never sends), the deadline the same instant on the caller's
// wall clock (0 for none), and id the message type's identity, as its
// subject encodes it ([Subject]), so that the serving side refuses a
// request meant for another type instead of decoding it into the wrong
// one.
//
// The serving side measures the remaining time from the request's
// arrival, as gRPC does with grpc-timeout, so that the two clocks need
// not agree. That misses the time the request spent on its way, which
// under load is milliseconds; the wall-clock deadline corrects for it
// when the clocks agree, by at most a quarter of the remaining time, so
// that a serving clock that runs ahead cannot shorten a deadline by more
// (see deadlineOf); and, beyond that quarter, by the time beyond the
// least that the same caller's recent requests took (see deadlineAfter
// and lags). The remaining time travels without a NATS header: a header makes
// NATS parse a MIME block at both ends, which costs about a seventh of a
// small round trip.
//
// A request that starts with neither 0x01 nor 0x00, such as plain JSON
// from the NATS command line, is taken as the encoded message alone, with
// no deadline and no identity to check: its subject is all it has. 0x00
// begins the envelope of v0.1.0, which had no identity: [Serve] reads it
// while it speaks v0.1.0's wire ([WithLegacyWire], see legacy.go), and
// refuses it otherwise; open always refuses it.
const (
	envelopeMark    = 0x01
	oldEnvelopeMark = 0x00
)

// seal appends the envelope of payload to dst.
func seal(dst []byte, timeout time.Duration, deadline time.Time, id string, payload []byte) []byte {
	var head [envelopeHead]byte
	dst = append(dst, sealHead(head[:0], timeout, deadline, len(id))...)
	dst = append(dst, id...)
	return append(dst, payload...)
}

// envelopeHead bounds the envelope's bytes before the id.
const envelopeHead = 1 + 3*binary.MaxVarintLen64

// sealHead appends the envelope's bytes before the id to dst.
func sealHead(dst []byte, timeout time.Duration, deadline time.Time, idLen int) []byte {
	dst = append(dst, envelopeMark)
	dst = binary.AppendUvarint(dst, uint64(max(timeout, 0)))
	dst = binary.AppendUvarint(dst, uint64(max(deadline.UnixNano(), 0)))
	return binary.AppendUvarint(dst, uint64(idLen))
}

// sealInPlace writes the envelope into the room bytes of buf before the
// payload, buf[room:], where room is sealedSize(id, nil), and returns the
// envelope with its payload: seal's bytes, without a copy of the payload.
func sealInPlace(buf []byte, room int, timeout time.Duration, deadline time.Time, id string) []byte {
	var head [envelopeHead]byte
	h := sealHead(head[:0], timeout, deadline, len(id))
	start := room - len(id) - len(h)
	copy(buf[start:], h)
	copy(buf[start+len(h):], id)
	return buf[start:]
}

// sealedSize returns an upper bound of the envelope's size.
func sealedSize(id string, payload []byte) int {
	return envelopeHead + len(id) + len(payload)
}

var (
	errEnvelope     = errors.New("malformed envelope")
	errWrongMessage = errors.New("the request is for another message type")
)

// envelope is an opened request.
type envelope struct {
	timeout time.Duration // 0 for none
	wall    int64         // the deadline in Unix ns on the caller's clock, 0 for none
	id      []byte        // nil for a plain request
	payload []byte
	legacy  bool // in v0.1.0's envelope: see openRequest
}

// open reads data. A timeout of 2^63 ns or more, which no caller means,
// counts as none.
func open(data []byte) (envelope, error) {
	if len(data) == 0 || data[0] != envelopeMark && data[0] != oldEnvelopeMark {
		return envelope{payload: data}, nil
	}
	if data[0] == oldEnvelopeMark {
		return envelope{}, fmt.Errorf("%w: from an earlier version of this package", errEnvelope)
	}
	rest := data[1:]
	ns, n := binary.Uvarint(rest)
	if n <= 0 {
		return envelope{}, errEnvelope
	}
	rest = rest[n:]
	wall, n := binary.Uvarint(rest)
	if n <= 0 {
		return envelope{}, errEnvelope
	}
	rest = rest[n:]
	size, n := binary.Uvarint(rest)
	if n <= 0 || size > uint64(len(rest)-n) {
		return envelope{}, errEnvelope
	}
	rest = rest[n:]
	e := envelope{id: rest[:size:size], payload: rest[size:]}
	if ns < 1<<63 {
		e.timeout = time.Duration(ns)
	}
	if wall < 1<<63 {
		e.wall = int64(wall)
	}
	return e, nil
}

// deadlineOf returns the deadline of a request that arrived at now: now
// plus the caller's remaining time, capped at limit, and moved earlier by
// the time the request spent on its way when the caller's wall clock
// tells it, by at most a quarter of the remaining time.
func (e envelope) deadlineOf(now time.Time, limit time.Duration) time.Time {
	return e.deadlineAfter(now, limit, 0, false)
}

// lag returns how much less time the caller's wall-clock deadline leaves
// the request, on this clock at now, than the remaining time it carries:
// its time on the way, plus how far this clock runs ahead of the
// caller's. ok is false for a request that carries no wall-clock
// deadline.
func (e envelope) lag(now time.Time) (lag time.Duration, ok bool) {
	if e.timeout <= 0 || e.wall <= 0 {
		return 0, false
	}
	return e.timeout - time.Unix(0, e.wall).Sub(now), true
}

// deadlineAfter is deadlineOf for a request whose caller's recent
// requests had least as their least lag (known says whether it has had
// any). The clocks' difference is the same in every lag of one caller,
// so a lag beyond the least is time on the way, and comes off the
// remaining time whole, beyond the quarter deadlineOf takes off: on a
// loaded machine, a request can spend more than a quarter of its time on
// the way, and a handler started then starts after its caller gave up.
func (e envelope) deadlineAfter(now time.Time, limit, least time.Duration, known bool) time.Time {
	if e.timeout <= 0 || e.timeout >= limit {
		return now.Add(limit)
	}
	remaining := e.timeout
	if lag, ok := e.lag(now); ok {
		cut := min(max(lag, 0), e.timeout/4)
		if known {
			cut = max(cut, lag-least)
		}
		remaining -= cut
	}
	return now.Add(remaining)
}
