package middleware

import (
	"cmp"
	"context"
	"reflect"
	"slices"
	"sync"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/internal/stats"
)

// Metrics is an interceptor that counts the calls and errors of each
// message type and keeps its latency distribution: exact minimum, maximum
// and mean, and percentiles from a fixed histogram (see
// [cqrs.MessageMetrics] for its error bound). Recording a dispatch
// allocates nothing and takes no lock, and no two processors write the
// same cache line on the way, so counts stay exact and cheap under heavy
// concurrency; a message type's metrics take a few kilobytes whatever the
// number of processors (see [cqrs.Recorder]).
//
// A bus made with [cqrs.WithMetrics] measures every dispatch whole; Metrics
// measures what runs inside it, wherever it is placed in a chain, and can
// serve several buses. Message types are told apart by kind and Go type,
// so two types that share a name keep separate metrics, and the one set up
// second is reported under its full import path.
//
// Metrics is safe for concurrent use. Make one with [NewMetrics]; the zero
// value, with nothing recorded, is ready to use too. A Metrics must not be
// copied after first use.
//
// Metrics keeps aggregates per message type, so it has no use for a
// message's identity ([cqrs.IdentityOf]): an ID belongs in a log record
// ([Logging]) or a span, never in a per-type series.
type Metrics struct {
	mu    sync.Mutex
	types map[meterKey]*cqrs.Recorder // written at registration only
	names map[string]meterKey         // a name in use to the type that has it
}

// meterKey is the identity of a message type, its kind and Go type, and of
// an event's subscriber.
type meterKey struct {
	kind       cqrs.Kind
	t          reflect.Type
	subscriber string // an event's subscriber: each has its own series
}

// NewMetrics returns a Metrics interceptor with nothing recorded.
func NewMetrics() *Metrics {
	return &Metrics{types: make(map[meterKey]*cqrs.Recorder)}
}

// Intercept sets up the counters of spec's message type.
func (m *Metrics) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	key := meterKey{spec.Kind, spec.MessageType, spec.Subscriber}
	m.mu.Lock()
	if m.types == nil {
		m.types = make(map[meterKey]*cqrs.Recorder)
	}
	r, ok := m.types[key]
	if !ok {
		// Two types that print alike (from two packages of the same
		// name, on two buses) are told apart by the later one's full
		// import path.
		name := spec.Kind.String() + " " + spec.Name + " " + spec.Subscriber
		if m.names == nil {
			m.names = make(map[string]meterKey)
		}
		if first, taken := m.names[name]; !taken {
			m.names[name] = key
		} else if first != key {
			spec.Name = cqrs.FullName(spec)
		}
		r = cqrs.NewRecorder(spec)
		m.types[key] = r
	}
	m.mu.Unlock()

	return func(ctx context.Context, c cqrs.Call) error {
		start := stats.Now()
		err := next(ctx, c)
		r.Record(stats.Now()-start, err != nil)
		return err
	}
}

// Snapshot returns the metrics of every message type set up so far, sorted
// by kind and name.
func (m *Metrics) Snapshot() []cqrs.MessageMetrics {
	m.mu.Lock()
	types := make([]*cqrs.Recorder, 0, len(m.types))
	for _, r := range m.types {
		types = append(types, r)
	}
	m.mu.Unlock()

	slices.SortFunc(types, func(a, b *cqrs.Recorder) int {
		sa, sb := a.Spec(), b.Spec()
		return cmp.Or(cmp.Compare(sa.Kind, sb.Kind), cmp.Compare(sa.Name, sb.Name),
			cmp.Compare(typeName(sa.MessageType), typeName(sb.MessageType)))
	})
	out := make([]cqrs.MessageMetrics, len(types))
	for i, r := range types {
		out[i] = r.Metrics()
	}
	return out
}

// typeName prints t with its package path, to order two types that share
// a name.
func typeName(t reflect.Type) string {
	if t == nil {
		return ""
	}
	return t.PkgPath() + "." + t.String()
}
