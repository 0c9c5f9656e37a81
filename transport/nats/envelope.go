package nats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// The envelope: what this package's client sends is
//
//	0x01, uvarint(timeout in ns), uvarint(len(id)), id, encoded message
//
// where the timeout is the caller's remaining time (0 for none, which
// the client never sends) and id the message type's identity, as its
// subject encodes it ([Subject]), so that the serving side refuses a
// request meant for another type instead of decoding it into the wrong
// one. The remaining time travels without a NATS header: a header makes
// NATS parse a MIME block at both ends, which costs about a seventh of a
// small round trip.
//
// A request that starts with neither 0x01 nor 0x00, such as plain JSON
// from the NATS command line, is taken as the encoded message alone, with
// no deadline and no identity to check: its subject is all it has. 0x00
// began the envelope of earlier versions, which had no identity; such a
// request is refused.
const (
	envelopeMark    = 0x01
	oldEnvelopeMark = 0x00
)

// seal appends the envelope of payload to dst.
func seal(dst []byte, timeout time.Duration, id string, payload []byte) []byte {
	dst = append(dst, envelopeMark)
	dst = binary.AppendUvarint(dst, uint64(max(timeout, 0)))
	dst = binary.AppendUvarint(dst, uint64(len(id)))
	dst = append(dst, id...)
	return append(dst, payload...)
}

// sealedSize returns an upper bound of the envelope's size.
func sealedSize(id string, payload []byte) int {
	return 1 + 2*binary.MaxVarintLen64 + len(id) + len(payload)
}

var (
	errEnvelope     = errors.New("malformed envelope")
	errWrongMessage = errors.New("the request is for another message type")
)

// envelope is an opened request.
type envelope struct {
	timeout time.Duration // 0 for none
	id      []byte        // nil for a plain request
	payload []byte
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
	size, n := binary.Uvarint(rest)
	if n <= 0 || size > uint64(len(rest)-n) {
		return envelope{}, errEnvelope
	}
	rest = rest[n:]
	e := envelope{id: rest[:size:size], payload: rest[size:]}
	if ns < 1<<63 {
		e.timeout = time.Duration(ns)
	}
	return e, nil
}
