package nats

import (
	"encoding/json"
	"sync"
)

// Codec turns messages and results into bytes and back. A Codec must be
// safe for concurrent use, and both sides of a message type must use the
// same one: which codec encoded a message does not travel with it.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default [Codec]: encoding/json.
type JSON struct{}

// Marshal calls [json.Marshal].
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal calls [json.Unmarshal].
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// encoder appends JSON encodings to a buffer it keeps: a pooled one
// encodes the [JSON] codec's messages and results without the copy
// json.Marshal makes of its result, and, on the calling side, right
// after the room left for the envelope, so that sealing copies nothing.
type encoder struct {
	buf []byte
	enc *json.Encoder
}

// Write appends p: enc writes each encoding in one call.
func (e *encoder) Write(p []byte) (int, error) {
	e.buf = append(e.buf, p...)
	return len(p), nil
}

// maxPooledEncoder is the largest buffer put back in the pool: one that
// grew for a large message is left to the garbage collector.
const maxPooledEncoder = 64 << 10

var encoders = sync.Pool{New: func() any {
	e := &encoder{buf: make([]byte, 0, 512)}
	e.enc = json.NewEncoder(e)
	return e
}}

// encodeJSON returns a pooled encoder whose buffer holds room bytes, then
// v's encoding as json.Marshal makes it: encoding/json's Encoder, which
// escapes HTML as Marshal does, ends it with a newline, which is cut.
// Give the encoder back with release.
func encodeJSON(v any, room int) (*encoder, []byte, error) {
	e := encoders.Get().(*encoder)
	e.buf = append(e.buf[:0], make([]byte, room)...)
	if err := e.enc.Encode(v); err != nil {
		e.release()
		return nil, nil, err
	}
	e.buf = e.buf[:len(e.buf)-1] // the newline Encode adds
	return e, e.buf[room:], nil
}

func (e *encoder) release() {
	if cap(e.buf) <= maxPooledEncoder {
		encoders.Put(e)
	}
}
