package nats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// The stream protocol. A caller subscribes to an inbox of its own, draws
// a key of 16 random bytes (crypto/rand) for the stream, and sends the
// request, with that inbox as its reply subject, to the stream subject of
// the query type (prefix.stream.query.identity):
//
//	'S', uvarint(window), uvarint(heartbeat in ns), key, envelope
//
// where the envelope is the request-reply one (see seal): the caller's
// deadline and the query's identity, then the encoded query. The serving
// side answers on the inbox with frames, each one NATS message whose
// first byte says what it is and whose next 16 bytes are the caller's
// key:
//
//	'A', key, uvarint(window), uvarint(heartbeat in ns), uvarint(len(id)), id
//	                                              accepted; Reply is the control subject
//	'I', key, uvarint(seq), encoded item          seq counts from 1
//	'E', key, uvarint(items sent), [uvarint(len(code)), code, error body]
//	'P', key                                      pong, to a ping that asked for one
//	'X', key                                      the serving side knows no such stream
//
// where id is the item type's identity, window the number of items the
// serving side may send ahead of the caller's acknowledgement, heartbeat
// the one it grants (at most the caller's), and the error body the
// request-reply error reply (see encodeReply). A refusal (bad request,
// unavailable) is an 'E' frame without an 'A' before it; one of a request
// whose key cannot be read carries 16 zero bytes.
//
// The key authenticates the frames: the caller takes a message on its
// inbox for the serving side's only if it carries the key, and drops any
// other. An inbox's name is no secret (NATS's monitoring lists
// subscriptions, and inboxes are predictable), so without the key anyone
// who may publish to it could end the stream early, as if whole, or slip
// an item in. Only the processes that receive the request, or read the
// inbox, see the key. NATS's own no-responders status cannot carry it
// and is taken as it is.
//
// The control subject is prefix.stream._control.<process>.<stream>, where
// <stream> is 128 random bits (crypto/rand) that the serving side tells
// only the caller's inbox, with the acceptance: only the caller, and
// whoever reads its inbox or the control subjects, can address the
// stream. The caller sends on it:
//
//	'K', uvarint(items read)                      acknowledges, granting credit
//	'P', uvarint(items read), flag, key           a ping, its Reply the inbox; flag 1 asks for a pong
//	'C'                                           cancel
//
// An acknowledgement of more items than were sent is refused, so credit
// never exceeds the window. A ping carries the key so that the answer
// 'X' to one for a stream the serving side no longer runs is
// authenticated too, and carries the inbox as its reply subject so that,
// once the serving process is gone, NATS answers it at once with a
// no-responders status.
const (
	streamMark = 'S'

	frameAccept = 'A'
	frameItem   = 'I'
	frameEnd    = 'E'
	framePong   = 'P'
	frameGone   = 'X'

	controlAck    = 'K'
	controlPing   = 'P'
	controlCancel = 'C'
)

// keySize is the size of a stream's key, and frameHead that of what
// starts every frame: its kind and the key.
const (
	keySize   = 16
	frameHead = 1 + keySize
)

// streamKey is the key a caller draws for one stream.
type streamKey [keySize]byte

// frame returns the start of a frame of kind for the stream of key, with
// room for more.
func frame(kind byte, key *streamKey, more int) []byte {
	return append(append(make([]byte, 0, frameHead+more), kind), key[:]...)
}

// streamInfix is what stream subjects have between the prefix and the
// kind, and controlToken the token after it that control subjects have:
// no kind is called "_control".
const (
	streamInfix  = "stream."
	controlToken = "_control"
)

// Bounds and defaults of StreamConfig.
const (
	defaultWindow     = 256
	maxWindow         = 1 << 16
	defaultHeartbeat  = time.Second
	minHeartbeat      = 10 * time.Millisecond
	maxHeartbeat      = time.Hour
	defaultMaxStreams = 1024
	// missedBeats is how many heartbeats a side waits for before it
	// takes the other for gone.
	missedBeats = 4
	// frameSlack is how many frames other than items a caller's inbox
	// holds besides its window: the acceptance, the end, pongs in flight.
	frameSlack = 16
)

