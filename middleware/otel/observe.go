package otel

import (
	"context"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	otelapi "go.opentelemetry.io/otel"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// meterOf returns the meter of the options' meter provider.
func meterOf(opts []Option) metric.Meter {
	var c config
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.meterProvider == nil {
		c.meterProvider = otelapi.GetMeterProvider()
	}
	return c.meterProvider.Meter(ScopeName)
}

// BreakerStateValue returns the value the gauge cqrs.breaker.state takes
// for state: 0 closed, 1 half-open, 2 open, and -1 for a state gobreaker
// does not define.
func BreakerStateValue(state gobreaker.State) int64 {
	switch state {
	case gobreaker.StateClosed:
		return 0
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return -1
}

// BreakerState is the value the gauge cqrs.breaker.state takes for each
// state of a breaker.
//
// Deprecated: use [BreakerStateValue]. Changing this map changes nothing:
// the gauge no longer reads it.
var BreakerState = map[gobreaker.State]int64{
	gobreaker.StateClosed:   0,
	gobreaker.StateHalfOpen: 1,
	gobreaker.StateOpen:     2,
}

// ObserveBreaker reports the state of each of b's breakers, one per message
// type, as the gauge cqrs.breaker.state: 0 closed, 1 half-open, 2 open.
// Only the meter provider of opts is used. Unregister the returned
// registration to stop.
func ObserveBreaker(b *middleware.Breaker, opts ...Option) (metric.Registration, error) {
	meter := meterOf(opts)
	gauge, err := meter.Int64ObservableGauge("cqrs.breaker.state",
		metric.WithUnit("{state}"),
		metric.WithDescription("Circuit breaker state per message type: 0 closed, 1 half-open, 2 open."))
	if err != nil {
		return nil, err
	}
	return meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for spec, state := range b.All() {
			o.ObserveInt64(gauge, BreakerStateValue(state),
				metric.WithAttributes(KeyKind.String(spec.Kind.String()), KeyMessageType.String(spec.Name)))
		}
		return nil
	}, gauge)
}

// ObserveCache reports the hits and misses of c, the cache of query type C
// registered on bus b, as the counters cqrs.cache.hits and
// cqrs.cache.misses. Hits are counted only by a cache made with
// CountHits. Only the meter provider of opts is used. Unregister the
// returned registration to stop.
func ObserveCache[C, R any](b cqrs.Bus, c *middleware.Cache[C, R], opts ...Option) (metric.Registration, error) {
	meter := meterOf(opts)
	hits, err := meter.Int64ObservableCounter("cqrs.cache.hits",
		metric.WithUnit("{query}"), metric.WithDescription("Queries answered from the cache."))
	if err != nil {
		return nil, err
	}
	misses, err := meter.Int64ObservableCounter("cqrs.cache.misses",
		metric.WithUnit("{query}"), metric.WithDescription("Handler calls made to fill the cache."))
	if err != nil {
		return nil, err
	}
	spec := cqrs.SpecFor[C, R](b)
	attrs := metric.WithAttributeSet(attribute.NewSet(KeyKind.String(spec.Kind.String()), KeyMessageType.String(spec.Name)))
	return meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := c.Stats()
		o.ObserveInt64(hits, int64(s.Hits), attrs)
		o.ObserveInt64(misses, int64(s.Misses), attrs)
		return nil
	}, hits, misses)
}
