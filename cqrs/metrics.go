package cqrs

import (
	"time"

	"github.com/typedcqrs/dispatch/internal/stats"
)

// MessageMetrics is a snapshot of the metrics of one message type, taken by
// a bus's Metrics method or a [Recorder]. Latencies are measured around the
// whole dispatch, middleware included.
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
	// Items counts the items a streaming query yielded, over all its
	// streams (each stream counts once in Calls); it is zero for other
	// messages.
	Items uint64

	// Min, Max and Mean are exact.
	Min, Max, Mean time.Duration
	// P50, P95 and P99 are percentiles read from a fixed log-linear
	// histogram: below 8ns a bucket per nanosecond, above it each power of
	// two split into 8 buckets, so a bucket is at most 1/8 of its lower
	// bound wide (up to about 18 minutes; longer durations share the last
	// bucket). A percentile is interpolated inside its bucket, so it is
	// off by less than 12.5% of the true value, and by about 6% or less
	// for latencies spread across the bucket; it is always between Min
	// and Max.
	P50, P95, P99 time.Duration
}

// Recorder keeps the metrics of one message type: what a bus made with
// [WithMetrics] keeps for each type, for code outside the bus that
// measures dispatches itself, such as an interceptor or a transport.
// Recording allocates nothing and takes no lock; its memory is a few
// kilobytes whatever the number of processors.
//
// A Recorder is safe for concurrent use. Make one with [NewRecorder]; the
// zero value records nothing and reports no calls.
type Recorder struct {
	spec  Spec
	stats *stats.Stats
}

// NewRecorder returns a Recorder with nothing recorded for the message
// type spec describes.
func NewRecorder(spec Spec) *Recorder {
	return &Recorder{spec: spec, stats: stats.New()}
}

// Spec returns the Spec the Recorder was made for.
func (r *Recorder) Spec() Spec { return r.spec }

// Record adds one dispatch that took d, and that failed when failed is
// true. A negative d counts as zero.
func (r *Recorder) Record(d time.Duration, failed bool) {
	if r.stats != nil {
		r.stats.Record(d, failed)
	}
}

// Metrics returns a snapshot of what was recorded. Dispatches recorded
// meanwhile may be counted in some fields and not yet in others.
func (r *Recorder) Metrics() MessageMetrics {
	if r.stats == nil {
		return MessageMetrics{Kind: r.spec.Kind, Name: r.spec.Name}
	}
	return metricsOf(&r.spec, r.stats)
}

// metricsOf reads the metrics of one message type. It is the one place a
// stats.Snapshot becomes a MessageMetrics.
func metricsOf(spec *Spec, s *stats.Stats) MessageMetrics {
	snap := s.Snapshot()
	return MessageMetrics{
		Kind: spec.Kind, Name: spec.Name, Subscriber: spec.Subscriber,
		Calls: snap.Calls, Errors: snap.Errors,
		Min: snap.Min, Max: snap.Max, Mean: snap.Mean,
		P50: snap.P50, P95: snap.P95, P99: snap.P99,
	}
}