// StreamConfig tunes streaming queries over NATS; give it to
// [ServeStreams] and [ForwardStream] with [WithStreamConfig]. The zero
// value gives the defaults; each field's normalisation is documented with
// it.
type StreamConfig struct {
	// Window is how many items the serving side may send before the
	// caller acknowledges them: the serving process's producer blocks
	// in yield once Window items are unacknowledged, so a slow caller
	// holds at most Window items in flight. The caller acknowledges
	// every Window/2 items it has read; an acknowledgement counts only
	// up to the items sent, and only the caller knows where to send one
	// (its stream's control subject is a secret it alone is told), so
	// the producer never runs more than Window items ahead of what the
	// caller has read. The caller asks for its window with the request;
	// the serving side grants the smaller of that and its own. The
	// default, also for Window <= 0, is 256; a Window above 65536 is
	// 65536.
	Window int
	// Heartbeat is how often a calling process tells the serving one it
	// is still there while a stream runs (an acknowledgement or a ping),
	// and, while it waits for an item, asks for a sign of life. Each
	// side takes the other for gone after 4 heartbeats without a word:
	// the serving side cancels the producer's context; the caller's
	// stream ends with an error wrapping [ErrTransport]. The caller asks
	// for its heartbeat with the request; the serving side grants the
	// smaller of that and its own, and both sides use the one granted.
	// So the serving side's Heartbeat bounds how long a caller that
	// vanished holds one of its streams: at most 4 of them. The default,
	// also for Heartbeat <= 0, is 1s; it is at least 10ms and at most
	// an hour.
	Heartbeat time.Duration
	// MaxStreams bounds the streams one [StreamServer] runs at once, all
	// types together; a request beyond it is refused with
	// [ErrUnavailable]. The default, also for MaxStreams <= 0, is 1024.
	// Only [ServeStreams] reads it.
	MaxStreams int
}

// normalized returns c with its defaults and bounds applied.
func (c StreamConfig) normalized() StreamConfig {
	if c.Window <= 0 {
		c.Window = defaultWindow
	}
	c.Window = min(c.Window, maxWindow)
	if c.Heartbeat <= 0 {
		c.Heartbeat = defaultHeartbeat
	}
	c.Heartbeat = min(max(c.Heartbeat, minHeartbeat), maxHeartbeat)
	if c.MaxStreams <= 0 {
		c.MaxStreams = defaultMaxStreams
	}
	return c
}

// ackEvery returns after how many read items a caller with this window
// acknowledges.
func ackEvery(window uint64) uint64 { return max(window/2, 1) }

// streamOption is the Option WithStreamConfig returns. It changes nothing
// that the request-reply side reads: ServeStreams and ForwardStream look
// for it among their options.
type streamOption StreamConfig

func (streamOption) apply(*config) {}

// WithStreamConfig sets how streaming queries flow: see [StreamConfig].
// Only [ServeStreams] and [ForwardStream] read it: given to [NewClient]
// or [Serve], it changes nothing. Given more than once, the last one
// counts.
func WithStreamConfig(c StreamConfig) Option { return streamOption(c) }

// streamConfigOf returns the stream settings among opts, normalised.
func streamConfigOf(opts []Option) StreamConfig {
	var c StreamConfig
	for _, o := range opts {
		if so, ok := o.(streamOption); ok {
			c = StreamConfig(so)
		}
	}
	return c.normalized()
}

// streamRequest is an opened stream request.
type streamRequest struct {
	window    uint64
	heartbeat time.Duration
	key       streamKey
	env       envelope
}

var errStreamRequest = errors.New("malformed stream request")

// sealStream appends a stream request to dst.
func sealStream(dst []byte, window int, heartbeat time.Duration, key *streamKey, timeout time.Duration, deadline time.Time, id string, payload []byte) []byte {
	dst = append(dst, streamMark)
	dst = binary.AppendUvarint(dst, uint64(window))
	dst = binary.AppendUvarint(dst, uint64(heartbeat))
	dst = append(dst, key[:]...)
	return seal(dst, timeout, deadline, id, payload)
}

