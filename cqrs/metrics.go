package cqrs

import (
	"time"

	"github.com/typedcqrs/dispatch/internal/stats"
)

// MessageMetrics is a snapshot of the metrics of one message type, taken by
// a bus's Metrics method. Latencies are measured around the whole dispatch,
// middleware included.
type MessageMetrics struct {
	Kind Kind
	Name string
	// Subscriber names the event subscriber the metrics are of; it is
	// empty for commands and queries.
	Subscriber string

	// Calls counts dispatches of the message, failed ones included.
	Calls uint64
	// Errors counts the dispatches that returned an error.
	Errors uint64

	// Min, Max and Mean are exact.
	Min, Max, Mean time.Duration
	// P50, P95 and P99 are percentiles read from a fixed histogram whose
	// buckets are 1/8 of a power of two wide, so each is within about 6% of
	// the true value (and always between Min and Max).
	P50, P95, P99 time.Duration
}

// metricsOf reads the metrics of one message type.
func metricsOf(spec *Spec, s *stats.Stats) MessageMetrics {
	snap := s.Snapshot()
	return MessageMetrics{
		Kind: spec.Kind, Name: spec.Name, Subscriber: spec.Subscriber,
		Calls: snap.Calls, Errors: snap.Errors,
		Min: snap.Min, Max: snap.Max, Mean: snap.Mean,
		P50: snap.P50, P95: snap.P95, P99: snap.P99,
	}
}
