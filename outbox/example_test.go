package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
	"github.com/typedcqrs/dispatch/outbox"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// exampleDB opens a new SQLite database in a temporary directory, with
// the outbox's tables and an orders table, as a service would at
// start-up. The returned func closes and removes it.
func exampleDB() (*sql.DB, *outbox.Outbox, outbox.Config, func()) {
	dir, err := os.MkdirTemp("", "outbox-example-")
	if err != nil {
		panic(err)
	}
	db, err := outbox.OpenSQLite(filepath.Join(dir, "orders.db"))
	if err != nil {
		panic(err)
	}
	cfg := outbox.Config{Dialect: outbox.SQLite}
	box, err := outbox.New(db, cfg)
	if err != nil {
		panic(err)
	}
	if err := box.Migrate(context.Background()); err != nil {
		panic(err)
	}
	if _, err := db.Exec("CREATE TABLE orders (id INTEGER PRIMARY KEY)"); err != nil {
		panic(err)
	}
	return db, box, cfg, func() { _ = db.Close(); _ = os.RemoveAll(dir) }
}

// printSink is a [outbox.Sink] that prints what a relay gives it: the
// Go type the message's subject names and whether its de-duplication key
// is its ID. A real service uses [outbox.JetStreamSink].
type printSink struct{}

func (printSink) Send(_ context.Context, msgs []outbox.Message) (int, error) {
	for _, m := range msgs {
		fmt.Printf("sent %s, Nats-Msg-Id = ID: %t\n", kindOf(m.Subject), m.Header["Nats-Msg-Id"][0] == m.ID)
	}
	return len(msgs), nil
}

// kindOf tells an event's subject from a durable command's.
func kindOf(subject string) string {
	switch subject {
	case cqrsnats.EventSubject("cqrs", cqrs.Spec{Kind: cqrs.KindEvent, MessageType: reflect.TypeFor[OrderPlaced]()}, true):
		return "event OrderPlaced"
	case cqrsnats.DurableSubject("cqrs", cqrs.SpecFor[ShipOrder, cqrs.NoResult]((*cqrs.CommandBus)(nil))):
		return "durable command ShipOrder"
	default:
		return subject
	}
}

// Example writes an order and its event in one transaction, and relays
// the event once the transaction has committed.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "outbox-example-")
	if err != nil {
		panic(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	db, err := outbox.OpenSQLite(filepath.Join(dir, "orders.db")) // SQLite: no server
	if err != nil {
		panic(err)
	}
	defer db.Close()
	box, err := outbox.New(db, outbox.Config{Dialect: outbox.SQLite})
	if err != nil {
		panic(err)
	}
	if err := box.Migrate(ctx); err != nil { // once, at start-up
		panic(err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE orders (id INTEGER PRIMARY KEY)"); err != nil {
		panic(err)
	}

	// The order and its event: both or neither.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", 42); err != nil {
		panic(err)
	}
	if err := outbox.Publish(ctx, box, tx, OrderPlaced{Order: 42}); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}

	// The relay sends what committed: here to a sink that prints; in a
	// service to NATS JetStream (outbox.NewJetStreamSink).
	relay, err := outbox.NewRelay(box, printSink{}, outbox.RelayConfig{})
	if err != nil {
		panic(err)
	}
	n, err := relay.Forward(ctx)
	fmt.Println(n, err)
	// Output:
	// sent event OrderPlaced, Nats-Msg-Id = ID: true
	// 1 <nil>
}

