// Observability runs a few commands and queries through the OpenTelemetry
// interceptor and prints the spans with the stdout exporter: one span per
// dispatch, with the handler's own span as its child.
//
//	go run ./examples/observability
//
// It is a module of its own, like middleware/otel, so that the core never
// depends on the OpenTelemetry SDK.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsotel "github.com/typedcqrs/dispatch/middleware/otel"
)

// Ship is a command; Track a query.
type (
	Ship  struct{ Parcel string }
	Track struct{ Parcel string }
)

var errUnknownParcel = errors.New("unknown parcel")

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	exporter, err := stdouttrace.New(stdouttrace.WithWriter(w), stdouttrace.WithPrettyPrint(), stdouttrace.WithoutTimestamps())
	if err != nil {
		return err
	}
	// Synchronous export, so each span prints as it ends.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	defer func() { _ = tp.Shutdown(ctx) }()

	ic, err := cqrsotel.New(cqrsotel.WithTracerProvider(tp))
	if err != nil {
		return err
	}
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(ic))
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(ic))
	shipped := map[string]bool{}
	ship := func(ctx context.Context, c Ship) (cqrs.NoResult, error) {
		// Work the handler does shows as a child of the dispatch span.
		_, span := trace.SpanFromContext(ctx).TracerProvider().Tracer("warehouse").Start(ctx, "warehouse.pick")
		defer span.End()
		shipped[c.Parcel] = true
		return cqrs.NoResult{}, nil
	}
	track := func(_ context.Context, q Track) (string, error) {
		if !shipped[q.Parcel] {
			return "", fmt.Errorf("parcel %s: %w", q.Parcel, errUnknownParcel)
		}
		return "in transit", nil
	}
	if err := cqrs.Register(commands, cqrs.HandlerFunc[Ship, cqrs.NoResult](ship)); err != nil {
		return err
	}
	if err := cqrs.Register(queries, cqrs.HandlerFunc[Track, string](track)); err != nil {
		return err
	}
	// At start-up: every message has its handler.
	if err := errors.Join(cqrs.Require(commands, Ship{}), cqrs.Require(queries, Track{})); err != nil {
		return err
	}

	if _, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, Ship{Parcel: "p-1"}); err != nil {
		return err
	}
	if _, err := cqrs.Dispatch[string](ctx, queries, Track{Parcel: "p-1"}); err != nil {
		return err
	}
	_, err = cqrs.Dispatch[string](ctx, queries, Track{Parcel: "p-404"}) // a failed span
	if !errors.Is(err, errUnknownParcel) {
		return fmt.Errorf("want an unknown parcel, got %v", err)
	}
	return nil
}
