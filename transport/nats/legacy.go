package nats

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/typedcqrs/dispatch/cqrs"
)

// The wire of v0.1.0, this module's first release, which this version
// still speaks during a rolling upgrade (see [WithLegacyWire]). v0.1.0
// differs from this version in three ways:
//
//   - its subject is prefix.kind.name (legacySubject): the type's name,
//     not its full path, so that types of two packages with the same
//     short name share one;
//   - its request is 0x00, uvarint(the caller's remaining time in ns, 0
//     for none), encoded message: no type identity, no wall-clock
//     deadline;
//   - its error reply carries the error's text in the Nats-Service-Error
//     header alone (a v0.1.0 caller reads no other), and a validation
//     failure's fields as the body, a JSON array.
//
// A server of v0.1.0 takes a request that does not start with 0x00 for
// the encoded message alone: given this version's envelope, it fails to
// decode it and answers bad_request with no body, its error's text
// starting with its ErrBadRequest's, "cqrs/nats: undecodable request".
//
// This version's client, falling back to v0.1.0's envelope, adds the
// type's identity in the headerMessageType header: a v0.1.0 server
// ignores it, and a server of this version refuses the request when it
// names another type, as it does with the identity in this version's
// envelope.
const (
	headerMessageType = "Cqrs-Message-Type"
	legacyBadRequest  = "cqrs/nats: undecodable request"
)

// legacySubject returns the subject v0.1.0 gave spec's message type, and
// false when that is not a valid subject (a name with an empty token,
// which v0.1.0 could not serve either) or is over 1 KiB, the bound of
// this version's subjects ([Subject]). The name is spec's,
// unless a bus named the type by its full path because another type on
// it prints alike (see [cqrs.Register]): v0.1.0 named it as it prints.
func legacySubject(prefix string, spec cqrs.Spec) (string, bool) {
	name := spec.Name
	if id, err := identity(spec.MessageType); err == nil && name == id && name != spec.MessageType.String() {
		name = spec.MessageType.String()
	}
	subject := prefix + "." + spec.Kind.String() + "." + sanitize(name, true)
	if len(subject) > maxSubject {
		return "", false
	}
	for token := range strings.SplitSeq(subject, ".") {
		if token == "" {
			return "", false
		}
	}
	return subject, true
}

// sealLegacy appends v0.1.0's envelope of payload to dst.
func sealLegacy(dst []byte, timeout time.Duration, payload []byte) []byte {
	dst = append(dst, oldEnvelopeMark)
	dst = binary.AppendUvarint(dst, uint64(max(timeout, 0)))
	return append(dst, payload...)
}

// openRequest reads a request as [Serve] receives it: as open does, and,
// when legacy, v0.1.0's envelope too, whose type identity, if any, is
// the one in m's headerMessageType header.
func openRequest(m *natsgo.Msg, legacy bool) (envelope, error) {
	data := m.Data
	if !legacy || len(data) == 0 || data[0] != oldEnvelopeMark {
		return open(data)
	}
	ns, n := binary.Uvarint(data[1:])
	if n <= 0 {
		return envelope{}, errEnvelope
	}
	e := envelope{payload: data[1+n:], legacy: true}
	if ns < 1<<63 {
		e.timeout = time.Duration(ns)
	}
	if id := m.Header.Get(headerMessageType); id != "" {
		e.id = []byte(id)
	}
	return e, nil
}

// fromLegacyCaller reports whether e is the request of a v0.1.0 caller,
// which reads the replies of v0.1.0 only: one in v0.1.0's envelope
// without the type that this version's client adds.
func (e envelope) fromLegacyCaller() bool { return e.legacy && e.id == nil }

// legacyErrorReply returns the header text and the body of the error
// reply er for a v0.1.0 caller: the message on one line, cut to 1 KiB,
// and a validation failure's fields as a JSON array.
func legacyErrorReply(er errorReply) (header string, body []byte) {
	if len(er.Fields) > 0 {
		body, _ = json.Marshal(er.Fields) // strings and raw JSON: it cannot fail
	}
	return oneLine(er.Message, maxErrorMessage), body
}

// refusedByLegacyServer reports whether reply is a v0.1.0 server's
// refusal of this version's envelope: bad_request, with no body (this
// version's replies always have one) and v0.1.0's error text. Such a
// request did not run.
func refusedByLegacyServer(reply *natsgo.Msg) bool {
	return len(reply.Data) == 0 && reply.Header.Get(headerErrorCode) == "bad_request" &&
		strings.HasPrefix(reply.Header.Get(headerError), legacyBadRequest)
}