func ExampleOpenSQLite() {
	dir, err := os.MkdirTemp("", "outbox-example-")
	if err != nil {
		panic(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	db, err := outbox.OpenSQLite(filepath.Join(dir, "orders.db"))
	if err != nil {
		panic(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		panic(err)
	}
	fmt.Println("journal mode:", mode)

	_, err = outbox.OpenSQLite(":memory:")
	fmt.Println(err)
	// Output:
	// journal mode: wal
	// outbox: invalid config: OpenSQLite needs a file: each connection to :memory: is a database of its own
}

func ExampleNew() {
	db, err := sql.Open("pgx", "postgres://localhost/orders") // makes no connection yet
	if err != nil {
		panic(err)
	}
	defer db.Close()
	box, err := outbox.New(db, outbox.Config{Dialect: outbox.Postgres, Table: "orders_outbox"})
	fmt.Println(box != nil, err)

	_, err = outbox.New(db, outbox.Config{}) // no Dialect
	fmt.Println(err)
	// Output:
	// true <nil>
	// outbox: invalid config: Dialect is Dialect(0): want outbox.Postgres or outbox.SQLite
}

func ExampleOutbox_Migrate() {
	_, box, _, done := exampleDB()
	defer done()
	// Again, as at every start-up: what is there is kept.
	fmt.Println(box.Migrate(context.Background()))
	// Output:
	// <nil>
}

func ExampleOutbox_Lag() {
	db, box, _, done := exampleDB()
	defer done()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	if err := outbox.Publish(ctx, box, tx, OrderPlaced{Order: 1}); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}
	lag, err := box.Lag(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("pending:", lag.Pending, "oldest above 0:", lag.Oldest > 0)
	// Output:
	// pending: 1 oldest above 0: true
}

func ExamplePublish() {
	db, box, _, done := exampleDB()
	defer done()
	ctx := context.Background()

	// A transaction that rolls back sends nothing.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	if err := outbox.Publish(ctx, box, tx, OrderPlaced{Order: 1}); err != nil {
		panic(err)
	}
	if err := tx.Rollback(); err != nil {
		panic(err)
	}

	// One that commits sends its messages.
	tx, err = db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	if err := outbox.Publish(ctx, box, tx, OrderPlaced{Order: 2}); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}

	lag, err := box.Lag(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("pending:", lag.Pending)

	// With no transaction, in ctx or given, nothing is written.
	err = outbox.Publish(ctx, box, nil, OrderPlaced{Order: 3})
	fmt.Println(err != nil)
	// Output:
	// pending: 1
	// true
}

func ExampleEnqueue() {
	db, box, _, done := exampleDB()
	defer done()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	if err := outbox.Enqueue(ctx, box, tx, ShipOrder{Order: 7}); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}
	relay, err := outbox.NewRelay(box, printSink{}, outbox.RelayConfig{})
	if err != nil {
		panic(err)
	}
	if _, err := relay.Forward(ctx); err != nil {
		panic(err)
	}
	// Output:
	// sent durable command ShipOrder, Nats-Msg-Id = ID: true
}

// ExampleNewInbox runs a command's handler through the SQL inbox: the
// handler's row, its event and the inbox record commit together, so that
// the command delivered twice (as after a crash before its
// acknowledgement) takes effect once.
func ExampleNewInbox() {
	db, box, cfg, done := exampleDB()
	defer done()
	inbox, err := outbox.NewInbox(db, cfg)
	if err != nil {
		panic(err)
	}
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Idempotent(inbox)))
	err = cqrs.Handle(commands, func(ctx context.Context, c ShipOrder) (cqrs.NoResult, error) {
		tx, _ := outbox.Tx(ctx) // the inbox's transaction
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", c.Order); err != nil {
			return cqrs.NoResult{}, err
		}
		fmt.Println("shipping", c.Order)
		return cqrs.NoResult{}, outbox.Publish(ctx, box, nil, OrderPlaced{Order: c.Order}) // nil: the inbox's transaction
	})
	if err != nil {
		panic(err)
	}
	for range 2 { // one message, delivered twice
		ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-1"})
		if _, err := cqrs.Send(ctx, commands, ShipOrder{Order: 7}); err != nil {
			panic(err)
		}
	}
	var orders int
	if err := db.QueryRow("SELECT count(*) FROM orders").Scan(&orders); err != nil {
		panic(err)
	}
	lag, err := box.Lag(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println("orders:", orders, "events:", lag.Pending)
	// Output:
	// shipping 7
	// orders: 1 events: 1
}

func ExampleInbox_Once() {
	db, _, cfg, done := exampleDB()
	defer done()
	inbox, err := outbox.NewInbox(db, cfg)
	if err != nil {
		panic(err)
	}
	for range 2 {
		ran, err := inbox.Once(context.Background(), "billing", "m-1", func(ctx context.Context) error {
			tx, _ := outbox.Tx(ctx)
			_, err := tx.ExecContext(ctx, "INSERT INTO orders (id) VALUES (1)")
			return err
		})
		fmt.Println(ran, err)
	}
	// Output:
	// true <nil>
	// false <nil>
}

func ExampleInbox_Cleanup() {
	db, _, cfg, done := exampleDB()
	defer done()
	inbox, err := outbox.NewInbox(db, cfg)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if _, err := inbox.Once(ctx, "billing", "m-1", func(context.Context) error { return nil }); err != nil {
		panic(err)
	}
	kept, err := inbox.Cleanup(ctx, time.Hour) // records older than an hour: none
	fmt.Println(kept, err)
	removed, err := inbox.Cleanup(ctx, -time.Hour) // older than an hour from now: all
	fmt.Println(removed, err)
	// Output:
	// 0 <nil>
	// 1 <nil>
}

