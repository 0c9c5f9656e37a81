package nats

import (
	"encoding/json"
)

// Codec turns messages and results into bytes and back. A Codec must be
// safe for concurrent use.
type Codec interface {
	// ContentType names the encoding, such as "application/json". Both
	// sides must use the same codec: it does not travel with messages.
	ContentType() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default [Codec]: encoding/json.
type JSON struct{}

// ContentType returns "application/json".
func (JSON) ContentType() string { return "application/json" }

// Marshal calls [json.Marshal].
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal calls [json.Unmarshal].
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
