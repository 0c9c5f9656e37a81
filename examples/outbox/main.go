// Command outbox is the order service of docs/outbox.md: PlaceOrder writes
// the order and its OrderPlaced event in one database transaction, a relay
// forwards the committed event to NATS JetStream, and a subscriber in
// another process gets it once.
//
//	go run .                                  # SQLite in a temporary file, embedded NATS
//	go run . -dsn 'postgres://…'              # PostgreSQL instead
//
// With no -role it is the whole demo: it starts an embedded NATS server,
// the subscriber as a child process (-role subscriber), places two orders
// (the second one twice, as a client retrying would: it is placed once),
// and prints what the subscriber printed.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	"github.com/typedcqrs/dispatch/outbox"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// PlaceOrder places an order.
type PlaceOrder struct {
	cqrs.Command[cqrs.NoResult]
	Order    int
	Customer string
}

// OrderPlaced says an order was placed.
type OrderPlaced struct {
	cqrs.Event
	Order    int
	Customer string
}

func main() {
	role := flag.String("role", "", "subscriber: receive OrderPlaced from -nats; empty: the whole demo")
	dsn := flag.String("dsn", "", "PostgreSQL DSN; empty: SQLite in a temporary file")
	url := flag.String("nats", "", "NATS URL, for -role subscriber")
	flag.Parse()
	var err error
	if *role == "subscriber" {
		err = subscribe(*url, os.Stdout)
	} else {
		err = demo(*dsn, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// subscribe prints each OrderPlaced it receives, until its stdin closes.
func subscribe(url string, out io.Writer) error {
	nc, err := natsgo.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	r, err := cqrsnats.NewReceiver(nc, cqrsnats.EventConfig{Durable: true})
	if err != nil {
		return err
	}
	defer func() { _ = r.Stop(context.Background()) }()
	_, err = cqrsnats.Subscribe(r, "email", func(_ context.Context, e OrderPlaced) error {
		fmt.Fprintf(out, "email: order %d placed for %s\n", e.Order, e.Customer)
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent ends
	return nil
}

// demo runs the service and a subscriber process, and copies what the
// subscriber prints to out.
func demo(dsn string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := os.MkdirTemp("", "outbox-demo-nats-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(store) }()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: store})
	if err != nil {
		return err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("NATS did not start")
	}
	defer ns.Shutdown()

	// The subscriber, in another process.
	child := exec.CommandContext(ctx, os.Args[0], "-role", "subscriber", "-nats", ns.ClientURL())
	child.Env = append(os.Environ(), "OUTBOX_EXAMPLE_CHILD=1")
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { _ = stdin.Close(); _ = child.Wait() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		return errors.New("the subscriber did not start")
	}

	// The service's database: SQLite unless a DSN is given.
	db, cfg, cleanup, err := open(dsn)
	if err != nil {
		return err
	}
	defer cleanup()
	box, err := outbox.New(db, cfg)
	if err != nil {
		return err
	}
	if err := box.Migrate(ctx); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS orders (id integer PRIMARY KEY, customer text)"); err != nil {
		return err
	}
	inbox, err := outbox.NewInbox(db, cfg)
	if err != nil {
		return err
	}
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Idempotent(inbox)))
	err = cqrs.Handle(commands, func(ctx context.Context, c PlaceOrder) (cqrs.NoResult, error) {
		tx, _ := outbox.Tx(ctx) // the inbox's transaction: the order, the event and the record commit together
		q := "INSERT INTO orders (id, customer) VALUES ($1, $2)"
		if cfg.Dialect == outbox.SQLite {
			q = "INSERT INTO orders (id, customer) VALUES (?, ?)"
		}
		if _, err := tx.ExecContext(ctx, q, c.Order, c.Customer); err != nil {
			return cqrs.NoResult{}, err
		}
		return cqrs.NoResult{}, outbox.Publish(ctx, box, tx, OrderPlaced{Order: c.Order, Customer: c.Customer})
	})
	if err != nil {
		return err
	}

	// The relay, forwarding what commits.
	nc, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	sink, err := outbox.NewJetStreamSink(js, 0)
	if err != nil {
		return err
	}
	relay, err := outbox.NewRelay(box, sink, outbox.RelayConfig{})
	if err != nil {
		return err
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	defer func() { stopRelay(); <-relayDone }()

	// Two orders; the second sent twice with one identity, as a client
	// that retries after a timeout would: the inbox places it once.
	first := cqrs.ContextWithIdentity(ctx, cqrs.Identity{ID: cqrs.NewID()})
	if _, err := cqrs.Send(first, commands, PlaceOrder{Order: 1, Customer: "ada"}); err != nil {
		return err
	}
	retried := cqrs.Identity{ID: cqrs.NewID()}
	for range 2 {
		if _, err := cqrs.Send(cqrs.ContextWithIdentity(ctx, retried), commands, PlaceOrder{Order: 2, Customer: "grace"}); err != nil {
			return err
		}
	}
	for range 2 {
		if !lines.Scan() {
			return errors.New("the subscriber stopped")
		}
		fmt.Fprintln(out, lines.Text())
	}
	// Once the outbox is empty and a moment has passed, stop the
	// subscriber and print what else it got: a duplicate would show.
	for {
		lag, err := box.Lag(ctx)
		if err != nil {
			return err
		}
		if lag.Pending == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	_ = stdin.Close()
	for lines.Scan() {
		fmt.Fprintln(out, lines.Text())
	}
	return nil
}

// open returns the service's database: PostgreSQL for a DSN, else SQLite
// in a temporary file.
func open(dsn string) (*sql.DB, outbox.Config, func(), error) {
	if dsn != "" {
		db, err := sql.Open("pgx", dsn)
		return db, outbox.Config{Dialect: outbox.Postgres}, func() { _ = db.Close() }, err
	}
	dir, err := os.MkdirTemp("", "outbox-demo-")
	if err != nil {
		return nil, outbox.Config{}, nil, err
	}
	db, err := outbox.OpenSQLite(filepath.Join(dir, "orders.db"))
	return db, outbox.Config{Dialect: outbox.SQLite}, func() { _ = db.Close(); _ = os.RemoveAll(dir) }, err
}
