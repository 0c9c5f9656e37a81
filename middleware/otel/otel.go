// Package otel traces and measures dispatches with OpenTelemetry. It is a
// module of its own, so that users of the core never download the
// OpenTelemetry SDK. Import it under another name, since the OpenTelemetry
// API is package otel too:
//
//	import cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
//
//	ic, err := cqrsotel.New() // the global tracer and meter providers
//	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(ic))
//
// Each dispatch gets a span of kind INTERNAL named "command <Name>" or
// "query <Name>", with the attributes cqrs.kind and cqrs.message.type, and,
// on failure, error.type and status Error with the error recorded. The span
// is in the context the handler receives, so it is the parent of whatever
// the handler starts. A message that has an identity ([cqrs.IdentityOf])
// adds it to its span: messaging.message.id and
// messaging.message.conversation_id (the correlation ID), as the
// OpenTelemetry semantic conventions name them, and
// cqrs.message.causation_id when it has a cause. Two instruments count
// dispatches, with low-cardinality attributes only (kind, message type,
// outcome or error type):
//
//   - cqrs.dispatch.duration, a histogram in seconds;
//   - cqrs.dispatch.failures, a counter of failed dispatches.
//
// A message's IDs are never metric attributes: one series per message
// would grow without bound. A measurement is recorded with the dispatch
// span in its context, so an SDK that keeps exemplars (the Go SDK does by
// default, for sampled spans) links each one to the span's trace and span
// ID, and through the span to the message's ID.
//
// [ObserveBreaker] and [ObserveCache] add the state of circuit breakers and
// the hits and misses of query caches. With the OpenTelemetry Prometheus
// exporter these become cqrs_dispatch_duration_seconds,
// cqrs_dispatch_failures_total, cqrs_breaker_state, cqrs_cache_hits_total
// and cqrs_cache_misses_total: see docs/observability.md.
package otel

import (
	"context"
	"slices"
	"sync"
	"time"

	otelapi "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/typedcqrs/dispatch/cqrs"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/typedcqrs/dispatch/middleware/otel"

// Attribute keys.
const (
	KeyKind        = attribute.Key("cqrs.kind")
	KeyMessageType = attribute.Key("cqrs.message.type")
	KeyOutcome     = attribute.Key("cqrs.outcome")
	KeyErrorType   = attribute.Key("error.type")
	// KeySubscriber names an event's subscriber ([cqrs.Spec.Subscriber]):
	// each subscriber has spans and series of its own.
	KeySubscriber = attribute.Key("cqrs.subscriber")

	// KeyMessageID is the span attribute of a message's ID
	// ([cqrs.Identity].ID): messaging.message.id of the OpenTelemetry
	// semantic conventions. It is never a metric attribute.
	KeyMessageID = semconv.MessagingMessageIDKey
	// KeyConversationID is the span attribute of a message's correlation
	// ID ([cqrs.Identity].CorrelationID): the semantic conventions'
	// messaging.message.conversation_id, which, they say, is sometimes
	// called the correlation ID. It is never a metric attribute.
	KeyConversationID = semconv.MessagingMessageConversationIDKey
	// KeyCausationID is the span attribute of the ID of the message whose
	// handler sent this one ([cqrs.Identity].CausationID). The semantic
	// conventions have no name for it. It is never a metric attribute.
	KeyCausationID = attribute.Key("cqrs.message.causation_id")
)

// Option configures [New].
type Option interface {
	apply(*config)
}

type config struct {
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTracerProvider sets the tracer provider. The default is the global
// one, otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tracerProvider = tp })
}

// WithMeterProvider sets the meter provider. The default is the global
// one, otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meterProvider = mp })
}

// interceptor is what New returns.
type interceptor struct {
	tracer   trace.Tracer
	duration metric.Float64Histogram
	failures metric.Int64Counter

	mu    sync.Mutex
	names map[string]string // a name in use to the full name of its type
}

// nameOf returns the name spec's type goes by in spans and series: its
// own, unless another type already goes by it (two types from packages of
// the same name, on two buses), and then its name with the full import
// path, so that their series never merge.
func (i *interceptor) nameOf(spec cqrs.Spec) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.names == nil {
		i.names = make(map[string]string)
	}
	name, key := spec.Kind.String()+" "+spec.Name, cqrs.FullName(spec)
	if first, ok := i.names[name]; !ok {
		i.names[name] = key
	} else if first != key {
		return cqrs.FullName(spec)
	}
	return spec.Name
}

