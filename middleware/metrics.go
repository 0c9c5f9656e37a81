package middleware

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/internal/stats"
)

// Metrics is an interceptor that counts the calls and errors of each
// message type and keeps its latency distribution: exact minimum, maximum
// and mean, and percentiles from a fixed histogram (see
// [cqrs.MessageMetrics]). Recording a dispatch allocates nothing, takes no
// lock, and spreads its counters over per-processor shards, so counts stay
// exact and cheap under heavy concurrency.
//
// A bus made with [cqrs.WithMetrics] measures every dispatch whole; Metrics
// measures what runs inside it, wherever it is placed in a chain, and can
// serve several buses.
//
// Metrics is safe for concurrent use. Make one with [NewMetrics].
type Metrics struct {
	mu    sync.Mutex
	types map[string]*metered // by Spec.String(); written at registration only
}

type metered struct {
	spec  cqrs.Spec
	stats *stats.Stats
}

// NewMetrics returns a Metrics interceptor with nothing recorded.
func NewMetrics() *Metrics {
	return &Metrics{types: make(map[string]*metered)}
}

// Intercept sets up the counters of spec's message type.
func (m *Metrics) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	m.mu.Lock()
	t, ok := m.types[spec.String()]
	if !ok {
		t = &metered{spec: spec, stats: stats.New()}
		m.types[spec.String()] = t
	}
	m.mu.Unlock()

	return func(ctx context.Context, c cqrs.Call) error {
		start := stats.Now()
		err := next(ctx, c)
		t.stats.Record(stats.Now()-start, err != nil)
		return err
	}
}

// Snapshot returns the metrics of every message type set up so far, sorted
// by kind and name.
func (m *Metrics) Snapshot() []cqrs.MessageMetrics {
	m.mu.Lock()
	types := make([]*metered, 0, len(m.types))
	for _, t := range m.types {
		types = append(types, t)
	}
	m.mu.Unlock()

	slices.SortFunc(types, func(a, b *metered) int { return strings.Compare(a.spec.String(), b.spec.String()) })
	out := make([]cqrs.MessageMetrics, len(types))
	for i, t := range types {
		s := t.stats.Snapshot()
		out[i] = cqrs.MessageMetrics{
			Kind: t.spec.Kind, Name: t.spec.Name,
			Calls: s.Calls, Errors: s.Errors,
			Min: s.Min, Max: s.Max, Mean: s.Mean,
			P50: s.P50, P95: s.P95, P99: s.P99,
		}
	}
	return out
}