// openStreamHead reads what comes before a stream request's envelope:
// its window and heartbeat, brought within bounds, and the caller's key;
// and returns the rest.
func openStreamHead(data []byte) (streamRequest, []byte, error) {
	if len(data) == 0 || data[0] != streamMark {
		return streamRequest{}, nil, fmt.Errorf("%w: it does not start a stream", errStreamRequest)
	}
	window, rest, ok := readUvarint(data[1:])
	if !ok {
		return streamRequest{}, nil, errStreamRequest
	}
	hb, rest, ok := readUvarint(rest)
	if !ok || len(rest) < keySize {
		return streamRequest{}, nil, errStreamRequest
	}
	r := streamRequest{window: min(max(window, 1), maxWindow), heartbeat: maxHeartbeat, key: streamKey(rest[:keySize])}
	if hb < uint64(maxHeartbeat) {
		r.heartbeat = max(time.Duration(hb), minHeartbeat)
	}
	return r, rest[keySize:], nil
}

// openStreamRequest reads a stream request. Its window and heartbeat are
// brought within bounds; its envelope must carry the query's identity.
// When the request is malformed after its key, the key is returned with
// the error, for the refusal.
func openStreamRequest(data []byte) (streamRequest, error) {
	r, rest, err := openStreamHead(data)
	if err != nil {
		return r, err
	}
	if len(rest) == 0 || rest[0] != envelopeMark {
		return streamRequest{key: r.key}, fmt.Errorf("%w: no envelope", errStreamRequest)
	}
	if r.env, err = open(rest); err != nil {
		return streamRequest{key: r.key}, err
	}
	return r, nil
}

// readUvarint reads the uvarint that starts data, and returns it with the
// bytes after it.
func readUvarint(data []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(data)
	if n <= 0 {
		return 0, nil, false
	}
	return v, data[n:], true
}

// uvarintFrame reads the uvarint that follows a control message's first
// byte, and returns it with the bytes after it.
func uvarintFrame(data []byte) (uint64, []byte, bool) {
	if len(data) < 2 {
		return 0, nil, false
	}
	return readUvarint(data[1:])
}

// endFrame returns the end frame, for the stream of key, of a stream that
// sent items items and ended with err (nil for none).
func endFrame(table []ErrorCode, spec cqrs.Spec, key *streamKey, items uint64, err error) []byte {
	b := binary.AppendUvarint(frame(frameEnd, key, binary.MaxVarintLen64), items)
	if err == nil {
		return b
	}
	code, _, body := encodeReply(table, spec, err)
	b = binary.AppendUvarint(b, uint64(len(code)))
	b = append(b, code...)
	return append(b, body...)
}

// readEnd reads an end frame, whose key the caller has checked: the items
// sent, and the error's code and body, or "" when the stream ended
// without one.
func readEnd(data []byte) (items uint64, code string, body []byte, ok bool) {
	if len(data) < frameHead || data[0] != frameEnd {
		return 0, "", nil, false
	}
	items, rest, ok := readUvarint(data[frameHead:])
	if !ok {
		return 0, "", nil, false
	}
	if len(rest) == 0 {
		return items, "", nil, true
	}
	size, n := binary.Uvarint(rest)
	if n <= 0 || size == 0 || size > 64 || size > uint64(len(rest)-n) {
		return 0, "", nil, false
	}
	rest = rest[n:]
	return items, string(rest[:size]), rest[size:], true
}

// streamAddress returns the stream subject of spec under cfg, and the
// identities of its query and item types, or why they cannot travel.
func streamAddress(cfg *config, spec cqrs.Spec) (subject, id, item string, err error) {
	subject, err = subjectOf(cfg.prefix, streamInfix, spec)
	if err != nil {
		return "", "", "", err
	}
	if err := checkFields(cfg.codec, spec); err != nil {
		return "", "", "", err
	}
	id, _ = identity(spec.MessageType) // subjectOf checked it
	item, err = identity(spec.ResultType)
	if err != nil {
		return "", "", "", fmt.Errorf("%w: %s: its items: %w", ErrInvalidSubject, spec, err)
	}
	return subject, id, item, nil
}
