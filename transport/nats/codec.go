package nats

import (
	"encoding/json"
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
