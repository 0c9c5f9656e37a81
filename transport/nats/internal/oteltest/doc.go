// Package oteltest checks that the OpenTelemetry module and the NATS
// transport work together: a trace started in one process continues in the
// process that serves the call. It is a module of its own so that
// transport/nats does not require middleware/otel, not even for its tests,
// and a user of either gets only what they import. It has no API.
package oteltest
