// Command consumer is what a user of the released modules writes: a
// module that requires the core, middleware/otel, transport/nats and
// outbox by version, with no replace directive. .ci/run copies it into a new module
// outside the repository and builds, vets, tests and runs it against the
// modules zipped from the working tree (see .ci/modproxy and
// docs/releasing.md). It is not part of any module here: the go command
// skips directories whose names begin with a dot.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware/otel"
	"github.com/typedcqrs/dispatch/outbox"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// Greet is the command sent across NATS; its result is the greeting.
type Greet struct {
	Name string `json:"name"`
}

// Greeted is the event written to the outbox with the greeting.
type Greeted struct {
	cqrs.Event
	Name string `json:"name"`
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

// run serves a command bus over an embedded NATS server and sends it one
// command from another bus, each traced by the OpenTelemetry interceptor,
// and writes the reply and the spans to w.
func run(ctx context.Context, w io.Writer) (err error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		return err
	}
	go ns.Start()
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("NATS server did not start")
	}

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { err = errors.Join(err, tp.Shutdown(context.Background())) }()
	tracing, err := otel.New(otel.WithTracerProvider(tp))
	if err != nil {
		return err
	}

	// The serving side.
	served := cqrs.NewCommandBus(cqrs.WithInterceptors(tracing))
	if err := cqrs.Register(served, cqrs.HandlerFunc[Greet, string](func(_ context.Context, g Greet) (string, error) {
		return "hello, " + g.Name, nil
	})); err != nil {
		return err
	}
	serverConn, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer serverConn.Close()
	srv, err := cqrsnats.Serve(serverConn, served)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.Stop(ctx)) }()

	// The calling side.
	clientConn, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer clientConn.Close()
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(tracing))
	if err := cqrsnats.Forward[Greet, string](commands, cqrsnats.NewClient(clientConn)); err != nil {
		return err
	}

	reply, err := cqrs.Dispatch[string](ctx, commands, Greet{Name: "consumer"})
	if err != nil {
		return err
	}
	fmt.Fprintln(w, reply)
	for _, s := range spans.Ended() {
		fmt.Fprintln(w, "span:", s.Name())
	}
	return writeOutbox(ctx, w)
}

// writeOutbox writes an event in a transaction of an SQLite database's
// outbox, commits, and writes how many messages wait for a relay.
func writeOutbox(ctx context.Context, w io.Writer) (err error) {
	dir, err := os.MkdirTemp("", "consumer")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := outbox.OpenSQLite(filepath.Join(dir, "app.db"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	ob, err := outbox.New(db, outbox.Config{Dialect: outbox.SQLite})
	if err != nil {
		return err
	}
	if err := ob.Migrate(ctx); err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := outbox.Publish(ctx, ob, tx, Greeted{Name: "consumer"}); err != nil {
		return errors.Join(err, tx.Rollback())
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	lag, err := ob.Lag(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "outbox pending:", lag.Pending)
	return nil
}