// ExampleTx shows a message written from code that passes a context
// rather than the transaction: WithTx puts it in, Tx finds it, and
// Publish given a nil tx writes into it.
func ExampleTx() {
	db, box, _, done := exampleDB()
	defer done()
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		panic(err)
	}
	ctx := outbox.WithTx(context.Background(), tx)
	_, ok := outbox.Tx(ctx)
	fmt.Println("ctx has a transaction:", ok)
	if err := outbox.Publish(ctx, box, nil, OrderPlaced{Order: 1}); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}
	lag, err := box.Lag(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println("pending:", lag.Pending)
	// Output:
	// ctx has a transaction: true
	// pending: 1
}

func ExampleNewRelay() {
	db, box, _, done := exampleDB()
	defer done()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	for i := range 3 {
		if err := outbox.Publish(ctx, box, tx, OrderPlaced{Order: i}); err != nil {
			panic(err)
		}
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}
	relay, err := outbox.NewRelay(box, printSink{}, outbox.RelayConfig{BatchSize: 2})
	if err != nil {
		panic(err)
	}
	for {
		n, err := relay.Forward(ctx) // what Run does in a loop
		if err != nil {
			panic(err)
		}
		if n == 0 {
			break
		}
	}
	fmt.Printf("%+v\n", relay.Stats())
	// Output:
	// sent event OrderPlaced, Nats-Msg-Id = ID: true
	// sent event OrderPlaced, Nats-Msg-Id = ID: true
	// sent event OrderPlaced, Nats-Msg-Id = ID: true
	// {Sent:3 Batches:2 Failures:0}
}

// stopSink prints what it is sent, and ends the relay's run after n
// messages.
type stopSink struct {
	n    int
	stop context.CancelFunc
}

func (s *stopSink) Send(ctx context.Context, msgs []outbox.Message) (int, error) {
	n, err := printSink{}.Send(ctx, msgs)
	if s.n -= n; s.n <= 0 {
		s.stop()
	}
	return n, err
}

func ExampleRelay_Run() {
	db, box, _, done := exampleDB()
	defer done()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	relay, err := outbox.NewRelay(box, &stopSink{n: 2, stop: stop}, outbox.RelayConfig{PollInterval: 5 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- relay.Run(ctx) }() // until ctx ends

	for i := range 2 { // each commit is sent within a PollInterval (PostgreSQL: at once, by NOTIFY)
		tx, err := db.BeginTx(context.Background(), nil)
		if err != nil {
			panic(err)
		}
		if err := outbox.Publish(context.Background(), box, tx, OrderPlaced{Order: i}); err != nil {
			panic(err)
		}
		if err := tx.Commit(); err != nil {
			panic(err)
		}
	}
	fmt.Println("Run returned", <-ran)
	// Output:
	// sent event OrderPlaced, Nats-Msg-Id = ID: true
	// sent event OrderPlaced, Nats-Msg-Id = ID: true
	// Run returned <nil>
}

func ExampleDialect_String() {
	fmt.Println(outbox.Postgres, outbox.SQLite)
	// Output:
	// postgres sqlite
}

// ExampleNewJetStreamSink relays an event to NATS JetStream: an embedded
// server here, the stream made as a durable event receiver makes it.
func ExampleNewJetStreamSink() {
	db, box, _, done := exampleDB()
	defer done()
	ctx := context.Background()

	store, err := os.MkdirTemp("", "outbox-example-nats-")
	if err != nil {
		panic(err)
	}
	defer func() { _ = os.RemoveAll(store) }()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: store})
	if err != nil {
		panic(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		panic("NATS did not start")
	}
	nc, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CQRS_EVENTS", Subjects: []string{"cqrs.stored.>"}})
	if err != nil {
		panic(err)
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	if err := outbox.Publish(ctx, box, tx, OrderPlaced{Order: 1}); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}

	sink, err := outbox.NewJetStreamSink(js, 5*time.Second)
	if err != nil {
		panic(err)
	}
	relay, err := outbox.NewRelay(box, sink, outbox.RelayConfig{})
	if err != nil {
		panic(err)
	}
	n, err := relay.Forward(ctx)
	fmt.Println("sent", n, err)
	stored, err := stream.GetMsg(ctx, 1)
	if err != nil {
		panic(err)
	}
	fmt.Println("stored with Nats-Msg-Id = Cqrs-Id:", stored.Header.Get("Nats-Msg-Id") == stored.Header.Get(cqrsnats.HeaderID))
	// Output:
	// sent 1 <nil>
	// stored with Nats-Msg-Id = Cqrs-Id: true
}
