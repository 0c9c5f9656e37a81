package nats

import (
	"encoding/binary"
	"errors"
	"time"
)

// The envelope: what this package's client sends is
//
//	0x00, uvarint(timeout in ns, 0 for none), encoded message
//
// so that the caller's remaining time travels without a NATS header: a
// header makes NATS parse a MIME block at both ends, which costs about a
// seventh of a small round trip. A request that does not start with 0x00,
// such as plain JSON from the NATS command line, is taken as the encoded
// message alone, with no deadline.

const envelopeMark = 0x00

// seal returns the envelope of payload with the given timeout.
func seal(timeout time.Duration, payload []byte) []byte {
	out := make([]byte, 0, 1+binary.MaxVarintLen64+len(payload))
	out = append(out, envelopeMark)
	out = binary.AppendUvarint(out, uint64(max(timeout, 0)))
	return append(out, payload...)
}

var errEnvelope = errors.New("malformed envelope")

// open returns the timeout (zero for none) and the payload of data.
func open(data []byte) (time.Duration, []byte, error) {
	if len(data) == 0 || data[0] != envelopeMark {
		return 0, data, nil
	}
	ns, n := binary.Uvarint(data[1:])
	if n <= 0 {
		return 0, nil, errEnvelope
	}
	return time.Duration(ns), data[1+n:], nil
}