// New returns an interceptor that traces and measures every dispatch. It
// fails only if the meter cannot make its instruments.
func New(opts ...Option) (cqrs.Interceptor, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.tracerProvider == nil {
		c.tracerProvider = otelapi.GetTracerProvider()
	}
	if c.meterProvider == nil {
		c.meterProvider = otelapi.GetMeterProvider()
	}
	meter := c.meterProvider.Meter(ScopeName)
	duration, err := meter.Float64Histogram("cqrs.dispatch.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of command and query dispatches."),
		metric.WithExplicitBucketBoundaries(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10))
	if err != nil {
		return nil, err
	}
	failures, err := meter.Int64Counter("cqrs.dispatch.failures",
		metric.WithUnit("{dispatch}"),
		metric.WithDescription("Command and query dispatches that returned an error."))
	if err != nil {
		return nil, err
	}
	return &interceptor{tracer: c.tracerProvider.Tracer(ScopeName), duration: duration, failures: failures}, nil
}

// errorTypes are the values of error.type: cqrs.ErrorCode's codes, and
// otherError last, for errors of no known class.
var errorTypes = append(cqrs.ErrorCodes(), otherError)

// otherError is error.type for an error of no known class, as the
// semantic conventions name it.
const otherError = "_OTHER"

// errorType returns the index in errorTypes of err's class.
func errorType(err error) int {
	code := cqrs.ErrorCode(err)
	for i, name := range errorTypes {
		if name == code {
			return i
		}
	}
	return len(errorTypes) - 1
}

// Intercept precomputes what every span and measurement of spec's type
// carries, so that a dispatch builds no attributes.
func (i *interceptor) Intercept(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	spec.Name = i.nameOf(spec)
	base := []attribute.KeyValue{KeyKind.String(spec.Kind.String()), KeyMessageType.String(spec.Name)}
	if spec.Subscriber != "" {
		base = append(base, KeySubscriber.String(spec.Subscriber))
	}
	with := func(more ...attribute.KeyValue) attribute.Set {
		return attribute.NewSet(append(slices.Clip(base), more...)...)
	}
	name := spec.String()
	startOpts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(base...),
	}
	okOpts := []metric.RecordOption{metric.WithAttributeSet(with(KeyOutcome.String("ok")))}
	// One option set per error class.
	errAttrs := make([]attribute.KeyValue, len(errorTypes))
	failRecord := make([][]metric.RecordOption, len(errorTypes))
	failAdd := make([][]metric.AddOption, len(errorTypes))
	for j, class := range errorTypes {
		errAttrs[j] = KeyErrorType.String(class)
		set := with(KeyOutcome.String("error"), errAttrs[j])
		failRecord[j] = []metric.RecordOption{metric.WithAttributeSet(set)}
		failAdd[j] = []metric.AddOption{metric.WithAttributeSet(set)}
	}

	return func(ctx context.Context, c cqrs.Call) error {
		ctx, span := i.tracer.Start(ctx, name, startOpts...)
		if span.IsRecording() {
			setIdentity(ctx, span)
		}
		// Read the clock only for a meter that will record.
		measure := i.duration.Enabled(ctx)
		var start time.Duration
		if measure {
			start = now()
		}
		err := next(ctx, c)
		var seconds float64
		if measure {
			seconds = (now() - start).Seconds()
		}
		if err == nil {
			if measure {
				i.duration.Record(ctx, seconds, okOpts...)
			}
			span.End()
			return nil
		}
		class := errorType(err)
		span.SetAttributes(errAttrs[class])
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.End()
		if measure {
			i.duration.Record(ctx, seconds, failRecord[class]...)
		}
		i.failures.Add(ctx, 1, failAdd[class]...)
		return err
	}
}

// setIdentity sets the attributes of the identity of the message ctx's
// dispatch carries, if it has one, on its span.
func setIdentity(ctx context.Context, span trace.Span) {
	id, ok := cqrs.IdentityOf(ctx)
	if !ok {
		return
	}
	if id.CausationID == "" {
		span.SetAttributes(KeyMessageID.String(id.ID), KeyConversationID.String(id.CorrelationID))
		return
	}
	span.SetAttributes(KeyMessageID.String(id.ID), KeyConversationID.String(id.CorrelationID), KeyCausationID.String(id.CausationID))
}

// epoch anchors now.
var epoch = time.Now()

// now reads the monotonic clock alone: half the cost of [time.Now].
// (The core keeps the same clock in an internal package, which a
// sub-module must not import.)
func now() time.Duration { return time.Since(epoch) }
